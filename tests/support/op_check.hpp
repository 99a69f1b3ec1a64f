#pragma once
// Test support for ops: run an OpDef's forward and backward kernels directly (the way the
// executor and autodiff would), check gradients against central finite differences, and measure
// the standard deviations that the unit-scaling rules target.
//
// Finite differences: the kernels compute in FP32, so the check perturbs one input element by ±h,
// evaluates L = Σ_k <R_k, y_k> (R_k fixed random projections) accumulating in double, and compares
// (L(+h) − L(−h)) / 2h with the backward kernel's gradient <R, ∂y/∂x>. With h ≈ 1e-2 the truncation
// error is O(h²) and the FP32 rounding error O(ε·|L|/h); tolerances are set accordingly.
//
// Dtypes: inputs may be of any dtype (embedding's ids and cross_entropy's labels are i32). Only
// f32 inputs are perturbed and only f32 outputs get random projections; integer inputs never get
// a gradient unless a test asks for one explicitly (as autodiff never asks), and asking gradcheck
// to differentiate a non-f32 input is a test error, reported rather than silently skipped.

#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale::testing {

// The matchers every op test uses, so that a test needs only `using namespace testing;` (inside
// namespace unitscale, `testing` is this namespace).
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

inline Tensor random_normal(const Shape& shape, std::mt19937& rng, float std = 1.0f) {
  Tensor t(shape);
  std::normal_distribution<float> normal(0.0f, std);
  for (float& v : t.span()) v = normal(rng);
  return t;
}

inline double std_of(std::span<const float> x) {
  double sum = 0, sum_sq = 0;
  for (const float v : x) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double n = static_cast<double>(x.size());
  const double mean = sum / n;
  return std::sqrt(std::max(0.0, sum_sq / n - mean * mean));
}

inline double rms_of(std::span<const float> x) {
  double sum_sq = 0;
  for (const float v : x) sum_sq += static_cast<double>(v) * v;
  return std::sqrt(sum_sq / static_cast<double>(x.size()));
}

// One invocation of an op on concrete tensors. Absent optional inputs are std::nullopt.
class OpRun {
 public:
  OpRun(const OpDef& op, std::vector<std::optional<Tensor>> inputs, Attributes attrs,
        Scaling scaling = Scaling::kUnscaled)
      : op_(op), inputs_(std::move(inputs)), attrs_(std::move(attrs)) {
    check_attributes(op.name, op.attributes, op.scales, attrs_);  // as Graph::apply does
    std::vector<const Shape*> shapes;
    std::vector<DType> dtypes;  // an absent input reads as f32, as in Graph::apply
    for (const auto& t : inputs_) {
      shapes.push_back(t ? &t->shape() : nullptr);
      dtypes.push_back(t ? t->dtype() : DType::kF32);
    }
    if (scaling == Scaling::kUnit && op.unit_scale != nullptr) op.unit_scale(shapes, attrs_);
    const std::vector<Shape> out_shapes = op.infer_shapes(shapes, attrs_);
    const std::vector<DType> out_dtypes =
        op.infer_dtypes != nullptr ? op.infer_dtypes(dtypes, attrs_) : std::vector<DType>{};
    for (std::size_t k = 0; k < out_shapes.size(); ++k) {
      outputs_.emplace_back(out_shapes[k], k < out_dtypes.size() ? out_dtypes[k] : DType::kF32);
    }
  }

  const Attributes& attrs() const { return attrs_; }
  // The run context both kernels see (the executor's step counter).
  void set_step(std::uint64_t step) { context_.step = step; }
  Tensor& input(std::size_t i) { return *inputs_[i]; }
  const Tensor& output(std::size_t i = 0) const { return outputs_[i]; }

  void forward() {
    std::vector<ConstTensorView> in;
    for (const auto& t : inputs_) in.push_back(t ? t->view() : ConstTensorView{});
    std::vector<TensorView> out;
    for (auto& t : outputs_) out.push_back(t.view());
    op_.kernel(in, out, attrs_, context_);
  }

  // Runs the backward kernel with the given output gradients (call forward() first) and returns
  // the gradient (f32, of the input's shape) of every present input (std::nullopt for absent
  // inputs or those not in `wanted`). An empty `wanted` means every present floating-point input:
  // integer inputs (ids, labels) have no gradient, and autodiff never asks for one; a test may
  // still ask explicitly, to check what a kernel writes when asked.
  std::vector<std::optional<Tensor>> backward(const std::vector<Tensor>& grad_outputs,
                                              std::vector<bool> wanted = {}) {
    EXPECT_NE(op_.backward_kernel, nullptr) << op_.name << " has no backward";
    std::vector<ConstTensorView> in;
    const std::size_t n_in = inputs_.size();
    for (std::size_t i = 0; i < n_in + outputs_.size(); ++i) {
      const bool read = (op_.backward_reads >> i) & 1;
      if (i < n_in) in.push_back(read && inputs_[i] ? inputs_[i]->view() : ConstTensorView{});
      else in.push_back(read ? outputs_[i - n_in].view() : ConstTensorView{});
    }
    for (const auto& g : grad_outputs) in.push_back(g.view());
    std::vector<std::optional<Tensor>> grads;
    std::vector<TensorView> out;
    for (std::size_t i = 0; i < n_in; ++i) {
      const bool want = inputs_[i] && (wanted.empty() ? is_floating(inputs_[i]->dtype()) : wanted[i]);
      grads.push_back(want ? std::optional<Tensor>(Tensor(inputs_[i]->shape())) : std::nullopt);
    }
    for (auto& g : grads) out.push_back(g ? g->view() : TensorView{});
    op_.backward_kernel(in, out, attrs_, context_);
    return grads;
  }

 private:
  const OpDef& op_;
  std::vector<std::optional<Tensor>> inputs_;
  Attributes attrs_;
  KernelContext context_;
  std::vector<Tensor> outputs_;
};

struct GradcheckOptions {
  double step = 1e-2;
  double rtol = 2e-2;
  double atol = 2e-3;
  std::vector<bool> differentiable = {};  // per input; empty: every present f32 input
  unsigned seed = 7;
};

// Checks the backward kernel of `op` (unscaled) against central finite differences for every
// element of every differentiable input (by default every present f32 input; only f32 inputs
// can be perturbed). Reports failures through gtest.
inline void gradcheck(const OpDef& op, std::vector<std::optional<Tensor>> inputs,
                      const Attributes& attrs, const GradcheckOptions& options = {}) {
  std::vector<bool> differentiable(inputs.size(), false);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const bool f32 = inputs[i] && inputs[i]->dtype() == DType::kF32;
    if (options.differentiable.empty()) {
      differentiable[i] = f32;
    } else if (i < options.differentiable.size() && options.differentiable[i]) {
      if (inputs[i] && !f32) {
        ADD_FAILURE() << op.name << ": gradcheck asked to differentiate input " << i << " ("
                      << op.input_name(i) << ") of dtype " << dtype_name(inputs[i]->dtype())
                      << "; only f32 inputs can be perturbed";
        return;
      }
      differentiable[i] = inputs[i].has_value();
    }
  }
  OpRun run(op, inputs, attrs);
  run.forward();
  std::mt19937 rng(options.seed);
  // Random projections for the f32 outputs; an output of another dtype (integer results) has no
  // gradient, gets a zero one and stays out of L.
  std::vector<Tensor> projections;
  for (int k = 0; k < op.output_count(); ++k) {
    const Tensor& y = run.output(static_cast<std::size_t>(k));
    projections.push_back(y.dtype() == DType::kF32 ? random_normal(y.shape(), rng) : Tensor(y.shape()));
  }
  const auto grads = run.backward(projections, differentiable);

  auto loss = [&](std::vector<std::optional<Tensor>> perturbed) {
    OpRun r(op, std::move(perturbed), attrs);
    r.forward();
    double total = 0;
    for (std::size_t k = 0; k < projections.size(); ++k) {
      if (r.output(k).dtype() != DType::kF32) continue;
      const auto y = r.output(k).span();
      const auto p = projections[k].span();
      for (std::size_t i = 0; i < y.size(); ++i) total += static_cast<double>(y[i]) * p[i];
    }
    return total;
  };

  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!differentiable[i]) continue;
    if (!grads[i]) {
      ADD_FAILURE() << op.name << ": no gradient for input " << i << " (" << op.input_name(i) << ")";
      continue;
    }
    int failures = 0;
    for (std::int64_t e = 0; e < inputs[i]->numel() && failures < 5; ++e) {
      auto plus = inputs, minus = inputs;
      (*plus[i])[e] += static_cast<float>(options.step);
      (*minus[i])[e] -= static_cast<float>(options.step);
      const double step = static_cast<double>((*plus[i])[e]) - (*minus[i])[e];
      const double numeric = (loss(plus) - loss(minus)) / step;
      const double analytic = (*grads[i])[e];
      if (std::abs(numeric - analytic) > options.atol + options.rtol * std::abs(numeric)) {
        ADD_FAILURE() << op.name << ": d/d input " << i << " (" << op.input_name(i) << ") element "
                      << e << ": finite difference " << numeric << ", backward " << analytic;
        ++failures;
      }
    }
  }
}

}  // namespace unitscale::testing

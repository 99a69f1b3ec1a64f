#pragma once
// Test support for scale-propagation rules (ops/scale_rules.hpp): does an op's rule track the
// magnitude its kernels produce? The op runs on data times scales (values far from 1 on purpose),
// its forward and backward rules are evaluated on those scales, and each output's RMS is compared
// with the scale the rule gives it: a rule that tracks the output keeps rms / scale near 1 whatever
// the input scales are, which is what keeps FP16 and FP8 data in range.

#include <gtest/gtest.h>

#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/ops/scale_rules.hpp"

namespace unitscale::testing {

// A power-of-two scale, 2^exponent.
inline Scale p(int exponent) { return Scale::power_of_two(exponent); }

// ---- evaluating rules directly, on scales and shapes alone ------------------------------------

// Input shapes as a rule reads them: std::nullopt (an absent input) becomes a null pointer.
inline std::vector<const Shape*> shape_pointers(const std::vector<std::optional<Shape>>& shapes) {
  std::vector<const Shape*> result;
  for (const auto& s : shapes) result.push_back(s ? &*s : nullptr);
  return result;
}

// `op`'s forward rule on inputs of the given scales and shapes (std::nullopt: an absent input,
// whose scale should be 1); the output shapes come from the op's shape inference. Expects one
// scale per output.
inline std::vector<Scale> forward_rule(const OpDef& op, const std::vector<Scale>& scales,
                                       const std::vector<std::optional<Shape>>& shapes,
                                       const Attributes& attrs,
                                       Pow2Rounding rounding = Pow2Rounding::kDown) {
  const std::vector<const Shape*> in = shape_pointers(shapes);
  const std::vector<Shape> out_shapes = op.infer_shapes(in, attrs);
  std::vector<const Shape*> out;
  for (const Shape& s : out_shapes) out.push_back(&s);
  EXPECT_NE(op.scale_propagation, nullptr) << op.name;
  if (op.scale_propagation == nullptr) return {};
  const ScaleRuleArgs args{scales, in, out, attrs, rounding};
  std::vector<Scale> result = op.scale_propagation(args);
  EXPECT_EQ(result.size(), out_shapes.size()) << op.name << ": one scale per output";
  return result;
}

// `op`'s backward rule as the graph calls it. The backward op's inputs are the forward inputs
// (`scales`, `shapes`), the forward outputs and the output gradients (op_def.hpp); the forward
// values the backward kernel does not read (OpDef::backward_reads), and absent forward inputs, are
// passed absent with scale 1.
// - output_scales: the forward outputs' scales; empty: what forward_rule gives them (every op has
//   an output, so empty is never a real list).
// - grad_scales: per forward output, its gradient's scale; std::nullopt: that gradient is absent.
// - wanted: per forward input, whether its gradient is asked for; empty: every present input that
//   is differentiable (not in OpDef::nondifferentiable_inputs), as autodiff asks. A gradient is
//   never asked for an absent input.
// Returns the rule's scale for every forward input's gradient; expects one per input.
inline std::vector<Scale> backward_rule(const OpDef& op, const std::vector<Scale>& scales,
                                        const std::vector<std::optional<Shape>>& shapes,
                                        const std::vector<Scale>& output_scales,
                                        const std::vector<std::optional<Scale>>& grad_scales,
                                        const Attributes& attrs,
                                        Pow2Rounding rounding = Pow2Rounding::kDown,
                                        const std::vector<bool>& wanted = {}) {
  const std::vector<const Shape*> in = shape_pointers(shapes);
  const std::vector<Shape> out_shapes = op.infer_shapes(in, attrs);
  const std::vector<Scale> out_scales =
      !output_scales.empty() ? output_scales : forward_rule(op, scales, shapes, attrs, rounding);
  const std::size_t n_in = in.size();
  const std::size_t n_out = out_shapes.size();
  EXPECT_EQ(out_scales.size(), n_out) << op.name << ": one scale per forward output";
  EXPECT_EQ(grad_scales.size(), n_out) << op.name << ": one gradient scale per forward output";
  if (out_scales.size() != n_out || grad_scales.size() != n_out) return {};

  std::vector<Scale> bwd_scales;
  std::vector<const Shape*> bwd_in, bwd_out;
  for (std::size_t i = 0; i < n_in + n_out; ++i) {  // the forward inputs and outputs
    const bool read = (op.backward_reads >> i) & 1;
    const Shape* shape = i < n_in ? in[i] : &out_shapes[i - n_in];
    const bool present = read && shape != nullptr;
    bwd_scales.push_back(!present ? Scale{} : i < n_in ? scales[i] : out_scales[i - n_in]);
    bwd_in.push_back(present ? shape : nullptr);
  }
  for (std::size_t k = 0; k < n_out; ++k) {  // the output gradients
    bwd_scales.push_back(grad_scales[k].value_or(Scale{}));
    bwd_in.push_back(grad_scales[k] ? &out_shapes[k] : nullptr);
  }
  for (std::size_t i = 0; i < n_in; ++i) {  // the input gradients asked for
    const bool want = wanted.empty() ? ((op.nondifferentiable_inputs >> i) & 1) == 0 : wanted[i];
    bwd_out.push_back(want ? in[i] : nullptr);
  }
  EXPECT_NE(op.backward_scale_propagation, nullptr) << op.name;
  if (op.backward_scale_propagation == nullptr) return {};
  const ScaleRuleArgs args{bwd_scales, bwd_in, bwd_out, attrs, rounding};
  std::vector<Scale> result = op.backward_scale_propagation(args);
  EXPECT_EQ(result.size(), n_in) << op.name << ": one gradient scale per forward input";
  return result;
}

// The same with every output gradient present and of scale `grad_scale`, and the forward outputs
// of the scales forward_rule gives them.
inline std::vector<Scale> backward_rule(const OpDef& op, const std::vector<Scale>& scales,
                                        const std::vector<std::optional<Shape>>& shapes,
                                        const Scale& grad_scale, const Attributes& attrs,
                                        Pow2Rounding rounding = Pow2Rounding::kDown,
                                        const std::vector<bool>& wanted = {}) {
  const std::vector<std::optional<Scale>> grad_scales(
      op.infer_shapes(shape_pointers(shapes), attrs).size(), grad_scale);
  return backward_rule(op, scales, shapes, {}, grad_scales, attrs, rounding, wanted);
}

// ---- measuring rules on the kernels' outputs ---------------------------------------------------

struct RuleMagnitude {
  std::string output;  // "y", "grad_x", ...
  double rms = 0;      // of the output's values
  Scale scale;         // the rule's scale for it
  double ratio() const { return rms / scale.value(); }
};

struct RuleCheckOptions {
  Scaling scaling = Scaling::kUnit;  // how the op's α and β are resolved
  Scale grad_scale;                  // the scale of the output gradients (their data is N(0, 1))
  Pow2Rounding rounding = Pow2Rounding::kDown;
  unsigned seed = 11;
};

// Runs `op` on inputs data[i] · scales[i] (f32 inputs only; others, like token ids, as given) and
// its backward on N(0, 1) · grad_scale output gradients, for every f32 output and every f32 input
// that has a gradient (not a mask or a label); then
// returns rms / scale for every f32 output of both, the forward outputs first.
inline std::vector<RuleMagnitude> rule_magnitudes(const OpDef& op,
                                                  const std::vector<std::optional<Tensor>>& data,
                                                  const std::vector<Scale>& scales,
                                                  const Attributes& attrs,
                                                  const RuleCheckOptions& options = {}) {
  std::vector<std::optional<Tensor>> values = data;
  std::vector<const Shape*> in_shapes;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] && values[i]->dtype() == DType::kF32) {
      for (float& v : values[i]->span()) v = static_cast<float>(v * scales[i].value());
    }
    in_shapes.push_back(values[i] ? &values[i]->shape() : nullptr);
  }
  OpRun run(op, values, attrs, options.scaling);
  run.forward();

  std::vector<RuleMagnitude> result;
  std::vector<const Shape*> out_shapes;
  for (int k = 0; k < op.output_count(); ++k)
    out_shapes.push_back(&run.output(static_cast<std::size_t>(k)).shape());
  const ScaleRuleArgs forward_args{scales, in_shapes, out_shapes, run.attrs(), options.rounding};
  const std::vector<Scale> out_scales = op.scale_propagation(forward_args);
  for (int k = 0; k < op.output_count(); ++k) {
    const Tensor& y = run.output(static_cast<std::size_t>(k));
    if (y.dtype() != DType::kF32) continue;
    result.push_back({std::string(op.outputs[static_cast<std::size_t>(k)]), rms_of(y.span()),
                      out_scales[static_cast<std::size_t>(k)]});
  }
  if (op.backward_kernel == nullptr) return result;

  std::mt19937 rng(options.seed);
  std::vector<Tensor> grads;
  for (int k = 0; k < op.output_count(); ++k) {
    Tensor g = random_normal(run.output(static_cast<std::size_t>(k)).shape(), rng);
    for (float& v : g.span()) v = static_cast<float>(v * options.grad_scale.value());
    grads.push_back(std::move(g));
  }
  std::vector<bool> wanted;  // as autodiff asks: every f32 input that has a gradient
  for (std::size_t i = 0; i < values.size(); ++i) {
    wanted.push_back(values[i] && values[i]->dtype() == DType::kF32 &&
                     ((op.nondifferentiable_inputs >> i) & 1) == 0);
  }
  const auto input_grads = run.backward(grads, wanted);

  // The backward op's inputs as the graph gives them: forward values it does not read are absent.
  std::vector<Scale> bwd_scales;
  std::vector<const Shape*> bwd_in_shapes, bwd_out_shapes;
  const std::size_t n_in = values.size();
  for (std::size_t i = 0; i < n_in + out_shapes.size(); ++i) {
    const bool read = (op.backward_reads >> i) & 1;
    const Shape* shape = i < n_in ? in_shapes[i] : out_shapes[i - n_in];
    bwd_scales.push_back(!read ? Scale{} : i < n_in ? scales[i] : out_scales[i - n_in]);
    bwd_in_shapes.push_back(read ? shape : nullptr);
  }
  for (const Tensor& g : grads) {
    bwd_scales.push_back(options.grad_scale);
    bwd_in_shapes.push_back(&g.shape());
  }
  for (const auto& g : input_grads) bwd_out_shapes.push_back(g ? &g->shape() : nullptr);
  const ScaleRuleArgs backward_args{bwd_scales, bwd_in_shapes, bwd_out_shapes, run.attrs(),
                                    options.rounding};
  const std::vector<Scale> grad_scales = op.backward_scale_propagation(backward_args);
  for (std::size_t i = 0; i < n_in; ++i) {
    if (!input_grads[i]) continue;
    result.push_back(
        {"grad_" + std::string(op.input_name(i)), rms_of(input_grads[i]->span()), grad_scales[i]});
  }
  return result;
}

}  // namespace unitscale::testing

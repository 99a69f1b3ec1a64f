#include "unitscale/ops/residual.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "ops/pointwise_common.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::kParallelThreshold;

// first = x and, if second is not null, second = x: one parallel pass that reads x once for both
// copies (the fork of residual_split, the identity backward of residual_add).
void copy_to(const float* x, float* first, float* second, std::int64_t n) {
  if (second == nullptr) {
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) first[i] = x[i];
    return;
  }
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    first[i] = v;
    second[i] = v;
  }
}

// y = a·x over n elements, in parallel.
void scale_to(const float* x, float* y, float a, std::int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}

// y = a·x + b·z over n elements, in parallel.
void weighted_sum(const float* x, float a, const float* z, float b, float* y, std::int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = a * x[i] + b * z[i];
}

// Those of `first` and `second` that are present receive x.
void copy_to_present(const float* x, TensorView first, TensorView second, std::int64_t n) {
  if (!present(first)) std::swap(first, second);
  if (present(first)) copy_to(x, first.data(), present(second) ? second.data() : nullptr, n);
}

constexpr double kMinTau = 0x1p-126, kMaxTau = 0x1p126;

double tau_of(std::string_view op, const Attributes& attrs) {
  const double tau = attrs.get_double(op, "tau");
  // Both weights, τ/√(1+τ²) ≈ τ and 1/√(1+τ²) ≈ 1/τ, are unit scales the kernels read as floats:
  // each must be a positive normal float, which holds exactly for τ in [2^-126, 2^126].
  if (!(tau >= kMinTau && tau <= kMaxTau)) {
    throw Error(fmt::format("{}: tau (the branch-to-skip std ratio) must be in [2^-126, 2^126] "
                            "(so that both weights τ/√(1+τ²) and 1/√(1+τ²) are positive normal "
                            "floats), got {}",
                            op, tau));
  }
  return tau;
}

std::vector<Shape> infer_residual_split(std::span<const Shape* const> in, const Attributes& attrs) {
  tau_of("residual_split", attrs);
  return {*in[0], *in[0]};
}

std::vector<Shape> infer_residual_add(std::span<const Shape* const> in, const Attributes& attrs) {
  tau_of("residual_add", attrs);
  if (*in[0] != *in[1]) {
    throw Error(fmt::format("residual_add: residual {} and skip {} must have the same shape",
                            in[0]->to_string(), in[1]->to_string()));
  }
  return {*in[0]};
}

void unit_scale_residual_split(std::span<const Shape* const>, Attributes& attrs) {
  const ResidualWeights w = residual_weights(tau_of("residual_split", attrs));
  attrs.set("beta_branch", w.branch).set("beta_skip", w.skip);
}

void unit_scale_residual_add(std::span<const Shape* const>, Attributes& attrs) {
  const ResidualWeights w = residual_weights(tau_of("residual_add", attrs));
  attrs.set("alpha_residual", w.branch).set("alpha_skip", w.skip);
}

void residual_split_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes&, const KernelContext&) {
  residual_split_forward(in[0], out[0], out[1]);
}

// Backward inputs: x, branch, skip (all absent: not read), grad_branch, grad_skip.
void residual_split_backward_kernel(std::span<const ConstTensorView> in,
                                    std::span<const TensorView> out, const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  residual_split_backward(in[3], in[4], out[0], scale_of(attrs, "beta_branch"),
                          scale_of(attrs, "beta_skip"));
}

void residual_add_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes& attrs, const KernelContext&) {
  residual_add_forward(in[0], in[1], out[0], scale_of(attrs, "alpha_residual"),
                       scale_of(attrs, "alpha_skip"));
}

// Backward inputs: residual, skip, y (all absent: not read), grad_y. The forward weights are not
// applied here: that is the point of delayed residual scaling (see the header).
void residual_add_backward_kernel(std::span<const ConstTensorView> in,
                                  std::span<const TensorView> out, const Attributes&, const KernelContext&) {
  copy_to_present(in[3].data(), out[0], out[1], in[3].numel());
}

// Scale rules. residual_split's forks are copies of x. Its backward, dx = β_branch·g_b +
// β_skip·g_s, sums two independent terms: the weighted L2 rule, an absent (zero) gradient dropping
// out, zero when both are absent. Backward inputs: x, branch, skip (absent), grad_branch,
// grad_skip.
std::vector<Scale> residual_split_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(0), args.scale(0)};
}

std::vector<Scale> residual_split_backward_scale_rule(const ScaleRuleArgs& args) {
  const auto present_scale = [&](std::size_t i) {
    return args.has_input(i) ? args.scale(i) : Scale::zero();
  };
  return {args.weighted_l2({{args.unit_scale("beta_branch"), present_scale(3)},
                            {args.unit_scale("beta_skip"), present_scale(4)}})};
}

// residual_add: y = α_r·r + α_s·s, a weighted sum of independent terms; its backward copies grad_y
// to both inputs unweighted (delayed residual scaling). Backward inputs: residual, skip, y
// (absent), grad_y.
std::vector<Scale> residual_add_scale_rule(const ScaleRuleArgs& args) {
  return {args.weighted_l2({{args.unit_scale("alpha_residual"), args.scale(0)},
                            {args.unit_scale("alpha_skip"), args.scale(1)}})};
}

std::vector<Scale> residual_add_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.has_output(0) ? args.scale(3) : Scale{},
          args.has_output(1) ? args.scale(3) : Scale{}};
}

}  // namespace

ResidualWeights residual_weights(double tau) {
  const double norm = std::sqrt(1.0 + tau * tau);
  return {tau / norm, 1.0 / norm};
}

void residual_split_forward(ConstTensorView x, TensorView branch, TensorView skip) {
  copy_to_present(x.data(), branch, skip, x.numel());
}

void residual_split_backward(ConstTensorView grad_branch, ConstTensorView grad_skip,
                             TensorView grad_x, float beta_branch, float beta_skip) {
  const std::int64_t n = grad_x.numel();
  float* dx = grad_x.data();
  if (present(grad_branch) && present(grad_skip)) {
    weighted_sum(grad_branch.data(), beta_branch, grad_skip.data(), beta_skip, dx, n);
  } else if (present(grad_branch)) {
    scale_to(grad_branch.data(), dx, beta_branch, n);
  } else if (present(grad_skip)) {
    scale_to(grad_skip.data(), dx, beta_skip, n);
  } else {  // no gradient reached either fork
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) dx[i] = 0.0f;
  }
}

void residual_add_forward(ConstTensorView residual, ConstTensorView skip, TensorView y,
                          float alpha_residual, float alpha_skip) {
  weighted_sum(residual.data(), alpha_residual, skip.data(), alpha_skip, y.data(), y.numel());
}

std::vector<double> transformer_residual_scaling_rule(int layers, double residual_mult,
                                                      double residual_attn_ratio) {
  if (layers < 1) {
    throw Error(fmt::format("transformer_residual_scaling_rule: layers must be >= 1, got {}", layers));
  }
  if (!(residual_mult > 0.0) || !std::isfinite(residual_mult) || !(residual_attn_ratio > 0.0) ||
      !std::isfinite(residual_attn_ratio)) {
    throw Error(fmt::format("transformer_residual_scaling_rule: residual_mult ({}) and "
                            "residual_attn_ratio ({}) must be finite and > 0 (a zero gives "
                            "branches tau = 0, which residual_split/residual_add refuse)",
                            residual_mult, residual_attn_ratio));
  }
  const double ratio_sq = residual_attn_ratio * residual_attn_ratio;
  const double alpha_mlp = residual_mult * std::sqrt(2.0 / (1.0 + ratio_sq));
  const double alpha_attn = residual_attn_ratio * alpha_mlp;
  const int branches = 2 * layers;
  std::vector<double> taus(static_cast<std::size_t>(branches));
  for (int i = 0; i < branches; ++i) {
    const auto attn_before = static_cast<double>((i + 1) / 2);
    const auto mlp_before = static_cast<double>(i / 2);
    const double alpha_branch = i % 2 == 0 ? alpha_attn : alpha_mlp;
    taus[static_cast<std::size_t>(i)] =
        alpha_branch / std::sqrt(static_cast<double>(branches) / 2.0 +
                                 attn_before * alpha_attn * alpha_attn +
                                 mlp_before * alpha_mlp * alpha_mlp);
  }
  return taus;
}

// Neither op reads a forward value in its backward (backward_reads = 0): the gradients depend on
// the incoming gradients only, so x, the forks and the sum can all be freed early.
const OpDef kResidualSplitOp{
    .name = "residual_split",
    .inputs = {"x"},
    .outputs = {"branch", "skip"},
    .attributes = {AttributeSpec::real("tau", kRequired)},
    .scales = {"beta_branch", "beta_skip"},
    .infer_shapes = infer_residual_split,
    .unit_scale = unit_scale_residual_split,
    .kernel = residual_split_kernel,
    .backward_kernel = residual_split_backward_kernel,
    .backward_reads = 0,
    .scale_propagation = residual_split_scale_rule,
    .backward_scale_propagation = residual_split_backward_scale_rule,
    .pointwise = true,
};

const OpDef kResidualAddOp{
    .name = "residual_add",
    .inputs = {"residual", "skip"},
    .attributes = {AttributeSpec::real("tau", kRequired)},
    .scales = {"alpha_residual", "alpha_skip"},
    .infer_shapes = infer_residual_add,
    .unit_scale = unit_scale_residual_add,
    .kernel = residual_add_kernel,
    .backward_kernel = residual_add_backward_kernel,
    .backward_reads = 0,
    .scale_propagation = residual_add_scale_rule,
    .backward_scale_propagation = residual_add_backward_scale_rule,
    .pointwise = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

ResidualSplit residual_split(Value x, double tau) {
  const Value inputs[] = {x};
  const std::vector<Value> outputs = x.graph().apply(kResidualSplitOp, inputs, Attributes{{"tau", tau}});
  return {outputs.at(0), outputs.at(1)};
}

Value residual_add(Value residual, Value skip, double tau) {
  const Value inputs[] = {residual, skip};
  return residual.graph().apply1(kResidualAddOp, inputs, Attributes{{"tau", tau}});
}

}  // namespace unitscale

#include "unitscale/ops/residual.hpp"

#include <cmath>

#include <fmt/format.h>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

double tau_of(std::string_view op, const Attributes& attrs) {
  const double tau = attrs.get_double(op, "tau");
  if (!(tau >= 0.0) || !std::isfinite(tau)) {
    throw Error(fmt::format("{}: tau (the branch-to-skip std ratio) must be finite and >= 0, got {}",
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
  for (const TensorView& grad : out) {
    if (present(grad)) grad.vector() = in[3].vector();
  }
}

const OpDef kResidualSplitBackwardOp{
    .name = "residual_split_backward",
    .inputs = {"x?", "branch?", "skip?", "grad_branch?", "grad_skip?"},
    .output_count = 1,
    .kernel = residual_split_backward_kernel,
};

const OpDef kResidualAddBackwardOp{
    .name = "residual_add_backward",
    .inputs = {"residual?", "skip?", "y?", "grad_y?"},
    .output_count = 2,
    .kernel = residual_add_backward_kernel,
};

}  // namespace

ResidualWeights residual_weights(double tau) {
  const double norm = std::sqrt(1.0 + tau * tau);
  return {tau / norm, 1.0 / norm};
}

void residual_split_forward(ConstTensorView x, TensorView branch, TensorView skip) {
  if (present(branch)) branch.vector() = x.vector();
  if (present(skip)) skip.vector() = x.vector();
}

void residual_split_backward(ConstTensorView grad_branch, ConstTensorView grad_skip,
                             TensorView grad_x, float beta_branch, float beta_skip) {
  if (present(grad_branch) && present(grad_skip)) {
    const std::int64_t n = grad_x.numel();
    const float* gb = grad_branch.data();
    const float* gs = grad_skip.data();
    float* dx = grad_x.data();
#pragma omp parallel for if (n >= kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) dx[i] = beta_branch * gb[i] + beta_skip * gs[i];
  } else if (present(grad_branch)) {
    grad_x.vector() = beta_branch * grad_branch.vector();
  } else if (present(grad_skip)) {
    grad_x.vector() = beta_skip * grad_skip.vector();
  } else {
    grad_x.vector().setZero();
  }
}

void residual_add_forward(ConstTensorView residual, ConstTensorView skip, TensorView y,
                          float alpha_residual, float alpha_skip) {
  const std::int64_t n = y.numel();
  const float* r = residual.data();
  const float* s = skip.data();
  float* out = y.data();
#pragma omp parallel for if (n >= kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = alpha_residual * r[i] + alpha_skip * s[i];
}

std::vector<double> transformer_residual_scaling_rule(int layers, double residual_mult,
                                                      double residual_attn_ratio) {
  if (layers < 1) {
    throw Error(fmt::format("transformer_residual_scaling_rule: layers must be >= 1, got {}", layers));
  }
  if (!(residual_mult >= 0.0) || !std::isfinite(residual_mult) || !(residual_attn_ratio >= 0.0) ||
      !std::isfinite(residual_attn_ratio)) {
    throw Error(fmt::format("transformer_residual_scaling_rule: residual_mult ({}) and "
                            "residual_attn_ratio ({}) must be finite and >= 0",
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
    .output_count = 2,
    .infer_shapes = infer_residual_split,
    .unit_scale = unit_scale_residual_split,
    .kernel = residual_split_kernel,
    .backward = &kResidualSplitBackwardOp,
    .backward_reads = 0,
};

const OpDef kResidualAddOp{
    .name = "residual_add",
    .inputs = {"residual", "skip"},
    .infer_shapes = infer_residual_add,
    .unit_scale = unit_scale_residual_add,
    .kernel = residual_add_kernel,
    .backward = &kResidualAddBackwardOp,
    .backward_reads = 0,
};

}  // namespace unitscale

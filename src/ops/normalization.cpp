#include "unitscale/ops/normalization.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// Below this many elements the OpenMP fork costs more than it saves.
constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

struct RowStats {
  double mean = 0;  // 0 for rms_norm, which does not centre
  double rstd = 1;
};

// Two-pass statistics in double: the centred second pass avoids the cancellation of E[x²] − μ².
template <bool kCenter>
RowStats row_stats(const float* row, std::int64_t d, double eps) {
  RowStats stats;
  const double n = static_cast<double>(d);
  if constexpr (kCenter) {
    double sum = 0;
    for (std::int64_t j = 0; j < d; ++j) sum += row[j];
    stats.mean = sum / n;
  }
  double sum_sq = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const double centred = row[j] - stats.mean;
    sum_sq += centred * centred;
  }
  stats.rstd = 1.0 / std::sqrt(sum_sq / n + eps);
  return stats;
}

template <bool kCenter>
void norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                  double eps, float alpha) {
  const std::int64_t d = x.shape().inner();
  const std::int64_t rows = x.shape().outer();
  const float* w = weight.data();
  const float* b = bias.data();
#pragma omp parallel for if (x.numel() >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x_row = x.data() + r * d;
    float* y_row = y.data() + r * d;
    const RowStats stats = row_stats<kCenter>(x_row, d, eps);
    const auto mean = static_cast<float>(stats.mean);
    const auto scale = static_cast<float>(stats.rstd) * alpha;  // α folded into the normaliser
    for (std::int64_t j = 0; j < d; ++j) {
      float v = (x_row[j] - mean) * scale;
      if (w != nullptr) v *= w[j];
      if (b != nullptr) v += alpha * b[j];
      y_row[j] = v;
    }
  }
}

template <bool kCenter>
void norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                   TensorView grad_x, TensorView grad_weight, TensorView grad_bias, double eps,
                   float beta_x, float beta_weight, float beta_bias) {
  const std::int64_t d = x.shape().inner();
  const std::int64_t rows = x.shape().outer();
  const auto width = static_cast<std::size_t>(d);
  const float* w = weight.data();
  const bool want_weight = present(grad_weight);
  const bool want_bias = present(grad_bias);
  // Parameter gradients sum over all rows: each thread accumulates its rows in double, then the
  // partial sums are merged once.
  std::vector<double> total_weight(want_weight ? width : 0, 0.0);
  std::vector<double> total_bias(want_bias ? width : 0, 0.0);

#pragma omp parallel if (x.numel() >= kParallelThreshold)
  {
    std::vector<double> acc_weight(want_weight ? width : 0, 0.0);
    std::vector<double> acc_bias(want_bias ? width : 0, 0.0);
#pragma omp for
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* x_row = x.data() + r * d;
      const float* g_row = grad_y.data() + r * d;
      const RowStats stats = row_stats<kCenter>(x_row, d, eps);
      double sum_gh = 0;     // Σ ĝ
      double sum_gh_xh = 0;  // Σ ĝ·x̂
      for (std::int64_t j = 0; j < d; ++j) {
        const double x_hat = (x_row[j] - stats.mean) * stats.rstd;
        const double g = g_row[j];
        const double g_hat = w != nullptr ? g * w[j] : g;
        sum_gh += g_hat;
        sum_gh_xh += g_hat * x_hat;
        if (want_weight) acc_weight[static_cast<std::size_t>(j)] += g * x_hat;
        if (want_bias) acc_bias[static_cast<std::size_t>(j)] += g;
      }
      if (!present(grad_x)) continue;
      const double n = static_cast<double>(d);
      const double mean_gh = kCenter ? sum_gh / n : 0.0;
      const double mean_gh_xh = sum_gh_xh / n;
      const double scale = beta_x * stats.rstd;
      float* dx_row = grad_x.data() + r * d;
      for (std::int64_t j = 0; j < d; ++j) {
        const double x_hat = (x_row[j] - stats.mean) * stats.rstd;
        const double g_hat = w != nullptr ? static_cast<double>(g_row[j]) * w[j] : g_row[j];
        dx_row[j] = static_cast<float>(scale * (g_hat - mean_gh - x_hat * mean_gh_xh));
      }
    }
    if (want_weight || want_bias) {
#pragma omp critical(unitscale_norm_param_grad)
      {
        for (std::size_t j = 0; j < acc_weight.size(); ++j) total_weight[j] += acc_weight[j];
        for (std::size_t j = 0; j < acc_bias.size(); ++j) total_bias[j] += acc_bias[j];
      }
    }
  }
  for (std::size_t j = 0; j < total_weight.size(); ++j) {
    grad_weight.data()[j] = static_cast<float>(beta_weight * total_weight[j]);
  }
  for (std::size_t j = 0; j < total_bias.size(); ++j) {
    grad_bias.data()[j] = static_cast<float>(beta_bias * total_bias[j]);
  }
}

// ---- shape inference and the unit-scaling rule ---------------------------------------------

double eps_of(std::string_view op, const Attributes& attrs) {
  const double eps = attrs.get_double(op, "eps", kDefaultNormEps);
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    throw Error(fmt::format("{}: eps must be a finite number >= 0, got {}", op, eps));
  }
  return eps;
}

void check_param(std::string_view op, std::string_view name, const Shape* param, const Shape& x) {
  if (param != nullptr && *param != Shape{x.dim(-1)}) {
    throw Error(fmt::format("{}: {} {} does not match x {}: expected [{}] (the last dimension)", op,
                            name, param->to_string(), x.to_string(), x.dim(-1)));
  }
}

std::vector<Shape> norm_shapes(std::string_view op, std::span<const Shape* const> in,
                               const Attributes& attrs) {
  const Shape& x = *in[0];
  if (x.rank() < 1 || x.dim(-1) < 1) {
    throw Error(fmt::format("{}: x {} must have rank >= 1 and a non-empty last dimension (the "
                            "normalised one)",
                            op, x.to_string()));
  }
  check_param(op, "weight", in[1], x);
  if (in.size() > 2) check_param(op, "bias", in[2], x);
  eps_of(op, attrs);
  return {x};
}

std::vector<Shape> infer_layer_norm(std::span<const Shape* const> in, const Attributes& attrs) {
  return norm_shapes("layer_norm", in, attrs);
}
std::vector<Shape> infer_rms_norm(std::span<const Shape* const> in, const Attributes& attrs) {
  return norm_shapes("rms_norm", in, attrs);
}

// β_w = β_b = B^-½ with B = numel(x)/d rows sharing the affine parameters; α = β_x = 1.
void unit_scale_norm(std::span<const Shape* const> in, Attributes& attrs) {
  const Shape& x = *in[0];
  const double rows = std::max(1.0, static_cast<double>(x.outer()));
  const double beta_param = 1.0 / std::sqrt(rows);
  if (in[1] != nullptr) attrs.set("beta_weight", beta_param);
  if (in.size() > 2 && in[2] != nullptr) attrs.set("beta_bias", beta_param);
}

// ---- kernels -------------------------------------------------------------------------------

void layer_norm_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                       const Attributes& attrs, const KernelContext&) {
  layer_norm_forward(in[0], in[1], in[2], out[0], eps_of("layer_norm", attrs),
                     scale_of(attrs, "alpha"));
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y.
void layer_norm_backward_kernel(std::span<const ConstTensorView> in,
                                std::span<const TensorView> out, const Attributes& attrs, const KernelContext&) {
  layer_norm_backward(in[4], in[0], in[1], out[0], out[1], out[2], eps_of("layer_norm", attrs),
                      scale_of(attrs, "beta_x"), scale_of(attrs, "beta_weight"),
                      scale_of(attrs, "beta_bias"));
}

void rms_norm_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                     const Attributes& attrs, const KernelContext&) {
  rms_norm_forward(in[0], in[1], out[0], eps_of("rms_norm", attrs), scale_of(attrs, "alpha"));
}

// Backward inputs: x, weight, y (absent), grad_y.
void rms_norm_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                              const Attributes& attrs, const KernelContext&) {
  rms_norm_backward(in[3], in[0], in[1], out[0], out[1], eps_of("rms_norm", attrs),
                    scale_of(attrs, "beta_x"), scale_of(attrs, "beta_weight"));
}

const OpDef kLayerNormBackwardOp{
    .name = "layer_norm_backward",
    .inputs = {"x?", "weight?", "bias?", "y?", "grad_y?"},
    .output_count = 3,
    .kernel = layer_norm_backward_kernel,
};

const OpDef kRmsNormBackwardOp{
    .name = "rms_norm_backward",
    .inputs = {"x?", "weight?", "y?", "grad_y?"},
    .output_count = 2,
    .kernel = rms_norm_backward_kernel,
};

}  // namespace

void layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                        TensorView y, double eps, float alpha) {
  norm_forward<true>(x, weight, bias, y, eps, alpha);
}

void layer_norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                         TensorView grad_x, TensorView grad_weight, TensorView grad_bias,
                         double eps, float beta_x, float beta_weight, float beta_bias) {
  norm_backward<true>(grad_y, x, weight, grad_x, grad_weight, grad_bias, eps, beta_x, beta_weight,
                      beta_bias);
}

void rms_norm_forward(ConstTensorView x, ConstTensorView weight, TensorView y, double eps,
                      float alpha) {
  norm_forward<false>(x, weight, ConstTensorView{}, y, eps, alpha);
}

void rms_norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                       TensorView grad_x, TensorView grad_weight, double eps, float beta_x,
                       float beta_weight) {
  norm_backward<false>(grad_y, x, weight, grad_x, grad_weight, TensorView{}, eps, beta_x,
                       beta_weight, 1.0f);
}

// The backward recomputes the row statistics from x (cheap: O(d) per row) instead of keeping
// them, so it reads x and the weight only.
const OpDef kLayerNormOp{
    .name = "layer_norm",
    .inputs = {"x", "weight?", "bias?"},
    .infer_shapes = infer_layer_norm,
    .unit_scale = unit_scale_norm,
    .kernel = layer_norm_kernel,
    .backward = &kLayerNormBackwardOp,
    .backward_reads = 0b011,
};

const OpDef kRmsNormOp{
    .name = "rms_norm",
    .inputs = {"x", "weight?"},
    .infer_shapes = infer_rms_norm,
    .unit_scale = unit_scale_norm,
    .kernel = rms_norm_kernel,
    .backward = &kRmsNormBackwardOp,
    .backward_reads = 0b011,
};

}  // namespace unitscale

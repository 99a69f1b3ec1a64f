#include "unitscale/ops/normalization.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string_view>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::kParallelThreshold;

namespace rows = detail::rows;

// Below this var + eps, the row statistics are recomputed in double (see row_stats).
constexpr double kTinyVariance = 0x1p-100;
// Float multipliers up to this are safe to form and round (FLT_MAX is just below 2^128).
constexpr double kFloatLimit = 0x1p127;

// A double as an unevaluated sum of two floats, for centring in float without losing the bits of a
// large mean (see RowStats).
struct FloatPair {
  float hi = 0, lo = 0;
  explicit FloatPair(double v) : hi(static_cast<float>(v)), lo(static_cast<float>(v - hi)) {}
};

// Row statistics, accumulated in float lanes (and in double across blocks of the row; see
// row_kernels.hpp). Centring is what keeps float accumulation accurate: the sums run over
// c = x − μ̃, whose magnitude is that of the spread, not of the values, so a row like x + 1e4 loses
// nothing (x − μ̃ is exact when x is near μ̃, and μ̃ is held as a float pair). Two cheap passes over
// the row, which then sits in L1 for the output pass:
//   1. μ̃ = x₀ + Σ(x − x₀)/n, shifted by the first element so that the sum does not grow with the
//      offset (an outlying x₀ only makes μ̃ less exact, which step 2 absorbs);
//   2. Σc, Σc² with c = x − μ̃ (and the gradient sums, for the backward), then the corrected
//      two-pass formulas μ = μ̃ + δ, var = Σc²/n − δ² with δ = Σc/n: δ is tiny, so δ² cancels
//      nothing, unlike E[x²] − μ² or a single pass shifted by x₀ alone.
// rms_norm does not centre: pass 1 is skipped and var = mean(x²).
struct RowStats {
  double mean = 0;   // 0 for rms_norm
  double delta = 0;  // μ − μ̃ (the pass-2 sums are relative to μ̃)
  double rstd = 1;
  rows::CentredSums sums;
};

// Passes 1 and 2 in scalar double, for the rare row whose float sums overflow (|x| or |g·x|
// beyond ~1e18) or that holds an Inf or NaN.
template <bool kCenter>
rows::CentredSums centred_sums_in_double(const float* x, const float* g, const float* w,
                                         std::int64_t d, double& estimate) {
  estimate = 0;
  if constexpr (kCenter) {
    for (std::int64_t j = 0; j < d; ++j) estimate += x[j];
    estimate /= static_cast<double>(d);
  }
  rows::CentredSums sums;
  for (std::int64_t j = 0; j < d; ++j) {
    const double c = x[j] - estimate;
    sums.c += c;
    sums.c2 += c * c;
    if (g != nullptr) {
      const double g_hat = w != nullptr ? static_cast<double>(g[j]) * w[j] : g[j];
      sums.gh += g_hat;
      sums.gh_c += g_hat * c;
    }
  }
  return sums;
}

template <bool kCenter>
RowStats row_stats(const rows::KernelTable& kernels, const float* x, const float* g, const float* w,
                   std::int64_t d, double eps) {
  const auto n = static_cast<double>(d);
  double estimate = 0;
  if constexpr (kCenter) estimate = x[0] + kernels.shifted_sum(x, d, x[0]) / n;
  const FloatPair centre(estimate);
  RowStats stats;
  stats.sums = kernels.centred_sums(x, g, w, d, centre.hi, centre.lo);
  if (!std::isfinite(stats.sums.c2 + stats.sums.gh_c)) {
    stats.sums = centred_sums_in_double<kCenter>(x, g, w, d, estimate);
  }
  const auto variance = [&] {
    double var = stats.sums.c2 / n;
    if constexpr (kCenter) {
      stats.delta = stats.sums.c / n;
      stats.mean = estimate + stats.delta;
      var = std::max(0.0, var - stats.delta * stats.delta);
    }
    return var;
  };
  double var = variance();
  // Float squares of |c| < ~1e-19 are subnormal or 0, so when var + eps is that small the float
  // sums are not exact enough (rms_norm of [1e-40] would get var = 0 and, with eps = 0, a rstd of
  // inf instead of 1e40): redo them in double, where squares of floats do not underflow. Above the
  // threshold what float loses is negligible next to var + eps.
  if (var + eps < kTinyVariance) {
    stats.sums = centred_sums_in_double<kCenter>(x, g, w, d, estimate);
    var = variance();
  }
  stats.rstd = 1.0 / std::sqrt(var + eps);
  return stats;
}

// Whether a row's float multipliers would overflow: rstd·|scale| beyond float's range (var + eps
// below ~1e-77, or a large α or β_x). Such rows are computed in double (the *_row_in_double
// functions below), where x̂ = (x − μ)·rstd is exact-ish and a constant row gives x̂ = 0, not
// 0·inf = NaN. rstd = inf (var + eps = 0: eps = 0 and a constant row) gives x̂ = 0·inf = NaN there
// too, which is the value of 0/0.
bool needs_double_row(double rstd, double scale) {
  return rstd * std::max(1.0, std::fabs(scale)) > kFloatLimit;
}

// norm_forward's row kernel in double: y = α·(x̂·w + b).
void norm_forward_row_in_double(const float* x, const float* w, const float* b, float* y,
                                std::int64_t d, const RowStats& stats, double alpha) {
  for (std::int64_t j = 0; j < d; ++j) {
    const double x_hat = (x[j] - stats.mean) * stats.rstd;
    const double affine = (w != nullptr ? x_hat * w[j] : x_hat) + (b != nullptr ? b[j] : 0.0);
    y[j] = static_cast<float>(alpha * affine);
  }
}

// norm_backward's row kernel in double: dx = β_x·rstd·((ĝ − mean ĝ) − x̂·mean(ĝ·x̂)), dw += g·x̂,
// db += g.
void norm_backward_row_in_double(const float* x, const float* g, const float* w, float* dx,
                                 float* dw, float* db, std::int64_t d, const RowStats& stats,
                                 double mean_gh, double mean_gh_xh, double beta_x) {
  for (std::int64_t j = 0; j < d; ++j) {
    const double x_hat = (x[j] - stats.mean) * stats.rstd;
    if (dx != nullptr) {
      const double g_hat = w != nullptr ? static_cast<double>(g[j]) * w[j] : g[j];
      dx[j] = static_cast<float>(beta_x * stats.rstd * ((g_hat - mean_gh) - x_hat * mean_gh_xh));
    }
    if (dw != nullptr) dw[j] += static_cast<float>(g[j] * x_hat);
    if (db != nullptr) db[j] += g[j];
  }
}

template <bool kCenter>
void norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                  double eps, float alpha) {
  const std::int64_t d = x.shape().inner();
  const std::int64_t rows = x.shape().outer();
  if (d == 0) return;  // the statistics read x[0]; the op itself rejects d = 0
  const rows::KernelTable& kernels = rows::kernels();
#pragma omp parallel for if (x.numel() >= kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x_row = x.data() + r * d;
    const RowStats stats = row_stats<kCenter>(kernels, x_row, nullptr, nullptr, d, eps);
    if (needs_double_row(stats.rstd, alpha)) {
      norm_forward_row_in_double(x_row, weight.data(), bias.data(), y.data() + r * d, d, stats,
                                 alpha);
      continue;
    }
    const FloatPair mean(stats.mean);
    rows::NormForwardRow row;
    row.mean_hi = mean.hi;
    row.mean_lo = mean.lo;
    row.scale = static_cast<float>(stats.rstd) * alpha;  // α folded into the normaliser
    row.bias_scale = alpha;
    kernels.norm_forward(x_row, weight.data(), bias.data(), y.data() + r * d, d, row);
  }
}

template <bool kCenter>
void norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                   TensorView grad_x, TensorView grad_weight, TensorView grad_bias, double eps,
                   float beta_x, float beta_weight, float beta_bias) {
  const std::int64_t d = x.shape().inner();
  const std::int64_t rows = x.shape().outer();
  if (d == 0) return;
  const auto width = static_cast<std::size_t>(d);
  const float* w = weight.data();
  const bool want_weight = present(grad_weight);
  const bool want_bias = present(grad_bias);
  const rows::KernelTable& kernels = rows::kernels();
  // Parameter gradients sum over all rows. The rows are cut into a fixed number of chunks (not one
  // per thread, so the result does not depend on the thread count or on which thread finishes
  // first); within a chunk up to kRowsPerFlush rows are added into float sums (a short float sum
  // loses little) and then moved into the chunk's double sums, and the chunks are added in order.
  // Float sums over all B rows would lose precision; double sums updated every row would cost the
  // kernel twice the memory traffic.
  constexpr std::int64_t kRowsPerFlush = 16;
  constexpr std::int64_t kParamGradChunks = 32;
  const std::int64_t chunks = std::min(rows, kParamGradChunks);
  const auto chunk_count = static_cast<std::size_t>(chunks);
  std::vector<double> chunk_weight(want_weight ? chunk_count * width : 0, 0.0);
  std::vector<double> chunk_bias(want_bias ? chunk_count * width : 0, 0.0);

#pragma omp parallel if (x.numel() >= kParallelThreshold)
  {
    std::vector<float> part_weight(want_weight ? width : 0, 0.0f);
    std::vector<float> part_bias(want_bias ? width : 0, 0.0f);
    auto flush = [](std::vector<float>& part, double* acc) {
      for (std::size_t j = 0; j < part.size(); ++j) acc[j] += part[j];
      std::fill(part.begin(), part.end(), 0.0f);
    };
#pragma omp for schedule(static)
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
      double* acc_weight = chunk_weight.data() + (want_weight ? chunk * d : 0);
      double* acc_bias = chunk_bias.data() + (want_bias ? chunk * d : 0);
      std::int64_t pending = 0;  // rows in the float sums
      for (std::int64_t r = rows * chunk / chunks; r < rows * (chunk + 1) / chunks; ++r) {
        const float* x_row = x.data() + r * d;
        const float* g_row = grad_y.data() + r * d;
        const RowStats stats = row_stats<kCenter>(kernels, x_row, g_row, w, d, eps);
        // Σĝ·x̂ = rstd·Σĝ·(c − δ): the pass-2 sums are centred on μ̃, not μ.
        const double n = static_cast<double>(d);
        const double sum_gh_xh = stats.rstd * (stats.sums.gh_c - stats.delta * stats.sums.gh);
        if (needs_double_row(stats.rstd, beta_x)) {
          norm_backward_row_in_double(
              x_row, g_row, w, present(grad_x) ? grad_x.data() + r * d : nullptr,
              want_weight ? part_weight.data() : nullptr, want_bias ? part_bias.data() : nullptr, d,
              stats, kCenter ? stats.sums.gh / n : 0.0, sum_gh_xh / n, beta_x);
        } else {
          const FloatPair mean(stats.mean);
          rows::NormBackwardRow row;
          row.mean_hi = mean.hi;
          row.mean_lo = mean.lo;
          row.rstd = static_cast<float>(stats.rstd);
          row.dx_scale = static_cast<float>(beta_x * stats.rstd);
          row.mean_gh = kCenter ? static_cast<float>(stats.sums.gh / n) : 0.0f;
          row.mean_gh_xh = static_cast<float>(sum_gh_xh / n);
          kernels.norm_backward(x_row, g_row, w, present(grad_x) ? grad_x.data() + r * d : nullptr,
                                want_weight ? part_weight.data() : nullptr,
                                want_bias ? part_bias.data() : nullptr, d, row);
        }
        if (++pending == kRowsPerFlush) {
          flush(part_weight, acc_weight);
          flush(part_bias, acc_bias);
          pending = 0;
        }
      }
      flush(part_weight, acc_weight);
      flush(part_bias, acc_bias);
    }
  }
  std::vector<double> total_weight(want_weight ? width : 0, 0.0);
  std::vector<double> total_bias(want_bias ? width : 0, 0.0);
  for (std::size_t chunk = 0; chunk < chunk_count; ++chunk) {
    for (std::size_t j = 0; j < total_weight.size(); ++j) total_weight[j] += chunk_weight[chunk * width + j];
    for (std::size_t j = 0; j < total_bias.size(); ++j) total_bias[j] += chunk_bias[chunk * width + j];
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

// ---- scale rules -----------------------------------------------------------------------------

// x̂ = (x − μ)·rstd with rstd = 1/√(var + eps) and var ≈ s_x² for unit data: x̂ is scale-invariant
// (rms 1) while s_x² ≥ eps, and ≈ x·s_x/√eps where eps dominates (within √2 of the exact
// s_x/√(s_x² + eps) at the crossover, and exactly 1 above it, so power-of-two scales stay exact).
// x̂'s rms for an x of scale s_x; a static-zero x gives x̂ = 0.
double normalised_rms(const Scale& s_x, double eps) {
  if (s_x.is_zero()) return 0.0;
  const double root_eps = std::sqrt(eps);
  return s_x.value() >= root_eps ? 1.0 : s_x.value() / root_eps;
}

// y = α·(x̂·w + b): degree 0 in x (x̂ has rms 1, see normalised_rms), degree 1 in the weight, and
// the bias an independent term: the weighted L2 rule over x̂·w and b (an absent weight is 1, an
// absent bias drops out).
std::vector<Scale> norm_scale_rule(std::string_view op, const ScaleRuleArgs& args, bool has_bias) {
  const double alpha = args.unit_scale("alpha");
  const Scale weight = args.has_input(1) ? args.scale(1) : Scale{};
  const double x_hat = normalised_rms(args.scale(0), eps_of(op, args.attrs));
  const Scale bias = has_bias && args.has_input(2) ? args.scale(2) : Scale::zero();
  return {args.weighted_l2({{alpha * x_hat, weight}, {alpha, bias}})};
}

// Backward inputs: x, weight, [bias (absent),] y (absent), grad_y; `inputs` forward inputs.
// - dx = β_x·rstd·((ĝ − mean ĝ) − x̂·mean(ĝ·x̂)) with ĝ = g·w: degree 1 in g and w, and rstd ≈
//   1/s_x (degree −1 in x) or 1/√eps where eps dominates;
// - dw = β_w·Σ_rows g·x̂ and db = β_b·Σ_rows g: sums over the rows = numel(x)/d that share the
//   parameters, fan_in of that count, dw times x̂'s rms.
std::vector<Scale> norm_backward_scale_rule(std::string_view op, const ScaleRuleArgs& args,
                                            std::size_t inputs) {
  const Scale& g = args.scale(inputs + 1);
  const Scale& s_x = args.scale(0);
  const double eps = eps_of(op, args.attrs);
  const double beta_x = args.unit_scale("beta_x");
  const Scale weight = args.has_input(1) ? args.scale(1) : Scale{};
  std::vector<Scale> grads(inputs);
  if (args.has_output(0)) {
    if (!s_x.is_zero() && s_x.value() >= std::sqrt(eps)) {
      grads[0] = args.p2(beta_x) * g * weight / s_x;
    } else if (eps > 0) {
      grads[0] = args.p2(beta_x / std::sqrt(eps)) * g * weight;
    }  // else a static-zero x with eps = 0: dx is 0/0
  }
  const Shape& x_shape = args.input_shape(0);
  const auto rows = static_cast<double>(x_shape.outer());
  if (args.has_output(1)) {
    const double x_hat = normalised_rms(s_x, eps);
    grads[1] =
        x_hat == 0 ? Scale::zero() : args.fan_in(rows, args.unit_scale("beta_weight") * x_hat) * g;
  }
  if (inputs > 2 && args.has_output(2)) {
    grads[2] = args.fan_in(rows, args.unit_scale("beta_bias")) * g;
  }
  return grads;
}

std::vector<Scale> layer_norm_scale_rule(const ScaleRuleArgs& args) {
  return norm_scale_rule("layer_norm", args, true);
}
std::vector<Scale> layer_norm_backward_scale_rule(const ScaleRuleArgs& args) {
  return norm_backward_scale_rule("layer_norm", args, 3);
}
std::vector<Scale> rms_norm_scale_rule(const ScaleRuleArgs& args) {
  return norm_scale_rule("rms_norm", args, false);
}
std::vector<Scale> rms_norm_backward_scale_rule(const ScaleRuleArgs& args) {
  return norm_backward_scale_rule("rms_norm", args, 2);
}

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
    .attributes = {AttributeSpec::real("eps")},
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_layer_norm,
    .unit_scale = unit_scale_norm,
    .kernel = layer_norm_kernel,
    .backward_kernel = layer_norm_backward_kernel,
    .backward_reads = 0b011,
    .scale_propagation = layer_norm_scale_rule,
    .backward_scale_propagation = layer_norm_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
};

const OpDef kRmsNormOp{
    .name = "rms_norm",
    .inputs = {"x", "weight?"},
    .attributes = {AttributeSpec::real("eps")},
    .scales = {"alpha", "beta_x", "beta_weight"},
    .infer_shapes = infer_rms_norm,
    .unit_scale = unit_scale_norm,
    .kernel = rms_norm_kernel,
    .backward_kernel = rms_norm_backward_kernel,
    .backward_reads = 0b011,
    .scale_propagation = rms_norm_scale_rule,
    .backward_scale_propagation = rms_norm_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value layer_norm(Value x, const LayerNormOptions& options) {
  const Value inputs[] = {x, options.weight, options.bias};
  return x.graph().apply1(kLayerNormOp, inputs, Attributes{{"eps", options.eps}});
}

Value rms_norm(Value x, const RmsNormOptions& options) {
  const Value inputs[] = {x, options.weight};
  return x.graph().apply1(kRmsNormOp, inputs, Attributes{{"eps", options.eps}});
}

}  // namespace unitscale

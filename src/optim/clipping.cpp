#include "unitscale/optim/clipping.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// Blocks of this many elements are summed sequentially, then the block sums in order: a fixed
// order whatever the thread count.
constexpr std::int64_t kBlock = 1 << 14;

std::vector<Shape> infer_sum_of_squares(std::span<const Shape* const> in, const Attributes& attrs) {
  const double scale = attrs.get_double("sum_of_squares", "scale", 1.0);
  if (!std::isfinite(scale)) {
    throw Error(fmt::format("sum_of_squares: scale must be finite, got {}", scale));
  }
  if (in[1] != nullptr && in[1]->numel() != 1) {
    throw Error(fmt::format("sum_of_squares: partial must have one element, got shape {}",
                            in[1]->to_string()));
  }
  return {Shape{1}};
}

void sum_of_squares_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes& attrs, const KernelContext&) {
  const double scale = attrs.get_double("sum_of_squares", "scale", 1.0);
  const float* x = in[0].data();
  const std::int64_t n = in[0].numel();
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> block_sums(static_cast<std::size_t>(blocks));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    double sum = 0.0;
    const std::int64_t end = std::min(n, (b + 1) * kBlock);
    for (std::int64_t i = b * kBlock; i < end; ++i) {
      const double v = static_cast<double>(x[i]);
      sum += v * v;
    }
    block_sums[static_cast<std::size_t>(b)] = sum;
  }
  double total = present(in[1]) ? static_cast<double>(in[1].data()[0]) : 0.0;
  double squares = 0.0;
  for (const double s : block_sums) squares += s;
  total += scale * scale * squares;
  out[0].data()[0] = static_cast<float>(total);
}

// y = partial + c² · Σ x² over the N elements of x (c the "scale" attribute). The squares are
// positive, so they add coherently: Σ x² ≈ N · s_x² (not √N, as for independent signed terms),
// which makes y homogeneous of degree 2 in x: p2(c² · N) · s_x² (an empty x counts as N = 1). The
// partial sum is positive too, so the two parts add linearly: s_y = m · p2(1 + small / m) with m
// the larger part's scale (a static zero part drops out).
std::vector<Scale> sum_of_squares_scale_rule(const ScaleRuleArgs& args) {
  const double c = std::abs(args.attrs.get_double("sum_of_squares", "scale", 1.0));
  const double n = std::max(static_cast<double>(args.input_shape(0).numel()), 1.0);
  const Scale& s = args.scale(0);
  Scale squares = Scale::zero();
  if (c > 0) {
    const double factor = c * c * n;
    // c² · N out of double's range (c beyond 1e±150): round √ of it once and square that.
    const Scale grown = std::isfinite(factor) && factor > 0 ? args.p2(factor)
                                                            : args.fan_in(n, c) * args.fan_in(n, c);
    squares = grown * s * s;
  }
  if (!args.has_input(1)) return {squares};
  const Scale& partial = args.scale(1);
  const Scale larger = max_scale({squares, partial});
  if (larger.is_zero()) return {Scale::zero()};
  const Scale& smaller = larger == squares ? partial : squares;
  return {larger * args.p2(1.0 + smaller.value() / larger.value())};
}

double max_norm_of(const Attributes& attrs) {
  const double max_norm = attrs.get_double("clip_coefficient", "max_norm");
  if (!(std::isfinite(max_norm) && max_norm > 0.0)) {
    throw Error(fmt::format("clip_coefficient: max_norm must be finite and > 0, got {}", max_norm));
  }
  return max_norm;
}

std::vector<Shape> infer_clip_coefficient(std::span<const Shape* const> in,
                                          const Attributes& attrs) {
  max_norm_of(attrs);
  if (in[0]->numel() != 1) {
    throw Error(fmt::format("clip_coefficient: sum_of_squares must have one element, got shape {}",
                            in[0]->to_string()));
  }
  return {Shape{1}, Shape{1}};
}

void clip_coefficient_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs, const KernelContext&) {
  const double norm = std::sqrt(static_cast<double>(in[0].data()[0]));
  const double coefficient = std::isfinite(norm)
                                 ? std::min(1.0, max_norm_of(attrs) / (norm + 1e-6))
                                 : std::numeric_limits<double>::quiet_NaN();
  out[0].data()[0] = static_cast<float>(coefficient);
  out[1].data()[0] = static_cast<float>(norm);
}

// coefficient = min(1, max_norm / norm): at most 1, and 1 unless clipping: scale 1, like any
// multiplier the update ops read. norm = √sum_of_squares: degree ½ in its input, sqrt's rule.
std::vector<Scale> clip_coefficient_scale_rule(const ScaleRuleArgs& args) {
  return {Scale{}, args.sqrt(args.scale(0))};
}

}  // namespace

const OpDef kSumOfSquaresOp{
    .name = "sum_of_squares",
    .inputs = {"x", "partial?"},
    .attributes = {AttributeSpec::real("scale")},
    .infer_shapes = infer_sum_of_squares,
    .kernel = sum_of_squares_kernel,
    .scale_propagation = sum_of_squares_scale_rule,
};

const OpDef kClipCoefficientOp{
    .name = "clip_coefficient",
    .inputs = {"sum_of_squares"},
    .outputs = {"coefficient", "norm"},
    .attributes = {AttributeSpec::real("max_norm", kRequired)},
    .infer_shapes = infer_clip_coefficient,
    .kernel = clip_coefficient_kernel,
    .scale_propagation = clip_coefficient_scale_rule,
};

Value global_sum_of_squares(std::span<const Value> gradients, double gradient_scale,
                            std::string_view caller) {
  Value partial;
  for (const Value& g : gradients) {
    if (!g.present()) continue;
    const Value inputs[] = {g, partial};
    partial = g.graph().apply1(kSumOfSquaresOp, inputs, {{"scale", gradient_scale}});
  }
  if (!partial.present()) {
    throw Error(fmt::format("{}: no gradient to sum (every gradient is absent)", caller));
  }
  return partial;
}

GlobalNormClip clip_by_global_norm(std::span<const Value> gradients, double max_norm,
                                   double gradient_scale) {
  if (!(std::isfinite(max_norm) && max_norm > 0.0)) {
    throw Error(fmt::format("clip_by_global_norm: max_norm must be finite and > 0, got {}",
                            max_norm));
  }
  const Value partial = global_sum_of_squares(gradients, gradient_scale, "clip_by_global_norm");
  const Value inputs[] = {partial};
  const std::vector<Value> outputs =
      partial.graph().apply(kClipCoefficientOp, inputs, {{"max_norm", max_norm}});
  return {outputs[0], outputs[1]};
}

}  // namespace unitscale

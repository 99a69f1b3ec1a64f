#include "unitscale/ops/softmax.hpp"

#include <fmt/format.h>

#include <cmath>

#include "ops/pointwise_common.hpp"
#include "ops/scale_rule_helpers.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"
#include <string>

namespace unitscale {

void softmax_forward(ConstTensorView x, TensorView y, float mult, float alpha) {
  const std::int64_t rows = y.shape().outer(), n = y.shape().inner();
  if (n == 0) return;
  const float* in = x.data();
  float* out = y.data();
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
#pragma omp parallel for schedule(static) if (y.numel() > detail::kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * n;
    float* yr = out + r * n;
    // Shifting by the row's largest m·x makes every exponent ≤ 0. The shift is subtracted before
    // multiplying by m: x − x_top is exact for the entries that matter, where m·x − max(m·x)
    // would carry the rounding error of m·x, large for large logits.
    const float top = mult >= 0 ? kernels.max(xr, n) : kernels.min(xr, n);
    const double sum = kernels.exp_sum(xr, yr, n, mult, top);
    kernels.scale(yr, n, static_cast<float>(alpha / sum));
  }
}

void softmax_backward(ConstTensorView grad_y, ConstTensorView y, TensorView grad_x, float mult,
                      float alpha, float beta) {
  if (!present(grad_x)) return;
  const std::int64_t rows = grad_x.shape().outer(), n = grad_x.shape().inner();
  if (n == 0) return;
  const float* g = grad_y.data();
  const float* out = y.data();
  float* dx = grad_x.data();
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  // dx = β·m·s⊙(g − Σ s·g) with s = y/α.
  const float factor = beta * mult / alpha;
#pragma omp parallel for schedule(static) if (grad_x.numel() > detail::kParallelThreshold)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* yr = out + r * n;
    const auto mean_g = static_cast<float>(kernels.dot(yr, g + r * n, n) / alpha);
    kernels.softmax_vjp(yr, g + r * n, dx + r * n, n, factor, mean_g);
  }
}

namespace {

void check_rank(const Shape& x) {
  if (x.rank() < 1 || x.inner() == 0) {
    throw Error(fmt::format("softmax: x {} must have rank >= 1 and a non-empty last dimension",
                            x.to_string()));
  }
}

std::vector<Shape> infer_softmax(std::span<const Shape* const> in, const Attributes& attrs) {
  check_rank(*in[0]);
  detail::mult_of("softmax", attrs);
  return {*in[0]};
}

void unit_scale_softmax(std::span<const Shape* const> in, Attributes& attrs) {
  check_rank(*in[0]);
  const double mult = detail::mult_of("softmax", attrs);
  const auto n = static_cast<double>(in[0]->inner());
  const double a = 1.0 / (1.0 + 4.0 / (mult * mult));
  const std::vector<double> scales = detail::constrain(
      "softmax", attrs,
      {log_interpolate(a, n, std::sqrt(n)), log_interpolate(a, n / mult, std::sqrt(n / mult))});
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
}

float mult_attr(const Attributes& attrs) {
  return static_cast<float>(attrs.get_double("softmax", "mult", 1.0));
}

void softmax_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs, const KernelContext&) {
  softmax_forward(in[0], out[0], mult_attr(attrs), scale_of(attrs, "alpha"));
}

// Backward inputs: x (absent), y, grad_y.
void softmax_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs, const KernelContext&) {
  softmax_backward(in[2], in[1], out[0], mult_attr(attrs), scale_of(attrs, "alpha"),
                   scale_of(attrs, "beta_x"));
}

// Scale rules. y = α·s with s = softmax(m·x) over the n entries of a row: the input's scale reaches
// y only through the temperature, m·s_x for unit data, which sets where rms(s) lies between 1/n
// (a flat row) and 1/√n (one-hot). unit_scale_softmax's α = LI(a, n, √n), a = 1/(1 + 4/m²), is
// the reciprocal of rms(s) across that range for unit x (n for flat rows, √n for one-hot, both
// exact); the rule evaluates it at the effective temperature m·s_x, so that rms(y) ≈
// α / LI(a(m·s_x), n, √n), which is exactly 1 on a unit-scaled graph with s_x = 1 (the same
// doubles divided). The end points are taken exactly (LI's exp and log are a few ulps off, which
// rounding down would halve): a static-zero x gives a flat row, y = α/n.
std::vector<Scale> softmax_scale_rule(const ScaleRuleArgs& args) {
  const auto n = static_cast<double>(args.input_shape(0).inner());
  const double mult = detail::mult_of("softmax", args.attrs) * args.scale(0).value();
  const double a = 1.0 / (1.0 + 4.0 / (mult * mult));  // m·s_x = 0: 4/0 = inf, a = 0
  const double inverse_rms = a == 0   ? n
                             : a == 1 ? std::sqrt(n)
                                      : log_interpolate(a, n, std::sqrt(n));
  return {args.p2(args.unit_scale("alpha") / inverse_rms)};
}

// dx = β·m·s⊙(g − Σ s·g) with s = y/α: degree 1 in g and (but for the centring) in y, whose rms
// s_y tracks, so s_dx = (β·m/α)·s_y·s_g. The centring removes little unless a row is near one-hot;
// a saturated softmax's gradient vanishes, which no rule on y's scale can see (the scale is then
// an overestimate, harmless). Backward inputs: x (absent), y, grad_y.
std::vector<Scale> softmax_backward_scale_rule(const ScaleRuleArgs& args) {
  const double factor =
      args.unit_scale("beta_x") * detail::mult_of("softmax", args.attrs) / args.unit_scale("alpha");
  return {args.p2(factor) * args.scale(1) * args.scale(2)};
}

}  // namespace

const OpDef kSoftmaxOp{
    .name = "softmax",
    .inputs = {"x"},
    .attributes = {AttributeSpec::real("mult"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x"},
    .infer_shapes = infer_softmax,
    .unit_scale = unit_scale_softmax,
    .kernel = softmax_kernel,
    .backward_kernel = softmax_backward_kernel,
    .backward_reads = 0b10,
    .scale_propagation = softmax_scale_rule,
    .backward_scale_propagation = softmax_backward_scale_rule,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value softmax(Value x, const SoftmaxOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kSoftmaxOp, inputs,
      {{"mult", options.mult}, {"constraint", options.constraint}});
}

}  // namespace unitscale

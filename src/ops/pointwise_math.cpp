// The pointwise math ops exp, log, sqrt and where: their kernels, shape inference and OpDefs,
// forward and backward.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/pointwise_common.hpp"
#include "ops/primitives_common.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

using detail::for_row_pieces;
using detail::kParallelThreshold;
using detail::map_binary;
using detail::map_unary;
using detail::zero_rows;

void fill_zero(float* to, std::int64_t n) { zero_rows(to, 0, 1, n); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

void where_forward(ConstTensorView cond, ConstTensorView a, ConstTensorView b, TensorView y) {
  const float* c = cond.data();
  const float* pa = a.data();
  const float* pb = b.data();
  float* out = y.data();
  const std::int64_t n = y.numel();
  // Both operands are loaded before the select, so the loop is a vector blend, not a branch.
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float av = pa[i], bv = pb[i];
    out[i] = c[i] != 0.0f ? av : bv;
  }
}

void where_backward(ConstTensorView cond, ConstTensorView grad_y, TensorView grad_a,
                    TensorView grad_b) {
  const float* c = cond.data();
  const float* g = grad_y.data();
  const std::int64_t n = grad_y.numel();
  if (present(grad_a) && present(grad_b)) {  // one pass for both
    float* da = grad_a.data();
    float* db = grad_b.data();
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) {
      const bool take = c[i] != 0.0f;
      const float gv = g[i];
      da[i] = take ? gv : 0.0f;
      db[i] = take ? 0.0f : gv;
    }
  } else if (present(grad_a)) {
    map_binary(c, g, grad_a.data(), n, [](float cv, float gv) { return cv != 0.0f ? gv : 0.0f; });
  } else if (present(grad_b)) {
    map_binary(c, g, grad_b.data(), n, [](float cv, float gv) { return cv != 0.0f ? 0.0f : gv; });
  }
}

// ---------------------------------------------------------------------------------------------
// Shape inference and the OpDefs
// ---------------------------------------------------------------------------------------------

namespace {

std::vector<Shape> same_shape(std::span<const Shape* const> in, const Attributes&) {
  return {*in[0]};
}

// --- exp, log, sqrt --------------------------------------------------------------------------

// The row kernels' vector exp (within about 1 ulp, subnormal results included), in pieces over
// the threads; glibc's scalar expf would make this op compute-bound.
void exp_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  const float* x = in[0].data();
  float* y = out[0].data();
  for_row_pieces(1, in[0].numel(), [&](std::int64_t, std::int64_t begin, std::int64_t n) {
    kernels.exp_sum(x + begin, y + begin, n, 1.0f, 0.0f);
  });
}
void log_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  map_unary(in[0].data(), out[0].data(), in[0].numel(), [](float v) { return std::log(v); });
}
void sqrt_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes&, const KernelContext&) {
  map_unary(in[0].data(), out[0].data(), in[0].numel(), [](float v) { return std::sqrt(v); });
}

// Backward inputs: x, y, grad_y (exp and sqrt read y, log reads x).
void exp_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[1].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float y, float g) { return g * y; });
}
void log_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[0].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float x, float g) { return g / x; });
}
void sqrt_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[1].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float y, float g) { return 0.5f * g / y; });
}

// Scale rules of exp, log and sqrt.

// y = exp(x) is not homogeneous: x's scale cannot be factored out of it. exp of O(1) data is O(1)
// (rms e for unit normals), and larger inputs leave fp32's range in the kernel itself, so y gets
// scale 1, as in Scalify.
std::vector<Scale> exp_scale_rule(const ScaleRuleArgs&) { return {Scale{}}; }

// grad_x = grad_y · y: degree 1 in both. Backward inputs: x (absent), y, grad_y.
std::vector<Scale> exp_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(2) * args.scale(1)};
}

// y = log(x) = log(s_x) + log(d) for x = d · s_x: the input's scale reaches y additively, not as a
// factor. |log d| is O(1) for unit data (rms ≈ 1.3 for |normal| data), so y's magnitude is about
// √(1 + (ln s_x)²): 1 for s_x = 1 (Scalify's scale 1), ≈ |ln s_x| for scales far from 1, which
// scale 1 would leave in the data (≈ 21 for s_x = 2^30). log(0) = −∞: a static zero gets 1.
std::vector<Scale> log_scale_rule(const ScaleRuleArgs& args) {
  const Scale& s = args.scale(0);
  if (s.is_zero()) return {Scale{}};
  const double ln_s = s.is_power_of_two() ? s.exponent() * std::numbers::ln2 : std::log(s.value());
  return {args.p2(std::sqrt(1.0 + ln_s * ln_s))};
}

// grad_x = grad_y / x: degree 1 in grad_y, −1 in x. Backward inputs: x, y (absent), grad_y.
std::vector<Scale> log_backward_scale_rule(const ScaleRuleArgs& args) {
  if (args.scale(0).is_zero()) return {Scale{}};
  return {args.scale(2) / args.scale(0)};
}

// y = √x: homogeneous of degree 1/2 in x.
std::vector<Scale> sqrt_scale_rule(const ScaleRuleArgs& args) { return {args.sqrt(args.scale(0))}; }

// grad_x = ½ · grad_y / y: degree 1 in grad_y, −1 in y, times the constant ½. Backward inputs: x
// (absent), y, grad_y.
std::vector<Scale> sqrt_backward_scale_rule(const ScaleRuleArgs& args) {
  if (args.scale(1).is_zero()) return {Scale{}};
  return {args.p2(0.5) * args.scale(2) / args.scale(1)};
}

// --- where -----------------------------------------------------------------------------------

std::vector<Shape> infer_where(std::span<const Shape* const> in, const Attributes&) {
  if (*in[0] != *in[1] || *in[1] != *in[2]) {
    throw Error(
        fmt::format("where: cond {}, a {} and b {} must have equal shapes (no "
                    "broadcasting)",
                    in[0]->to_string(), in[1]->to_string(), in[2]->to_string()));
  }
  return {*in[0]};
}

void where_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                  const Attributes&, const KernelContext&) {
  where_forward(in[0], in[1], in[2], out[0]);
}

// y = cond ? a : b picks elements of a or b: Scalify's select rule, the larger of their scales.
// cond is a mask, not a magnitude: its scale plays no part.
std::vector<Scale> where_scale_rule(const ScaleRuleArgs& args) {
  return {max_scale({args.scale(1), args.scale(2)})};
}

// grad_a and grad_b are grad_y masked: each keeps grad_y's scale; cond has no gradient. Backward
// inputs: cond, a, b, y (the last three absent), grad_y.
std::vector<Scale> where_backward_scale_rule(const ScaleRuleArgs& args) {
  return {Scale{}, args.scale(4), args.scale(4)};
}

// Backward inputs: cond, a (absent), b (absent), y (absent), grad_y. Outputs: grad_cond, grad_a,
// grad_b.
void where_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes&, const KernelContext&) {
  where_backward(in[0], in[4], out[1], out[2]);
  // cond selects, it is not differentiable; should a caller ask anyway, its derivative is zero
  // almost everywhere.
  if (present(out[0])) fill_zero(out[0].data(), out[0].numel());
}

}  // namespace

// Bit i of backward_reads: forward value i, counting inputs then outputs.
const OpDef kExpOp{.name = "exp",
                   .inputs = {"x"},
                   .infer_shapes = same_shape,
                   .kernel = exp_kernel,
                   .backward_kernel = exp_backward_kernel,
                   .backward_reads = 0b10,
                   .scale_propagation = exp_scale_rule,
                   .backward_scale_propagation = exp_backward_scale_rule,
                   .pointwise = true};
const OpDef kLogOp{.name = "log",
                   .inputs = {"x"},
                   .infer_shapes = same_shape,
                   .kernel = log_kernel,
                   .backward_kernel = log_backward_kernel,
                   .backward_reads = 0b01,
                   .scale_propagation = log_scale_rule,
                   .backward_scale_propagation = log_backward_scale_rule,
                   .pointwise = true};
const OpDef kSqrtOp{.name = "sqrt",
                    .inputs = {"x"},
                    .infer_shapes = same_shape,
                    .kernel = sqrt_kernel,
                    .backward_kernel = sqrt_backward_kernel,
                    .backward_reads = 0b10,
                    .scale_propagation = sqrt_scale_rule,
                    .backward_scale_propagation = sqrt_backward_scale_rule,
                    .pointwise = true};
const OpDef kWhereOp{.name = "where",
                     .inputs = {"cond", "a", "b"},
                     .infer_shapes = infer_where,
                     .kernel = where_kernel,
                     .backward_kernel = where_backward_kernel,
                     .backward_reads = 0b0001,
                     .nondifferentiable_inputs = 0b001,  // cond
                     .scale_propagation = where_scale_rule,
                     .backward_scale_propagation = where_backward_scale_rule,
                     .pointwise = true};

// ------------------------------------------------------------------------------------------------
// Builders

Value exp(Value x) {
  const Value inputs[] = {x};
  return x.graph().apply1(kExpOp, inputs, {});
}

Value log(Value x) {
  const Value inputs[] = {x};
  return x.graph().apply1(kLogOp, inputs, {});
}

Value sqrt(Value x) {
  const Value inputs[] = {x};
  return x.graph().apply1(kSqrtOp, inputs, {});
}

Value where(Value cond, Value a, Value b) {
  const Value inputs[] = {cond, a, b};
  return cond.graph().apply1(kWhereOp, inputs, {});
}

}  // namespace unitscale

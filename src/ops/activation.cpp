#include "unitscale/ops/activation.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>

#include "ops/activation_kernels.hpp"
#include "ops/pointwise_common.hpp"
#include "ops/scale_rule_helpers.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::for_each_share;
using detail::map_binary;
using detail::map_unary;

// The gelu / silu / silu_glu kernels for the instruction set the CPU supports (see
// activation_kernels.inl); the bulk conversions' choice, which tests may force.
const detail::activation::KernelTable& kernels() {
  using namespace detail::activation;
  return detail::table_for_active_level(kAvx512Kernels, kAvx2Kernels, kGenericKernels,
                                        kGenericKernels);
}

}  // namespace

std::string_view gelu_approximation_name(GeluApproximation approximation) {
  return approximation == GeluApproximation::kTanh ? "tanh" : "none";
}

GeluApproximation gelu_approximation_from_name(std::string_view name) {
  if (name == "none") return GeluApproximation::kNone;
  if (name == "tanh") return GeluApproximation::kTanh;
  throw Error(fmt::format("gelu: unknown approximation '{}' (expected none or tanh)", name));
}

const EnumType& EnumAttribute<GeluApproximation>::type() {
  return enum_type<GeluApproximation, gelu_approximation_name, gelu_approximation_from_name>(
      "gelu approximation");
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

// relu is a compare and a select, which the compiler vectorises by itself: no SIMD kernel needed.
void relu_forward(ConstTensorView x, TensorView y) {
  map_unary(x.data(), y.data(), y.numel(), [](float v) { return v > 0.0f ? v : 0.0f; });
}

void relu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x) {
  if (!present(grad_x)) return;
  map_binary(grad_y.data(), x.data(), grad_x.data(), grad_x.numel(),
             [](float g, float v) { return v > 0.0f ? g : 0.0f; });
}

void gelu_forward(ConstTensorView x, TensorView y, float mult, GeluApproximation approximation,
                  float alpha) {
  const auto kernel = approximation == GeluApproximation::kTanh ? kernels().gelu_tanh_forward
                                                                : kernels().gelu_forward;
  const float* xs = x.data();
  float* ys = y.data();
  for_each_share(y.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(xs + begin, ys + begin, static_cast<std::size_t>(count), mult, alpha);
  });
}

void gelu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x, float mult,
                   GeluApproximation approximation, float beta) {
  if (!present(grad_x)) return;
  const auto kernel = approximation == GeluApproximation::kTanh ? kernels().gelu_tanh_backward
                                                                : kernels().gelu_backward;
  const float* g = grad_y.data();
  const float* xs = x.data();
  float* dx = grad_x.data();
  for_each_share(grad_x.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(g + begin, xs + begin, dx + begin, static_cast<std::size_t>(count), mult, beta);
  });
}

void silu_forward(ConstTensorView x, TensorView y, float mult, float alpha) {
  const auto kernel = kernels().silu_forward;
  const float* xs = x.data();
  float* ys = y.data();
  for_each_share(y.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(xs + begin, ys + begin, static_cast<std::size_t>(count), mult, alpha);
  });
}

void silu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x, float mult,
                   float beta) {
  if (!present(grad_x)) return;
  const auto kernel = kernels().silu_backward;
  const float* g = grad_y.data();
  const float* xs = x.data();
  float* dx = grad_x.data();
  for_each_share(grad_x.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(g + begin, xs + begin, dx + begin, static_cast<std::size_t>(count), mult, beta);
  });
}

void silu_glu_forward(ConstTensorView x, ConstTensorView gate, TensorView y, float mult,
                      float alpha) {
  const auto kernel = kernels().silu_glu_forward;
  const float* xs = x.data();
  const float* gates = gate.data();
  float* ys = y.data();
  for_each_share(y.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(xs + begin, gates + begin, ys + begin, static_cast<std::size_t>(count), mult, alpha);
  });
}

void silu_glu_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gate,
                       TensorView grad_x, TensorView grad_gate, float mult, float beta_x,
                       float beta_gate) {
  const auto kernel = kernels().silu_glu_backward;
  const float* g = grad_y.data();
  const float* xs = x.data();
  const float* gates = gate.data();
  float* dx = grad_x.data();
  float* dgate = grad_gate.data();
  for_each_share(grad_y.numel(), [&](std::int64_t begin, std::int64_t count) {
    kernel(g + begin, xs + begin, gates + begin, dx == nullptr ? nullptr : dx + begin,
           dgate == nullptr ? nullptr : dgate + begin, static_cast<std::size_t>(count), mult, beta_x, beta_gate);
  });
}

// ---------------------------------------------------------------------------------------------
// OpDefs
// ---------------------------------------------------------------------------------------------
namespace {

std::vector<Shape> same_shape(std::span<const Shape* const> in, const Attributes&) {
  return {*in[0]};
}

std::vector<Shape> infer_gelu(std::span<const Shape* const> in, const Attributes& attrs) {
  detail::mult_of("gelu", attrs);
  return {*in[0]};
}

std::vector<Shape> infer_silu(std::span<const Shape* const> in, const Attributes& attrs) {
  detail::mult_of("silu", attrs);
  return {*in[0]};
}

std::vector<Shape> infer_silu_glu(std::span<const Shape* const> in, const Attributes& attrs) {
  detail::mult_of("silu_glu", attrs);
  if (*in[0] != *in[1]) {
    throw Error(fmt::format("silu_glu: x {} and gate {} must have the same shape",
                            in[0]->to_string(), in[1]->to_string()));
  }
  return {*in[0]};
}

// The interpolation weights of the gelu/silu rules: a = 1/(1 + 1/(4m²)), a′ = 1/(1 + 1/m²).
double gelu_weight(double mult) { return 1.0 / (1.0 + 1.0 / (4.0 * mult * mult)); }
double silu_weight(double mult) { return 1.0 / (1.0 + 1.0 / (mult * mult)); }
// α of gelu and silu: LI(a, 2, √(2/(1−1/π))).
double gelu_alpha(double mult) {
  return log_interpolate(gelu_weight(mult), 2.0, std::sqrt(2.0 / (1.0 - std::numbers::inv_pi)));
}

void unit_scale_gelu(std::span<const Shape* const>, Attributes& attrs) {
  const double mult = detail::mult_of("gelu", attrs);
  const std::vector<double> scales = detail::constrain(
      "gelu", attrs,
      {gelu_alpha(mult), log_interpolate(gelu_weight(mult), 2.0, std::numbers::sqrt2)});
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
}

void unit_scale_silu(std::span<const Shape* const>, Attributes& attrs) {
  const double mult = detail::mult_of("silu", attrs);
  const std::vector<double> scales = detail::constrain(
      "silu", attrs,
      {gelu_alpha(mult), log_interpolate(silu_weight(mult), 2.0, std::numbers::sqrt2)});
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
}

void unit_scale_silu_glu(std::span<const Shape* const>, Attributes& attrs) {
  const double s =
      log_interpolate(silu_weight(detail::mult_of("silu_glu", attrs)), 2.0, std::numbers::sqrt2);
  attrs.set("alpha", s).set("beta_x", s).set("beta_gate", s);
}

float mult_attr(std::string_view op, const Attributes& attrs) {
  return static_cast<float>(attrs.get_double(op, "mult", 1.0));
}

GeluApproximation approximation_attr(const Attributes& attrs) {
  return attrs.get_enum<GeluApproximation>("gelu", "approximate", GeluApproximation::kNone);
}

void relu_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes&, const KernelContext&) {
  relu_forward(in[0], out[0]);
}
// Backward inputs of the unary activations: x, y (absent), grad_y.
void relu_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes&, const KernelContext&) {
  relu_backward(in[2], in[0], out[0]);
}

void gelu_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext&) {
  gelu_forward(in[0], out[0], mult_attr("gelu", attrs), approximation_attr(attrs),
               scale_of(attrs, "alpha"));
}
void gelu_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  gelu_backward(in[2], in[0], out[0], mult_attr("gelu", attrs), approximation_attr(attrs),
                scale_of(attrs, "beta_x"));
}

void silu_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext&) {
  silu_forward(in[0], out[0], mult_attr("silu", attrs), scale_of(attrs, "alpha"));
}
void silu_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  silu_backward(in[2], in[0], out[0], mult_attr("silu", attrs), scale_of(attrs, "beta_x"));
}

void silu_glu_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                     const Attributes& attrs, const KernelContext&) {
  silu_glu_forward(in[0], in[1], out[0], mult_attr("silu_glu", attrs), scale_of(attrs, "alpha"));
}
// Backward inputs: x, gate, y (absent), grad_y.
void silu_glu_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                              const Attributes& attrs, const KernelContext&) {
  silu_glu_backward(in[3], in[0], in[1], out[0], out[1], mult_attr("silu_glu", attrs),
                    scale_of(attrs, "beta_x"), scale_of(attrs, "beta_gate"));
}

// Scale rules. relu, gelu and silu are degree 1 in x at both ends: x·Φ(m·x) and x·σ(m·x) are
// ≈ x/2 for small |m·x| and ≈ relu(x) for large, so rms(y) is between s_x/2 and s_x/√2 times the
// op's α whatever m is. Their derivatives (Φ + m·x·φ, σ·(1 + z·(1 − σ)), the step) are degree 0 in
// x, so grad_x is s_grad_y times β_x. relu has no α or β.
std::vector<Scale> relu_scale_rule(const ScaleRuleArgs& args) { return {args.scale(0)}; }

// Backward inputs of the unary activations: x, y (absent), grad_y.
std::vector<Scale> relu_backward_scale_rule(const ScaleRuleArgs& args) { return {args.scale(2)}; }

std::vector<Scale> gelu_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("alpha")) * args.scale(0)};
}
std::vector<Scale> gelu_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("beta_x")) * args.scale(2)};
}

std::vector<Scale> silu_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("alpha")) * args.scale(0)};
}
std::vector<Scale> silu_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("beta_x")) * args.scale(2)};
}

// y = α·x·silu(gate): degree 1 in x and, as silu is, in gate. grad_x = β_x·g·silu(gate) (degree 1
// in g and gate), grad_gate = β_gate·g·x·silu′(gate) (degree 1 in g and x, 0 in gate).
std::vector<Scale> silu_glu_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("alpha")) * args.scale(0) * args.scale(1)};
}

// Backward inputs: x, gate, y (absent), grad_y.
std::vector<Scale> silu_glu_backward_scale_rule(const ScaleRuleArgs& args) {
  const Scale& g = args.scale(3);
  std::vector<Scale> grads(2);
  if (args.has_output(0)) grads[0] = args.p2(args.unit_scale("beta_x")) * g * args.scale(1);
  if (args.has_output(1)) grads[1] = args.p2(args.unit_scale("beta_gate")) * g * args.scale(0);
  return grads;
}

}  // namespace

const OpDef kReluOp{
    .name = "relu",
    .inputs = {"x"},
    .infer_shapes = same_shape,
    .kernel = relu_kernel,
    .backward_kernel = relu_backward_kernel,
    .backward_reads = 0b01,
    .scale_propagation = relu_scale_rule,
    .backward_scale_propagation = relu_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
    .pointwise = true,
};

const OpDef kGeluOp{
    .name = "gelu",
    .inputs = {"x"},
    .attributes = {AttributeSpec::real("mult"),
                   AttributeSpec::enumeration<GeluApproximation>("approximate"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x"},
    .infer_shapes = infer_gelu,
    .unit_scale = unit_scale_gelu,
    .kernel = gelu_kernel,
    .backward_kernel = gelu_backward_kernel,
    .backward_reads = 0b01,
    .scale_propagation = gelu_scale_rule,
    .backward_scale_propagation = gelu_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
    .pointwise = true,
};

const OpDef kSiluOp{
    .name = "silu",
    .inputs = {"x"},
    .attributes = {AttributeSpec::real("mult"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x"},
    .infer_shapes = infer_silu,
    .unit_scale = unit_scale_silu,
    .kernel = silu_kernel,
    .backward_kernel = silu_backward_kernel,
    .backward_reads = 0b01,
    .scale_propagation = silu_scale_rule,
    .backward_scale_propagation = silu_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
    .pointwise = true,
};

const OpDef kSiluGluOp{
    .name = "silu_glu",
    .inputs = {"x", "gate"},
    .attributes = {AttributeSpec::real("mult")},
    .scales = {"alpha", "beta_x", "beta_gate"},
    .infer_shapes = infer_silu_glu,
    .unit_scale = unit_scale_silu_glu,
    .kernel = silu_glu_kernel,
    .backward_kernel = silu_glu_backward_kernel,
    .backward_reads = 0b011,
    .scale_propagation = silu_glu_scale_rule,
    .backward_scale_propagation = silu_glu_backward_scale_rule,
    .backward_tolerates_8_bit_saves = true,
    .pointwise = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value relu(Value x) {
  const Value inputs[] = {x};
  return x.graph().apply1(kReluOp, inputs, {});
}

Value gelu(Value x, const GeluOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kGeluOp, inputs,
      {{"mult", options.mult},
       {"approximate", options.approximate},
       {"constraint", options.constraint}});
}

Value silu(Value x, const SiluOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kSiluOp, inputs,
      {{"mult", options.mult}, {"constraint", options.constraint}});
}

Value silu_glu(Value x, Value gate, const SiluGluOptions& options) {
  const Value inputs[] = {x, gate};
  return x.graph().apply1(kSiluGluOp, inputs, {{"mult", options.mult}});
}

}  // namespace unitscale

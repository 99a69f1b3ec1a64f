#include "unitscale/ops/linear.hpp"

#include <cmath>
#include <fmt/format.h>

#include "ops/scale_rule_helpers.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/gemm.hpp"

namespace unitscale {

namespace {

// The GEMMs of linear, described once for the kernels (run = gemm) and the prepare hooks
// (run = gemm_prepare). y = α·(x·Wᵀ + b): the bias is the GEMM's post-op.
// Views by reference: copying one copies its Shape, a heap allocation that tiny GEMMs notice.
void forward_gemms(GemmFn run, const ConstTensorView& x, const ConstTensorView& weight,
                   const ConstTensorView& bias, const TensorView& y, float alpha) {
  run(gemm_matrix(x), gemm_matrix(weight, /*transposed=*/true), gemm_output(y),
      {.alpha = alpha, .bias = bias.data()}, "linear");
}

// dx = β_x·g·W and dW = β_W·gᵀ·x.
void backward_gemms(GemmFn run, const ConstTensorView& grad_y, const ConstTensorView& x,
                    const ConstTensorView& weight, const TensorView& grad_x,
                    const TensorView& grad_weight, float beta_x, float beta_weight) {
  if (present(grad_x)) {
    run(gemm_matrix(grad_y), gemm_matrix(weight), gemm_output(grad_x), {.alpha = beta_x},
        "linear_backward");
  }
  if (present(grad_weight)) {
    run(gemm_matrix(grad_y, /*transposed=*/true), gemm_matrix(x), gemm_output(grad_weight),
        {.alpha = beta_weight}, "linear_backward");
  }
}

}  // namespace

void linear_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                    float alpha) {
  forward_gemms(gemm, x, weight, bias, y, alpha);
}

void linear_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                     TensorView grad_x, TensorView grad_weight, TensorView grad_bias, float beta_x,
                     float beta_weight, float beta_bias) {
  backward_gemms(gemm, grad_y, x, weight, grad_x, grad_weight, beta_x, beta_weight);
  if (present(grad_bias)) {
    grad_bias.vector().noalias() = beta_bias * grad_y.matrix().colwise().sum().transpose();
  }
}

namespace {

std::vector<Shape> linear_shapes(std::string_view op, std::span<const Shape* const> in) {
  const Shape& x = *in[0];
  const Shape& w = *in[1];
  if (x.rank() < 1 || w.rank() != 2 || x.dim(-1) != w.dim(1)) {
    throw Error(fmt::format("{}: x {} and weight {} do not match: expected x [..., in] and weight "
                            "[out, in]",
                            op, x.to_string(), w.to_string()));
  }
  if (in[2] != nullptr && *in[2] != Shape{w.dim(0)}) {
    throw Error(fmt::format("{}: bias {} does not match weight {}: expected [{}]", op,
                            in[2]->to_string(), w.to_string(), w.dim(0)));
  }
  return {x.with_dim(-1, w.dim(0))};
}

std::vector<Shape> infer_linear(std::span<const Shape* const> in, const Attributes&) {
  return linear_shapes("linear", in);
}
std::vector<Shape> infer_linear_readout(std::span<const Shape* const> in, const Attributes&) {
  return linear_shapes("linear_readout", in);
}

// The unit-scaling rule of both ops, each with its own defaults, so that a node recorded by name
// (op_by_name) without the builder's attributes still gets the op's defining rule: linear is
// α = fan_in^-½ constrained to the output scale; linear_readout (μP's output layer) is α = 1/fan_in,
// unconstrained. The builders' ScalePowers and constraint override these.
struct LinearRule {
  double power_alpha;
  Constraint constraint;
};

void unit_scale_linear_rule(std::span<const Shape* const> in, Attributes& attrs,
                            std::string_view op, const LinearRule& rule) {
  const auto fan_in = static_cast<double>(in[0]->dim(-1));
  const auto fan_out = static_cast<double>(in[1]->dim(0));
  const double rows = static_cast<double>(in[0]->numel()) / fan_in;
  const double p_alpha = attrs.get_double(op, "power_alpha", rule.power_alpha);
  const double p_beta_x = attrs.get_double(op, "power_beta_x", 0.5);
  const double p_beta_weight = attrs.get_double(op, "power_beta_weight", 0.5);
  const std::vector<double> scales = detail::constrain(
      op, attrs, {std::pow(fan_in, -p_alpha), std::pow(fan_out, -p_beta_x)}, rule.constraint);
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
  attrs.set("beta_weight", std::pow(rows, -p_beta_weight));
  attrs.set("beta_bias", std::pow(rows, -p_beta_weight));
}

void unit_scale_linear(std::span<const Shape* const> in, Attributes& attrs) {
  unit_scale_linear_rule(in, attrs, "linear", {.power_alpha = 0.5, .constraint = Constraint::kToOutputScale});
}

void unit_scale_linear_readout(std::span<const Shape* const> in, Attributes& attrs) {
  unit_scale_linear_rule(in, attrs, "linear_readout", {.power_alpha = 1.0, .constraint = Constraint::kNone});
}

void linear_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  linear_forward(in[0], in[1], in[2], out[0], scale_of(attrs, "alpha"));
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y.
void linear_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  linear_backward(in[4], in[0], in[1], out[0], out[1], out[2], scale_of(attrs, "beta_x"),
                  scale_of(attrs, "beta_weight"), scale_of(attrs, "beta_bias"));
}

void linear_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs) {
  forward_gemms(gemm_prepare, in[0], in[1], in[2], out[0], scale_of(attrs, "alpha"));
}

void linear_backward_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes&) {
  backward_gemms(gemm_prepare, in[4], in[0], in[1], out[0], out[1], 1.0f, 1.0f);
}

}  // namespace

const OpDef kLinearOp{
    .name = "linear",
    .inputs = {"x", "weight", "bias?"},
    .attributes = {AttributeSpec::real("power_alpha"),
                   AttributeSpec::real("power_beta_x"),
                   AttributeSpec::real("power_beta_weight"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_linear,
    .unit_scale = unit_scale_linear,
    .kernel = linear_kernel,
    .prepare = linear_prepare,
    .backward_kernel = linear_backward_kernel, .backward_prepare = linear_backward_prepare,
    .backward_reads = 0b011,
};

const OpDef kLinearReadoutOp{
    .name = "linear_readout",
    .inputs = {"x", "weight", "bias?"},
    .attributes = {AttributeSpec::real("power_alpha"),
                   AttributeSpec::real("power_beta_x"),
                   AttributeSpec::real("power_beta_weight"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_linear_readout,
    .unit_scale = unit_scale_linear_readout,
    .kernel = linear_kernel,
    .prepare = linear_prepare,
    .backward_kernel = linear_backward_kernel, .backward_prepare = linear_backward_prepare,
    .backward_reads = 0b011,
};

// ------------------------------------------------------------------------------------------------
// Builders

namespace {

Value record_linear(const OpDef& op, Value x, Value weight, Value bias, Constraint constraint,
                    const ScalePowers& powers) {
  const Value inputs[] = {x, weight, bias};
  Attributes attrs{{"constraint", constraint}};
  return x.graph().apply1(op, inputs, powers.record_in(attrs));
}

}  // namespace

Value linear(Value x, Value weight, const LinearOptions& options) {
  return record_linear(kLinearOp, x, weight, options.bias, options.constraint, options.scale_power);
}

Value linear_readout(Value x, Value weight, const LinearReadoutOptions& options) {
  return record_linear(kLinearReadoutOp, x, weight, options.bias, options.constraint,
                       options.scale_power);
}

}  // namespace unitscale

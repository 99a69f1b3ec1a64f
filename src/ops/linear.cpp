#include "unitscale/ops/linear.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ops/scale_rule_helpers.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"

namespace unitscale {

namespace {

// The GEMMs of linear, described once for the kernels (run = gemm) and the prepare hooks
// (run = gemm_prepare). y = α·(x·Wᵀ + b): the bias is the GEMM's post-op. The operands are fp32
// views or their rounded codes (ops/gemm_input_formats.hpp); the outputs fp32, or codes whose
// factor (KernelContext::code_factors) the kernel has folded into α and β.
void forward_gemms(GemmFn run, const GemmMatrix& x, const GemmMatrix& weight_transposed,
                   const ConstTensorView& bias, const GemmOutput& y, float alpha) {
  run(x, weight_transposed, y, {.alpha = alpha, .bias = bias.data()}, "linear");
}

// dx = β_x·g·W and dW = β_W·gᵀ·x.
void backward_gemms(GemmFn run, const detail::GemmOperand& grad_y, const detail::GemmOperand& x,
                    const detail::GemmOperand& weight, const GemmOutput& grad_x,
                    const GemmOutput& grad_weight, float beta_x, float beta_weight) {
  if (grad_x.data != nullptr) {
    run(grad_y.matrix(), weight.matrix(), grad_x, {.alpha = beta_x}, "linear_backward");
  }
  if (grad_weight.data != nullptr) {
    run(grad_y.matrix(/*transposed=*/true), x.matrix(), grad_weight, {.alpha = beta_weight},
        "linear_backward");
  }
}

// db = β_b·Σ_rows g, of the gradient as the GEMMs see it.
void bias_gradient(const detail::GemmOperand& grad_y, const ConstTensorView& fp32_grad_y,
                   const TensorView& grad_bias, float beta_bias) {
  if (!present(grad_bias)) return;
  if (grad_y.matrix().type == GemmType::kF32) {
    grad_bias.vector().noalias() = beta_bias * fp32_grad_y.matrix().colwise().sum().transpose();
    return;
  }
  Tensor decoded(fp32_grad_y.shape());
  grad_y.decode(decoded.data());
  grad_bias.vector().noalias() = beta_bias * decoded.view().matrix().colwise().sum().transpose();
}

}  // namespace

void linear_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                    float alpha) {
  forward_gemms(gemm, gemm_matrix(x), gemm_matrix(weight, /*transposed=*/true), bias,
                gemm_output(y), alpha);
}

void linear_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                     TensorView grad_x, TensorView grad_weight, TensorView grad_bias, float beta_x,
                     float beta_weight, float beta_bias) {
  const GemmInputFormats fp32;
  const detail::GemmOperandPair operands = detail::gemm_operands(x, weight, fp32, 0);
  const detail::GemmOperand g = detail::gemm_operand(grad_y, fp32, detail::GemmOperandRole::kGradient, 0);
  backward_gemms(gemm, g, operands.left, operands.right, gemm_output(grad_x),
                 gemm_output(grad_weight), beta_x, beta_weight);
  bias_gradient(g, grad_y, grad_bias, beta_bias);
}

namespace {

std::vector<Shape> linear_shapes(std::string_view op, std::span<const Shape* const> in,
                                 const Attributes& attrs) {
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
  GemmInputFormats::of(attrs, op);  // checks the formats, naming the op
  return {x.with_dim(-1, w.dim(0))};
}

std::vector<Shape> infer_linear(std::span<const Shape* const> in, const Attributes& attrs) {
  return linear_shapes("linear", in, attrs);
}
std::vector<Shape> infer_linear_readout(std::span<const Shape* const> in, const Attributes& attrs) {
  return linear_shapes("linear_readout", in, attrs);
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

// Both ops' kernels; `op` names the op in errors.
template <const std::string_view& kOp>
void linear_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext& context) {
  const detail::GemmOperandPair operands =
      detail::gemm_operands(in[0], in[1], GemmInputFormats::of(attrs, kOp), context);
  forward_gemms(gemm, operands.left.matrix(), operands.right.matrix(/*transposed=*/true), in[2],
                detail::gemm_output(out[0], context, 0),
                scale_of(attrs, "alpha") * context.code_factor(0));
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y.
template <const std::string_view& kOp>
void linear_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext& context) {
  const GemmInputFormats formats = GemmInputFormats::of(attrs, kOp);
  const detail::GemmOperandPair operands = detail::gemm_operands(in[0], in[1], formats, context);
  const detail::GemmOperand grad_y =
      detail::gemm_operand(in[4], formats, detail::GemmOperandRole::kGradient, context, 4);
  backward_gemms(gemm, grad_y, operands.left, operands.right,
                 detail::gemm_output(out[0], context, 0), detail::gemm_output(out[1], context, 1),
                 scale_of(attrs, "beta_x") * context.code_factor(0),
                 scale_of(attrs, "beta_weight") * context.code_factor(1));
  bias_gradient(grad_y, in[4], out[2], scale_of(attrs, "beta_bias"));
}

template <const std::string_view& kOp>
void linear_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs) {
  const detail::GemmOperandPair operands = detail::gemm_operands(
      in[0], in[1], GemmInputFormats::of(attrs, kOp), 0, /*placeholder=*/true);
  forward_gemms(gemm_prepare, operands.left.matrix(), operands.right.matrix(/*transposed=*/true),
                in[2], gemm_output(out[0]), scale_of(attrs, "alpha"));
}

template <const std::string_view& kOp>
void linear_backward_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs) {
  const GemmInputFormats formats = GemmInputFormats::of(attrs, kOp);
  const detail::GemmOperandPair operands =
      detail::gemm_operands(in[0], in[1], formats, 0, /*placeholder=*/true);
  const detail::GemmOperand grad_y = detail::gemm_operand(
      in[4], formats, detail::GemmOperandRole::kGradient, 0, /*placeholder=*/true);
  backward_gemms(gemm_prepare, grad_y, operands.left, operands.right, gemm_output(out[0]),
                 gemm_output(out[1]), 1.0f, 1.0f);
}

// y = α·(x·Wᵀ + b): x·Wᵀ is homogeneous in x and W and sums K = in_features products, and the
// bias adds an independent term (L2 rule): s_y = p2(α·√(K·(s_x·s_W)² + s_b²)), i.e.
// p2(α·√K)·s_x·s_W without a bias. Both linear and linear_readout (α = 1/K there).
std::vector<Scale> linear_scale_rule(const ScaleRuleArgs& args) {
  const auto k = static_cast<double>(args.input_shape(0).dim(-1));
  const Scale bias = args.has_input(2) ? args.scale(2) : Scale::zero();  // absent: no term
  const double alpha = args.unit_scale("alpha");
  return {args.weighted_l2({{alpha * std::sqrt(k), args.scale(0) * args.scale(1)}, {alpha, bias}})};
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y; outputs grad_x, grad_weight,
// grad_bias. The kernels (no α in the backward):
//   grad_x = β_x·g·W        degree 1 in g and W, N = out_features terms;
//   grad_W = β_W·gᵀ·x       degree 1 in g and x, R = numel(g)/N rows summed;
//   grad_b = β_b·Σ_rows g   degree 1 in g, R terms.
std::vector<Scale> linear_backward_scale_rule(const ScaleRuleArgs& args) {
  const Shape& grad_y = args.input_shape(4);
  const std::int64_t n = grad_y.dim(-1);
  const double rows = n > 0 ? static_cast<double>(grad_y.numel() / n) : 1.0;
  const Scale& s_g = args.scale(4);
  std::vector<Scale> result(3);
  if (args.has_output(0)) {
    result[0] =
        args.fan_in(static_cast<double>(n), args.unit_scale("beta_x")) * s_g * args.scale(1);
  }
  if (args.has_output(1)) {
    result[1] = args.fan_in(rows, args.unit_scale("beta_weight")) * s_g * args.scale(0);
  }
  if (args.has_output(2)) result[2] = args.fan_in(rows, args.unit_scale("beta_bias")) * s_g;
  return result;
}

constexpr std::string_view kLinearName = "linear";
constexpr std::string_view kLinearReadoutName = "linear_readout";

std::vector<AttributeSpec> linear_attributes() {
  std::vector<AttributeSpec> specs = {AttributeSpec::real("power_alpha"),
                                      AttributeSpec::real("power_beta_x"),
                                      AttributeSpec::real("power_beta_weight"),
                                      AttributeSpec::enumeration<Constraint>("constraint")};
  for (const AttributeSpec& spec : GemmInputFormats::attribute_specs()) specs.push_back(spec);
  return specs;
}

}  // namespace

const OpDef kLinearOp{
    .name = "linear",
    .inputs = {"x", "weight", "bias?"},
    .attributes = linear_attributes(),
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_linear,
    .unit_scale = unit_scale_linear,
    .kernel = linear_kernel<kLinearName>,
    .prepare = linear_prepare<kLinearName>,
    .backward_kernel = linear_backward_kernel<kLinearName>,
    .backward_prepare = linear_backward_prepare<kLinearName>,
    .backward_reads = 0b011,
    .scale_propagation = linear_scale_rule,
    .backward_scale_propagation = linear_backward_scale_rule,
    .rounds_gemm_inputs = true,
    .gemm_operands_as_codes = true,
    .gemm_coded_outputs = 0b1,             // y
    .backward_gemm_coded_outputs = 0b011,  // grad_x, grad_weight (not grad_bias, a sum)
};

const OpDef kLinearReadoutOp{
    .name = "linear_readout",
    .inputs = {"x", "weight", "bias?"},
    .attributes = linear_attributes(),
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_linear_readout,
    .unit_scale = unit_scale_linear_readout,
    .kernel = linear_kernel<kLinearReadoutName>,
    .prepare = linear_prepare<kLinearReadoutName>,
    .backward_kernel = linear_backward_kernel<kLinearReadoutName>,
    .backward_prepare = linear_backward_prepare<kLinearReadoutName>,
    .backward_reads = 0b011,
    .scale_propagation = linear_scale_rule,
    .backward_scale_propagation = linear_backward_scale_rule,
    .rounds_gemm_inputs = true,
    .gemm_operands_as_codes = true,
    .gemm_coded_outputs = 0b1,             // y
    .backward_gemm_coded_outputs = 0b011,  // grad_x, grad_weight (not grad_bias, a sum)
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

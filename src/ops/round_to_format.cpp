#include "unitscale/ops/round_to_format.hpp"

#include <fmt/format.h>

#include <cstring>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"

namespace unitscale {
namespace {

constexpr std::string_view kOp = "round_to_format";

// The format of attribute `name` (f32: no rounding); a dtype without a floating format of its own
// (i32, or e8m0fnu, which has no sign or zero) is an error naming the op.
std::optional<FormatSpec> format_attribute(const Attributes& attrs, std::string_view name,
                                           DType fallback) {
  const DType dtype = attrs.has(name) ? attrs.get_enum<DType>(kOp, name) : fallback;
  if (dtype == DType::kF32) return std::nullopt;
  if (dtype == DType::kI32 || dtype == DType::kE8M0FNU) {
    throw Error(fmt::format("{}: {} {} is not a format values can be rounded to (expected f16, "
                            "bf16 or an 8-bit float with a sign)",
                            kOp, name, dtype_name(dtype)));
  }
  return dtype_format(dtype);
}

Quantization policy_of(const Attributes& attrs) {
  const auto rounding = attrs.get_enum<Rounding>(kOp, "rounding", Rounding::kNearestEven);
  if (rounding == Rounding::kStochastic) {
    throw Error(fmt::format("{}: stochastic rounding is not offered here (it needs random bits "
                            "per element: use cast, or the GEMM input formats)",
                            kOp));
  }
  return {.rounding = rounding,
          .overflow = attrs.get_enum<Overflow>(kOp, "overflow", Overflow::kNonFinite)};
}

// out = round(in), or a copy for no format.
void round_into(const float* in, float* out, std::int64_t n, const std::optional<FormatSpec>& format,
                const Quantization& policy) {
  if (in != out) std::memcpy(out, in, static_cast<std::size_t>(n) * sizeof(float));
  if (format) fake_quantize({out, static_cast<std::size_t>(n)}, *format, policy);
}

std::vector<Shape> infer_round_to_format(std::span<const Shape* const> in, const Attributes& attrs) {
  format_attribute(attrs, "format", DType::kF32);
  format_attribute(attrs, "gradient_format", DType::kF32);
  policy_of(attrs);
  return {*in[0]};
}

void round_to_format_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  round_into(in[0].data(), out[0].data(), out[0].numel(),
             format_attribute(attrs, "format", DType::kF32), policy_of(attrs));
}

// Backward inputs: x, y (both absent: never read), grad_y.
void round_to_format_backward_kernel(std::span<const ConstTensorView> in,
                                     std::span<const TensorView> out, const Attributes& attrs,
                                     const KernelContext&) {
  if (!present(out[0])) return;
  round_into(in[2].data(), out[0].data(), out[0].numel(),
             format_attribute(attrs, "gradient_format", DType::kF32), policy_of(attrs));
}

// y is x rounded to `format` and grad_x is grad_y rounded to `gradient_format`: the same values up
// to rounding error, so each keeps its input's scale (the op runs on the scaled data, see
// OpDef::runs_on_scaled_data). Backward inputs: x, y (both absent), grad_y.
std::vector<Scale> round_to_format_scale_rule(const ScaleRuleArgs& args) { return {args.scale(0)}; }
std::vector<Scale> round_to_format_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(2)};
}

}  // namespace

const OpDef kRoundToFormatOp{
    .name = kOp,
    .inputs = {"x"},
    .attributes = {AttributeSpec::enumeration<DType>("format", kRequired),
                   AttributeSpec::enumeration<DType>("gradient_format"),
                   AttributeSpec::enumeration<Rounding>("rounding"),
                   AttributeSpec::enumeration<Overflow>("overflow")},
    .infer_shapes = infer_round_to_format,
    .kernel = round_to_format_kernel,
    .backward_kernel = round_to_format_backward_kernel,
    .backward_reads = 0,
    .scale_propagation = round_to_format_scale_rule,
    .backward_scale_propagation = round_to_format_backward_scale_rule,
    .runs_on_scaled_data = true,
};

// ------------------------------------------------------------------------------------------------
// Builder

Value round_to_format(Value x, DType format, const RoundToFormatOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(kRoundToFormatOp, inputs,
                          {{"format", format},
                           {"gradient_format", options.gradient_format},
                           {"rounding", options.rounding},
                           {"overflow", options.overflow}});
}

}  // namespace unitscale

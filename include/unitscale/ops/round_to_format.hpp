#pragma once
// round_to_format: simulates storing a value, and its gradient, in a lower-precision format while
// keeping fp32 storage; the "whole model in FP16 / BF16" arm of the precision experiments (see
// graph/simulate_format.hpp), which inserts one after every value of a forward graph.
//
//   forward                                   backward (g = ∂L/∂y)
//   y = round_F(x)                            dx = round_G(g)
//
// round_F(x) is decode(convert<F>(x)) under the node's rounding and overflow policies (the format
// layer's fake_quantize, so bit for bit the scalar conversion); G = f32 leaves the gradient as it
// is. The default overflow policy is non_finite: what real FP16 storage does, so a value or
// gradient beyond the format's range becomes ±Inf (or NaN in formats without Inf) and the loss
// shows it, as it would in FP16 training without loss scaling.
//
// Attributes: "format" and "gradient_format" (dtype names of floating formats; gradient_format
// defaults to f32), "rounding" (any deterministic mode; default nearest_even) and "overflow".

#include "unitscale/format/rounding.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kRoundToFormatOp;  // inputs: x

// ------------------------------------------------------------------------------------------------
// Builder for round_to_format.
//
//   Value h = round_to_format(x, DType::kF16, {.gradient_format = DType::kF16});

struct RoundToFormatOptions {
  DType gradient_format = DType::kF32;
  Rounding rounding = Rounding::kNearestEven;
  Overflow overflow = Overflow::kNonFinite;
};

Value round_to_format(Value x, DType format, const RoundToFormatOptions& options = {});

}  // namespace unitscale

#pragma once
// Global-norm gradient clipping, recorded in the training graph:
//
//   ‖g‖ = √(Σ_p Σ_i (s·g_p,i)²)           over every parameter's gradient (s: the gradient scale)
//   c = min(1, max_norm / (‖g‖ + 10⁻⁶))   the coefficient every update multiplies its gradient by
//
// as PyTorch's clip_grad_norm_ computes it. A non-finite norm gives c = NaN, so the step's
// parameters become NaN and the training loop's non-finite check stops the run, instead of a
// silent zero step.
//
// The sum runs as a chain of sum_of_squares nodes, each adding one gradient's squares (in double,
// in a fixed order: the result does not depend on the thread count) to the previous partial sum,
// and one clip_coefficient node. In u-μP the gradients are the unit-scaled ones, so max_norm
// bounds their norm, not the unscaled gradient's.

#include <span>
#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

// Inputs (x, partial?); output [1] = partial + Σ (scale·x)². Attribute "scale" (default 1).
extern const OpDef kSumOfSquaresOp;
// Input sum_of_squares [1]; outputs (coefficient [1], norm [1]). Attribute "max_norm" (> 0).
extern const OpDef kClipCoefficientOp;

struct GlobalNormClip {
  Value coefficient;  // c, [1]: pass it to the update ops as grad_multiplier
  Value norm;         // ‖g‖ before clipping, [1]: for logging
};

// Records the sum_of_squares chain of `gradients` (absent ones are skipped; at least one must be
// present), each scaled by `gradient_scale`: Σ_p Σ_i (s·g_p,i)², [1]. `caller` names the error.
Value global_sum_of_squares(std::span<const Value> gradients, double gradient_scale,
                            std::string_view caller);

// Records the clipping coefficient of `gradients` (absent ones are skipped; at least one must be
// present), each scaled by `gradient_scale`. Throws unitscale::Error if max_norm is not finite and
// positive.
GlobalNormClip clip_by_global_norm(std::span<const Value> gradients, double max_norm,
                                   double gradient_scale = 1.0);

}  // namespace unitscale

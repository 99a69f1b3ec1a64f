#pragma once
// Builders for add, mul and the scaled-edge primitive (the maths and scale rules are in
// ops/elementwise.hpp).
//
//   Value y = add(a, b);                                   // α = 2^-½, to_output_scale
//   Value y = add(a, b, {.constraint = Constraint::kNone}); // β_a, β_b independent
//   Value y = add(x, 1.0f);                                // a plain scalar: an ordinary add
//   Value z = mul(a, b);                                   // unscaled
//   Value h = scale_fwd(x, 0.5);                           // 0.5·x forward, gradient unchanged
//   Value h = scale_bwd(x, 2.0);                           // x forward, 2·g backward

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct AddOptions {
  // Over (α, β_a, β_b). Arity-2 and matmul-only constraints (to_grad_input_scale,
  // to_left/right_grad_scale) are rejected: add has two inputs.
  Constraint constraint = Constraint::kToOutputScale;
};

Value add(Value a, Value b, const AddOptions& options = {});
// Adds a constant: recorded as add with a one-element constant, which the rule treats as an
// ordinary, unscaled add.
Value add(Value a, float b);
Value mul(Value a, Value b);

// The primitive scale(x, α, β): α·x forward, β·g backward. The scales are explicit, so they apply
// whether or not the graph is unit-scaled.
Value scale(Value x, double alpha, double beta);
Value scale_fwd(Value x, double alpha);
Value scale_bwd(Value x, double beta);

}  // namespace unitscale

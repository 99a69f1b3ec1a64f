#pragma once
// Builder for matmul (the maths and scale rules are in ops/matmul.hpp).
//
//   Value scores = matmul(q, k_t);                                  // unit-scaled, to_output_scale
//   Value y = matmul(x, w, {.constraint = Constraint::kNone});      // on a cut edge only
//
// Batch dims broadcast as in NumPy; the gradient scale of a broadcast operand accounts for the
// batch matrices it is summed over.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct MatmulOptions {
  // Over (α, β_left, β_right); every constraint applies, including to_left_grad_scale and
  // to_right_grad_scale.
  Constraint constraint = Constraint::kToOutputScale;
};

Value matmul(Value left, Value right, const MatmulOptions& options = {});

}  // namespace unitscale

#pragma once
// Builder for softmax over the last dimension (the maths and scale rule are in ops/softmax.hpp).
//
//   Value p = softmax(logits);                                        // m = 1, to_output_scale
//   Value p = softmax(logits, {.mult = 0.25, .constraint = Constraint::kNone});

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct SoftmaxOptions {
  // softmax(mult·x); must be positive.
  double mult = 1.0;
  // Over (α, β_x).
  Constraint constraint = Constraint::kToOutputScale;
};

Value softmax(Value x, const SoftmaxOptions& options = {});

}  // namespace unitscale

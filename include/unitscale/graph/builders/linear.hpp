#pragma once
// Builders for linear and linear_readout (the maths and scale rules are in ops/linear.hpp).
//
//   Value h = linear(x, w1);                                    // unit-scaled, to_output_scale
//   Value logits = linear_readout(h, w_out);                    // α = 1/fan_in, unconstrained
//   Value y = linear(x, w, {.bias = b, .constraint = Constraint::kGMean});

#include "unitscale/graph/builders/scale_powers.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct LinearOptions {
  Value bias = {};
  Constraint constraint = Constraint::kToOutputScale;
  ScalePowers scale_power = {};
};

struct LinearReadoutOptions {
  Value bias = {};
  Constraint constraint = Constraint::kNone;
  ScalePowers scale_power = {.alpha = 1.0};
};

Value linear(Value x, Value weight, const LinearOptions& options = {});
Value linear_readout(Value x, Value weight, const LinearReadoutOptions& options = {});

}  // namespace unitscale

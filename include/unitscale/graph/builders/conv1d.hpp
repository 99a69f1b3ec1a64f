#pragma once
// Builder for conv1d (the maths and scale rules are in ops/conv1d.hpp).
//
//   Value h = conv1d(x, w);                                            // x [B, C_in, L]
//   Value y = conv1d(x, w, {.bias = b, .padding = 5, .groups = 4});
//   Value z = conv1d(x, w, {.stride = 2, .constraint = Constraint::kGMean});

#include <cstdint>

#include "unitscale/graph/builders/scale_powers.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct Conv1dOptions {
  Value bias = {};
  std::int64_t stride = 1;
  std::int64_t padding = 0;  // zeros on both ends
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
  // Over (α, β_x), honoured as given; weight and bias gradient scales are never constrained.
  Constraint constraint = Constraint::kToOutputScale;
  // α = (C_in/g·k)^-alpha, β_x = (s·g/(C_out·k))^beta_x, β_W = β_b = (B·L_out)^-beta_weight.
  ScalePowers scale_power = {};
};

Value conv1d(Value x, Value weight, const Conv1dOptions& options = {});

}  // namespace unitscale

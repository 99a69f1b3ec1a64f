#pragma once
// Builders for residual_split and residual_add (the maths and scale rules are in ops/residual.hpp).
// A residual block with branch f and std ratio τ (from transformer_residual_scaling_rule):
//
//   auto [branch, skip] = residual_split(x, tau);
//   Value y = residual_add(f(branch), skip, tau);    // unit graphs: (τ·f(x) + x)/√(1+τ²)
//                                                    // unscaled graphs: f(x) + x
//
// `branch` must feed f and `skip` the add; in an unscaled graph the two outputs are the same plain
// fork, in a unit-scaled one they weight the backward pass differently.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/residual.hpp"

namespace unitscale {

struct ResidualSplit {
  Value branch;  // feeds the residual branch f
  Value skip;    // feeds residual_add's skip input
};

ResidualSplit residual_split(Value x, double tau);
Value residual_add(Value residual, Value skip, double tau);

}  // namespace unitscale

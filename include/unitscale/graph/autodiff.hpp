#pragma once
// Reverse-mode differentiation as a graph pass: the backward pass is appended to the graph as
// ordinary nodes (each op's backward OpDef), so every later pass and the executor see forward and
// backward alike. Unit-scaled ops carry their β scales into their backward nodes through the
// attributes, so the gradients are the scaled ones of spec/unit_scaling.md §2.

#include <span>
#include <vector>

#include "unitscale/graph/graph.hpp"

namespace unitscale {

// Appends the backward pass of `loss` (a value with one element) and returns, for each value of
// `wrt`, its gradient value (absent if the loss does not depend on it). Gradients that meet are
// summed. Throws unitscale::Error if a needed op is not differentiable.
std::vector<Value> autodiff(Graph& graph, Value loss, std::span<const Value> wrt);

}  // namespace unitscale

#pragma once
// Reverse-mode differentiation as a graph pass: the backward pass is appended to the graph as
// ordinary nodes (each op's backward OpDef), so every later pass and the executor see forward and
// backward alike. Unit-scaled ops carry their β scales into their backward nodes through the
// attributes, so the gradients are the scaled ones of unit scaling (arXiv 2303.11257, §4).

#include <span>
#include <vector>

#include "unitscale/graph/graph.hpp"

namespace unitscale {

struct AutodiffOptions {
  // The gradient flowing into the loss, of the loss's shape (an upstream gradient, or the seed of
  // dynamic loss scaling); absent: ones, which needs a loss of one element.
  Value seed = {};
  // Multiplies the seed, so every gradient comes out scaled by it (static loss scaling). A power
  // of two scales every gradient exactly.
  double loss_scale = 1.0;
};

// Appends the backward pass of `loss` and returns, for each value of `wrt`, its gradient value
// (absent if the loss does not depend on it). Gradients that meet are summed by accumulate_grad
// nodes. Every value that gets a gradient has it recorded on the graph (Graph::grad_of), and every
// node appended records the forward value it belongs to (Node::differentiates). Throws
// unitscale::Error if a needed op is not differentiable or the seed does not fit the loss.
std::vector<Value> autodiff(Graph& graph, Value loss, std::span<const Value> wrt,
                            const AutodiffOptions& options = {});

}  // namespace unitscale

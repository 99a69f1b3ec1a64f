#pragma once
// A training step under scale propagation (Scalify, arXiv 2407.17353): the tasks record their
// forward, autodiff and optimizer updates as usual, then hand the whole step to
// scalify_training_step, which rewrites it with propagate_scales (graph/propagate_scales.hpp) and
// points the step's values at the rewritten graph's, so that the Trainer runs, checkpoints and
// evaluates the scaled step as it would the fp32 one.
//
//   OptimizerStep step = record_training_step(model, loss, config);
//   ScaledGraph scaled = scalify_training_step(graph, loss, step, {&eval_logits}, policy);
//   // loss, step's outputs and eval_logits are now the scaled graph's fp32 outputs
//
// The parameters and optimizer states keep their values (ids and names): moments become FP16
// data beside a scale state, and so do the parameters when the policy stores them narrow. Load
// the parameters with Model::initialize(executor, &scaled); checkpoint scaled.scale_states() with
// the states they scale.

#include <span>

#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/optim/optimizer.hpp"

namespace unitscale {

// Rewrites the graph holding `loss` and `step` (and any `forwards`: values computed from the same
// parameters, such as evaluation logits, which must be recorded before the call) and updates every
// Value of theirs in place. Throws unitscale::Error, changing nothing, if an op has no scale rule
// or the step uses dynamic loss scaling (scale propagation replaces it).
ScaledGraph scalify_training_step(Graph& graph, Value& loss, OptimizerStep& step,
                                  std::span<Value* const> forwards, const ScalePolicy& policy);

}  // namespace unitscale

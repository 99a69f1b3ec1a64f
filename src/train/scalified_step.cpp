#include "unitscale/train/scalified_step.hpp"

#include <fmt/format.h>

#include "unitscale/error.hpp"

namespace unitscale {

ScaledGraph scalify_training_step(Graph& graph, Value& loss, OptimizerStep& step,
                                  std::span<Value* const> forwards, const ScalePolicy& policy) {
  if (step.loss_scaling.log2_scale.present() || step.loss_scale.present()) {
    throw Error(
        "scale propagation: the training step scales its loss dynamically; scale propagation "
        "keeps gradients in range without loss scaling, so record the step without it");
  }
  std::vector<Value> requested = step.outputs({loss, step.lr_multiplier});
  for (Value* forward : forwards) requested.push_back(*forward);
  const ScaledGraph scaled = propagate_scales(graph, requested, policy);

  loss = scaled.output(loss);
  step.lr_multiplier = scaled.output(step.lr_multiplier);
  if (step.grad_norm.present()) step.grad_norm = scaled.output(step.grad_norm);
  for (ParameterUpdate& update : step.updates) {
    for (Value& output : update.outputs) output = scaled.output(output);
    update.grad = scaled.data(update.grad);  // what the update reads; its scale is scaled.scale
  }
  for (Value* forward : forwards) *forward = scaled.output(*forward);
  return scaled;
}

}  // namespace unitscale

#pragma once
// What the training tasks (ImageClassifierTask, LanguageModelTask) do once their forwards are
// recorded: the precision pass their config asks for, the training step (autodiff and the optimizer
// update) and, under a scale propagation recipe, the rewrite of the whole step.

#include <fmt/format.h>

#include <memory>
#include <optional>
#include <span>
#include <string>

#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/graph/simulate_format.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/scalified_step.hpp"

namespace unitscale::detail {

struct TaskStep {
  OptimizerStep optimizer;
  std::unique_ptr<ScaledGraph> scaled;  // the scale propagation recipes only
  std::string precision_report;         // what the precision pass did, if there is one
};

// `optimizer` names the optimizer and its hyperparameters; the schedule, gradient clipping, loss
// scaling and gradient exchange come from `config` (ImageClassifierConfig or LanguageModelConfig).
// `loss` and `forwards` (the evaluation forwards, recorded already) are updated in place when the
// step is rewritten.
template <class Config>
TaskStep record_task_step(Graph& graph, Model& model, Value& loss, OptimizerConfig optimizer,
                          const Config& config, std::span<Value* const> forwards) {
  TaskStep step;
  if (const std::optional<SimulateFormatOptions> precision =
          config.precision.simulate_format_options(config.seed)) {
    step.precision_report = simulate_format(graph, *precision).to_string();
  }
  optimizer.schedule = config.cosine_decay
                           ? Schedule::warmup_cosine(config.warmup, config.steps, 0.0)
                           : Schedule::constant(config.warmup);
  optimizer.max_grad_norm = config.max_grad_norm;
  optimizer.gradient_scale = 1.0 / config.precision.static_loss_scale();
  optimizer.dynamic_loss_scaling = config.precision.dynamic_loss_scale();
  optimizer.log = [](std::string_view) {};
  optimizer.gradient_exchange = config.data_parallel.gradient_exchange();
  step.optimizer = record_training_step(model, loss, optimizer,
                                        {.loss_scale = config.precision.static_loss_scale()});
  if (const std::optional<ScalePolicy> policy = config.precision.scale_policy()) {
    step.scaled = std::make_unique<ScaledGraph>(
        scalify_training_step(graph, loss, step.optimizer, forwards, *policy));
    step.precision_report =
        fmt::format("propagate_scales: {} nodes scaled, {} matmul casts ({})",
                    step.scaled->scaled_nodes(), step.scaled->casts(), policy->to_string());
  }
  return step;
}

}  // namespace unitscale::detail

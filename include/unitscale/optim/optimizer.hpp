#pragma once
// Optimizers: SGD (momentum, Nesterov), Adam and AdamW recorded into a training graph as one update
// node per parameter (optim/update_ops.hpp), each with the learning rate and weight decay its
// parametrization gives it (nn/parameter_rule.hpp), a schedule factor shared by all of them
// (optim/schedule.hpp) and optional global-norm clipping (optim/clipping.hpp). One executor run of
// the graph is then forward + backward + update, and later passes see the optimizer.
//
//   Graph graph(parametrization.op_scaling());
//   Model model(graph, parametrization, {.seed = 1});
//   ... Value loss = decoder.loss(ids, targets);
//   OptimizerStep step = record_training_step(model, loss, {.kind = OptimizerKind::kAdamW,
//       .lr = 2.0, .schedule = Schedule::warmup_cosine(100, 1000)});
//   Executor exec(graph, step.outputs(loss));
//   model.initialize(exec);
//   for (...) { bind inputs; exec.run(); }
//
// Per parameter p with rule ρ_p: base LR lr_p = η·ρ_p.adam_lr_factor (Adam, AdamW) or
// η·ρ_p.sgd_lr_factor (SGD); step LR lr_p·r(t). Weight decay λ by the rule's mode:
//
//   rule mode            AdamW, SGD with decoupled decay          Adam, SGD (L2 in the gradient)
//   independent          w ← w − r(t)·λ·w   (λ_p = λ/lr_p)         rejected: L2 has no independent
//                                                                  form (error names the parameter)
//   coupled to the LR    w ← w − lr_p·r(t)·λ·w                     g ← g + λ·w
//   excluded             none                                      none
//
// (u-μP's rules say independent, SP's and μP's coupled; arXiv 2407.17465.)

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/distributed/gradient_exchange.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/optim/loss_scaling.hpp"
#include "unitscale/optim/schedule.hpp"
#include "unitscale/optim/update_ops.hpp"

namespace unitscale {

enum class OptimizerKind { kSgd, kAdam, kAdamW };
std::string_view optimizer_kind_name(OptimizerKind kind);  // "sgd" / "adam" / "adamw"
OptimizerKind optimizer_kind_from_name(std::string_view name);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 1e-3;  // η, the global learning rate (u-μP wants η of order 1; see docs/umup.md)
  // Adam and AdamW
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  // SGD
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  bool sgd_decoupled_weight_decay = false;  // SGD: decoupled (as AdamW) rather than L2 decay
  double weight_decay = 0.0;                // λ
  Schedule schedule = {};
  double max_grad_norm = 0.0;  // > 0: clip the global gradient norm to it; 0: no clipping
  double gradient_scale = 1.0;  // multiplies every gradient (1/loss scale)
  // Dynamic loss scaling (optim/loss_scaling.hpp); record_training_step records the seed before
  // autodiff, so record_optimizer alone refuses it. Not with a gradient_scale other than 1.
  std::optional<DynamicLossScaling> dynamic_loss_scaling = std::nullopt;
  std::int64_t first_step = 1;  // the step of the executor's first run
  // Receives the table of effective per-parameter LRs once, when the optimizer is recorded
  // (null: written to stderr). Set it to a no-op to keep quiet.
  std::function<void(std::string_view)> log = nullptr;
  // Data-parallel training: the gradients are exchanged between the ranks (their mean) before
  // anything reads them (distributed/gradient_exchange.hpp); nullopt: one process.
  std::optional<GradientExchangeOptions> gradient_exchange = std::nullopt;
};

// One parameter's update as recorded.
struct ParameterUpdate {
  Value param;
  Value grad;
  std::string name;
  double lr = 0.0;                  // the base LR lr_p = η·factor (the schedule multiplies it)
  double weight_decay = 0.0;        // the λ_p of the parameter's rule (λ/lr_p, λ or 0)
  UpdateDecayMode decay_mode = UpdateDecayMode::kNone;
  std::vector<Value> state;         // m and v (Adam), the momentum buffer (SGD), or none
  std::vector<Value> outputs;       // the update node's present outputs
};

struct OptimizerStep {
  std::vector<ParameterUpdate> updates;
  Value lr_multiplier;  // r(t), [1]
  Value grad_norm;      // the global gradient norm before clipping, [1]; absent without clipping
  std::string learning_rate_table;  // what was logged
  // With dynamic loss scaling: S of the step (the autodiff seed), 1 when the step's update was
  // skipped ([1]), and the scale's state values (checkpointed with the optimizer's); else absent.
  Value loss_scale;
  Value skipped;
  LossScaleValues loss_scaling = {};

  // The values an executor must request to run the updates, after `extra` (the loss, metrics).
  std::vector<Value> outputs(std::span<const Value> extra = {}) const;
  std::vector<Value> outputs(std::initializer_list<Value> extra) const {
    return outputs(std::span<const Value>(extra.begin(), extra.size()));
  }
  // Every optimizer state value (moments, momentum buffers), for checkpoints.
  std::vector<Value> state_values() const;
};

// Records the updates of `parameters` (each a trained parameter: a state value) from their
// gradients (one per parameter, same order; an absent gradient skips the parameter). Throws
// unitscale::Error naming the parameter for a bad combination (independent decay with L2) or a
// parameter that is not a state value, and for a bad config (negative λ, η ≤ 0, ...).
OptimizerStep record_optimizer(Graph& graph, std::span<const ModelParameter> parameters,
                               std::span<const Value> gradients, const OptimizerConfig& config);

// autodiff of `loss` with respect to every parameter of `model`, then record_optimizer.
OptimizerStep record_training_step(Model& model, Value loss, const OptimizerConfig& config,
                                   const AutodiffOptions& autodiff_options = {});

}  // namespace unitscale

#include "unitscale/optim/optimizer.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <utility>

#include "unitscale/distributed/gradient_exchange.hpp"
#include "unitscale/error.hpp"
#include "unitscale/optim/clipping.hpp"

namespace unitscale {
namespace {

bool is_adam(OptimizerKind kind) {
  return kind == OptimizerKind::kAdam || kind == OptimizerKind::kAdamW;
}

bool decoupled_decay(const OptimizerConfig& config) {
  return config.kind == OptimizerKind::kAdamW ||
         (config.kind == OptimizerKind::kSgd && config.sgd_decoupled_weight_decay);
}

void check_config(const OptimizerConfig& c) {
  const std::string_view kind = optimizer_kind_name(c.kind);
  auto fail = [&](std::string_view what) {
    return Error(fmt::format("optimizer {}: {}", kind, what));
  };
  if (!(std::isfinite(c.lr) && c.lr > 0.0)) {
    throw fail(fmt::format("lr (η) must be finite and > 0, got {}", c.lr));
  }
  if (!(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0)) {
    throw fail(fmt::format("weight_decay must be finite and ≥ 0, got {}", c.weight_decay));
  }
  if (!(std::isfinite(c.max_grad_norm) && c.max_grad_norm >= 0.0)) {
    throw fail(fmt::format("max_grad_norm must be finite and ≥ 0 (0: no clipping), got {}",
                           c.max_grad_norm));
  }
  if (c.first_step < 1) throw fail(fmt::format("first_step must be ≥ 1, got {}", c.first_step));
  if (c.kind != OptimizerKind::kSgd && c.sgd_decoupled_weight_decay) {
    throw fail("sgd_decoupled_weight_decay applies to SGD only (AdamW is Adam's decoupled form)");
  }
  c.schedule.check();
}

// How the parameter's rule turns λ into the update op's decay.
UpdateDecayMode decay_mode_for(const OptimizerConfig& config, const ParameterRule& rule) {
  if (config.weight_decay == 0.0 || rule.weight_decay == WeightDecayMode::kExcluded) {
    return UpdateDecayMode::kNone;
  }
  if (decoupled_decay(config)) {
    return rule.weight_decay == WeightDecayMode::kIndependent ? UpdateDecayMode::kIndependent
                                                              : UpdateDecayMode::kDecoupled;
  }
  if (rule.weight_decay == WeightDecayMode::kIndependent) {
    throw Error(fmt::format(
        "optimizer {}: parameter '{}' has independent weight decay (λ_p = λ/lr_p), which only a "
        "decoupled decay can apply, but {} adds weight decay to the gradient as L2; use AdamW{}, "
        "or weight_decay = 0",
        optimizer_kind_name(config.kind), rule.name, optimizer_kind_name(config.kind),
        config.kind == OptimizerKind::kSgd ? " or sgd_decoupled_weight_decay" : ""));
  }
  return UpdateDecayMode::kCoupled;
}

std::string learning_rate_table(const OptimizerConfig& config,
                                const std::vector<ParameterUpdate>& updates) {
  std::string text = fmt::format(
      "optimizer {}: η = {:g}, weight decay λ = {:g}, schedule {}{}\n",
      optimizer_kind_name(config.kind), config.lr, config.weight_decay,
      config.schedule.to_string(),
      config.max_grad_norm > 0 ? fmt::format(", clip global norm to {:g}", config.max_grad_norm)
                               : std::string());
  text += fmt::format("  {:<32} {:>12} {:>12}  {}\n", "parameter", "lr", "λ_p", "decay");
  for (const ParameterUpdate& u : updates) {
    text += fmt::format("  {:<32} {:>12.6g} {:>12.6g}  {}\n", u.name, u.lr, u.weight_decay,
                        update_decay_mode_name(u.decay_mode));
  }
  return text;
}

}  // namespace

std::string_view optimizer_kind_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdam:
      return "adam";
    case OptimizerKind::kAdamW:
      return "adamw";
  }
  return "?";
}

OptimizerKind optimizer_kind_from_name(std::string_view name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adamw") return OptimizerKind::kAdamW;
  throw Error(fmt::format("unknown optimizer '{}' (expected sgd, adam or adamw)", name));
}

std::vector<Value> OptimizerStep::outputs(std::span<const Value> extra) const {
  std::vector<Value> values(extra.begin(), extra.end());
  for (const ParameterUpdate& u : updates) {
    values.insert(values.end(), u.outputs.begin(), u.outputs.end());
  }
  if (grad_norm.present()) values.push_back(grad_norm);
  if (skipped.present()) values.push_back(skipped);
  if (loss_scale.present()) values.push_back(loss_scale);
  values.insert(values.end(), loss_scaling.updated_state.begin(), loss_scaling.updated_state.end());
  return values;
}

std::vector<Value> OptimizerStep::state_values() const {
  std::vector<Value> values;
  for (const ParameterUpdate& u : updates) values.insert(values.end(), u.state.begin(), u.state.end());
  if (loss_scaling.log2_scale.present()) {
    values.push_back(loss_scaling.log2_scale);
    values.push_back(loss_scaling.good_steps);
  }
  return values;
}

namespace {

// record_optimizer, with the loss scale's values when the step scales its loss dynamically.
OptimizerStep record_updates(Graph& graph, std::span<const ModelParameter> parameters,
                             std::span<const Value> local_gradients, const OptimizerConfig& config,
                             LossScaleValues* loss_scaling) {
  check_config(config);
  if (local_gradients.size() != parameters.size()) {
    throw Error(fmt::format("optimizer {}: {} parameters but {} gradients",
                            optimizer_kind_name(config.kind), parameters.size(),
                            local_gradients.size()));
  }
  // Everything below (loss scaling's overflow check, clipping, the updates) reads the ranks' mean.
  const std::vector<Value> gradients =
      config.gradient_exchange
          ? record_gradient_exchange(graph, local_gradients, *config.gradient_exchange)
          : std::vector<Value>(local_gradients.begin(), local_gradients.end());
  for (const ModelParameter& p : parameters) {
    if (&p.value.graph() != &graph || graph.info(p.value).kind != ValueKind::kState) {
      throw Error(fmt::format("optimizer {}: parameter '{}' is not a state value of this graph "
                              "(record trained parameters with Model::parameter or Graph::state)",
                              optimizer_kind_name(config.kind), p.rule.name));
    }
  }

  OptimizerStep step;
  step.lr_multiplier = lr_schedule(graph, config.schedule, config.first_step);
  Value grad_multiplier;
  if (loss_scaling != nullptr) {
    record_loss_scale_update(*loss_scaling, gradients, *config.dynamic_loss_scaling,
                             config.max_grad_norm);
    grad_multiplier = loss_scaling->multiplier;
    if (config.max_grad_norm > 0.0) step.grad_norm = loss_scaling->norm;
    step.loss_scale = loss_scaling->seed;
    step.skipped = loss_scaling->skipped;
    step.loss_scaling = *loss_scaling;
  } else if (config.max_grad_norm > 0.0) {
    const GlobalNormClip clip =
        clip_by_global_norm(gradients, config.max_grad_norm, config.gradient_scale);
    grad_multiplier = clip.coefficient;
    step.grad_norm = clip.norm;
  }

  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const ModelParameter& p = parameters[i];
    if (!gradients[i].present()) continue;
    ParameterUpdate u;
    u.param = p.value;
    u.grad = gradients[i];
    u.name = p.rule.name;
    u.lr = is_adam(config.kind) ? p.rule.adam_learning_rate(config.lr)
                                : p.rule.sgd_learning_rate(config.lr);
    u.decay_mode = decay_mode_for(config, p.rule);
    // The update op's λ: for independent decay the per-step shrink λ itself (λ_p·lr_p), else λ.
    const double op_decay = u.decay_mode == UpdateDecayMode::kNone ? 0.0 : config.weight_decay;
    u.weight_decay = u.decay_mode == UpdateDecayMode::kNone
                         ? 0.0
                         : p.rule.weight_decay_coefficient(config.weight_decay, u.lr);
    const Shape shape = graph.info(p.value).shape;  // a copy: graph.state() grows the value table
    if (is_adam(config.kind)) {
      const Value m = graph.state(p.rule.name + ".adam_m", shape);
      const Value v = graph.state(p.rule.name + ".adam_v", shape);
      u.state = {m, v};
      u.outputs = adam_update(p.value, gradients[i], m, v,
                              {.lr = u.lr,
                               .beta1 = config.beta1,
                               .beta2 = config.beta2,
                               .eps = config.eps,
                               .step = config.first_step,
                               .weight_decay = op_decay,
                               .weight_decay_mode = u.decay_mode,
                               .gradient_scale = config.gradient_scale,
                               .lr_multiplier = step.lr_multiplier,
                               .grad_multiplier = grad_multiplier});
    } else {
      Value buffer;
      if (config.momentum != 0.0) {
        buffer = graph.state(p.rule.name + ".momentum", shape);
        u.state = {buffer};
      }
      u.outputs = sgd_update(p.value, gradients[i], buffer,
                             {.lr = u.lr,
                              .momentum = config.momentum,
                              .dampening = config.dampening,
                              .nesterov = config.nesterov,
                              .step = config.first_step,
                              .weight_decay = op_decay,
                              .weight_decay_mode = u.decay_mode,
                              .gradient_scale = config.gradient_scale,
                              .lr_multiplier = step.lr_multiplier,
                              .grad_multiplier = grad_multiplier});
      std::erase_if(u.outputs, [](const Value& v) { return !v.present(); });
    }
    step.updates.push_back(std::move(u));
  }

  step.learning_rate_table = learning_rate_table(config, step.updates);
  if (config.log) {
    config.log(step.learning_rate_table);
  } else {
    std::fputs(step.learning_rate_table.c_str(), stderr);
  }
  return step;
}

}  // namespace

OptimizerStep record_optimizer(Graph& graph, std::span<const ModelParameter> parameters,
                               std::span<const Value> gradients, const OptimizerConfig& config) {
  if (config.dynamic_loss_scaling) {
    throw Error(fmt::format("optimizer {}: dynamic loss scaling must record its seed before "
                            "autodiff: use record_training_step",
                            optimizer_kind_name(config.kind)));
  }
  return record_updates(graph, parameters, gradients, config, nullptr);
}

OptimizerStep record_training_step(Model& model, Value loss, const OptimizerConfig& config,
                                   const AutodiffOptions& autodiff_options) {
  std::vector<Value> params;
  for (const ModelParameter& p : model.parameters()) params.push_back(p.value);
  if (!config.dynamic_loss_scaling) {
    const std::vector<Value> grads = autodiff(model.graph(), loss, params, autodiff_options);
    return record_updates(model.graph(), model.parameters(), grads, config, nullptr);
  }
  if (autodiff_options.seed.present() || autodiff_options.loss_scale != 1.0 ||
      config.gradient_scale != 1.0) {
    throw Error(fmt::format("optimizer {}: dynamic loss scaling sets the autodiff seed and the "
                            "gradient scale itself; leave the seed absent and the static loss "
                            "scale and gradient scale at 1",
                            optimizer_kind_name(config.kind)));
  }
  LossScaleValues loss_scaling =
      record_loss_scale_seed(model.graph(), loss, *config.dynamic_loss_scaling);
  const std::vector<Value> grads =
      autodiff(model.graph(), loss, params, {.seed = loss_scaling.seed});
  return record_updates(model.graph(), model.parameters(), grads, config, &loss_scaling);
}

}  // namespace unitscale

#include "unitscale/nn/mlp_classifier.hpp"

#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "unitscale/error.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/loss.hpp"

namespace unitscale {
namespace {

const MlpClassifierConfig& checked(std::string_view name, const MlpClassifierConfig& config) {
  const std::string module = fmt::format("MlpClassifier '{}'", name);
  detail::check_positive_size(module, "inputs", config.inputs);
  detail::check_positive_size(module, "classes", config.classes);
  if (config.hidden.empty()) {
    throw Error(fmt::format("{}: needs at least one hidden layer, got none", module));
  }
  for (std::size_t i = 0; i < config.hidden.size(); ++i) {
    detail::check_positive_size(module, fmt::format("hidden[{}]", i), config.hidden[i]);
  }
  const UmupHyperparameters& hp = config.hyperparameters;
  for (const auto& [field, value] : {std::pair{"ffn_act_mult", hp.ffn_act_mult},
                                     std::pair{"loss_softmax_mult", hp.loss_softmax_mult}}) {
    if (!std::isfinite(value) || value <= 0.0) {
      throw Error(fmt::format("{}: hyperparameter {} must be finite and positive, got {}", module,
                              field, value));
    }
  }
  return config;
}

std::vector<Linear> make_layers(Model& model, std::string_view name,
                                const MlpClassifierConfig& c) {
  std::vector<Linear> layers;
  layers.reserve(c.hidden.size());
  std::int64_t in = c.inputs;
  for (std::size_t i = 0; i < c.hidden.size(); ++i) {
    layers.emplace_back(model, nested_name(name, fmt::format("layers.{}", i)),
                        LinearConfig{.in = in,
                                     .out = c.hidden[i],
                                     .bias = c.bias,
                                     .role = i == 0 ? ParameterRole::kInput
                                                    : ParameterRole::kWeight});
    in = c.hidden[i];
  }
  return layers;
}

}  // namespace

MlpClassifier::MlpClassifier(Model& model, std::string_view name,
                             const MlpClassifierConfig& config)
    : name_(name),
      config_(checked(name, config)),
      layers_(make_layers(model, name, config)),
      readout_(model, nested_name(name, "readout"),
               {.in = config.hidden.back(), .out = config.classes, .bias = config.bias}) {}

Value MlpClassifier::logits(Value x) const {
  if (!x.present() || x.shape().rank() != 2) {
    throw Error(fmt::format("MlpClassifier '{}': x {} must be [batch, {}]", name_,
                            x.present() ? x.shape().to_string() : "(absent)", config_.inputs));
  }
  for (const Linear& layer : layers_) {
    x = layer(x);
    x = config_.activation == ClassifierActivation::kGelu
            ? gelu(x, {.mult = config_.hyperparameters.ffn_act_mult})
            : relu(x);
  }
  return readout_(x);
}

Value MlpClassifier::loss(Value x, Value labels) const {
  if (!labels.present() || labels.dtype() != DType::kI32 || labels.shape().rank() != 1 ||
      !x.present() || x.shape().rank() < 1 || labels.shape().dim(0) != x.shape().dim(0)) {
    throw Error(fmt::format("MlpClassifier '{}': labels {} must be i32 [batch] for x {}", name_,
                            labels.present() ? labels.shape().to_string() : "(absent)",
                            x.present() ? x.shape().to_string() : "(absent)"));
  }
  return cross_entropy(logits(x), labels, {.mult = config_.hyperparameters.loss_softmax_mult});
}

void MlpClassifier::set_base_shapes(Parametrization& parametrization,
                                    const MlpClassifierConfig& base) {
  unitscale::set_base_shapes(parametrization,
                             [&](Model& model) { MlpClassifier classifier(model, "", base); });
}

}  // namespace unitscale

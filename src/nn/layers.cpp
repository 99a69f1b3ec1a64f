#include "unitscale/nn/layers.hpp"

#include <fmt/format.h>

#include <cmath>
#include <utility>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/linear.hpp"

namespace unitscale {

std::string nested_name(std::string_view prefix, std::string_view leaf) {
  if (prefix.empty()) return std::string(leaf);
  return fmt::format("{}.{}", prefix, leaf);
}

namespace detail {

void check_module_input(const Model& model, std::string_view module, Value x, std::int64_t width) {
  if (!x.present()) throw Error(fmt::format("{}: the input is absent", module));
  if (&x.graph() != &model.graph()) {
    throw Error(fmt::format("{}: the input belongs to another graph than the model's", module));
  }
  if (x.shape().rank() < 1 || x.shape().dim(-1) != width) {
    throw Error(fmt::format("{}: input {} does not match: expected [..., {}]", module,
                            x.shape().to_string(), width));
  }
}

void check_positive_size(std::string_view module, std::string_view what, std::int64_t size) {
  if (size < 1) throw Error(fmt::format("{}: {} must be at least 1, got {}", module, what, size));
}

}  // namespace detail

namespace {

// A [out] bias of a linear map in → out; it grows with the width exactly when the output does.
Value record_bias(Model& model, const std::string& module, std::int64_t in, std::int64_t out,
                  bool out_is_width, std::optional<int> depth) {
  ParameterInfo info{.role = ParameterRole::kBias, .fan_in = in, .fan_out = out, .depth = depth};
  if (out_is_width) info.width_dims = {0};
  return model.parameter(nested_name(module, "bias"), {out}, std::move(info));
}

}  // namespace

// ---- Linear -------------------------------------------------------------------------------------

Linear::Linear(Model& model, std::string_view name, const LinearConfig& config)
    : model_(&model), name_(name), config_(config) {
  const std::string module = fmt::format("Linear '{}'", name_);
  detail::check_positive_size(module, "in", config.in);
  detail::check_positive_size(module, "out", config.out);
  if (config.role != ParameterRole::kWeight && config.role != ParameterRole::kInput) {
    throw Error(fmt::format("{}: role must be weight or input, got {} (use LinearReadout for the "
                            "output layer, Embedding for a table)",
                            module, parameter_role_name(config.role)));
  }
  // A hidden weight grows with the width on both sides (μP's matrix-like class); an input weight
  // only on its output side (vector-like), its fan-in being the data's size.
  std::vector<int> width_dims = config.role == ParameterRole::kWeight ? std::vector<int>{0, 1}
                                                                      : std::vector<int>{0};
  weight_ = model.parameter(nested_name(name_, "weight"), {config.out, config.in},
                            {.role = config.role,
                             .fan_in = config.in,
                             .fan_out = config.out,
                             .width_dims = std::move(width_dims),
                             .depth = config.depth});
  if (config.bias) bias_ = record_bias(model, name_, config.in, config.out, true, config.depth);
}

Value Linear::operator()(Value x) const {
  detail::check_module_input(*model_, fmt::format("Linear '{}'", name_), x, config_.in);
  const Value y = linear(x, weight_, {.bias = bias_, .constraint = config_.constraint});
  return apply_multiplier(y, model_->rule(weight_));
}

// ---- LinearReadout ------------------------------------------------------------------------------

LinearReadout::LinearReadout(Model& model, std::string_view name, const LinearReadoutConfig& config)
    : model_(&model), name_(name), config_(config) {
  const std::string module = fmt::format("LinearReadout '{}'", name_);
  detail::check_positive_size(module, "in", config.in);
  detail::check_positive_size(module, "out", config.out);
  weight_ = model.parameter(nested_name(name_, "weight"), {config.out, config.in},
                            {.role = ParameterRole::kOutput,
                             .fan_in = config.in,
                             .fan_out = config.out,
                             .width_dims = {1}});
  if (config.bias) bias_ = record_bias(model, name_, config.in, config.out, false, std::nullopt);
}

Value LinearReadout::operator()(Value x) const {
  detail::check_module_input(*model_, fmt::format("LinearReadout '{}'", name_), x, config_.in);
  const bool to_output_scale = model_->parametrization().options().sgd_readout ==
                               SgdReadoutConstraint::kToOutputScale;
  const Constraint constraint = config_.constraint.value_or(
      to_output_scale ? Constraint::kToOutputScale : Constraint::kNone);
  const Value y = linear_readout(x, weight_, {.bias = bias_, .constraint = constraint});
  return apply_multiplier(y, model_->rule(weight_));
}

// ---- Embedding ----------------------------------------------------------------------------------

Embedding::Embedding(Model& model, std::string_view name, const EmbeddingConfig& config)
    : model_(&model), name_(name), config_(config) {
  const std::string module = fmt::format("Embedding '{}'", name_);
  detail::check_positive_size(module, "vocab", config.vocab);
  detail::check_positive_size(module, "width", config.width);
  weight_ = model.parameter(nested_name(name_, "weight"), {config.vocab, config.width},
                            {.role = ParameterRole::kEmbedding,
                             .fan_in = config.vocab,
                             .fan_out = config.width,
                             .width_dims = {1}});
}

Value Embedding::operator()(Value ids) const {
  const std::string module = fmt::format("Embedding '{}'", name_);
  if (!ids.present()) throw Error(fmt::format("{}: the ids are absent", module));
  if (&ids.graph() != &model_->graph()) {
    throw Error(fmt::format("{}: the ids belong to another graph than the model's", module));
  }
  if (ids.dtype() != DType::kI32) {
    throw Error(fmt::format("{}: ids {} must be i32 token ids, got {}", module,
                            ids.shape().to_string(), dtype_name(ids.dtype())));
  }
  return apply_multiplier(embedding(ids, weight_), model_->rule(weight_));
}

// ---- Norms --------------------------------------------------------------------------------------

namespace {

Value record_norm_parameter(Model& model, const std::string& module, std::string_view leaf,
                            ParameterRole role, const NormConfig& config) {
  return model.parameter(nested_name(module, leaf), {config.width},
                         {.role = role,
                          .fan_in = config.width,
                          .fan_out = config.width,
                          .width_dims = {0},
                          .depth = config.depth});
}

void check_norm_config(std::string_view module, const NormConfig& config) {
  detail::check_positive_size(module, "width", config.width);
  if (!(config.eps >= 0.0) || !std::isfinite(config.eps)) {
    throw Error(fmt::format("{}: eps must be finite and at least 0, got {}", module, config.eps));
  }
}

}  // namespace

LayerNorm::LayerNorm(Model& model, std::string_view name, const NormConfig& config)
    : model_(&model), name_(name), config_(config) {
  check_norm_config(fmt::format("LayerNorm '{}'", name_), config);
  if (config.affine) {
    weight_ = record_norm_parameter(model, name_, "weight", ParameterRole::kNorm, config);
    bias_ = record_norm_parameter(model, name_, "bias", ParameterRole::kBias, config);
  }
}

Value LayerNorm::operator()(Value x) const {
  detail::check_module_input(*model_, fmt::format("LayerNorm '{}'", name_), x, config_.width);
  // Norm gains and shifts have multiplier 1 in every scheme (docs/umup.md), so no
  // apply_multiplier is needed.
  return layer_norm(x, {.weight = weight_, .bias = bias_, .eps = config_.eps});
}

RmsNorm::RmsNorm(Model& model, std::string_view name, const NormConfig& config)
    : model_(&model), name_(name), config_(config) {
  check_norm_config(fmt::format("RmsNorm '{}'", name_), config);
  if (config.affine) {
    weight_ = record_norm_parameter(model, name_, "weight", ParameterRole::kNorm, config);
  }
}

Value RmsNorm::operator()(Value x) const {
  detail::check_module_input(*model_, fmt::format("RmsNorm '{}'", name_), x, config_.width);
  return rms_norm(x, {.weight = weight_, .eps = config_.eps});
}

}  // namespace unitscale

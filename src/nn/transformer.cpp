#include "unitscale/nn/transformer.hpp"

#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "unitscale/error.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/residual.hpp"

namespace unitscale {
namespace {

void check_hyperparameters(std::string_view module, const UmupHyperparameters& hp) {
  const std::pair<std::string_view, double> values[] = {
      {"ffn_act_mult", hp.ffn_act_mult},
      {"attn_softmax_mult", hp.attn_softmax_mult},
      {"residual_mult", hp.residual_mult},
      {"residual_attn_ratio", hp.residual_attn_ratio},
      {"loss_softmax_mult", hp.loss_softmax_mult}};
  for (const auto& [name, value] : values) {
    if (!std::isfinite(value) || value <= 0.0) {
      throw Error(fmt::format("{}: hyperparameter {} must be finite and positive, got {}", module,
                              name, value));
    }
  }
}

// u-μP's depth factor D = L^-½ and the τ rule both count the model's blocks, so a
// parametrization made for another depth would silently give wrong learning rates.
void check_residual_blocks(std::string_view module, const Parametrization& parametrization,
                           int layers) {
  if (parametrization.scheme() != Scheme::kUMuP) return;
  const int blocks = parametrization.options().residual_blocks;
  if (blocks != layers) {
    throw Error(fmt::format(
        "{}: a u-muP model of {} layers needs a parametrization with residual_blocks = {} (the "
        "depth L of its depth factor L^-1/2, whatever the depth convention), got {}",
        module, layers, layers, blocks));
  }
}

const TransformerLayerConfig& checked_layer(std::string_view name, const Model& model,
                                            const TransformerLayerConfig& config) {
  const std::string module = fmt::format("TransformerLayer '{}'", name);
  detail::check_positive_size(module, "width", config.width);
  detail::check_positive_size(module, "mlp_expansion", config.mlp_expansion);
  if (config.layers < 1 || config.index < 0 || config.index >= config.layers) {
    throw Error(fmt::format("{}: index {} must be in [0, layers) with layers = {} >= 1", module,
                            config.index, config.layers));
  }
  check_hyperparameters(module, config.hyperparameters);
  check_residual_blocks(module, model.parametrization(), config.layers);
  return config;
}

const DecoderConfig& checked_decoder(std::string_view name, const Model& model,
                                     const DecoderConfig& config) {
  const std::string module = fmt::format("TransformerDecoder '{}'", name);
  detail::check_positive_size(module, "vocab", config.vocab);
  detail::check_positive_size(module, "width", config.width);
  detail::check_positive_size(module, "depth", config.depth);
  detail::check_positive_size(module, "heads", config.heads);
  if (config.width % config.heads != 0) {
    throw Error(fmt::format("{}: width {} is not divisible by heads {}", module, config.width,
                            config.heads));
  }
  check_hyperparameters(module, config.hyperparameters);
  check_residual_blocks(module, model.parametrization(), config.depth);
  return config;
}

double rule_tau(const TransformerLayerConfig& config, int branch) {
  return transformer_residual_scaling_rule(config.layers, config.hyperparameters.residual_mult,
                                           config.hyperparameters.residual_attn_ratio)
      [static_cast<std::size_t>(2 * config.index + branch)];
}

Value apply_norm(const std::variant<RmsNorm, LayerNorm>& norm, Value x) {
  return std::visit([&](const auto& n) { return n(x); }, norm);
}

std::variant<RmsNorm, LayerNorm> make_any_norm(Model& model, const std::string& name,
                                               NormKind kind, const NormConfig& config) {
  if (kind == NormKind::kLayer) return LayerNorm(model, name, config);
  return RmsNorm(model, name, config);
}

}  // namespace

// ---- TransformerLayer ---------------------------------------------------------------------------

TransformerLayer::Norm TransformerLayer::make_norm(Model& model, const std::string& name,
                                                   const TransformerLayerConfig& c,
                                                   std::optional<int> depth) {
  return make_any_norm(model, name, c.norm,
                       {.width = c.width, .affine = c.norm_affine, .eps = c.norm_eps,
                        .depth = depth});
}

TransformerLayer::Mlp TransformerLayer::make_mlp(Model& model, const std::string& name,
                                                 const TransformerLayerConfig& c) {
  const MlpConfig config{.width = c.width,
                         .expansion = c.mlp_expansion,
                         .depth = c.index,
                         .ffn_act_mult = c.hyperparameters.ffn_act_mult};
  if (c.mlp == MlpKind::kGelu) return GeluMlp(model, name, config);
  return SwiGluMlp(model, name, config);
}

TransformerLayer::TransformerLayer(Model& model, std::string_view name,
                                   const TransformerLayerConfig& config)
    : name_(name),
      config_(checked_layer(name, model, config)),
      tau_attention_(rule_tau(config, 0)),
      tau_mlp_(rule_tau(config, 1)),
      attention_norm_(make_norm(model, nested_name(name, "attn_norm"), config, config.index)),
      attention_(model, nested_name(name, "attn"),
                 {.width = config.width,
                  .heads = config.heads,
                  .depth = config.index,
                  .attn_softmax_mult = config.hyperparameters.attn_softmax_mult,
                  .attention_logit_scale = config.attention_logit_scale}),
      mlp_norm_(make_norm(model, nested_name(name, "mlp_norm"), config, config.index)),
      mlp_(make_mlp(model, nested_name(name, "mlp"), config)) {}

Value TransformerLayer::operator()(Value x, LayerTrace* trace) const {
  const ResidualSplit attn_in = residual_split(x, tau_attention_);
  const Value a = attention_(apply_norm(attention_norm_, attn_in.branch));
  x = residual_add(a, attn_in.skip, tau_attention_);
  const ResidualSplit mlp_in = residual_split(x, tau_mlp_);
  const Value normed = apply_norm(mlp_norm_, mlp_in.branch);
  const Value f = std::visit([&](const auto& mlp) { return mlp(normed); }, mlp_);
  const Value y = residual_add(f, mlp_in.skip, tau_mlp_);
  if (trace != nullptr) *trace = {.attention_branch = a, .mlp_branch = f, .output = y};
  return y;
}

// ---- TransformerDecoder -------------------------------------------------------------------------

namespace {

std::vector<TransformerLayer> make_layers(Model& model, std::string_view name,
                                          const DecoderConfig& c) {
  std::vector<TransformerLayer> layers;
  layers.reserve(static_cast<std::size_t>(c.depth));
  for (int i = 0; i < c.depth; ++i) {
    layers.emplace_back(model, nested_name(name, fmt::format("layers.{}", i)),
                        TransformerLayerConfig{.width = c.width,
                                               .heads = c.heads,
                                               .mlp_expansion = c.mlp_expansion,
                                               .mlp = c.mlp,
                                               .norm = c.norm,
                                               .norm_affine = c.norm_affine,
                                               .norm_eps = c.norm_eps,
                                               .attention_logit_scale = c.attention_logit_scale,
                                               .hyperparameters = c.hyperparameters,
                                               .index = i,
                                               .layers = c.depth});
  }
  return layers;
}

}  // namespace

TransformerDecoder::TransformerDecoder(Model& model, std::string_view name,
                                       const DecoderConfig& config)
    : name_(name),
      config_(checked_decoder(name, model, config)),
      embedding_(model, nested_name(name, "embedding"),
                 {.vocab = config.vocab, .width = config.width}),
      layers_(make_layers(model, name, config)),
      final_norm_(make_any_norm(
          model, nested_name(name, "final_norm"), config.norm,
          {.width = config.width, .affine = config.norm_affine, .eps = config.norm_eps})),
      readout_(model, nested_name(name, "readout"), {.in = config.width, .out = config.vocab}) {}

Value TransformerDecoder::logits(Value ids, DecoderTrace* trace) const {
  const std::string module = fmt::format("TransformerDecoder '{}'", name_);
  if (!ids.present() || ids.shape().rank() != 2) {
    throw Error(fmt::format("{}: ids {} must be [batch, seq]", module,
                            ids.present() ? ids.shape().to_string() : "(absent)"));
  }
  Value x = embedding_(ids);
  DecoderTrace local;
  DecoderTrace& t = trace != nullptr ? *trace : local;
  t = DecoderTrace{};
  t.embedding = x;
  for (const TransformerLayer& layer : layers_) {
    LayerTrace layer_trace;
    x = layer(x, &layer_trace);
    t.attention_branch.push_back(layer_trace.attention_branch);
    t.mlp_branch.push_back(layer_trace.mlp_branch);
    t.residual.push_back(layer_trace.output);
  }
  t.logits = readout_(apply_norm(final_norm_, x));
  return t.logits;
}

Value TransformerDecoder::loss(Value ids, Value targets, DecoderTrace* trace) const {
  const std::string module = fmt::format("TransformerDecoder '{}'", name_);
  const std::int64_t tokens = ids.present() ? ids.shape().numel() : 0;
  const bool flat = targets.present() && targets.shape() == Shape{tokens};
  if (!targets.present() || !ids.present() || targets.dtype() != DType::kI32 ||
      (!flat && targets.shape() != ids.shape())) {
    throw Error(fmt::format("{}: targets {} must be i32 of the ids' shape {} (or flat [{}])",
                            module, targets.present() ? targets.shape().to_string() : "(absent)",
                            ids.present() ? ids.shape().to_string() : "(absent)", tokens));
  }
  const Value z = logits(ids, trace);
  Value labels = targets;
  if (!flat) labels = reshape(targets, {tokens});
  return cross_entropy(reshape(z, {tokens, config_.vocab}), labels,
                       {.mult = config_.hyperparameters.loss_softmax_mult});
}

void TransformerDecoder::set_base_shapes(Parametrization& parametrization,
                                         const DecoderConfig& base) {
  unitscale::set_base_shapes(parametrization,
                             [&](Model& model) { TransformerDecoder decoder(model, "", base); });
}

}  // namespace unitscale

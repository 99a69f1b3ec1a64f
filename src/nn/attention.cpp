#include "unitscale/nn/attention.hpp"

#include <fmt/format.h>

#include <cmath>

#include "unitscale/error.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

bool finite_positive(double v) { return std::isfinite(v) && v > 0.0; }

// Checks the config before the member linears record anything.
const SelfAttentionConfig& checked(std::string_view name, const SelfAttentionConfig& config) {
  const std::string module = fmt::format("MultiHeadSelfAttention '{}'", name);
  detail::check_positive_size(module, "width", config.width);
  detail::check_positive_size(module, "heads", config.heads);
  if (config.width % config.heads != 0) {
    throw Error(fmt::format("{}: width {} is not divisible by heads {}", module, config.width,
                            config.heads));
  }
  if (!finite_positive(config.attn_softmax_mult)) {
    throw Error(fmt::format("{}: attn_softmax_mult must be finite and positive, got {}", module,
                            config.attn_softmax_mult));
  }
  if (config.attention_logit_scale && !finite_positive(*config.attention_logit_scale)) {
    throw Error(fmt::format("{}: attention_logit_scale must be finite and positive, got {}",
                            module, *config.attention_logit_scale));
  }
  return config;
}

}  // namespace

MultiHeadSelfAttention::MultiHeadSelfAttention(Model& model, std::string_view name,
                                               const SelfAttentionConfig& config)
    : model_(&model),
      name_(name),
      config_(checked(name, config)),
      logit_scale_(config.attention_logit_scale
                       ? *config.attention_logit_scale
                       : model.parametrization().attention_logit_scale(config.width / config.heads)),
      op_mult_(config.attn_softmax_mult * logit_scale_ *
               static_cast<double>(config.width / config.heads)),
      qkv_(model, nested_name(name, "qkv"),
           {.in = config.width, .out = 3 * config.width, .depth = config.depth}),
      out_(model, nested_name(name, "out"),
           {.in = config.width, .out = config.width, .depth = config.depth}) {}

Value MultiHeadSelfAttention::operator()(Value x) const {
  const std::string module = fmt::format("MultiHeadSelfAttention '{}'", name_);
  detail::check_module_input(*model_, module, x, config_.width);
  if (x.shape().rank() != 3) {
    throw Error(fmt::format("{}: input {} must be [batch, seq, {}]", module, x.shape().to_string(),
                            config_.width));
  }
  const std::int64_t batch = x.shape().dim(0), seq = x.shape().dim(1), w = config_.width,
                     h = config_.heads, d = head_dim();
  const Value qkv = qkv_(x);  // [B, S, 3W]: q, k and v side by side, each [B, S, H·d]
  const auto heads_first = [&](int part) {
    const Value part_value = slice(qkv, -1, part * w, (part + 1) * w);
    return transpose(reshape(part_value, {batch, seq, h, d}), 1, 2);  // [B, H, S, d]
  };
  const Value q = heads_first(0), k = heads_first(1), v = heads_first(2);
  const Value o = scaled_dot_product_attention(
      q, k, v, {.mult = op_mult_, .mask = AttentionMask::kCausal});
  const Value merged = reshape(transpose(o, 1, 2), {batch, seq, w});  // [B, S, H·d]
  return out_(merged);
}

}  // namespace unitscale

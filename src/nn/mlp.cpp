#include "unitscale/nn/mlp.hpp"

#include <fmt/format.h>

#include <cmath>

#include "unitscale/error.hpp"
#include "unitscale/ops/activation.hpp"

namespace unitscale {
namespace {

const MlpConfig& checked(std::string_view module, const MlpConfig& config) {
  detail::check_positive_size(module, "width", config.width);
  detail::check_positive_size(module, "expansion", config.expansion);
  if (!std::isfinite(config.ffn_act_mult) || config.ffn_act_mult <= 0.0) {
    throw Error(fmt::format("{}: ffn_act_mult must be finite and positive, got {}", module,
                            config.ffn_act_mult));
  }
  return config;
}

LinearConfig hidden_linear(const MlpConfig& config, std::int64_t in, std::int64_t out) {
  return {.in = in, .out = out, .depth = config.depth, .constraint = config.linear_constraint};
}

}  // namespace

SwiGluMlp::SwiGluMlp(Model& model, std::string_view name, const MlpConfig& config)
    : name_(name),
      config_(checked(fmt::format("SwiGluMlp '{}'", name), config)),
      up_(model, nested_name(name, "up"),
          hidden_linear(config, config.width, config.expansion * config.width)),
      gate_(model, nested_name(name, "gate"),
            hidden_linear(config, config.width, config.expansion * config.width)),
      down_(model, nested_name(name, "down"),
            hidden_linear(config, config.expansion * config.width, config.width)) {}

Value SwiGluMlp::operator()(Value x) const {
  return down_(silu_glu(up_(x), gate_(x), {.mult = config_.ffn_act_mult}));
}

GeluMlp::GeluMlp(Model& model, std::string_view name, const MlpConfig& config)
    : name_(name),
      config_(checked(fmt::format("GeluMlp '{}'", name), config)),
      up_(model, nested_name(name, "up"),
          hidden_linear(config, config.width, config.expansion * config.width)),
      down_(model, nested_name(name, "down"),
            hidden_linear(config, config.expansion * config.width, config.width)) {}

Value GeluMlp::operator()(Value x) const {
  return down_(gelu(up_(x), {.mult = config_.ffn_act_mult}));
}

}  // namespace unitscale

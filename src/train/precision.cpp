#include "unitscale/train/precision.hpp"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "unitscale/error.hpp"

namespace unitscale {

void PrecisionConfig::check(std::string_view owner) const {
  if (!(loss_scale > 0) || !std::isfinite(loss_scale)) {
    throw Error(fmt::format("{}: loss_scale must be finite and positive, got {}", owner, loss_scale));
  }
  if (recipe == "fp32") {
    if (per_tensor_scaling || stochastic_gradients) {
      throw Error(fmt::format("{}: per-tensor scaling and stochastic gradient rounding need a low "
                              "precision (fp8, fp8-critical, fp16 or bf16), but the recipe is fp32",
                              owner));
    }
    return;
  }
  try {
    SimulateFormatOptions::named(recipe);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {} (or fp32)", owner, e.what()));
  }
}

std::optional<SimulateFormatOptions> PrecisionConfig::simulate_format_options(
    std::uint64_t seed) const {
  if (recipe == "fp32") return std::nullopt;
  SimulateFormatOptions options = SimulateFormatOptions::named(recipe);
  options.matmuls.per_tensor_scaling = per_tensor_scaling;
  if (stochastic_gradients) options.matmuls.gradient_rounding = Rounding::kStochastic;
  options.matmuls.seed = static_cast<std::int64_t>(seed);
  return options;
}

std::optional<DynamicLossScaling> PrecisionConfig::dynamic_loss_scale() const {
  if (!dynamic_loss_scaling) return std::nullopt;
  return DynamicLossScaling{.initial = loss_scale == 1.0 ? 65536.0 : loss_scale};
}

std::string PrecisionConfig::to_json() const {
  return nlohmann::json{{"recipe", recipe},
                        {"per_tensor_scaling", per_tensor_scaling},
                        {"stochastic_gradients", stochastic_gradients},
                        {"loss_scale", loss_scale},
                        {"dynamic_loss_scaling", dynamic_loss_scaling}}
      .dump();
}

}  // namespace unitscale

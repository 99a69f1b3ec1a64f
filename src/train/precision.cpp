#include "unitscale/train/precision.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "unitscale/error.hpp"

namespace unitscale {

void PrecisionConfig::check(std::string_view owner) const {
  if (!(loss_scale > 0) || !std::isfinite(loss_scale)) {
    throw Error(fmt::format("{}: loss_scale must be finite and positive, got {}", owner, loss_scale));
  }
  if (scalify()) {
    if (per_tensor_scaling || stochastic_gradients || round_attention || dynamic_loss_scaling ||
        loss_scale != 1.0) {
      throw Error(fmt::format(
          "{}: {} propagates scales instead of rounding matmuls or scaling the loss: it takes "
          "no per-tensor scaling, stochastic rounding, attention rounding or loss scaling",
          owner, recipe));
    }
    if (matmul_scaling != MatmulScaling::kPropagated && recipe != "scalify-fp8") {
      throw Error(fmt::format("{}: {} scaling of the matmuls needs scalify-fp8, got {}", owner,
                              matmul_scaling_name(matmul_scaling), recipe));
    }
    if (amax_history_length < 1) {
      throw Error(
          fmt::format("{}: amax_history_length must be ≥ 1, got {}", owner, amax_history_length));
    }
    for (const auto& [storage, what] :
         {std::pair{optimizer_state, "optimizer state"}, {master_weights, "master weights"}}) {
      if (storage != DType::kF32 && storage != DType::kF16 && storage != DType::kBF16) {
        throw Error(fmt::format("{}: the {} storage must be f32, f16 or bf16, got {}", owner, what,
                                dtype_name(storage)));
      }
    }
    for (const auto& [storage, what] :
         {std::pair{first_moment, "first moments'"}, {saved_activations, "saved activations'"}}) {
      if (storage && *storage != DType::kE4M3FN && *storage != DType::kE5M2) {
        throw Error(fmt::format("{}: the {} storage must be e4m3fn or e5m2, got {}", owner, what,
                                dtype_name(*storage)));
      }
    }
    return;
  }
  if (first_moment || saved_activations) {
    throw Error(
        fmt::format("{}: FP8 first moments and saved activations are scale propagation's "
                    "storage: they need scalify-fp16 or scalify-fp8, got {}",
                    owner, recipe));
  }
  if (recipe == "fp32") {
    if (per_tensor_scaling || stochastic_gradients || round_attention) {
      throw Error(
          fmt::format("{}: per-tensor scaling, stochastic gradient rounding and rounding "
                      "attention need a low precision (fp8, fp8-critical, fp16 or bf16), "
                      "but the recipe is fp32",
                      owner));
    }
    return;
  }
  try {
    SimulateFormatOptions::named(recipe);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {} (or fp32, scalify-fp16, scalify-fp8)", owner, e.what()));
  }
}

namespace {

// The modifiers of PrecisionConfig::parse, in name() order.
struct Modifier {
  std::string_view word;
  bool PrecisionConfig::*flag;
};
constexpr Modifier kModifiers[] = {{"attention", &PrecisionConfig::round_attention},
                                   {"scaled", &PrecisionConfig::per_tensor_scaling},
                                   {"sr", &PrecisionConfig::stochastic_gradients},
                                   {"dls", &PrecisionConfig::dynamic_loss_scaling}};

}  // namespace

PrecisionConfig PrecisionConfig::parse(std::string_view text) {
  PrecisionConfig config;
  const std::size_t plus = text.find('+');
  config.recipe = std::string(text.substr(0, plus));
  for (std::size_t at = plus; at != std::string_view::npos;) {
    const std::size_t next = text.find('+', at + 1);
    const std::string_view word =
        text.substr(at + 1, next == std::string_view::npos ? next : next - at - 1);
    const auto* m = std::find_if(std::begin(kModifiers), std::end(kModifiers),
                                 [&](const Modifier& mod) { return mod.word == word; });
    if (m == std::end(kModifiers)) {
      throw Error(
          fmt::format("precision '{}': unknown modifier '{}' (expected attention, scaled, "
                      "sr or dls after the recipe, each after a '+')",
                      text, word));
    }
    config.*(m->flag) = true;
    at = next;
  }
  config.check(fmt::format("precision '{}'", text));
  return config;
}

std::string PrecisionConfig::name() const {
  std::string text = recipe;
  for (const Modifier& m : kModifiers) {
    if (this->*(m.flag)) text += "+" + std::string(m.word);
  }
  return text;
}

bool PrecisionConfig::scalify() const {
  return recipe == "scalify-fp16" || recipe == "scalify-fp8";
}

std::optional<ScalePolicy> PrecisionConfig::scale_policy() const {
  if (!scalify()) return std::nullopt;
  ScalePolicy policy = recipe == "scalify-fp8" ? ScalePolicy::fp8() : ScalePolicy::fp16();
  policy.optimizer_state = optimizer_state;
  policy.parameters = master_weights;
  policy.matmul_scaling = matmul_scaling;
  policy.amax_history_length = amax_history_length;
  policy.first_moment = first_moment;
  policy.saved_activations = saved_activations;
  // Both keep less between the passes: asking for the one asks for the other.
  policy.recast_weights_for_backward = saved_activations.has_value();
  return policy;
}

std::optional<SimulateFormatOptions> PrecisionConfig::simulate_format_options(
    std::uint64_t seed) const {
  if (recipe == "fp32" || scalify()) return std::nullopt;
  SimulateFormatOptions options = SimulateFormatOptions::named(recipe);
  options.matmuls.per_tensor_scaling = per_tensor_scaling;
  if (stochastic_gradients) options.matmuls.gradient_rounding = Rounding::kStochastic;
  options.attention_inputs = round_attention;
  // Dynamic loss scaling backs off when a gradient overflows to Inf; a saturating gradient cast
  // would hide the overflow (clipping the largest gradients instead), so it overflows to Inf here.
  if (dynamic_loss_scaling) options.matmuls.gradient_overflow = Overflow::kNonFinite;
  options.matmuls.seed = static_cast<std::int64_t>(seed);
  return options;
}

std::optional<DynamicLossScaling> PrecisionConfig::dynamic_loss_scale() const {
  if (!dynamic_loss_scaling) return std::nullopt;
  return DynamicLossScaling{.initial = loss_scale == 1.0 ? 65536.0 : loss_scale};
}

std::string PrecisionConfig::to_json() const {
  nlohmann::json json{{"recipe", recipe},
                      {"per_tensor_scaling", per_tensor_scaling},
                      {"stochastic_gradients", stochastic_gradients},
                      {"loss_scale", loss_scale},
                      {"dynamic_loss_scaling", dynamic_loss_scaling},
                      {"round_attention", round_attention}};
  if (scalify()) {  // only here, so that the other recipes' checkpoints keep their config
    json["optimizer_state"] = dtype_name(optimizer_state);
    json["master_weights"] = dtype_name(master_weights);
    json["matmul_scaling"] = matmul_scaling_name(matmul_scaling);
    if (matmul_scaling == MatmulScaling::kDelayedAmax) {
      json["amax_history_length"] = amax_history_length;
    }
    if (first_moment) json["first_moment"] = dtype_name(*first_moment);
    if (saved_activations) json["saved_activations"] = dtype_name(*saved_activations);
  }
  return json.dump();
}

}  // namespace unitscale

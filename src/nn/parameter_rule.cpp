#include "unitscale/nn/parameter_rule.hpp"

#include <fmt/format.h>

#include <cmath>

#include "unitscale/error.hpp"

namespace unitscale {

std::string_view init_distribution_name(InitDistribution distribution) {
  switch (distribution) {
    case InitDistribution::kNormal:
      return "normal";
    case InitDistribution::kUniform:
      return "uniform";
    case InitDistribution::kConstant:
      return "constant";
  }
  return "?";
}

std::string_view weight_decay_mode_name(WeightDecayMode mode) {
  switch (mode) {
    case WeightDecayMode::kIndependent:
      return "independent";
    case WeightDecayMode::kCoupledToLr:
      return "coupled";
    case WeightDecayMode::kExcluded:
      return "excluded";
  }
  return "?";
}

double ParameterRule::weight_gradient_scale(std::int64_t rows) const {
  if (rows < 1) {
    throw Error(fmt::format("parameter '{}': weight-gradient scale needs at least 1 row, got {}",
                            name, rows));
  }
  switch (weight_gradient) {
    case WeightGradientScale::kNone:
      return 1.0;
    case WeightGradientScale::kInverseSqrtBatch:
      return 1.0 / std::sqrt(static_cast<double>(rows));
    case WeightGradientScale::kSqrtRowsPerToken:
      // An embedding table [V, d]: each of its V rows receives about rows/V token gradients.
      return std::sqrt(static_cast<double>(shape.dim(0)) / static_cast<double>(rows));
  }
  return 1.0;
}

double ParameterRule::weight_decay_coefficient(double lambda, double learning_rate) const {
  switch (weight_decay) {
    case WeightDecayMode::kIndependent:
      if (!(learning_rate > 0)) {
        throw Error(fmt::format(
            "parameter '{}': independent weight decay divides by the learning rate, which must be "
            "positive (got {})",
            name, learning_rate));
      }
      return lambda / learning_rate;
    case WeightDecayMode::kCoupledToLr:
      return lambda;
    case WeightDecayMode::kExcluded:
      return 0.0;
  }
  return lambda;
}

std::string ParameterRule::to_string() const {
  const std::string init_text =
      init == InitDistribution::kConstant
          ? fmt::format("const {:g}", init_value)
          : fmt::format("{} std {:.4g}", init == InitDistribution::kNormal ? "N" : "U", init_std);
  return fmt::format(
      "{:<24} {:<9} {:<14} init {:<16} mult {:<10.4g} adam {:<10.4g} sgd {:<10.4g} wd {}", name,
      role ? parameter_role_name(*role) : "(none)", shape.to_string(), init_text, multiplier,
      adam_lr_factor, sgd_lr_factor, weight_decay_mode_name(weight_decay));
}

}  // namespace unitscale

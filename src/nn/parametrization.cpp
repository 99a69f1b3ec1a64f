#include "unitscale/nn/parametrization.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// Builds errors that name the parameter, its shape and what was wrong.
Error parameter_error(std::string_view name, const Shape& shape, std::string_view what) {
  return Error(fmt::format("parameter '{}' {}: {}", name, shape.to_string(), what));
}

bool is_weight_like(ParameterRole role) {
  return role == ParameterRole::kWeight || role == ParameterRole::kEmbedding ||
         role == ParameterRole::kInput || role == ParameterRole::kOutput;
}

double sp_weight_std(SpInit init, double fan_in) {
  switch (init) {
    case SpInit::kPyTorchUniform:
      return 1.0 / std::sqrt(3.0 * fan_in);
    case SpInit::kGpt2Normal:
      return 0.02;
  }
  return 1.0;
}

InitDistribution sp_weight_distribution(SpInit init) {
  return init == SpInit::kPyTorchUniform ? InitDistribution::kUniform : InitDistribution::kNormal;
}

// The fields every scheme shares: identity, and a constant init for biases (0) and norm gains (1).
ParameterRule base_rule(std::string_view name, const Shape& shape, const ParameterInfo& info) {
  ParameterRule rule{.name = std::string(name), .shape = shape, .role = info.role};
  if (info.role == ParameterRole::kBias || info.role == ParameterRole::kNorm) {
    rule.init = InitDistribution::kConstant;
    rule.init_value = info.role == ParameterRole::kNorm ? 1.0 : 0.0;
  }
  return rule;
}

ParameterRule sp_rule(std::string_view name, const Shape& shape, const ParameterInfo& info,
                      const ParametrizationOptions& options) {
  ParameterRule rule = base_rule(name, shape, info);
  if (info.role == ParameterRole::kEmbedding) {
    rule.init = InitDistribution::kNormal;
    rule.init_std = 1.0;
  } else if (is_weight_like(info.role)) {
    rule.init = sp_weight_distribution(options.sp_init);
    rule.init_std = sp_weight_std(options.sp_init, static_cast<double>(info.fan_in));
  }
  return rule;  // multiplier 1, LR factors 1, weight decay coupled to the LR
}

// μP's width multipliers of a parameter against its base shape.
struct WidthMultipliers {
  double fan_in = 1.0;   // m_in, matrix-like parameters
  double fan_out = 1.0;  // m_out, matrix-like parameters
  double vector = 1.0;   // m_w, vector-like parameters (over their one width dim)
};

WidthMultipliers mup_width_multipliers(std::string_view name, const Shape& shape,
                                       const ParameterInfo& info, const Shape& base) {
  if (base.rank() != shape.rank()) {
    throw parameter_error(name, shape,
                          fmt::format("μP base shape {} has a different rank", base.to_string()));
  }
  for (int d = 0; d < shape.rank(); ++d) {
    const bool width_dim =
        std::find(info.width_dims.begin(), info.width_dims.end(), d) != info.width_dims.end();
    if (base.dim(d) < 1) {
      throw parameter_error(name, shape,
                            fmt::format("μP base shape {} has a zero dimension", base.to_string()));
    }
    if (!width_dim && base.dim(d) != shape.dim(d)) {
      throw parameter_error(
          name, shape,
          fmt::format("dim {} differs from the μP base shape {} but is not a width dim", d,
                      base.to_string()));
    }
  }
  const auto ratio = [](std::int64_t a, std::int64_t b) {
    return static_cast<double>(a) / static_cast<double>(b);
  };
  WidthMultipliers m;
  if (shape.rank() >= 1) m.fan_out = ratio(shape.dim(0), base.dim(0));
  if (shape.rank() >= 2) m.fan_in = ratio(shape.numel() / shape.dim(0), base.numel() / base.dim(0));
  for (const int d : info.width_dims) m.vector *= ratio(shape.dim(d), base.dim(d));
  return m;
}

ParameterRule mup_rule(std::string_view name, const Shape& shape, const ParameterInfo& info,
                       const ParametrizationOptions& options, const std::optional<Shape>& base,
                       double embedding_lr_exponent) {
  if (!base) {
    throw parameter_error(name, shape,
                          "μP needs a base shape for every parameter (set_base_shape)");
  }
  const std::size_t width_dims = info.width_dims.size();
  const bool matrix_like = info.role == ParameterRole::kWeight;
  if (matrix_like && width_dims < 2) {
    throw parameter_error(name, shape,
                          fmt::format("a μP hidden weight needs two width dims, got {}; a weight "
                                      "from the width to a fixed size must be an output (readout)",
                                      width_dims));
  }
  const bool needs_one_width_dim = info.role == ParameterRole::kEmbedding ||
                                   info.role == ParameterRole::kInput ||
                                   info.role == ParameterRole::kOutput;
  if ((needs_one_width_dim && width_dims != 1) || (!matrix_like && width_dims > 1)) {
    throw parameter_error(
        name, shape,
        fmt::format("a μP {} parameter is vector-like and needs {} width dim, "
                    "got {}",
                    parameter_role_name(info.role),
                    needs_one_width_dim ? "exactly one" : "at most one", width_dims));
  }
  const WidthMultipliers m = mup_width_multipliers(name, shape, info, *base);
  const double fan_in = static_cast<double>(info.fan_in);

  ParameterRule rule = base_rule(name, shape, info);
  const InitDistribution weight_distribution = sp_weight_distribution(options.sp_init);
  switch (info.role) {
    case ParameterRole::kEmbedding:
      rule.init = InitDistribution::kNormal;
      rule.init_std = 1.0;
      rule.multiplier = options.mup_input_multiplier;
      rule.adam_lr_factor = std::pow(m.vector, embedding_lr_exponent);
      rule.sgd_lr_factor = m.vector;
      break;
    case ParameterRole::kInput:
      rule.init = weight_distribution;
      rule.init_std = sp_weight_std(options.sp_init, fan_in);
      rule.multiplier = options.mup_input_multiplier;
      rule.sgd_lr_factor = m.vector;
      break;
    case ParameterRole::kWeight:
      // σ at the base fan-in, scaled by √(base_fan_in/fan_in): for PyTorch's init this is the SP
      // std at the actual fan-in; for the fixed-std gpt2 init it shrinks with width, as μP needs.
      rule.init = weight_distribution;
      rule.init_std = sp_weight_std(options.sp_init, fan_in / m.fan_in) / std::sqrt(m.fan_in);
      rule.adam_lr_factor = 1.0 / m.fan_in;
      rule.sgd_lr_factor = m.fan_out / m.fan_in;
      break;
    case ParameterRole::kOutput:
      // Constant in width (the base model's init); the 1/m_w lives in the multiplier.
      rule.init = weight_distribution;
      rule.init_std = sp_weight_std(options.sp_init, fan_in / m.vector);
      rule.multiplier = options.mup_output_multiplier / m.vector;
      rule.sgd_lr_factor = m.vector;
      break;
    case ParameterRole::kBias:
    case ParameterRole::kNorm:
      rule.sgd_lr_factor = m.vector;
      break;
  }
  rule.backward_multiplier = rule.multiplier;
  return rule;
}

}  // namespace

std::string_view scheme_name(Scheme scheme) {
  switch (scheme) {
    case Scheme::kSP:
      return "SP";
    case Scheme::kMuP:
      return "muP";
    case Scheme::kUMuP:
      return "u-muP";
  }
  return "?";
}

std::string_view scheme_display_name(Scheme scheme) {
  switch (scheme) {
    case Scheme::kSP:
      return "SP";
    case Scheme::kMuP:
      return "μP";
    case Scheme::kUMuP:
      return "u-μP";
  }
  return "?";
}

Scheme scheme_from_flag(std::string_view name, std::string_view flag) {
  if (name == "sp") return Scheme::kSP;
  if (name == "mup") return Scheme::kMuP;
  if (name == "umup") return Scheme::kUMuP;
  throw Error(fmt::format("{}: unknown scheme '{}' (sp, mup, umup)", flag, name));
}

std::int64_t optimizer_fan_in(std::string_view name, const Shape& shape) {
  if (shape.rank() == 0) throw parameter_error(name, shape, "a scalar parameter has no fan-in");
  if (shape.rank() == 1) return shape.dim(0);
  return shape.dim(0) == 0 ? 0 : shape.numel() / shape.dim(0);
}

Parametrization::Parametrization(Scheme scheme, ParametrizationOptions options)
    : scheme_(scheme), options_(std::move(options)) {
  if (options_.residual_blocks < 0) {
    throw Error(fmt::format("Parametrization: residual_blocks must be at least 0, got {}",
                            options_.residual_blocks));
  }
  if (options_.embedding_lr_exponent && !std::isfinite(*options_.embedding_lr_exponent)) {
    throw Error("Parametrization: embedding_lr_exponent must be finite");
  }
  if (!std::isfinite(options_.mup_input_multiplier) ||
      !std::isfinite(options_.mup_output_multiplier)) {
    throw Error("Parametrization: the μP multipliers must be finite");
  }
}

double Parametrization::embedding_lr_exponent() const {
  if (options_.embedding_lr_exponent) return *options_.embedding_lr_exponent;
  return scheme_ == Scheme::kUMuP ? -0.5 : 0.0;
}

void Parametrization::set_base_shape(std::string_view name, const Shape& base_shape) {
  const auto it = base_shapes_.find(name);
  if (it == base_shapes_.end()) {
    base_shapes_.emplace(std::string(name), base_shape);
  } else if (it->second != base_shape) {
    throw Error(fmt::format("parameter '{}': base shape already set to {}, cannot change it to {}",
                            name, it->second.to_string(), base_shape.to_string()));
  }
}

std::optional<Shape> Parametrization::base_shape(std::string_view name) const {
  const auto it = base_shapes_.find(name);
  if (it == base_shapes_.end()) return std::nullopt;
  return it->second;
}

ParameterRule Parametrization::rule(std::string_view name, const Shape& shape,
                                    const std::optional<ParameterInfo>& info) const {
  if (!info) {
    if (options_.missing_metadata == MissingMetadata::kError) {
      throw parameter_error(name, shape,
                            "has no parameter metadata (role, fan-in, fan-out); give it a "
                            "ParameterInfo or allow MissingMetadata::kUnscaledLr");
    }
    // Unscaled: N(0, 1), multiplier 1, LR factor 1; the scheme's weight-decay mode.
    ParameterRule rule{.name = std::string(name), .shape = shape, .role = std::nullopt};
    rule.weight_decay =
        scheme_ == Scheme::kUMuP ? WeightDecayMode::kIndependent : WeightDecayMode::kCoupledToLr;
    return rule;
  }
  info->check(name, shape);

  ParameterRule rule;
  switch (scheme_) {
    case Scheme::kSP:
      rule = sp_rule(name, shape, *info, options_);
      break;
    case Scheme::kMuP:
      rule = mup_rule(name, shape, *info, options_, base_shape(name), embedding_lr_exponent());
      break;
    case Scheme::kUMuP: {
      rule = base_rule(name, shape, *info);
      const double fan_in = static_cast<double>(info->fan_in);
      const double shape_fan_in = static_cast<double>(optimizer_fan_in(name, shape));
      if (shape_fan_in < 1) throw parameter_error(name, shape, "has an optimizer fan-in of 0");

      double depth_factor = 1.0;
      if (info->depth) {
        const int blocks = options_.residual_blocks;
        if (blocks < 1) {
          throw parameter_error(name, shape,
                                fmt::format("has depth {} but the parametrization has no "
                                            "residual_blocks (the model's depth L)",
                                            *info->depth));
        }
        if (*info->depth >= blocks) {
          throw parameter_error(
              name, shape,
              fmt::format("depth {} is outside the {} residual blocks", *info->depth, blocks));
        }
        const int depth =
            options_.depth_convention == DepthConvention::kBranches ? 2 * blocks : blocks;
        depth_factor = 1.0 / std::sqrt(static_cast<double>(depth));
      }

      if (is_weight_like(info->role)) {
        rule.init = InitDistribution::kNormal;
        rule.init_std = 1.0;
      }
      rule.weight_gradient = info->role == ParameterRole::kEmbedding
                                 ? WeightGradientScale::kSqrtRowsPerToken
                                 : WeightGradientScale::kInverseSqrtBatch;
      switch (info->role) {
        case ParameterRole::kEmbedding:
          rule.adam_lr_factor =
              depth_factor * std::pow(static_cast<double>(shape.dim(-1)), embedding_lr_exponent());
          break;
        case ParameterRole::kWeight:
        case ParameterRole::kInput:
          rule.multiplier = rule.backward_multiplier = 1.0 / std::sqrt(fan_in);
          rule.adam_lr_factor = depth_factor / std::sqrt(shape_fan_in);
          break;
        case ParameterRole::kOutput:
          rule.multiplier = 1.0 / fan_in;
          rule.backward_multiplier = 1.0 / std::sqrt(static_cast<double>(info->fan_out));
          rule.adam_lr_factor = depth_factor;
          break;
        case ParameterRole::kBias:
        case ParameterRole::kNorm:
          rule.adam_lr_factor = depth_factor;
          break;
      }
      // An unconstrained readout leaves every gradient unit-scaled, so SGD steps like Adam. A
      // ToOutputScale readout makes SGD follow TP-V's MuSGD through the SGD form of abc-symmetry
      // (A/θ, B·θ, C·θ²), which multiplies each non-readout factor by fan_in(p).
      rule.sgd_lr_factor = rule.adam_lr_factor;
      if (options_.sgd_readout == SgdReadoutConstraint::kToOutputScale &&
          info->role != ParameterRole::kOutput) {
        rule.sgd_lr_factor *= shape_fan_in;
      }
      rule.weight_decay = WeightDecayMode::kIndependent;
      break;
    }
  }
  if (info->role == ParameterRole::kNorm &&
      options_.norm_weight_decay == NormWeightDecay::kExclude) {
    rule.weight_decay = WeightDecayMode::kExcluded;
  }
  return rule;
}

double Parametrization::attention_logit_scale(std::int64_t d_head) const {
  if (d_head < 1)
    throw Error(fmt::format("attention_logit_scale: d_head must be at least 1, got {}", d_head));
  const double d = static_cast<double>(d_head);
  return scheme_ == Scheme::kSP ? 1.0 / std::sqrt(d) : 1.0 / d;
}

}  // namespace unitscale

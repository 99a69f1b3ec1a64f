#pragma once
// What a parametrization (SP, μP, u-μP; arXiv 2407.17465 §3-4) needs to know about a parameter to
// give it its initialisation, multiplier and learning rate: its role, its fan-in and fan-out, which
// of its dimensions grow with the model's width, and its depth in the residual stack.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/tensor/shape.hpp"

namespace unitscale {

enum class ParameterRole {
  kWeight,     // a hidden matmul weight (attention projections, FFN)
  kEmbedding,  // an embedding table
  kInput,      // the first layer's weight, reading the data (fan-in does not grow with width)
  kOutput,     // the readout weight (fan-out does not grow with width)
  kBias,
  kNorm,       // a normalisation's gain or bias
};

std::string_view parameter_role_name(ParameterRole role);

struct ParameterInfo {
  ParameterRole role = ParameterRole::kWeight;
  std::int64_t fan_in = 1;
  std::int64_t fan_out = 1;
  std::vector<int> width_dims = {};  // dimensions of the shape that scale with the model's width
  std::optional<int> depth = {};     // the residual block it belongs to (0-based); none outside

  // Checks the info against the parameter's shape and throws unitscale::Error naming `name`.
  void check(std::string_view name, const Shape& shape) const;
  // "role=weight, fan_in=8, fan_out=3, width_dims=[0, 1], depth=2", as the printer shows it.
  std::string to_string() const;
};

}  // namespace unitscale

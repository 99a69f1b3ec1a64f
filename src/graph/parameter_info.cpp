#include "unitscale/graph/parameter_info.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "unitscale/error.hpp"

namespace unitscale {

std::string_view parameter_role_name(ParameterRole role) {
  switch (role) {
    case ParameterRole::kWeight: return "weight";
    case ParameterRole::kEmbedding: return "embedding";
    case ParameterRole::kInput: return "input";
    case ParameterRole::kOutput: return "output";
    case ParameterRole::kBias: return "bias";
    case ParameterRole::kNorm: return "norm";
  }
  return "?";
}

void ParameterInfo::check(std::string_view name, const Shape& shape) const {
  auto fail = [&](const std::string& what) {
    return Error(fmt::format("parameter '{}' {} ({}): {}", name, shape.to_string(), to_string(), what));
  };
  if (fan_in < 1 || fan_out < 1) throw fail("fan_in and fan_out must be at least 1");
  for (const int d : width_dims) {
    if (d < 0 || d >= shape.rank()) {
      throw fail(fmt::format("width dim {} is not a dimension of a rank-{} shape", d, shape.rank()));
    }
    if (std::count(width_dims.begin(), width_dims.end(), d) > 1) {
      throw fail(fmt::format("width dim {} is listed twice", d));
    }
  }
  if (depth && *depth < 0) throw fail("depth must be at least 0");
}

std::string ParameterInfo::to_string() const {
  std::string text = fmt::format("role={}, fan_in={}, fan_out={}", parameter_role_name(role),
                                 fan_in, fan_out);
  if (!width_dims.empty()) text += fmt::format(", width_dims=[{}]", fmt::join(width_dims, ", "));
  if (depth) text += fmt::format(", depth={}", *depth);
  return text;
}

}  // namespace unitscale

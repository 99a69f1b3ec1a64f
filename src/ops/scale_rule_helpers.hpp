#pragma once
// Private helpers of the ops' unit-scaling rules: how a `mult` is validated, and how the node's
// constraint is applied so that its errors name the op.

#include <fmt/format.h>

#include <cmath>
#include <string_view>
#include <utility>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale::detail {

// The op's "mult" attribute (default 1), which must be finite and positive: the rules divide by it
// and take its logarithm.
inline double mult_of(std::string_view op, const Attributes& attrs) {
  const double mult = attrs.get_double(op, "mult", 1.0);
  if (!std::isfinite(mult) || mult <= 0) {
    throw Error(fmt::format("{}: mult must be finite and positive, got {}", op, mult));
  }
  return mult;
}

// Applies the node's "constraint" attribute (default `fallback`) to `scales`, rethrowing arity
// errors (matmul's left/right constraints on a unary op) with the op's name in front.
inline std::vector<double> constrain(std::string_view op, const Attributes& attrs,
                                     std::vector<double> scales,
                                     Constraint fallback = Constraint::kToOutputScale) {
  try {
    return apply_constraint(attrs.get_enum<Constraint>(op, "constraint", fallback),
                            std::move(scales));
  } catch (const Error& e) {
    const std::string_view what = e.what();
    if (what.starts_with(op)) throw;
    throw Error(fmt::format("{}: {}", op, what));
  }
}

}  // namespace unitscale::detail

#pragma once
// Private helpers shared by the pointwise op families (elementwise, activation, softmax, dropout):
// when to go parallel, how a `mult` is validated, and how a constraint is applied so that its
// errors name the op.

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale::detail {

// Below this many elements the cost of waking OpenMP threads exceeds the work.
inline constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

// The op's "mult" attribute (default 1), which must be finite and positive: the rules divide by it
// and take its logarithm.
inline double mult_of(std::string_view op, const Attributes& attrs) {
  const double mult = attrs.get_double(op, "mult", 1.0);
  if (!std::isfinite(mult) || mult <= 0) {
    throw Error(fmt::format("{}: mult must be finite and positive, got {}", op, mult));
  }
  return mult;
}

// Applies the node's "constraint" attribute (default to_output_scale) to `scales`, rethrowing
// unknown names and arity errors with the op's name in front.
inline std::vector<double> constrain(std::string_view op, const Attributes& attrs,
                                     std::vector<double> scales) {
  try {
    const Constraint constraint = attrs.has("constraint")
                                      ? constraint_from_name(attrs.get_string(op, "constraint"))
                                      : Constraint::kToOutputScale;
    return apply_constraint(constraint, std::move(scales));
  } catch (const Error& e) {
    const std::string_view what = e.what();
    if (what.starts_with(op)) throw;
    throw Error(fmt::format("{}: {}", op, what));
  }
}

}  // namespace unitscale::detail

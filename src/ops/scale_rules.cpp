#include "unitscale/ops/scale_rules.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "unitscale/error.hpp"

namespace unitscale {

const Shape& ScaleRuleArgs::input_shape(std::size_t input) const {
  if (input >= input_shapes.size() || input_shapes[input] == nullptr) {
    throw Error(fmt::format("scale rule: input {} is absent, but the rule needs its shape", input));
  }
  return *input_shapes[input];
}

const Shape& ScaleRuleArgs::output_shape(std::size_t output) const {
  if (output >= output_shapes.size() || output_shapes[output] == nullptr) {
    throw Error(
        fmt::format("scale rule: output {} is absent, but the rule needs its shape", output));
  }
  return *output_shapes[output];
}

Scale ScaleRuleArgs::p2(double factor) const {
  int exponent = 0;
  const double mantissa = std::frexp(factor, &exponent);  // in [0.5, 1) for finite factor > 0
  if (1.0 - mantissa <= 0x1p-51) return Scale::power_of_two(exponent);
  if (mantissa - 0.5 <= 0x1p-52) return Scale::power_of_two(exponent - 1);
  return Scale::rounded(factor, rounding);
}

Scale ScaleRuleArgs::fan_in(double count, double multiplier) const {
  return p2(multiplier * std::sqrt(std::max(count, 1.0)));
}

Scale ScaleRuleArgs::l2(std::initializer_list<Scale> terms, double multiplier) const {
  Scale largest = Scale::zero();
  double sum_of_squares = 0;
  for (const Scale& t : terms) largest = max_scale({largest, t});
  if (largest.is_zero()) return Scale::zero();
  for (const Scale& t : terms) {
    const double ratio = t.value() / largest.value();  // at most 1: no overflow
    sum_of_squares += ratio * ratio;
  }
  return largest * p2(multiplier * std::sqrt(sum_of_squares));
}

Scale ScaleRuleArgs::weighted_l2(std::initializer_list<WeightedScale> terms) const {
  Scale largest = Scale::zero();
  for (const WeightedScale& t : terms) largest = max_scale({largest, t.scale});
  if (largest.is_zero()) return Scale::zero();
  double sum_of_squares = 0;
  for (const WeightedScale& t : terms) {
    const double term = t.weight * (t.scale.value() / largest.value());
    sum_of_squares += term * term;
  }
  // A power-of-two largest scale times a rounded factor stays a power of two.
  return sum_of_squares == 0 ? Scale::zero() : largest * p2(std::sqrt(sum_of_squares));
}

Scale ScaleRuleArgs::sqrt(const Scale& s) const {
  if (s.is_zero()) return Scale::zero();
  if (!s.is_power_of_two()) return p2(std::sqrt(s.value()));
  const int e = s.exponent();
  const int half = (e - (e & 1)) / 2;  // ⌊e/2⌋ for either sign (two's complement)
  return Scale::power_of_two(half + ((e & 1) != 0 && rounding == Pow2Rounding::kUp ? 1 : 0));
}

double ScaleRuleArgs::unit_scale(std::string_view name) const {
  return attrs.get_double("scale", name, 1.0);
}

Scale max_scale(std::span<const Scale> terms) {
  Scale largest = Scale::zero();
  for (const Scale& t : terms) {
    if (t.value() > largest.value()) largest = t;
  }
  return largest;
}

Scale max_scale(std::initializer_list<Scale> terms) {
  return max_scale(std::span<const Scale>(terms.begin(), terms.size()));
}

}  // namespace unitscale

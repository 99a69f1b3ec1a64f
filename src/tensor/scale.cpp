#include "unitscale/tensor/scale.hpp"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>

#include "unitscale/error.hpp"

namespace unitscale {

std::string_view pow2_rounding_name(Pow2Rounding mode) {
  switch (mode) {
    case Pow2Rounding::kDown:
      return "down";
    case Pow2Rounding::kUp:
      return "up";
    case Pow2Rounding::kNone:
      return "none";
  }
  return "?";
}

Pow2Rounding pow2_rounding_from_name(std::string_view name) {
  for (const Pow2Rounding mode : {Pow2Rounding::kDown, Pow2Rounding::kUp, Pow2Rounding::kNone}) {
    if (pow2_rounding_name(mode) == name) return mode;
  }
  throw Error(fmt::format("unknown p2 rounding '{}'; valid names: down, up, none", name));
}

Scale Scale::power_of_two(int exponent) {
  Scale s;
  s.exponent_ = exponent;
  s.value_ = std::ldexp(1.0, exponent);
  return s;
}

Scale Scale::of(double value) {
  if (!std::isfinite(value) || value <= 0) {
    throw Error(fmt::format("Scale: a scale must be finite and positive, got {}", value));
  }
  int exponent = 0;
  // frexp gives value = m · 2^e with m in [0.5, 1): a power of two has m = 0.5 exactly.
  if (std::frexp(value, &exponent) == 0.5) return power_of_two(exponent - 1);
  Scale s;
  s.power_of_two_ = false;
  s.value_ = value;
  return s;
}

Scale Scale::nearest_power_of_two(double value) {
  if (!std::isfinite(value) || value <= 0) {
    throw Error(fmt::format("Scale: a scale must be finite and positive, got {}", value));
  }
  return power_of_two(static_cast<int>(std::floor(std::log2(value) + 0.5)));
}

Scale Scale::rounded(double value, Pow2Rounding mode) {
  const Scale s = of(value);
  if (s.is_power_of_two() || mode == Pow2Rounding::kNone) return s;
  int exponent = 0;
  std::frexp(value, &exponent);  // value = m · 2^exponent, m in (0.5, 1): 2^(exponent-1) < value
  return power_of_two(mode == Pow2Rounding::kDown ? exponent - 1 : exponent);
}

Scale Scale::zero() {
  Scale s;
  s.power_of_two_ = false;
  s.value_ = 0.0;
  return s;
}

int Scale::exponent() const {
  if (!power_of_two_) {
    throw Error(fmt::format("Scale: {} is not a power of two, so it has no exponent", value_));
  }
  return exponent_;
}

double Scale::value() const { return value_; }

Scale Scale::operator*(const Scale& other) const {
  if (power_of_two_ && other.power_of_two_) return power_of_two(exponent_ + other.exponent_);
  if (is_zero() || other.is_zero()) return zero();
  return of(value_ * other.value_);
}

Scale Scale::operator/(const Scale& other) const {
  if (other.is_zero()) throw Error(fmt::format("Scale: {} divided by the zero scale", to_string()));
  if (power_of_two_ && other.power_of_two_) return power_of_two(exponent_ - other.exponent_);
  if (is_zero()) return zero();
  return of(value_ / other.value_);
}

std::string Scale::to_string() const {
  return power_of_two_ ? fmt::format("2^{}", exponent_) : fmt::format("{}", value_);
}

Pow2Parts pow2_decompose(float x) {
  const auto bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t sign = bits & 0x80000000u;
  const std::uint32_t field = (bits >> 23) & 0xFFu;
  std::uint32_t fraction = bits & 0x7FFFFFu;
  if (field == 0xFFu || (field == 0 && fraction == 0)) return {x, 0};  // Inf, NaN, ±0
  int exponent = static_cast<int>(field) - 127;
  if (field == 0) {
    // Subnormal: x = fraction · 2^-149; its leading one at bit p gives 2^(p-149).
    const int p = static_cast<int>(std::bit_width(fraction)) - 1;
    exponent = p - 149;
    fraction = (fraction << (23 - p)) & 0x7FFFFFu;
  }
  return {std::bit_cast<float>(sign | (127u << 23) | fraction), exponent};
}

ScaledScalar make_scaled_scalar(double v) {
  if (!std::isfinite(v)) {
    throw Error(fmt::format("make_scaled_scalar: {} is not finite, so it has no scale", v));
  }
  if (v == 0.0) return {0.0f, Scale::zero()};
  int exponent = 0;
  const double m = std::frexp(v, &exponent);  // v = m · 2^exponent, |m| in [0.5, 1)
  const auto mantissa = static_cast<float>(2 * m);
  // 2m just below 2 may round to 2 in float: then it is 1 at the next exponent.
  if (std::abs(mantissa) == 2.0f) return {mantissa / 2, Scale::power_of_two(exponent)};
  return {mantissa, Scale::power_of_two(exponent - 1)};
}

}  // namespace unitscale

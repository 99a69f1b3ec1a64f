#include "unitscale/tensor/scale.hpp"

#include <fmt/format.h>

#include <cmath>

#include "unitscale/error.hpp"

namespace unitscale {

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

int Scale::exponent() const {
  if (!power_of_two_) {
    throw Error(fmt::format("Scale: {} is not a power of two, so it has no exponent", value_));
  }
  return exponent_;
}

double Scale::value() const { return value_; }

Scale Scale::operator*(const Scale& other) const {
  if (power_of_two_ && other.power_of_two_) return power_of_two(exponent_ + other.exponent_);
  return of(value_ * other.value_);
}

Scale Scale::operator/(const Scale& other) const {
  if (power_of_two_ && other.power_of_two_) return power_of_two(exponent_ - other.exponent_);
  return of(value_ / other.value_);
}

std::string Scale::to_string() const {
  return power_of_two_ ? fmt::format("2^{}", exponent_) : fmt::format("{}", value_);
}

}  // namespace unitscale

#pragma once
// Scale: the factor a scaled tensor's data is multiplied by (value = data · scale), as scale
// propagation (Scalify, arXiv 2407.17353) carries it through a graph. Scales are kept as powers of
// two wherever possible, because multiplying by one is exact in every floating-point format until
// it under- or overflows; a general positive float is allowed where a rule needs one.
//
//   Scale s = Scale::power_of_two(-6);          // 2^-6, exactly
//   Scale t = s * Scale::power_of_two(3);       // 2^-3: exponents add, no rounding
//   Scale u = Scale::nearest_power_of_two(0.3); // 2^-2 (|log2 0.3| rounded to nearest)

#include <cstdint>
#include <string>

namespace unitscale {

class Scale {
 public:
  // 1 = 2^0.
  Scale() = default;
  static Scale power_of_two(int exponent);
  // Any finite value > 0; a power of two is recognised as one. Throws unitscale::Error otherwise.
  static Scale of(double value);
  // The power of two nearest to value in log2 (ties up), for rules that keep scales exact.
  static Scale nearest_power_of_two(double value);

  bool is_power_of_two() const { return power_of_two_; }
  // The exponent of a power-of-two scale; throws unitscale::Error for a general one.
  int exponent() const;
  double value() const;  // exact for powers of two between 2^-1074 and 2^1023

  // Products and quotients of powers of two stay exact powers of two; otherwise they are formed
  // in double.
  Scale operator*(const Scale& other) const;
  Scale operator/(const Scale& other) const;
  friend bool operator==(const Scale&, const Scale&) = default;

  std::string to_string() const;  // "2^-6" or "0.37"

 private:
  bool power_of_two_ = true;
  int exponent_ = 0;    // when a power of two
  double value_ = 1.0;  // otherwise (and kept equal to 2^exponent_ when a power of two)
};

}  // namespace unitscale

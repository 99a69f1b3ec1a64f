#pragma once
// Scale: the factor a scaled tensor's data is multiplied by (value = data · scale), as scale
// propagation (Scalify, arXiv 2407.17353) carries it through a graph. Scales are kept as powers of
// two wherever possible, because multiplying by one is exact in every floating-point format until
// it under- or overflows; a general positive float is allowed where a rule needs one.
//
//   Scale s = Scale::power_of_two(-6);          // 2^-6, exactly
//   Scale t = s * Scale::power_of_two(3);       // 2^-3: exponents add, no rounding
//   Scale u = Scale::nearest_power_of_two(0.3); // 2^-2 (|log2 0.3| rounded to nearest)
//   Scale v = Scale::rounded(4.47, Pow2Rounding::kDown);  // 2^2, Scalify's default rounding
//
// Zero is a scale too: Scalify's "static zero", a tensor known to be all zeros, which rules can
// short-circuit. Every other scale is finite and positive.

#include <cstdint>
#include <string>
#include <string_view>

namespace unitscale {

// How a rule's output scale becomes a power of two (Scalify's p2, arXiv 2407.17353): down
// (2^⌊log2 s⌋, the default), up (2^⌈log2 s⌉; powers of two stay as they are), or not at all.
enum class Pow2Rounding : std::uint8_t { kDown, kUp, kNone };
std::string_view pow2_rounding_name(Pow2Rounding mode);  // "down", "up", "none"
// Throws unitscale::Error listing the valid names.
Pow2Rounding pow2_rounding_from_name(std::string_view name);

class Scale {
 public:
  // 1 = 2^0.
  Scale() = default;
  static Scale power_of_two(int exponent);
  // Any finite value > 0; a power of two is recognised as one. Throws unitscale::Error otherwise.
  static Scale of(double value);
  // The power of two nearest to value in log2 (ties up), for rules that keep scales exact.
  static Scale nearest_power_of_two(double value);
  // `value` (finite, > 0) rounded as `mode` says; kNone keeps it as it is.
  static Scale rounded(double value, Pow2Rounding mode);
  // The static zero.
  static Scale zero();

  bool is_power_of_two() const { return power_of_two_; }
  bool is_zero() const { return !power_of_two_ && value_ == 0.0; }
  // The exponent of a power-of-two scale; throws unitscale::Error for a general one.
  int exponent() const;
  double value() const;  // exact for powers of two between 2^-1074 and 2^1023

  // Products and quotients of powers of two stay exact powers of two; otherwise they are formed
  // in double. A zero factor gives zero; dividing by zero throws unitscale::Error.
  Scale operator*(const Scale& other) const;
  Scale operator/(const Scale& other) const;
  friend bool operator==(const Scale&, const Scale&) = default;

  std::string to_string() const;  // "2^-6", "0.37" or "0"

 private:
  bool power_of_two_ = true;
  int exponent_ = 0;    // when a power of two
  double value_ = 1.0;  // otherwise (and kept equal to 2^exponent_ when a power of two)
};

// x = mantissa · 2^exponent with 1 ≤ |mantissa| < 2 and the sign on the mantissa, for finite
// nonzero x; zeros, infinities and NaN give exponent 0 and mantissa x. Exact for every float,
// subnormals included, and computed on the bits, so FTZ/DAZ modes cannot change it. Values of the
// narrower formats (FP16, BF16, FP8) decompose through their exact conversion to float.
struct Pow2Parts {
  float mantissa = 0.0f;
  int exponent = 0;
};
Pow2Parts pow2_decompose(float x);

// A scalar as Scalify promotes constants: v = mantissa · scale with 1 ≤ |mantissa| < 2 (so that it
// fits any data format) and a power-of-two scale; 0 gives mantissa 0 and the static zero scale.
// Throws unitscale::Error for a non-finite v.
struct ScaledScalar {
  float mantissa = 0.0f;
  Scale scale;
};
ScaledScalar make_scaled_scalar(double v);

}  // namespace unitscale

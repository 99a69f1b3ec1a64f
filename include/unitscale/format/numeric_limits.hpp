#pragma once
// std::numeric_limits for every MiniFloat, generated from its FormatSpec (nothing per type).
//
// Conventions where the standard leaves room: infinity() of a format without Inf is its NaN (a
// sentinel that cannot pass for a number), or max() if it has no NaN either; lowest() of the
// unsigned E8M0 is its smallest value 2^-127.

#include <limits>

#include "unitscale/format/minifloat.hpp"

namespace unitscale::detail {

// floor(n · log10(2)) for |n| < 10^4, in integer arithmetic (log10(2) ≈ 0.30103 to 5 digits).
constexpr int floor_log10_pow2(int n) {
  const long scaled = static_cast<long>(n) * 30103L;
  return static_cast<int>(scaled >= 0 ? scaled / 100000L : -((-scaled + 99999L) / 100000L));
}

}  // namespace unitscale::detail

template <unitscale::FormatSpec S>
class std::numeric_limits<unitscale::MiniFloat<S>> {
  using T = unitscale::MiniFloat<S>;
  static constexpr T code(std::uint32_t c) { return T::from_bits(static_cast<std::uint8_t>(c)); }
  static constexpr float power_of_two(int e) { return unitscale::detail::exact_float(false, 1, e); }

 public:
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = S.is_signed;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = S.has_infinity();
  static constexpr bool has_quiet_NaN = S.has_nan();
  static constexpr bool has_signaling_NaN = false;
  static constexpr std::float_denorm_style has_denorm =
      S.has_subnormals() && S.mantissa_bits > 0 ? std::denorm_present : std::denorm_absent;
  static constexpr bool has_denorm_loss = false;
  static constexpr std::float_round_style round_style = std::round_to_nearest;
  static constexpr bool is_iec559 = false;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = S.mantissa_bits + 1;
  static constexpr int digits10 = unitscale::detail::floor_log10_pow2(digits - 1);
  static constexpr int max_digits10 = unitscale::detail::floor_log10_pow2(digits) + 2;
  static constexpr int radix = 2;
  static constexpr int min_exponent = S.min_normal_exponent() + 1;
  static constexpr int min_exponent10 = -unitscale::detail::floor_log10_pow2(-(min_exponent - 1));
  static constexpr int max_exponent = S.max_exponent() + 1;
  static constexpr int max_exponent10 = unitscale::detail::floor_log10_pow2(max_exponent - 1);
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;

  static constexpr T min() noexcept { return code(S.min_normal_code()); }
  static constexpr T max() noexcept { return code(S.max_magnitude_code()); }
  static constexpr T lowest() noexcept {
    return S.is_signed ? code(S.sign_mask() | S.max_magnitude_code()) : min();
  }
  static constexpr T denorm_min() noexcept { return code(S.min_subnormal_code()); }
  static constexpr T epsilon() noexcept { return T(power_of_two(-S.mantissa_bits)); }
  static constexpr T round_error() noexcept { return T(0.5f); }
  static constexpr T quiet_NaN() noexcept { return S.has_nan() ? code(S.nan_code()) : max(); }
  static constexpr T signaling_NaN() noexcept { return quiet_NaN(); }
  static constexpr T infinity() noexcept {
    return S.has_infinity() ? code(S.infinity_code()) : quiet_NaN();
  }
};

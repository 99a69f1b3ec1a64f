#pragma once
// The scalar reference codec: exact decoding of a code to float, and correctly rounded encoding
// of a float or double into any FormatSpec under any Rounding and Overflow policy.
//
// This is the one place where the conversion semantics of docs/formats.md are written down in
// code. It favours clarity over speed (the bulk SIMD kernels use the integer bias-add trick instead
// and are tested bit-for-bit against this). Everything here is constexpr, so limits and lookup
// tables are computed at compile time from the descriptors.
//
// Encoding rounds once, from the exact input: the magnitude is normalised to sig · 2^(exp - P)
// with sig's top bit at P, and the discarded low bits are compared with half an ulp. Packing the
// target exponent field above the mantissa before rounding makes a mantissa carry bump the
// exponent, and makes "ties to even" mean "ties to the even code" (what E8M0 needs, spec §4.4).

#include <bit>
#include <cstdint>
#include <limits>

#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/rounding.hpp"

namespace unitscale::detail {

template <class F>
struct IeeeBinary;
template <>
struct IeeeBinary<float> {
  using Bits = std::uint32_t;
  static constexpr int kWidth = 32, kMantissa = 23, kBias = 127;
};
template <>
struct IeeeBinary<double> {
  using Bits = std::uint64_t;
  static constexpr int kWidth = 64, kMantissa = 52, kBias = 1023;
};

// Stochastic decision of spec §6: t holds the r discarded bits; pre-round them to R bits with ties
// to even when R < r, then round away iff t_R + rho >= 2^R.
template <class U>
constexpr bool stochastic_rounds_away(U t, int r, RandomBits random);

// Drops the low r bits of m, rounding the quotient per `mode` (negative: the sign of the value,
// which decides the direction of kUp and kDown). Any r >= 0 is allowed.
template <class U>
constexpr U round_shift(U m, int r, Rounding mode, bool negative, RandomBits random) {
  constexpr int kWidth = std::numeric_limits<U>::digits;
  if (r <= 0) return m;
  const U kept = r >= kWidth ? U{0} : static_cast<U>(m >> r);
  const U discarded = r >= kWidth ? m : static_cast<U>(m & ((U{1} << r) - 1));
  if (discarded == 0) return kept;
  switch (mode) {
    case Rounding::kTowardZero:
      return kept;
    case Rounding::kUp:
      return static_cast<U>(kept + (negative ? 0 : 1));
    case Rounding::kDown:
      return static_cast<U>(kept + (negative ? 1 : 0));
    case Rounding::kNearestEven:
    case Rounding::kNearestAway: {
      if (r > kWidth) return kept;  // half an ulp exceeds every representable remainder
      const U half = U{1} << (r - 1);
      if (discarded != half) return static_cast<U>(kept + (discarded > half ? 1 : 0));
      return static_cast<U>(kept + (mode == Rounding::kNearestAway ? 1 : (kept & 1)));
    }
    case Rounding::kStochastic:
      return static_cast<U>(kept + (stochastic_rounds_away(discarded, r, random) ? 1 : 0));
  }
  return kept;
}

template <class U>
constexpr bool stochastic_rounds_away(U t, int r, RandomBits random) {
  const int bits_used = random.count > 0 ? (random.count < 32 ? random.count : 32) : (r < 32 ? r : 32);
  const std::uint64_t one = std::uint64_t{1} << bits_used;
  std::uint64_t t_rounded;
  if (bits_used >= r) {
    t_rounded = static_cast<std::uint64_t>(t) << (bits_used - r);
  } else {
    t_rounded = static_cast<std::uint64_t>(
        round_shift(t, r - bits_used, Rounding::kNearestEven, false, RandomBits{}));
  }
  const std::uint64_t rho = random.word & (one - 1);
  return t_rounded + rho >= one;
}

// ---- results of the special rows of the truth table (spec §4.1) ----

constexpr std::uint32_t sign_of(const FormatSpec& f, bool negative) {
  return negative ? f.sign_mask() : 0;
}

constexpr std::uint32_t saturated_code(const FormatSpec& f, bool negative) {
  return sign_of(f, negative) | f.max_magnitude_code();
}

// What overflow becomes under Overflow::kNonFinite.
constexpr std::uint32_t non_finite_code(const FormatSpec& f, bool negative) {
  switch (f.non_finite) {
    case NonFiniteEncoding::kIeee:
      return sign_of(f, negative) | f.infinity_code();
    case NonFiniteEncoding::kNanAllOnes:
      return sign_of(f, negative) | f.nan_code();
    case NonFiniteEncoding::kNanNegZero:
    case NonFiniteEncoding::kNanTopCode:
      return f.nan_code();
    case NonFiniteEncoding::kNone:
      return saturated_code(f, negative);
  }
  return 0;
}

// What a NaN input becomes. Formats without NaN take the -0 code (OCP leaves it open).
constexpr std::uint32_t nan_input_code(const FormatSpec& f, bool negative) {
  switch (f.non_finite) {
    case NonFiniteEncoding::kIeee:
    case NonFiniteEncoding::kNanAllOnes:
      return sign_of(f, negative) | f.nan_code();
    case NonFiniteEncoding::kNanNegZero:
    case NonFiniteEncoding::kNanTopCode:
      return f.nan_code();
    case NonFiniteEncoding::kNone:
      return f.sign_mask();
  }
  return 0;
}

// A finite value that rounded past max. Directed modes that round toward zero for this sign give
// ±max in both policies, as IEEE 754 does.
constexpr std::uint32_t overflow_code(const FormatSpec& f, bool negative, Rounding mode,
                                      Overflow overflow) {
  const bool toward_max = mode == Rounding::kTowardZero || (mode == Rounding::kUp && negative) ||
                          (mode == Rounding::kDown && !negative);
  if (toward_max || overflow == Overflow::kSaturate) return saturated_code(f, negative);
  return non_finite_code(f, negative);
}

// Zero, or a non-zero value that rounded to zero.
constexpr std::uint32_t zero_code(const FormatSpec& f, bool negative) {
  return f.has_negative_zero() ? sign_of(f, negative) : 0;
}

// ---- encode ----

template <class F>
constexpr std::uint32_t encode_bits(F x, const FormatSpec& f, Rounding mode, Overflow overflow,
                                    RandomBits random = {}) {
  using Src = IeeeBinary<F>;
  using U = typename Src::Bits;
  constexpr U kSignBit = U{1} << (Src::kWidth - 1);
  constexpr U kMantissaMask = (U{1} << Src::kMantissa) - 1;
  constexpr U kInfBits = ~kSignBit & ~kMantissaMask;

  const U bits = std::bit_cast<U>(x);
  const bool negative = (bits & kSignBit) != 0;
  const U magnitude = bits & ~kSignBit;

  if (magnitude > kInfBits) return nan_input_code(f, negative);
  // An unsigned format without zero (E8M0) has no code for zero or negative numbers: they are
  // NaN, or the lowest code when saturating.
  if (!f.is_signed && (negative || (magnitude == 0 && f.zero == ZeroEncoding::kNone))) {
    return overflow == Overflow::kNonFinite ? f.nan_code() : 0;
  }
  if (magnitude == kInfBits) {
    return overflow == Overflow::kSaturate ? saturated_code(f, negative) : non_finite_code(f, negative);
  }
  if (magnitude == 0) return zero_code(f, negative);

  // value = sig · 2^(exponent - kMantissa), with sig's top bit at position kMantissa.
  U sig = magnitude & kMantissaMask;
  int exponent = 0;
  const int exponent_field = static_cast<int>(magnitude >> Src::kMantissa);
  if (exponent_field == 0) {
    const int shift = std::countl_zero(sig) - (Src::kWidth - 1 - Src::kMantissa);
    sig = static_cast<U>(sig << shift);
    exponent = 1 - Src::kBias - shift;
  } else {
    sig |= U{1} << Src::kMantissa;
    exponent = exponent_field - Src::kBias;
  }

  const int target_mantissa_shift = Src::kMantissa - f.mantissa_bits;
  std::uint32_t code = 0;
  if (exponent >= f.min_normal_exponent()) {
    const int target_field = exponent + f.bias;
    if (target_field > static_cast<int>(f.max_magnitude_code() >> f.mantissa_bits)) {
      return overflow_code(f, negative, mode, overflow);
    }
    const U packed = static_cast<U>((static_cast<U>(target_field) << Src::kMantissa) | (sig & kMantissaMask));
    code = static_cast<std::uint32_t>(round_shift(packed, target_mantissa_shift, mode, negative, random));
  } else if (f.has_subnormals()) {
    const int r = target_mantissa_shift + (f.min_normal_exponent() - exponent);
    code = static_cast<std::uint32_t>(round_shift(sig, r, mode, negative, random));
  } else {
    return 0;  // below the smallest value of a format without zero (E8M0): every mode gives it
  }

  if (code > f.max_magnitude_code()) return overflow_code(f, negative, mode, overflow);
  if (code == 0) return zero_code(f, negative);
  return sign_of(f, negative) | code;
}

// ---- decode ----

// The float n · 2^exp2, built from bits so that it is exact and independent of FTZ/DAZ modes.
// Precondition: the value is representable in float (n < 2^24 and within range).
constexpr float exact_float(bool negative, std::uint32_t n, int exp2) {
  const std::uint32_t sign = negative ? 0x80000000u : 0u;
  if (n == 0) return std::bit_cast<float>(sign);
  const int top = 31 - std::countl_zero(n);
  const int exponent = top + exp2;
  std::uint32_t bits = 0;
  if (exponent >= -126) {
    bits = (static_cast<std::uint32_t>(exponent + 127) << 23) | ((n << (23 - top)) & 0x7FFFFFu);
  } else {
    bits = n << (exp2 + 149);
  }
  return std::bit_cast<float>(sign | bits);
}

constexpr float quiet_nan(bool negative) {
  return std::bit_cast<float>((negative ? 0x80000000u : 0u) | 0x7FC00000u);
}

constexpr float decode_bits(std::uint32_t code, const FormatSpec& f) {
  const bool negative = (code & f.sign_mask()) != 0;
  const std::uint32_t magnitude = code & f.magnitude_mask();
  const std::uint32_t exponent_field = magnitude >> f.mantissa_bits;
  const std::uint32_t mantissa = magnitude & f.mantissa_mask();
  switch (f.non_finite) {
    case NonFiniteEncoding::kIeee:
      if (exponent_field == f.exponent_field_max()) {
        if (mantissa != 0) return quiet_nan(negative);
        return negative ? -std::numeric_limits<float>::infinity()
                        : std::numeric_limits<float>::infinity();
      }
      break;
    case NonFiniteEncoding::kNanAllOnes:
      if (magnitude == f.magnitude_mask()) return quiet_nan(negative);
      break;
    case NonFiniteEncoding::kNanNegZero:
    case NonFiniteEncoding::kNanTopCode:
      if (code == f.nan_code()) return quiet_nan(false);
      break;
    case NonFiniteEncoding::kNone:
      break;
  }
  if (exponent_field == 0 && f.has_subnormals()) {
    return exact_float(negative, mantissa, f.min_normal_exponent() - f.mantissa_bits);
  }
  return exact_float(negative, (std::uint32_t{1} << f.mantissa_bits) | mantissa,
                     static_cast<int>(exponent_field) - f.bias - f.mantissa_bits);
}

}  // namespace unitscale::detail

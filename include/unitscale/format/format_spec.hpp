#pragma once
// FormatSpec: the constexpr descriptor of a binary floating-point format of at most 16 bits.
//
// Every limit, special code and std::numeric_limits entry of every format is derived from its
// descriptor here; nothing is written out per type. A descriptor is also usable at run time, so
// fake-quantisation can simulate formats chosen from a config (E5M10, odd biases, ...).
//
// Code layout, most significant bit first:  [sign: 0 or 1 bit][exponent: E bits][mantissa: M bits]
// Decoding (docs/formats.md), with exponent field e and mantissa field f:
//   e == 0 and the format has subnormals:  (-1)^s · f · 2^(1 - bias - M)
//   otherwise:                             (-1)^s · (2^M + f) · 2^(e - bias - M)
// after the special codes of the format's NonFiniteEncoding have been taken out.

#include <cstdint>
#include <span>
#include <string_view>

namespace unitscale {

// Which codes are not finite numbers. The names follow the LLVM/MLIR suffixes (spec §2).
enum class NonFiniteEncoding : std::uint8_t {
  kIeee,          // all-ones exponent: Inf if the mantissa is 0, NaN otherwise (e5m2, fp16, bf16)
  kNanAllOnes,    // "fn": no Inf; only the all-ones magnitude S.1..1.1..1 is NaN (e4m3fn)
  kNanNegZero,    // "fnuz": no Inf; the negative-zero code 1000..0 is the single NaN
  kNanTopCode,    // "fnu": unsigned, the all-ones code is the single NaN (e8m0fnu)
  kNone,          // every code is a finite number (MX FP6/FP4)
};

// How zero is represented.
enum class ZeroEncoding : std::uint8_t {
  kSigned,    // +0 and -0 (IEEE-like)
  kUnsigned,  // only +0; the format has no -0 (fnuz)
  kNone,      // no zero at all: exponent field 0 is an ordinary binade, no subnormals (e8m0fnu)
};

struct FormatSpec {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool is_signed;
  NonFiniteEncoding non_finite;
  ZeroEncoding zero;

  friend constexpr bool operator==(const FormatSpec&, const FormatSpec&) = default;

  constexpr int total_bits() const { return (is_signed ? 1 : 0) + exponent_bits + mantissa_bits; }
  constexpr std::uint32_t code_count() const { return std::uint32_t{1} << total_bits(); }
  constexpr std::uint32_t mantissa_mask() const { return (std::uint32_t{1} << mantissa_bits) - 1; }
  constexpr std::uint32_t magnitude_mask() const {
    return (std::uint32_t{1} << (exponent_bits + mantissa_bits)) - 1;
  }
  constexpr std::uint32_t sign_mask() const {
    return is_signed ? std::uint32_t{1} << (exponent_bits + mantissa_bits) : 0;
  }
  constexpr std::uint32_t exponent_field_max() const {
    return (std::uint32_t{1} << exponent_bits) - 1;
  }
  constexpr bool has_subnormals() const { return zero != ZeroEncoding::kNone; }
  constexpr bool has_infinity() const { return non_finite == NonFiniteEncoding::kIeee; }
  constexpr bool has_nan() const { return non_finite != NonFiniteEncoding::kNone; }
  constexpr bool has_negative_zero() const { return zero == ZeroEncoding::kSigned; }

  // The magnitude code (sign bit clear) of the largest finite value.
  constexpr std::uint32_t max_magnitude_code() const {
    switch (non_finite) {
      case NonFiniteEncoding::kIeee:
        return ((exponent_field_max() - 1) << mantissa_bits) | mantissa_mask();
      case NonFiniteEncoding::kNanAllOnes:
      case NonFiniteEncoding::kNanTopCode:
        return magnitude_mask() - 1;
      case NonFiniteEncoding::kNanNegZero:
      case NonFiniteEncoding::kNone:
        return magnitude_mask();
    }
    return 0;
  }
  // Codes of the smallest positive normal and subnormal values (equal when there are no
  // subnormals).
  constexpr std::uint32_t min_normal_code() const {
    return has_subnormals() ? std::uint32_t{1} << mantissa_bits : 0;
  }
  constexpr std::uint32_t min_subnormal_code() const {
    return has_subnormals() && mantissa_bits > 0 ? 1 : min_normal_code();
  }
  // Unbiased exponents of the smallest normal binade and of the largest finite value.
  constexpr int min_normal_exponent() const { return has_subnormals() ? 1 - bias : -bias; }
  constexpr int max_exponent() const {
    return static_cast<int>(max_magnitude_code() >> mantissa_bits) - bias;
  }
  // The canonical quiet NaN; the Inf code (positive). Only meaningful if the format has them.
  constexpr std::uint32_t nan_code() const {
    switch (non_finite) {
      case NonFiniteEncoding::kIeee:
        return (exponent_field_max() << mantissa_bits) |
               (mantissa_bits > 0 ? std::uint32_t{1} << (mantissa_bits - 1) : 0);
      case NonFiniteEncoding::kNanAllOnes:
      case NonFiniteEncoding::kNanTopCode:
        return magnitude_mask();
      case NonFiniteEncoding::kNanNegZero:
        return sign_mask();
      case NonFiniteEncoding::kNone:
        return 0;
    }
    return 0;
  }
  constexpr std::uint32_t infinity_code() const { return exponent_field_max() << mantissa_bits; }

  // True for a descriptor this library can decode into float exactly and round into: the format
  // fits FP32's range and precision, and its special-value scheme is consistent.
  constexpr bool is_valid() const {
    if (exponent_bits < 1 || exponent_bits > 8 || mantissa_bits < 0 || mantissa_bits > 23)
      return false;
    if (total_bits() > 16 && !(exponent_bits == 8 && mantissa_bits == 23)) return false;
    if (non_finite == NonFiniteEncoding::kNanNegZero && (zero != ZeroEncoding::kUnsigned || !is_signed))
      return false;
    if ((non_finite == NonFiniteEncoding::kNanTopCode) != (zero == ZeroEncoding::kNone)) return false;
    if (zero == ZeroEncoding::kNone && (is_signed || mantissa_bits != 0)) return false;
    if (non_finite == NonFiniteEncoding::kNanAllOnes && mantissa_bits == 0) return false;
    if (non_finite == NonFiniteEncoding::kIeee && exponent_bits < 2) return false;
    // The smallest subnormal must be an FP32 value and the largest finite value below 2^128.
    if (min_normal_exponent() < -127 || (has_subnormals() && min_normal_exponent() < -126))
      return false;
    if (min_normal_exponent() - mantissa_bits < -149) return false;
    return max_exponent() <= 127;
  }
};

// The catalogue (docs/formats.md).
inline constexpr FormatSpec kFloat8E4M3FN{4, 3, 7, true, NonFiniteEncoding::kNanAllOnes,
                                          ZeroEncoding::kSigned};
inline constexpr FormatSpec kFloat8E5M2{5, 2, 15, true, NonFiniteEncoding::kIeee,
                                        ZeroEncoding::kSigned};
inline constexpr FormatSpec kFloat8E4M3FNUZ{4, 3, 8, true, NonFiniteEncoding::kNanNegZero,
                                            ZeroEncoding::kUnsigned};
inline constexpr FormatSpec kFloat8E5M2FNUZ{5, 2, 16, true, NonFiniteEncoding::kNanNegZero,
                                            ZeroEncoding::kUnsigned};
inline constexpr FormatSpec kFloat8E8M0FNU{8, 0, 127, false, NonFiniteEncoding::kNanTopCode,
                                           ZeroEncoding::kNone};
inline constexpr FormatSpec kFloat6E2M3FN{2, 3, 1, true, NonFiniteEncoding::kNone,
                                          ZeroEncoding::kSigned};
inline constexpr FormatSpec kFloat6E3M2FN{3, 2, 3, true, NonFiniteEncoding::kNone,
                                          ZeroEncoding::kSigned};
inline constexpr FormatSpec kFloat4E2M1FN{2, 1, 1, true, NonFiniteEncoding::kNone,
                                          ZeroEncoding::kSigned};
inline constexpr FormatSpec kFloat16{5, 10, 15, true, NonFiniteEncoding::kIeee,
                                     ZeroEncoding::kSigned};
inline constexpr FormatSpec kBFloat16{8, 7, 127, true, NonFiniteEncoding::kIeee,
                                      ZeroEncoding::kSigned};

struct NamedFormat {
  std::string_view name;  // ml_dtypes / MLIR / PyTorch / ONNX spelling, e.g. "float8_e4m3fn"
  FormatSpec spec;
};

// Every catalogue format, in the order of the spec's table.
std::span<const NamedFormat> named_formats();

// Looks a format up by its full name ("float8_e4m3fn") or short name ("e4m3fn"); throws
// unitscale::Error listing the valid names if there is no such format.
const FormatSpec& format_from_name(std::string_view name);

// The catalogue name of a spec, or "custom(E<e>M<m>, bias <b>)" for any other descriptor.
std::string format_name(const FormatSpec& spec);

// Parses "e5m10" / "e4m3b11" style custom descriptors (IEEE-like with signed zero, bias
// 2^(E-1)-1 unless a b<bias> suffix is given) as well as catalogue names. For CLIs and configs
// that pick a simulated format. Throws unitscale::Error naming the input on failure.
FormatSpec parse_format(std::string_view text);

}  // namespace unitscale

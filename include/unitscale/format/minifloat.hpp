#pragma once
// MiniFloat<Spec>: a one-byte storage type for any FormatSpec of at most 8 bits.
//
// The named types (float8_e4m3fn, float6_e2m3fn, ...) are aliases of it, declared with their bit
// layouts in float8.hpp, float6.hpp and float4.hpp. Construction from float or double rounds to
// nearest-even with the non-saturating overflow policy (the OCP default and ml_dtypes' behaviour);
// use convert<T>() for any other policy. Widening to float is exact. Arithmetic computes in double
// and rounds back once, which is correctly rounded: double has more than 2p+2 bits for every 8-bit
// format, and (unlike float) the range to hold E8M0 products and quotients such as 2^-127·2^-127.

#include <cstdint>

#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/format_traits.hpp"

namespace unitscale {

template <FormatSpec S>
class MiniFloat {
  static_assert(S.is_valid() && S.total_bits() <= 8, "MiniFloat needs a valid format of <= 8 bits");

 public:
  static constexpr FormatSpec kSpec = S;

  constexpr MiniFloat() = default;
  constexpr explicit MiniFloat(float x)
      : bits_(static_cast<std::uint8_t>(
            detail::encode_bits(x, S, Rounding::kNearestEven, Overflow::kNonFinite))) {}
  constexpr explicit MiniFloat(double x)
      : bits_(static_cast<std::uint8_t>(
            detail::encode_bits(x, S, Rounding::kNearestEven, Overflow::kNonFinite))) {}

  // Bits above the format's width are ignored, so every byte names a valid code.
  static constexpr MiniFloat from_bits(std::uint8_t bits) {
    MiniFloat result;
    result.bits_ = static_cast<std::uint8_t>(bits & (S.code_count() - 1));
    return result;
  }
  constexpr std::uint8_t bits() const { return bits_; }

  constexpr explicit operator float() const { return detail::decode_bits(bits_, S); }
  constexpr explicit operator double() const { return static_cast<double>(static_cast<float>(*this)); }
  constexpr float to_float() const { return static_cast<float>(*this); }
  constexpr double to_double() const { return static_cast<double>(to_float()); }

  // Negation flips the sign bit. Formats without -0 keep 0 and their NaN code unchanged; an
  // unsigned format has no negative values, so negating gives NaN (what float would round to).
  constexpr MiniFloat operator-() const {
    if constexpr (!S.is_signed) {
      return MiniFloat(-to_float());
    } else if constexpr (S.zero == ZeroEncoding::kUnsigned) {
      const bool keep = (bits_ & (S.code_count() - 1 - S.sign_mask())) == 0;
      return from_bits(keep ? bits_ : static_cast<std::uint8_t>(bits_ ^ S.sign_mask()));
    } else {
      return from_bits(static_cast<std::uint8_t>(bits_ ^ S.sign_mask()));
    }
  }
  constexpr MiniFloat operator+() const { return *this; }

  friend constexpr MiniFloat operator+(MiniFloat a, MiniFloat b) { return MiniFloat(a.to_double() + b.to_double()); }
  friend constexpr MiniFloat operator-(MiniFloat a, MiniFloat b) { return MiniFloat(a.to_double() - b.to_double()); }
  friend constexpr MiniFloat operator*(MiniFloat a, MiniFloat b) { return MiniFloat(a.to_double() * b.to_double()); }
  friend constexpr MiniFloat operator/(MiniFloat a, MiniFloat b) { return MiniFloat(a.to_double() / b.to_double()); }
  constexpr MiniFloat& operator+=(MiniFloat b) { return *this = *this + b; }
  constexpr MiniFloat& operator-=(MiniFloat b) { return *this = *this - b; }
  constexpr MiniFloat& operator*=(MiniFloat b) { return *this = *this * b; }
  constexpr MiniFloat& operator/=(MiniFloat b) { return *this = *this / b; }

  // IEEE comparisons: +0 == -0, NaN is unordered.
  friend constexpr bool operator==(MiniFloat a, MiniFloat b) { return a.to_float() == b.to_float(); }
  friend constexpr bool operator<(MiniFloat a, MiniFloat b) { return a.to_float() < b.to_float(); }
  friend constexpr bool operator<=(MiniFloat a, MiniFloat b) { return a.to_float() <= b.to_float(); }
  friend constexpr bool operator>(MiniFloat a, MiniFloat b) { return a.to_float() > b.to_float(); }
  friend constexpr bool operator>=(MiniFloat a, MiniFloat b) { return a.to_float() >= b.to_float(); }

 private:
  std::uint8_t bits_ = 0;
};

template <FormatSpec S>
struct FormatTraits<MiniFloat<S>> {
  static constexpr FormatSpec kSpec = S;
  using Bits = std::uint8_t;
  static constexpr Bits to_bits(MiniFloat<S> x) { return x.bits(); }
  static constexpr MiniFloat<S> from_bits(Bits bits) { return MiniFloat<S>::from_bits(bits); }
};

template <FormatSpec S>
constexpr bool isnan(MiniFloat<S> x) { return x.to_float() != x.to_float(); }
template <FormatSpec S>
constexpr bool isinf(MiniFloat<S> x) {
  const float f = x.to_float();
  return f == std::numeric_limits<float>::infinity() || f == -std::numeric_limits<float>::infinity();
}
template <FormatSpec S>
constexpr bool isfinite(MiniFloat<S> x) { return !isnan(x) && !isinf(x); }
template <FormatSpec S>
constexpr MiniFloat<S> abs(MiniFloat<S> x) {
  if constexpr (S.is_signed && S.zero != ZeroEncoding::kUnsigned) {
    return MiniFloat<S>::from_bits(static_cast<std::uint8_t>(x.bits() & ~S.sign_mask()));
  } else {
    return x.to_float() < 0 ? -x : x;
  }
}

}  // namespace unitscale

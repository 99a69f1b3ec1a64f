#pragma once
// Scalar conversions with explicit policies:
//
//   convert<float8_e4m3fn>(x, Rounding::kNearestEven, Overflow::kSaturate)
//   convert<float8_e5m2>(x, Rounding::kStochastic, Overflow::kSaturate, RandomBits{word, 8})
//   convert<float4_e2m1fn>(some_float8_value)          // decode exactly, round once
//   to_float(x)                                         // exact widening
//
// Conversions never fail; every input has the result given by the truth table in
// docs/formats.md. From double and between two low-precision formats the value is rounded once,
// from the exact input (never via an intermediate narrower type).

#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/format_traits.hpp"

namespace unitscale {

template <LowPrecisionFloat T>
float to_float(T x) {
  return detail::decode_bits(FormatTraits<T>::to_bits(x), FormatTraits<T>::kSpec);
}

template <LowPrecisionFloat T>
T convert(float x, Rounding rounding = Rounding::kNearestEven,
          Overflow overflow = Overflow::kNonFinite, RandomBits random = {}) {
  using Traits = FormatTraits<T>;
  return Traits::from_bits(static_cast<typename Traits::Bits>(
      detail::encode_bits(x, Traits::kSpec, rounding, overflow, random)));
}

template <LowPrecisionFloat T>
T convert(double x, Rounding rounding = Rounding::kNearestEven,
          Overflow overflow = Overflow::kNonFinite, RandomBits random = {}) {
  using Traits = FormatTraits<T>;
  return Traits::from_bits(static_cast<typename Traits::Bits>(
      detail::encode_bits(x, Traits::kSpec, rounding, overflow, random)));
}

// Between two low-precision formats: decoding to float is exact for every format, so this rounds
// exactly once.
template <LowPrecisionFloat T, LowPrecisionFloat From>
  requires(!std::same_as<T, From>)
T convert(From x, Rounding rounding = Rounding::kNearestEven,
          Overflow overflow = Overflow::kNonFinite, RandomBits random = {}) {
  return convert<T>(to_float(x), rounding, overflow, random);
}

}  // namespace unitscale

#pragma once
// FormatTraits<T>: the one interface through which generic code sees a low-precision storage type,
// whether it is one of ours (MiniFloat) or Eigen's half / bfloat16.
//
//   FormatTraits<T>::kSpec             the FormatSpec describing T
//   FormatTraits<T>::Bits              the unsigned integer type holding a code
//   FormatTraits<T>::to_bits(T)        the code of a value
//   FormatTraits<T>::from_bits(Bits)   the value of a code

#include <concepts>

#include "unitscale/format/format_spec.hpp"

namespace unitscale {

template <class T>
struct FormatTraits;  // specialised per storage type

template <class T>
concept LowPrecisionFloat = requires(T value, typename FormatTraits<T>::Bits bits) {
  { FormatTraits<T>::kSpec } -> std::convertible_to<FormatSpec>;
  { FormatTraits<T>::to_bits(value) } -> std::same_as<typename FormatTraits<T>::Bits>;
  { FormatTraits<T>::from_bits(bits) } -> std::same_as<T>;
};

}  // namespace unitscale

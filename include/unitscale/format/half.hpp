#pragma once
// FP16 and BF16 are Eigen::half and Eigen::bfloat16; this header plugs them into FormatTraits so
// that convert<>, the bulk API and the tests treat them like every other format.
//
// float16   S.EEEEE.MMMMMMMMMM  bias 15   IEEE binary16: ±Inf 0x7C00/0xFC00, qNaN 0x7E00,
//           max 65504 (0x7BFF), min normal 2^-14, min subnormal 2^-24
// bfloat16  S.EEEEEEEE.MMMMMMM  bias 127  the top half of an FP32: ±Inf 0x7F80/0xFF80,
//           qNaN 0x7FC0, max ≈ 3.3895e38 (0x7F7F), min normal 2^-126, min subnormal 2^-133
//
// Eigen's own float -> half/bfloat16 constructors round to nearest-even without saturation, the
// same as convert<Eigen::half>(x) with the defaults.

#include <cstdint>

#include <Eigen/Core>

#include "unitscale/format/format_traits.hpp"

namespace unitscale {

using float16 = Eigen::half;
using bfloat16 = Eigen::bfloat16;

template <>
struct FormatTraits<Eigen::half> {
  static constexpr FormatSpec kSpec = kFloat16;
  using Bits = std::uint16_t;
  static Bits to_bits(Eigen::half x) { return Eigen::numext::bit_cast<Bits>(x); }
  static Eigen::half from_bits(Bits bits) { return Eigen::numext::bit_cast<Eigen::half>(bits); }
};

template <>
struct FormatTraits<Eigen::bfloat16> {
  static constexpr FormatSpec kSpec = kBFloat16;
  using Bits = std::uint16_t;
  static Bits to_bits(Eigen::bfloat16 x) { return Eigen::numext::bit_cast<Bits>(x); }
  static Eigen::bfloat16 from_bits(Bits bits) { return Eigen::numext::bit_cast<Eigen::bfloat16>(bits); }
};

}  // namespace unitscale

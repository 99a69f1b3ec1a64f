#pragma once
// The 8-bit formats. Bit layouts, most significant bit first (S sign, E exponent, M mantissa).
//
// float8_e4m3fn   S.EEEE.MMM  bias 7   OCP E4M3. No Inf. NaN: S.1111.111 (0x7F, 0xFF).
//                 max 448 = 1.75·2^8 (0x7E), min normal 2^-6 (0x08), min subnormal 2^-9 (0x01).
// float8_e5m2     S.EEEEE.MM  bias 15  OCP E5M2, IEEE-like (the top byte of an FP16).
//                 ±Inf 0x7C/0xFC, NaN S.11111.{01,10,11}; max 57344 (0x7B), min normal 2^-14,
//                 min subnormal 2^-16.
// float8_e4m3fnuz S.EEEE.MMM  bias 8   No Inf, no -0: 0x80 is the only NaN.
//                 max 240 = 1.875·2^7 (0x7F), min normal 2^-7, min subnormal 2^-10.
// float8_e5m2fnuz S.EEEEE.MM  bias 16  No Inf, no -0: 0x80 is the only NaN.
//                 max 57344 (0x7F), min normal 2^-15, min subnormal 2^-17.
// float8_e8m0fnu  EEEEEEEE    bias 127 MX block scale: unsigned, exponent only, value 2^(c-127).
//                 No zero, no sign, no subnormals; 0xFF is NaN. Range 2^-127 (0x00) .. 2^127 (0xFE).
//                 Round-to-nearest ties go to the even code: 3 -> 2, 6 -> 8.
//
// FNUZ (Graphcore/AMD) formats use bias 2^(E-1) instead of 2^(E-1)-1: one more binade at the
// bottom, a single NaN. "E4M3" means max 448 (OCP) or 240 (FNUZ) depending on the stack.

#include "unitscale/format/minifloat.hpp"

namespace unitscale {

using float8_e4m3fn = MiniFloat<kFloat8E4M3FN>;
using float8_e5m2 = MiniFloat<kFloat8E5M2>;
using float8_e4m3fnuz = MiniFloat<kFloat8E4M3FNUZ>;
using float8_e5m2fnuz = MiniFloat<kFloat8E5M2FNUZ>;
using float8_e8m0fnu = MiniFloat<kFloat8E8M0FNU>;

}  // namespace unitscale

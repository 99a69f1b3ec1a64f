#pragma once
// The OCP MX 4-bit element format, stored unpacked one per byte in the low 4 bits; see packed.hpp
// for two-per-byte storage. No Inf and no NaN.
//
// float4_e2m1fn  S.EE.M  bias 1  values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; max 6 (0x7), min normal 1
//                (0x2), min subnormal 0.5 (0x1), -0 is 0x8.

#include "unitscale/format/minifloat.hpp"

namespace unitscale {

using float4_e2m1fn = MiniFloat<kFloat4E2M1FN>;

}  // namespace unitscale

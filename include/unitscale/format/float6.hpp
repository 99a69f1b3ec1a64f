#pragma once
// The OCP MX 6-bit element formats, stored unpacked one per byte in the low 6 bits (as in
// ml_dtypes); see packed.hpp for four-per-three-bytes storage. No Inf and no NaN: every code is
// finite, overflow saturates under both policies, and NaN converts to the -0 code.
//
// float6_e2m3fn  S.EE.MMM  bias 1  max 7.5 (0x1F), min normal 1 (0x08), min subnormal 0.125 (0x01)
//                values: steps of 0.125 up to 2, 0.25 up to 4, 0.5 up to 7.5
// float6_e3m2fn  S.EEE.MM  bias 3  max 28 (0x1F), min normal 0.25 (0x04), min subnormal 0.0625
//                values: steps of 0.0625 up to 0.5, then 4 per binade up to 28

#include "unitscale/format/minifloat.hpp"

namespace unitscale {

using float6_e2m3fn = MiniFloat<kFloat6E2M3FN>;
using float6_e3m2fn = MiniFloat<kFloat6E3M2FN>;

}  // namespace unitscale

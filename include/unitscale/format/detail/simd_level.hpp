#pragma once
// Which instruction set the SIMD kernels run on: the bulk conversions (format/bulk.hpp) and, with
// them, the op kernels (activations, softmax/norm/loss rows, dropout, reductions in src/ops).
//
// The kernels exist once per level and are chosen at run time from what the CPU supports, so one
// binary runs everywhere and uses AVX-512 where it can. Every level gives bit-identical bulk
// conversions, dropout masks and sum/mean; the other op kernels agree to rounding (FMA
// where available). Tests and benchmarks force each supported level in turn to check and measure
// that.

#include <cstdint>
#include <span>
#include <string_view>

namespace unitscale::detail {

enum class SimdLevel : std::uint8_t {
  kScalar,   // one element at a time through the reference codec (detail/codec.hpp)
  kGeneric,  // 4-lane kernels for baseline x86-64 (SSE2)
  kAvx2,     // 8-lane kernels; needs AVX2, FMA, F16C and BMI2
  kAvx512,   // 16-lane kernels; needs AVX-512 F, BW, VL, DQ and CD
};

std::string_view simd_level_name(SimdLevel level);

// The levels this CPU can run, from kScalar up to the best one.
std::span<const SimdLevel> supported_simd_levels();

// The fastest level this CPU supports.
SimdLevel best_simd_level();

// The level the bulk conversions and activations currently use: best_simd_level() unless a test or
// benchmark forced another one.
SimdLevel active_simd_level();

// Makes every following bulk conversion and activation, on every thread, use `level`; throws
// unitscale::Error if the CPU does not support it. For tests and benchmarks.
void force_simd_level(SimdLevel level);

}  // namespace unitscale::detail

// dropout's mask kernel, written once with GCC vector extensions for kLanes lanes.
//
// Included by dropout_kernels_generic.cpp (4 lanes, baseline x86-64), dropout_kernels_avx2.cpp (8)
// and dropout_kernels_avx512.cpp (16), each compiled for its instruction set, after defining
// UNITSCALE_SIMD_LANES; the lane types and helpers, and the ODR rules the kernel follows, are in
// simd_lanes.inl. Integer hashing and one float multiply per element: every level gives
// bit-identical results.

#include <cstddef>
#include <cstdint>

#include "ops/dropout_kernels.hpp"
#include "ops/simd_lanes.inl"

namespace unitscale::detail::dropout {
namespace {

using namespace simd;

void apply_mask(const float* x, float* y, std::size_t count, std::uint32_t first,
                std::uint32_t key_lo, std::uint32_t key_hi, std::uint32_t threshold, float factor) {
  U32 low = first + (U32)lane_index();
  std::size_t e = 0;
  for (; e + kLanes <= count; e += kLanes) {
    // A vector comparison gives all-ones lanes where true: and-ing with it zeroes dropped lanes
    // (NaN included, as the scalar select does) without a blend.
    const I32 keep = mask_bits(low, key_lo, key_hi) >= threshold;
    F32 v = load(x + e);  // x may alias y
    // Keeps the load a plain one: with AVX-512, GCC folds it into the multiply as a load masked
    // by `keep`, which cannot issue until the hash is done; the loads then miss the cache one
    // after another instead of overlapping, and the kernel ran at 60-80% of its AVX2 speed on
    // data beyond L2.
#if UNITSCALE_X86_SIMD
    __asm__("" : "+x"(v));
#endif
    store(y + e, as_f32(as_i32(v * factor) & keep));
    low += static_cast<std::uint32_t>(kLanes);
  }
  for (; e < count; ++e) {
    const std::uint32_t bits = mask_bits(first + static_cast<std::uint32_t>(e), key_lo, key_hi);
    y[e] = bits >= threshold ? factor * x[e] : 0.0f;
  }
}

constexpr KernelTable kKernels{.apply_mask = apply_mask};

}  // namespace
}  // namespace unitscale::detail::dropout

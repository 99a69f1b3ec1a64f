// dropout's mask kernel, written once with GCC vector extensions for kLanes lanes.
//
// Included by dropout_kernels_generic.cpp (4 lanes, baseline x86-64), dropout_kernels_avx2.cpp (8)
// and dropout_kernels_avx512.cpp (16), each compiled for its instruction set, after defining
// UNITSCALE_DROPOUT_LANES. Everything here lives in an anonymous namespace so that no function
// compiled for AVX-512 can be picked by the linker for portable code. Integer hashing and one
// float multiply per element: every level gives bit-identical results.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ops/dropout_kernels.hpp"

#ifndef UNITSCALE_DROPOUT_LANES
#error "define UNITSCALE_DROPOUT_LANES before including dropout_kernels.inl"
#endif

namespace unitscale::detail::dropout {
namespace {

constexpr int kLanes = UNITSCALE_DROPOUT_LANES;

typedef float F32 __attribute__((vector_size(4 * kLanes)));
typedef std::int32_t I32 __attribute__((vector_size(4 * kLanes)));
typedef std::uint32_t U32 __attribute__((vector_size(4 * kLanes)));

U32 lane_offsets() {
  U32 offsets{};
  for (int lane = 0; lane < kLanes; ++lane) offsets[lane] = static_cast<std::uint32_t>(lane);
  return offsets;
}

void apply_mask(const float* x, float* y, std::size_t count, std::uint32_t first,
                std::uint32_t key_lo, std::uint32_t key_hi, std::uint32_t threshold,
                float factor) {
  U32 low = first + lane_offsets();
  std::size_t e = 0;
  for (; e + kLanes <= count; e += kLanes) {
    // A vector comparison gives all-ones lanes where true: and-ing with it zeroes dropped lanes
    // (NaN included, as the scalar select does) without a blend.
    const I32 keep = mask_bits(low, key_lo, key_hi) >= threshold;
    F32 v;
    std::memcpy(&v, x + e, sizeof v);  // unaligned load; x may alias y
    // Keeps the load a plain one: with AVX-512, GCC folds it into the multiply as a load masked
    // by `keep`, which cannot issue until the hash is done; the loads then miss the cache one
    // after another instead of overlapping, and the kernel ran at 60-80% of its AVX2 speed on
    // data beyond L2.
    __asm__("" : "+x"(v));
    const F32 out = (F32)((I32)(v * factor) & keep);
    std::memcpy(y + e, &out, sizeof out);
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

#pragma once
// The interface between dropout's entry points (dropout.cpp) and its SIMD mask kernels
// (dropout_kernels.inl, compiled once per instruction set by
// dropout_kernels_{generic,avx2,avx512}.cpp), and the hash that defines the mask.
//
// The mask is keep_j = bits(j) >= threshold for the flat element index j, with 32 random bits per
// element from a counter-based hash of (seed, j). The index is split into its high and low 32 bits:
// the high half and the seed give two 32-bit round keys once per block of 2^32 elements (a 64-bit
// hash, scalar, see dropout.cpp), and the low half is mixed with them by 32-bit multiplies and
// xor-shifts, which every x86-64 instruction set vectorises (AVX2 and AVX-512 multiply 32-bit
// lanes natively, SSE2 with two pmuludq). 64-bit multiplies, which the mask used to need, only
// vectorise with AVX-512DQ.

#include <cstddef>
#include <cstdint>

namespace unitscale::detail::dropout {

struct KernelTable {
  // y[e] = keep ? factor·x[e] : 0 with keep = mask_bits(first + e, key_lo, key_hi) >= threshold,
  // for e < count; first + count <= 2^32 (one block). x may equal y (in place).
  void (*apply_mask)(const float* x, float* y, std::size_t count, std::uint32_t first,
                     std::uint32_t key_lo, std::uint32_t key_hi, std::uint32_t threshold,
                     float factor);
};

extern const KernelTable kGenericKernels;
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;

// The hash, written once for std::uint32_t and for GCC vectors of it, so that the scalar
// dropout_keeps and every kernel compute the same bits by construction. Internal linkage: each
// translation unit (each instruction set) keeps its own copy, so the linker cannot hand portable
// code a copy compiled for AVX-512 (see CMakeLists.txt).
namespace {

// A 32-bit xor-shift-multiply finaliser (the structure of murmur3's fmix32) with the shifts and
// multipliers of Chris Wellons' "lowbias32", which were searched for low avalanche bias. A
// bijection on 32-bit words.
template <class U>
[[gnu::always_inline]] inline U mix32(U h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

// 32 random bits for the element with low index bits `low` in the block with keys (key_lo,
// key_hi). Two rounds, the second after xor-ing in the second key. Pairwise checks (the masks of
// neighbouring indices and seeds, tests/ops/dropout_test.cpp) already pass with one round; the
// second is margin against structure such checks cannot see (a single lowbias32 round keeps a
// measurable avalanche bias, and with one key two seeds' masks would be shifted copies of each
// other). It is cheap here: with AVX-512 the kernel stays about as fast as a plain scaled copy.
template <class U>
[[gnu::always_inline]] inline U mask_bits(U low, std::uint32_t key_lo, std::uint32_t key_hi) {
  return mix32(mix32(low + key_lo) ^ key_hi);
}

}  // namespace
}  // namespace unitscale::detail::dropout

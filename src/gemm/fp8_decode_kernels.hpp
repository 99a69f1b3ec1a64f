#pragma once
// FP8 codes to BF16 or FP32 for the GEMM engine's widening step (widen.cpp): one kernel written
// with GCC vector extensions (fp8_decode_kernels.inl), compiled once per instruction set by
// fp8_decode_kernels_{generic,avx2,avx512}.cpp and chosen at run time with the other SIMD kernels
// (format/detail/simd_level.hpp). Every level gives the bits of the format layer's scalar decoder
// (tested through the GEMMs of every code pair at every level).

#include <cstdint>

namespace unitscale::detail::fp8_decode {

enum class Fp8 : std::uint8_t { kE4M3, kE5M2 };

struct KernelTable {
  // out[i] = decode(codes[i]) for i < n, as BF16 bits or as FP32.
  void (*to_bf16)(const std::uint8_t* codes, std::uint16_t* out, std::int64_t n, Fp8 format);
  void (*to_f32)(const std::uint8_t* codes, float* out, std::int64_t n, Fp8 format);
};

extern const KernelTable kGenericKernels;
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;

// The table of the active SIMD level.
const KernelTable& kernels();

}  // namespace unitscale::detail::fp8_decode

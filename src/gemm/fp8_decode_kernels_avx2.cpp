// The FP8 decoding kernel with 8 lanes for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2).
#define UNITSCALE_SIMD_LANES 8
#include "gemm/fp8_decode_kernels.inl"

namespace unitscale::detail::fp8_decode {
const KernelTable kAvx2Kernels = kKernels;
}  // namespace unitscale::detail::fp8_decode

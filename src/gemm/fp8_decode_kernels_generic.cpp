// The FP8 decoding kernel with 4 lanes for baseline x86-64 (SSE2).
#define UNITSCALE_SIMD_LANES 4
#include "gemm/fp8_decode_kernels.inl"

namespace unitscale::detail::fp8_decode {
const KernelTable kGenericKernels = kKernels;
}  // namespace unitscale::detail::fp8_decode

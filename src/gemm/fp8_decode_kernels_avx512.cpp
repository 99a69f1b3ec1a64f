// The FP8 decoding kernel with 16 lanes for AVX-512 (built with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd).
#define UNITSCALE_SIMD_LANES 16
#include "gemm/fp8_decode_kernels.inl"

namespace unitscale::detail::fp8_decode {
const KernelTable kAvx512Kernels = kKernels;
}  // namespace unitscale::detail::fp8_decode

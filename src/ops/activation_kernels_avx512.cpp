// The activation kernels with 16 lanes for AVX-512 (built with -mavx512f/bw/vl/dq/cd).
#define UNITSCALE_SIMD_LANES 16
#include "ops/activation_kernels.inl"

namespace unitscale::detail::activation {
const KernelTable kAvx512Kernels = kKernels;
}  // namespace unitscale::detail::activation

// The activation kernels with 8 lanes for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2; the kernels
// contract multiply-adds into FMAs, see activation_kernels.inl).
#define UNITSCALE_SIMD_LANES 8
#include "ops/activation_kernels.inl"

namespace unitscale::detail::activation {
const KernelTable kAvx2Kernels = kKernels;
}  // namespace unitscale::detail::activation

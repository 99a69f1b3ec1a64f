// The row kernels with 8 lanes for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2).
#define UNITSCALE_SIMD_LANES 8
#include "ops/row_kernels.inl"

namespace unitscale::detail::rows {
const KernelTable kAvx2Kernels = kKernels;
}  // namespace unitscale::detail::rows

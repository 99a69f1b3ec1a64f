// The row kernels with 16 lanes for AVX-512 (built with -mavx512f -mavx512bw -mavx512vl ...).
#define UNITSCALE_SIMD_LANES 16
#include "ops/row_kernels.inl"

namespace unitscale::detail::rows {
const KernelTable kAvx512Kernels = kKernels;
}  // namespace unitscale::detail::rows

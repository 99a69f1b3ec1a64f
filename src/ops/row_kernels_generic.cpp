// The row kernels with 4 lanes for baseline x86-64 (SSE2); the fallback on every CPU.
#define UNITSCALE_SIMD_LANES 4
#include "ops/row_kernels.inl"

namespace unitscale::detail::rows {
const KernelTable kGenericKernels = kKernels;
}  // namespace unitscale::detail::rows

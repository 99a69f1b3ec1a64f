// dropout's mask kernel with 4 lanes for baseline x86-64 (SSE2); the fallback on every CPU.
#define UNITSCALE_SIMD_LANES 4
#include "ops/dropout_kernels.inl"

namespace unitscale::detail::dropout {
const KernelTable kGenericKernels = kKernels;
}  // namespace unitscale::detail::dropout

// The activation kernels with 4 lanes for baseline x86-64 (SSE2); the fallback on every CPU.
#define UNITSCALE_SIMD_LANES 4
#include "ops/activation_kernels.inl"

namespace unitscale::detail::activation {
const KernelTable kGenericKernels = kKernels;
}  // namespace unitscale::detail::activation

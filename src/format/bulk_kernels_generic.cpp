// The bulk conversion kernels with 4 lanes for baseline x86-64 (SSE2); the fallback on every CPU.
#define UNITSCALE_BULK_LANES 4
#include "format/bulk_kernels.inl"

namespace unitscale::detail::bulk {
const KernelTable kGenericKernels = kKernels;
}  // namespace unitscale::detail::bulk

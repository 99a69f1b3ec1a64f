// The bulk conversion kernels with 8 lanes for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2).
#define UNITSCALE_BULK_LANES 8
#include "format/bulk_kernels.inl"

namespace unitscale::detail::bulk {
const KernelTable kAvx2Kernels = kKernels;
}  // namespace unitscale::detail::bulk

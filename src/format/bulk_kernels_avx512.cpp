// The bulk conversion kernels with 16 lanes for AVX-512 (built with -mavx512f/bw/vl/dq/cd).
#define UNITSCALE_BULK_LANES 16
#include "format/bulk_kernels.inl"

namespace unitscale::detail::bulk {
const KernelTable kAvx512Kernels = kKernels;
}  // namespace unitscale::detail::bulk

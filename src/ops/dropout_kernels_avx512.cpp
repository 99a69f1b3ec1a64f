// dropout's mask kernel with 16 lanes for AVX-512 (built with -mavx512f/bw/vl/dq/cd).
#define UNITSCALE_SIMD_LANES 16
#include "ops/dropout_kernels.inl"

namespace unitscale::detail::dropout {
const KernelTable kAvx512Kernels = kKernels;
}  // namespace unitscale::detail::dropout

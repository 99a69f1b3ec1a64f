// The float-to-double accumulation loops for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2).
#include "ops/reduce_kernels.inl"

namespace unitscale::detail {
const ReduceKernels kAvx2ReduceKernels = kKernels;
}  // namespace unitscale::detail

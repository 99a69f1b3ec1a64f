// The float-to-double accumulation loops for baseline x86-64 (or any other target), and the
// choice between them and the AVX2 build.
#include "ops/reduce_kernels.inl"

#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::detail {

const ReduceKernels kGenericReduceKernels = kKernels;

const ReduceKernels& reduce_kernels() {
  static const ReduceKernels& chosen =
      best_simd_level() >= SimdLevel::kAvx2 ? kAvx2ReduceKernels : kGenericReduceKernels;
  return chosen;
}

}  // namespace unitscale::detail

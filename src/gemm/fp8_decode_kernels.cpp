#include "gemm/fp8_decode_kernels.hpp"

#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::detail::fp8_decode {

const KernelTable& kernels() {
  switch (active_simd_level()) {
    case SimdLevel::kAvx512: return kAvx512Kernels;
    case SimdLevel::kAvx2: return kAvx2Kernels;
    case SimdLevel::kGeneric:
    case SimdLevel::kScalar: break;
  }
  return kGenericKernels;
}

}  // namespace unitscale::detail::fp8_decode

// Picks the row kernels (row_kernels.hpp) for the active instruction set.

#include "ops/row_kernels.hpp"

#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::detail::rows {

const KernelTable& kernels() {
  switch (active_simd_level()) {
    case SimdLevel::kAvx512:
      return kAvx512Kernels;
    case SimdLevel::kAvx2:
      return kAvx2Kernels;
    case SimdLevel::kGeneric:
    case SimdLevel::kScalar:  // the row kernels have no scalar reference level
      break;
  }
  return kGenericKernels;
}

}  // namespace unitscale::detail::rows

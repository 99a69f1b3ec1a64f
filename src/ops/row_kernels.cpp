// Picks the row kernels (row_kernels.hpp) for the active instruction set.

#include "ops/row_kernels.hpp"

#include "ops/pointwise_common.hpp"

namespace unitscale::detail::rows {

// The row kernels have no scalar reference level: it runs the generic kernels.
const KernelTable& kernels() {
  return table_for_active_level(kAvx512Kernels, kAvx2Kernels, kGenericKernels, kGenericKernels);
}

}  // namespace unitscale::detail::rows

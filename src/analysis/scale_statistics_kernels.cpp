// The statistics loops for baseline x86-64 (or any other target), and the choice between them and
// the AVX2 build.
#include "analysis/scale_statistics_kernels.inl"

#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::detail {

const ScaleStatisticsKernels kGenericScaleStatisticsKernels = kKernels;

const ScaleStatisticsKernels& scale_statistics_kernels() {
  static const ScaleStatisticsKernels& chosen = best_simd_level() >= SimdLevel::kAvx2
                                                    ? kAvx2ScaleStatisticsKernels
                                                    : kGenericScaleStatisticsKernels;
  return chosen;
}

}  // namespace unitscale::detail

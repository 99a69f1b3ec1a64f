// The statistics loops for AVX2 (built with -mavx2 -mfma -mf16c -mbmi2).
#include "analysis/scale_statistics_kernels.inl"

namespace unitscale::detail {
const ScaleStatisticsKernels kAvx2ScaleStatisticsKernels = kKernels;
}  // namespace unitscale::detail

#pragma once
// The statistics loop of track_scales (analysis/scale_tracking.hpp), once per instruction set:
// the moments widen floats to doubles, which AVX2 does four at a time against SSE2's two, and the
// format classes are integer comparisons on bit patterns, eight lanes wide with AVX2. The loops
// live in scale_statistics_kernels.inl, compiled by scale_statistics_kernels.cpp for the baseline
// and by scale_statistics_kernels_avx2.cpp; scale_statistics_kernels() picks one after checking
// the CPU. Both give the same counts, and moments equal up to the order of the double additions.

#include <cstdint>

namespace unitscale::detail {

// One format's classes as ranges of magnitude bit patterns: lo < |x| ≤ hi is the unsigned test
// (|x| − (lo + 1)) < (hi − lo) on the patterns, whose order is the order of the values.
struct FormatClassBits {
  std::uint32_t underflow_lo, underflow_range;  // 0 < |x| ≤ min_subnormal / 2
  std::uint32_t subnormal_lo, subnormal_range;  // min_subnormal / 2 < |x| < min_normal
  std::uint32_t saturate_lo, saturate_range;    // max < |x| ≤ FLT_MAX
};

// The sums of a stretch (NaN and ±Inf left out of them and counted instead).
struct StretchMoments {
  double sum, sum_abs, sum_squares;
  float amax, amin;  // amin: the smallest non-zero |x| (+Inf if none)
  std::int64_t non_finite;
};

struct ScaleStatisticsKernels {
  // Scans x[0, n) (n < 2^31); counts[3·f + {0, 1, 2}] receives format f's underflow, subnormal
  // and saturate counts.
  void (*scan)(const float* x, std::int64_t n, const FormatClassBits* formats, int format_count,
               StretchMoments* moments, std::int32_t* counts);
};

const ScaleStatisticsKernels& scale_statistics_kernels();

extern const ScaleStatisticsKernels kGenericScaleStatisticsKernels;
extern const ScaleStatisticsKernels kAvx2ScaleStatisticsKernels;

}  // namespace unitscale::detail

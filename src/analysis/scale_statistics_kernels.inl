// The loops behind scale_statistics_kernels.hpp, compiled once per instruction set. Plain loops
// and builtins only: an inline function or template from a header instantiated here would be
// compiled with this file's flags, and the linker may keep that copy for the whole program (see
// CMakeLists.txt).

#include <cstdint>

#include "analysis/scale_statistics_kernels.hpp"

namespace unitscale::detail {
namespace {

constexpr float kMaxFinite = 3.40282346638528859811704183484516925e38f;

void scan_stretch(const float* x, std::int64_t n, const FormatClassBits* formats,
                  int format_count, StretchMoments* moments, std::int32_t* counts) {
  double sum = 0, sum_abs = 0, sum_squares = 0;
  float amax = 0, amin = __builtin_inff();
  std::int64_t non_finite = 0;
  // (Clang cannot vectorise these reductions and warns when asked to; only GCC is asked.)
#if !defined(__clang__)
#pragma omp simd reduction(+ : sum, sum_abs, sum_squares, non_finite) reduction(max : amax) \
    reduction(min : amin)
#endif
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = __builtin_fabsf(x[i]);
    const bool finite = a <= kMaxFinite;  // false for NaN and ±Inf
    const float v = finite ? x[i] : 0.0f;
    const float m = finite ? a : 0.0f;
    non_finite += finite ? 0 : 1;
    sum += v;
    sum_abs += m;
    sum_squares += static_cast<double>(v) * v;
    amax = amax > m ? amax : m;
    const float nonzero = m > 0 ? m : __builtin_inff();
    amin = amin < nonzero ? amin : nonzero;
  }
  *moments = {sum, sum_abs, sum_squares, amax, amin, non_finite};

  const auto* bits = reinterpret_cast<const std::uint32_t*>(x);
  for (int f = 0; f < format_count; ++f) {
    const FormatClassBits t = formats[f];
    std::int32_t underflow = 0, subnormal = 0, saturate = 0;
#if !defined(__clang__)
#pragma omp simd reduction(+ : underflow, subnormal, saturate)
#endif
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint32_t a = bits[i] & 0x7fffffffu;
      underflow += (a - t.underflow_lo) < t.underflow_range ? 1 : 0;
      subnormal += (a - t.subnormal_lo) < t.subnormal_range ? 1 : 0;
      saturate += (a - t.saturate_lo) < t.saturate_range ? 1 : 0;
    }
    counts[3 * f] = underflow;
    counts[3 * f + 1] = subnormal;
    counts[3 * f + 2] = saturate;
  }
}

constexpr ScaleStatisticsKernels kKernels{scan_stretch};

}  // namespace
}  // namespace unitscale::detail

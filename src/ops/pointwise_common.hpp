#pragma once
// Private helpers shared by the pointwise op families (elementwise, activation, softmax, dropout):
// when to go parallel, how work is split over threads, how the SIMD kernel table is picked.

#include <fmt/format.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ops/parallel.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::detail {

// kernel(begin, count) over [0, n): one contiguous share per OpenMP thread above the threshold, so
// each thread streams through its own memory. Only for kernels whose result for an element does
// not depend on where the split falls (pointwise maps, index-keyed dropout masks).
template <class Kernel>
void for_each_share(std::int64_t n, const Kernel& kernel) {
  if (n <= kParallelThreshold) {
    if (n > 0) kernel(std::int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const auto threads = static_cast<std::int64_t>(omp_get_num_threads());
    const auto thread = static_cast<std::int64_t>(omp_get_thread_num());
    const std::int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
    if (end > begin) kernel(begin, end - begin);
  }
}

// y[i] = f(x[i]) over n elements, in parallel above the threshold: for loops simple enough that
// the compiler vectorises them (relu, where) or that are not on a hot path (log, sqrt).
template <class F>
void map_unary(const float* x, float* y, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

// out[i] = f(a[i], b[i]).
template <class F>
void map_binary(const float* a, const float* b, float* out, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
}

// The kernel table of the active SIMD level (simd_level.hpp, which tests may force) among a
// family's per-level tables; `scalar` is the generic table for families without a scalar level.
template <class Table>
const Table& table_for_active_level(const Table& avx512, const Table& avx2, const Table& generic,
                                    const Table& scalar) {
  switch (active_simd_level()) {
    case SimdLevel::kAvx512:
      return avx512;
    case SimdLevel::kAvx2:
      return avx2;
    case SimdLevel::kGeneric:
      return generic;
    case SimdLevel::kScalar:
      break;
  }
  return scalar;
}

}  // namespace unitscale::detail

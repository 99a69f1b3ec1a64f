#pragma once
// Test support for checking the vectorised row kernels (softmax, losses, normalisation, attention)
// against double-precision references:
//   - for_each_simd_level runs a test body once per instruction set the CPU supports, forcing it
//     with detail::force_simd_level, so every SIMD variant of the kernels is checked here. The row
//     kernels have no scalar level (it runs the generic kernels), so kScalar is skipped; the
//     previously active level is restored.
//   - WorstError keeps the largest normalised error seen and where it occurred, so a test reports
//     one line per failing case instead of one per element.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale::testing {

template <class Body>
void for_each_simd_level(Body&& body) {
  struct Restore {
    detail::SimdLevel level = detail::active_simd_level();
    ~Restore() { detail::force_simd_level(level); }
  } restore;
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    if (level == detail::SimdLevel::kScalar) continue;
    SCOPED_TRACE("SIMD level " + std::string(detail::simd_level_name(level)));
    detail::force_simd_level(level);
    body();
  }
}

struct WorstError {
  double error = 0;
  std::string where;

  // Records |actual − expected| / scale; `describe` is only called for a new worst case.
  template <class Describe>
  void update(double actual, double expected, double scale, Describe&& describe) {
    const double e = actual == expected ? 0.0 : std::abs(actual - expected) / scale;
    if (e > error || std::isnan(e)) {
      error = e;
      char values[80];
      std::snprintf(values, sizeof values, ": got %.9g, expected %.9g", actual, expected);
      where = describe() + values;
    }
  }
};

}  // namespace unitscale::testing

#pragma once

#include <cstdint>

namespace unitscale::detail {

// Work (elements, or attention's multiply-adds) below which waking OpenMP threads costs more.
//
// On `omp parallel for simd`, write the test as `if (parallel : n > kParallelThreshold)`: an `if`
// without the modifier applies to the simd construct too (OpenMP 5.0), and a false one makes the
// loop scalar, so below the threshold (every chunk of a scaled pointwise op) the loop ran one
// element at a time.
inline constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

}  // namespace unitscale::detail

#pragma once

#include <cstdint>

namespace unitscale::detail {

// Work (elements, or attention's multiply-adds) below which waking OpenMP threads costs more.
inline constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

}  // namespace unitscale::detail

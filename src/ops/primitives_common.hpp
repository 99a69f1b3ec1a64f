#pragma once
// Private helpers shared by the primitive op families (shape_ops.cpp, reductions.cpp,
// pointwise_math.cpp): the row piece size, dims products, zeroing rows in pieces over the threads,
// and resolving axis attributes so that errors name the op and the shape.

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "ops/parallel.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/tensor/shape.hpp"

namespace unitscale::detail {

// Long rows are copied, filled and summed in pieces of this many floats, so that a tensor of a
// few long rows still keeps every thread busy. Sums add their pieces in piece order, so this
// size (never the thread count) fixes their rounding.
inline constexpr std::int64_t kBlock = std::int64_t{1} << 14;

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// The product of dims [begin, end) of `shape`.
inline std::int64_t dims_product(const Shape& shape, int begin, int end) {
  std::int64_t n = 1;
  for (int i = begin; i < end; ++i) n *= shape.dims()[static_cast<std::size_t>(i)];
  return n;
}

// Calls fn(row, begin, length) for `rows` rows of `width` elements in pieces of at most kBlock,
// in parallel once the work is large enough.
template <class Fn>
void for_row_pieces(std::int64_t rows, std::int64_t width, Fn&& fn) {
  if (rows <= 0 || width <= 0) return;
  const std::int64_t pieces = ceil_div(width, kBlock);
#pragma omp parallel for schedule(static) if (rows * width > kParallelThreshold)
  for (std::int64_t item = 0; item < rows * pieces; ++item) {
    const std::int64_t row = item / pieces, begin = item % pieces * kBlock;
    fn(row, begin, std::min(kBlock, width - begin));
  }
}

inline void zero_rows(float* to, std::int64_t stride, std::int64_t rows, std::int64_t width) {
  for_row_pieces(rows, width, [&](std::int64_t r, std::int64_t begin, std::int64_t n) {
    std::memset(to + r * stride + begin, 0, static_cast<std::size_t>(n) * sizeof(float));
  });
}

// Resolves a possibly negative axis; errors name the op and the shape.
inline int resolve_axis(std::int64_t axis, const Shape& shape, std::string_view op) {
  if (axis < std::numeric_limits<int>::min() || axis > std::numeric_limits<int>::max()) {
    throw Error(
        fmt::format("{}: axis {} is out of range for shape {}", op, axis, shape.to_string()));
  }
  return shape.axis(static_cast<int>(axis), op);
}

inline int axis_attr(const Attributes& attrs, std::string_view op, std::string_view name,
                     const Shape& shape) {
  return resolve_axis(attrs.get_int(op, name), shape, op);
}

}  // namespace unitscale::detail

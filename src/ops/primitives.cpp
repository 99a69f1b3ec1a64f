#include "unitscale/ops/primitives.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ops/pointwise_common.hpp"
#include "ops/reduce_kernels.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::kParallelThreshold;
using detail::map_binary;
using detail::map_unary;

// Long rows are copied, filled and summed in pieces of this many floats, so that a tensor of a
// few long rows still keeps every thread busy. Sums add their pieces in piece order, so this
// size (never the thread count) fixes their rounding.
constexpr std::int64_t kBlock = std::int64_t{1} << 14;

// Reductions along a non-innermost axis (column sums, column maxima) share the columns out in
// pieces of this many: wide enough for vector loops over a row, narrow enough that a 1024-wide
// matrix still splits four ways.
constexpr std::int64_t kColumnPiece = 256;

// Sums over an outer axis (column sums) split that axis into this many chunks at most, each with
// its own partial sums, so that every thread reads whole rows.
constexpr std::int64_t kReduceChunks = 16;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// The product of dims [begin, end) of `shape`.
std::int64_t dims_product(const Shape& shape, int begin, int end) {
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

// Copies `rows` rows of `width` floats; the strides are in floats.
void copy_rows(const float* from, std::int64_t from_stride, float* to, std::int64_t to_stride,
               std::int64_t rows, std::int64_t width) {
  for_row_pieces(rows, width, [&](std::int64_t r, std::int64_t begin, std::int64_t n) {
    std::memcpy(to + r * to_stride + begin, from + r * from_stride + begin,
                static_cast<std::size_t>(n) * sizeof(float));
  });
}

void zero_rows(float* to, std::int64_t stride, std::int64_t rows, std::int64_t width) {
  for_row_pieces(rows, width, [&](std::int64_t r, std::int64_t begin, std::int64_t n) {
    std::memset(to + r * stride + begin, 0, static_cast<std::size_t>(n) * sizeof(float));
  });
}

void copy_floats(const float* from, float* to, std::int64_t n) { copy_rows(from, 0, to, 0, 1, n); }
void fill_zero(float* to, std::int64_t n) { zero_rows(to, 0, 1, n); }

// Resolves a possibly negative axis; errors name the op and the shape.
int resolve_axis(std::int64_t axis, const Shape& shape, std::string_view op) {
  if (axis < std::numeric_limits<int>::min() || axis > std::numeric_limits<int>::max()) {
    throw Error(
        fmt::format("{}: axis {} is out of range for shape {}", op, axis, shape.to_string()));
  }
  return shape.axis(static_cast<int>(axis), op);
}

int axis_attr(const Attributes& attrs, std::string_view op, std::string_view name,
              const Shape& shape) {
  return resolve_axis(attrs.get_int(op, name), shape, op);
}

bool keepdim_attr(const Attributes& attrs, std::string_view op) {
  const std::int64_t keepdim = attrs.get_int(op, "keepdim", 0);
  if (keepdim != 0 && keepdim != 1) {
    throw Error(fmt::format("{}: attribute keepdim must be 0 or 1, got {}", op, keepdim));
  }
  return keepdim == 1;
}

// ---------------------------------------------------------------------------------------------
// Reductions over a set of axes: the input is seen as groups of adjacent dims that are all kept or
// all reduced (size-1 dims dropped), so the common cases (trailing or leading axes) become one
// or two groups and the innermost group is a contiguous run.
// ---------------------------------------------------------------------------------------------

struct ReductionLayout {
  std::vector<std::int64_t> sizes;  // coalesced groups, outermost first; never empty
  std::vector<bool> reduced;
  std::vector<std::int64_t> in_stride;   // element stride of each group in the input
  std::vector<std::int64_t> out_stride;  // and in the output (0 for a reduced group)

  std::size_t groups() const { return sizes.size(); }
  std::int64_t run() const { return sizes.back(); }
  bool run_reduced() const { return reduced.back(); }
};

ReductionLayout coalesce(const Shape& shape, const std::vector<bool>& reduced) {
  ReductionLayout layout;
  for (int i = 0; i < shape.rank(); ++i) {
    const std::int64_t size = shape.dim(i);
    const bool is_reduced = reduced[static_cast<std::size_t>(i)];
    if (size == 1) continue;
    if (!layout.sizes.empty() && layout.reduced.back() == is_reduced) {
      layout.sizes.back() *= size;
    } else {
      layout.sizes.push_back(size);
      layout.reduced.push_back(is_reduced);
    }
  }
  if (layout.sizes.empty()) {
    layout.sizes.push_back(1);
    layout.reduced.push_back(false);
  }
  const std::size_t groups = layout.sizes.size();
  layout.in_stride.assign(groups, 0);
  layout.out_stride.assign(groups, 0);
  std::int64_t in = 1, out = 1;
  for (std::size_t g = groups; g-- > 0;) {
    layout.in_stride[g] = in;
    in *= layout.sizes[g];
    if (!layout.reduced[g]) {
      layout.out_stride[g] = out;
      out *= layout.sizes[g];
    }
  }
  return layout;
}

// Calls leaf(input_offset, output_offset, run_length) for each innermost run of groups g… of
// `layout`, starting from the given offsets, in input order. A reduced run maps all its elements
// to output_offset; a kept run maps element j to output_offset + j.
template <class Leaf>
void for_each_run(const ReductionLayout& layout, std::size_t g, std::int64_t in, std::int64_t out,
                  const Leaf& leaf) {
  if (g + 1 == layout.groups()) {
    leaf(in, out, layout.run());
    return;
  }
  for (std::int64_t i = 0; i < layout.sizes[g]; ++i) {
    for_each_run(layout, g + 1, in + i * layout.in_stride[g], out + i * layout.out_stride[g], leaf);
  }
}

// for_each_run over the whole layout, in parallel pieces of group g: one index of g each, or
// kColumnPiece elements when g is the innermost group. Pieces cover disjoint parts of the input;
// when g is kept they also write disjoint outputs, and each output still meets its inputs in the
// serial order, so a reduction's result does not depend on how the pieces are shared out.
template <class Leaf>
void for_each_run_parallel(const ReductionLayout& layout, std::size_t g, std::int64_t numel,
                           const Leaf& leaf) {
  const std::int64_t size = layout.sizes[g];
  const std::int64_t piece = g + 1 == layout.groups() ? kColumnPiece : 1;
  const std::int64_t pieces = ceil_div(size, piece);
#pragma omp parallel if (numel > kParallelThreshold && pieces > 1)
  {
    ReductionLayout part = layout;  // this thread's copy, narrowed to one piece of group g
#pragma omp for schedule(static)
    for (std::int64_t p = 0; p < pieces; ++p) {
      const std::int64_t begin = p * piece;
      part.sizes[g] = std::min(piece, size - begin);
      for_each_run(part, 0, begin * layout.in_stride[g], begin * layout.out_stride[g], leaf);
    }
  }
}

// Σ x[0..n) in double for n ≤ kBlock, in a fixed order (detail::ReduceKernels::sum).
double sum_block(const float* x, std::int64_t n) { return detail::reduce_kernels().sum(x, n); }

// Σ x[0..n) in double: sum_block over consecutive kBlock pieces, added in order, which is what
// lets sum_forward split a long run across threads without changing its result.
double sum_run(const float* x, std::int64_t n) {
  double total = 0;
  for (std::int64_t begin = 0; begin < n; begin += kBlock) {
    total += sum_block(x + begin, std::min(kBlock, n - begin));
  }
  return total;
}

// NaN wins; among equal values the first is kept (strict comparison).
bool max_beats(float candidate, float best) {
  return candidate > best || (std::isnan(candidate) && !std::isnan(best));
}

// The largest of x[0..n), n ≥ 1, or NaN if x holds one. The max reduction vectorises (its order
// is free, and without NaNs any order gives the same maximum); NaNs are only flagged on the way.
float lane_max(const float* x, std::int64_t n) {
  float best = -std::numeric_limits<float>::infinity();
  int nan = 0;
#pragma omp simd reduction(max : best) reduction(| : nan)
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    best = v > best ? v : best;
    nan |= static_cast<int>(v != v);
  }
  return nan != 0 ? std::numeric_limits<float>::quiet_NaN() : best;
}

// The first i < n with x[i] == value (a non-NaN value that occurs in x): 16 at a time so the
// comparisons vectorise, then one by one within the block that matched.
std::int64_t find_first_equal(const float* x, std::int64_t n, float value) {
  constexpr std::int64_t kWidth = 16;
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    int hit = 0;
    for (std::int64_t l = 0; l < kWidth; ++l) hit |= static_cast<int>(x[i + l] == value);
    if (hit != 0) break;
  }
  while (i < n && x[i] != value) ++i;
  return i;
}

// The index of the first maximum of x[0..n), n ≥ 1, as max_beats defines it: the first NaN if
// there is one, else the first element equal to the largest (−0 and +0 being equal).
std::int64_t first_argmax(const float* x, std::int64_t n) {
  const float best = lane_max(x, n);
  if (!std::isnan(best)) return find_first_equal(x, n, best);
  std::int64_t i = 0;
  while (!std::isnan(x[i])) ++i;
  return i;
}

// The value max_beats keeps for x[0..n): the largest, except that the sign of a zero maximum and
// the payload of a NaN are those of the first such element.
float first_max(const float* x, std::int64_t n) {
  const float best = lane_max(x, n);
  return std::isnan(best) || best == 0.0f ? x[first_argmax(x, n)] : best;
}

// to[j, i] = from[i, j] for rows [i0, i1) and columns [j0, j1) of `from` (row strides in floats).
// Blocks of 4 × 4 read four source rows and write four target rows four floats at a time, which
// the compiler turns into register shuffles; the ragged edges go one by one.
void transpose_tile(const float* from, std::int64_t from_row, float* to, std::int64_t to_row,
                    std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1) {
  const std::int64_t i4 = i0 + (i1 - i0) / 4 * 4, j4 = j0 + (j1 - j0) / 4 * 4;
  for (std::int64_t j = j0; j < j4; j += 4) {
    for (std::int64_t i = i0; i < i4; i += 4) {
      const float* s = from + i * from_row + j;
      float* d = to + j * to_row + i;
      for (std::int64_t c = 0; c < 4; ++c) {
        d[c * to_row + 0] = s[0 * from_row + c];
        d[c * to_row + 1] = s[1 * from_row + c];
        d[c * to_row + 2] = s[2 * from_row + c];
        d[c * to_row + 3] = s[3 * from_row + c];
      }
    }
    for (std::int64_t i = i4; i < i1; ++i) {
      for (std::int64_t c = 0; c < 4; ++c) to[(j + c) * to_row + i] = from[i * from_row + j + c];
    }
  }
  for (std::int64_t j = j4; j < j1; ++j) {
    for (std::int64_t i = i0; i < i1; ++i) to[j * to_row + i] = from[i * from_row + j];
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

void transpose_copy(ConstTensorView x, TensorView y, int dim0, int dim1) {
  if (dim0 > dim1) std::swap(dim0, dim1);
  if (dim0 == dim1) {
    copy_floats(x.data(), y.data(), x.numel());
    return;
  }
  // x = [outer, n0, middle, n1, inner] becomes y = [outer, n1, middle, n0, inner]: for each
  // (outer, middle) index, the transpose of an n0 × n1 matrix whose elements are runs of `inner`
  // floats. It goes tile by tile, so that the strided side of the copy (reading a column of x, or
  // writing one of y) stays within cache lines that are reused across the tile.
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, dim0);
  const std::int64_t n0 = shape.dim(dim0);
  const std::int64_t middle = dims_product(shape, dim0 + 1, dim1);
  const std::int64_t n1 = shape.dim(dim1);
  const std::int64_t inner = dims_product(shape, dim1 + 1, shape.rank());
  if (x.numel() == 0) return;
  constexpr std::int64_t kTile0 = 64, kTile1 = 32;  // rows of x × columns of x per tile
  const std::int64_t tiles0 = ceil_div(n0, kTile0), tiles1 = ceil_div(n1, kTile1);
  const std::int64_t from_row = middle * n1 * inner;  // x's stride along n0
  const std::int64_t to_row = middle * n0 * inner;    // y's stride along n1
  const std::int64_t items = outer * middle * tiles0 * tiles1;
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
  for (std::int64_t item = 0; item < items; ++item) {
    std::int64_t rest = item;
    const std::int64_t t1 = rest % tiles1;
    rest /= tiles1;
    const std::int64_t t0 = rest % tiles0;
    rest /= tiles0;
    const std::int64_t m = rest % middle, o = rest / middle;
    const std::int64_t i0 = t0 * kTile0, i1 = std::min(n0, i0 + kTile0);
    const std::int64_t j0 = t1 * kTile1, j1 = std::min(n1, j0 + kTile1);
    const float* from = x.data() + ((o * n0 * middle + m) * n1) * inner;  // x[o, 0, m, 0, 0]
    float* to = y.data() + ((o * n1 * middle + m) * n0) * inner;          // y[o, 0, m, 0, 0]
    if (inner == 1) {
      transpose_tile(from, from_row, to, to_row, i0, i1, j0, j1);
      continue;
    }
    for (std::int64_t j = j0; j < j1; ++j) {
      for (std::int64_t i = i0; i < i1; ++i) {
        std::memcpy(to + j * to_row + i * inner, from + i * from_row + j * inner,
                    static_cast<std::size_t>(inner) * sizeof(float));
      }
    }
  }
}

void slice_forward(ConstTensorView x, TensorView y, int axis, std::int64_t start) {
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t row = shape.dim(axis) * inner;
  const std::int64_t width = y.shape().dim(axis) * inner;
  copy_rows(x.data() + start * inner, row, y.data(), width, outer, width);
}

void slice_backward(ConstTensorView grad_y, TensorView grad_x, int axis, std::int64_t start) {
  const Shape& shape = grad_x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t row = shape.dim(axis) * inner;
  const std::int64_t width = grad_y.shape().dim(axis) * inner;
  const std::int64_t before = start * inner;
  float* dx = grad_x.data();
  zero_rows(dx, row, outer, before);
  copy_rows(grad_y.data(), width, dx + before, row, outer, width);
  zero_rows(dx + before + width, row, outer, row - before - width);
}

void concat_forward(ConstTensorView a, ConstTensorView b, TensorView y, int axis) {
  const std::int64_t outer = dims_product(a.shape(), 0, axis);
  const std::int64_t inner = dims_product(a.shape(), axis + 1, a.shape().rank());
  const std::int64_t width_a = a.shape().dim(axis) * inner;
  const std::int64_t width_b = b.shape().dim(axis) * inner;
  copy_rows(a.data(), width_a, y.data(), width_a + width_b, outer, width_a);
  copy_rows(b.data(), width_b, y.data() + width_a, width_a + width_b, outer, width_b);
}

void concat_backward(ConstTensorView grad_y, TensorView grad_a, TensorView grad_b, int axis) {
  const Shape& shape = grad_y.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  // An absent gradient still occupies its part of grad_y; its width follows from the other's.
  const std::int64_t total = shape.dim(axis) * inner;
  const std::int64_t width_a =
      present(grad_a) ? grad_a.shape().dim(axis) * inner : total - grad_b.shape().dim(axis) * inner;
  const std::int64_t width_b = total - width_a;
  if (present(grad_a)) copy_rows(grad_y.data(), total, grad_a.data(), width_a, outer, width_a);
  if (present(grad_b)) {
    copy_rows(grad_y.data() + width_a, total, grad_b.data(), width_b, outer, width_b);
  }
}

void sum_forward(ConstTensorView x, TensorView y, const std::vector<bool>& reduced, double scale) {
  const std::int64_t numel = x.numel(), outputs = y.numel();
  std::vector<double> accumulator(static_cast<std::size_t>(outputs), 0.0);
  double* total = accumulator.data();
  const float* data = x.data();
  const ReductionLayout layout = coalesce(x.shape(), reduced);
  const bool run_reduced = layout.run_reduced();
  // Adds each run into `target` (the accumulator, or one chunk's partial outputs).
  const auto summing_into = [&](double* target) {
    return [=](std::int64_t in, std::int64_t out, std::int64_t run) {
      if (run_reduced) {
        target[out] += sum_run(data + in, run);
      } else {
        detail::reduce_kernels().accumulate(target + out, data + in, run);
      }
    };
  };

  if (numel == 0) {
    // Nothing to add: the sums are 0 (and a mean 0/0).
  } else if (run_reduced && layout.run() >= 2 * kBlock) {
    // Few long runs (a full reduction, or sums of long rows): their kBlock pieces are shared out
    // across threads, then each run adds its pieces in order, exactly as sum_run would.
    const std::int64_t run = layout.run(), runs = numel / run, pieces = ceil_div(run, kBlock);
    std::vector<double> partial(static_cast<std::size_t>(runs * pieces));
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t item = 0; item < runs * pieces; ++item) {
      const std::int64_t begin = item / pieces * run + item % pieces * kBlock;
      partial[static_cast<std::size_t>(item)] =
          sum_block(data + begin, std::min(kBlock, run - item % pieces * kBlock));
    }
    for_each_run(layout, 0, 0, 0, [&](std::int64_t in, std::int64_t out, std::int64_t) {
      const auto first = static_cast<std::size_t>(in / run * pieces);
      double sum = 0;
      for (std::size_t p = first; p < first + static_cast<std::size_t>(pieces); ++p) sum += partial[p];
      total[out] += sum;
    });
  } else if (!layout.reduced[0]) {
    // The outermost group is kept (e.g. row sums): its slices are independent.
    for_each_run_parallel(layout, 0, numel, summing_into(total));
  } else if (layout.groups() == 1) {
    for_each_run(layout, 0, 0, 0, summing_into(total));  // a short full reduction
  } else if (const std::int64_t size = layout.sizes[0], chunks = std::min(size, kReduceChunks);
             chunks * outputs <= numel / 4) {
    // Reduced outermost (e.g. column sums): a fixed number of chunks of the outermost group each
    // sum whole rows into their own partial outputs, which are then added in chunk order. The
    // partials take at most half the input's memory.
    std::vector<double> partial(static_cast<std::size_t>(chunks * outputs), 0.0);
#pragma omp parallel if (numel > kParallelThreshold)
    {
      ReductionLayout part = layout;
#pragma omp for schedule(static)
      for (std::int64_t c = 0; c < chunks; ++c) {
        const std::int64_t begin = size * c / chunks;
        part.sizes[0] = size * (c + 1) / chunks - begin;
        for_each_run(part, 0, begin * layout.in_stride[0], 0,
                     summing_into(partial.data() + c * outputs));
      }
    }
    for (std::int64_t c = 0; c < chunks; ++c) {
      for (std::int64_t o = 0; o < outputs; ++o) {
        total[o] += partial[static_cast<std::size_t>(c * outputs + o)];
      }
    }
  } else {
    // Reduced outermost over few rows with many outputs each (e.g. [8, 10⁶] summed over its
    // rows): pieces of the next, kept, group are independent.
    for_each_run_parallel(layout, 1, numel, summing_into(total));
  }
  float* result = y.data();
#pragma omp parallel for simd schedule(static) if (outputs > kParallelThreshold)
  for (std::int64_t i = 0; i < outputs; ++i) result[i] = static_cast<float>(total[i] * scale);
}

void sum_backward(ConstTensorView grad_y, TensorView grad_x, const std::vector<bool>& reduced,
                  double scale) {
  const auto factor = static_cast<float>(scale);
  const float* g = grad_y.data();
  float* dx = grad_x.data();
  const ReductionLayout layout = coalesce(grad_x.shape(), reduced);
  const bool run_reduced = layout.run_reduced();
  if (grad_x.numel() == 0) return;
  // Every piece writes its own part of dx, so any group may be split.
  for_each_run_parallel(layout, 0, grad_x.numel(),
                        [=](std::int64_t in, std::int64_t out, std::int64_t run) {
                          if (run_reduced) {
                            std::fill(dx + in, dx + in + run, factor * g[out]);
                          } else {
                            for (std::int64_t j = 0; j < run; ++j) dx[in + j] = factor * g[out + j];
                          }
                        });
}

void max_forward(ConstTensorView x, TensorView y, int axis) {
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t size = shape.dim(axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const float* data = x.data();
  float* result = y.data();
  if (inner == 1) {  // maxima of contiguous rows
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
    for (std::int64_t o = 0; o < outer; ++o) result[o] = first_max(data + o * size, size);
    return;
  }
  // Along an outer axis: running maxima over whole rows of `inner`, in column pieces so that the
  // threads can share even a single outer slice.
  const std::int64_t pieces = ceil_div(inner, kColumnPiece);
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
  for (std::int64_t item = 0; item < outer * pieces; ++item) {
    const std::int64_t o = item / pieces, begin = item % pieces * kColumnPiece;
    const std::int64_t n = std::min(kColumnPiece, inner - begin);
    const float* base = data + o * size * inner + begin;
    float* best = result + o * inner + begin;
    std::copy(base, base + n, best);
    for (std::int64_t k = 1; k < size; ++k) {
      const float* row = base + k * inner;
      for (std::int64_t c = 0; c < n; ++c) {
        const float v = row[c], b = best[c];
        best[c] = (v > b) | ((v != v) & (b == b)) ? v : b;  // max_beats, branch-free
      }
    }
  }
}

void max_backward(ConstTensorView x, ConstTensorView grad_y, TensorView grad_x, int axis) {
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t size = shape.dim(axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const float* data = x.data();
  const float* g = grad_y.data();
  float* dx = grad_x.data();
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
    for (std::int64_t o = 0; o < outer; ++o) {
      float* row = dx + o * size;
      std::fill(row, row + size, 0.0f);
      row[first_argmax(data + o * size, size)] = g[o];
    }
    return;
  }
  const std::int64_t pieces = ceil_div(inner, kColumnPiece);
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
  for (std::int64_t item = 0; item < outer * pieces; ++item) {
    const std::int64_t o = item / pieces, begin = item % pieces * kColumnPiece;
    const std::int64_t n = std::min(kColumnPiece, inner - begin);
    const float* base = data + o * size * inner + begin;
    float* target = dx + o * size * inner + begin;
    float best[kColumnPiece];
    std::int64_t argmax[kColumnPiece] = {};
    std::copy(base, base + n, best);
    std::fill(target, target + n, 0.0f);
    for (std::int64_t k = 1; k < size; ++k) {
      const float* row = base + k * inner;
      for (std::int64_t c = 0; c < n; ++c) {
        if (max_beats(row[c], best[c])) {  // strict: ties keep the first argmax
          best[c] = row[c];
          argmax[c] = k;
        }
      }
      std::fill(target + k * inner, target + k * inner + n, 0.0f);
    }
    for (std::int64_t c = 0; c < n; ++c) target[argmax[c] * inner + c] = g[o * inner + begin + c];
  }
}

void where_forward(ConstTensorView cond, ConstTensorView a, ConstTensorView b, TensorView y) {
  const float* c = cond.data();
  const float* pa = a.data();
  const float* pb = b.data();
  float* out = y.data();
  const std::int64_t n = y.numel();
  // Both operands are loaded before the select, so the loop is a vector blend, not a branch.
#pragma omp parallel for simd schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float av = pa[i], bv = pb[i];
    out[i] = c[i] != 0.0f ? av : bv;
  }
}

void where_backward(ConstTensorView cond, ConstTensorView grad_y, TensorView grad_a,
                    TensorView grad_b) {
  const float* c = cond.data();
  const float* g = grad_y.data();
  const std::int64_t n = grad_y.numel();
  if (present(grad_a) && present(grad_b)) {  // one pass for both
    float* da = grad_a.data();
    float* db = grad_b.data();
#pragma omp parallel for simd schedule(static) if (n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) {
      const bool take = c[i] != 0.0f;
      const float gv = g[i];
      da[i] = take ? gv : 0.0f;
      db[i] = take ? 0.0f : gv;
    }
  } else if (present(grad_a)) {
    map_binary(c, g, grad_a.data(), n, [](float cv, float gv) { return cv != 0.0f ? gv : 0.0f; });
  } else if (present(grad_b)) {
    map_binary(c, g, grad_b.data(), n, [](float cv, float gv) { return cv != 0.0f ? 0.0f : gv; });
  }
}

// ---------------------------------------------------------------------------------------------
// Shape inference and the OpDefs
// ---------------------------------------------------------------------------------------------

namespace {

std::vector<Shape> same_shape(std::span<const Shape* const> in, const Attributes&) {
  return {*in[0]};
}

// --- reshape ---------------------------------------------------------------------------------

Shape reshape_target(const Shape& x, const std::vector<std::int64_t>& requested) {
  const auto fail = [&](std::string_view why) {
    return Error(fmt::format("reshape: cannot reshape x {} ({} elements) to [{}]: {}",
                             x.to_string(), x.numel(), fmt::join(requested, ", "), why));
  };
  std::vector<std::int64_t> dims = requested;
  std::size_t inferred = dims.size();
  std::int64_t known = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (inferred != dims.size()) throw fail("at most one dimension may be -1");
      inferred = i;
    } else if (dims[i] < 0) {
      throw fail("dimensions must be non-negative, or -1 for the one to infer");
    } else {
      known *= dims[i];
    }
  }
  if (inferred != dims.size()) {
    if (known == 0 || x.numel() % known != 0) {
      throw fail(
          fmt::format("the -1 dimension cannot be inferred ({} elements do not divide "
                      "into parts of {})",
                      x.numel(), known));
    }
    dims[inferred] = x.numel() / known;
  } else if (known != x.numel()) {
    throw fail(fmt::format("the number of elements differs ({} vs {})", known, x.numel()));
  }
  return Shape(std::move(dims));
}

std::vector<Shape> infer_reshape(std::span<const Shape* const> in, const Attributes& attrs) {
  return {reshape_target(*in[0], attrs.get_ints("reshape", "shape"))};
}

void reshape_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes&, const KernelContext&) {
  copy_floats(in[0].data(), out[0].data(), in[0].numel());
}

// Backward inputs: x (absent), y (absent), grad_y.
void reshape_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes&, const KernelContext&) {
  if (present(out[0])) copy_floats(in[2].data(), out[0].data(), in[2].numel());
}

// --- transpose -------------------------------------------------------------------------------

std::pair<int, int> transpose_dims(const Attributes& attrs, const Shape& shape) {
  return {axis_attr(attrs, "transpose", "dim0", shape),
          axis_attr(attrs, "transpose", "dim1", shape)};
}

std::vector<Shape> infer_transpose(std::span<const Shape* const> in, const Attributes& attrs) {
  const auto [dim0, dim1] = transpose_dims(attrs, *in[0]);
  std::vector<std::int64_t> dims(in[0]->dims().begin(), in[0]->dims().end());
  std::swap(dims[static_cast<std::size_t>(dim0)], dims[static_cast<std::size_t>(dim1)]);
  return {Shape(std::move(dims))};
}

void transpose_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                      const Attributes& attrs, const KernelContext&) {
  const auto [dim0, dim1] = transpose_dims(attrs, in[0].shape());
  transpose_copy(in[0], out[0], dim0, dim1);
}

// Backward inputs: x (absent), y (absent), grad_y.
void transpose_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                               const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  const auto [dim0, dim1] = transpose_dims(attrs, in[2].shape());
  transpose_copy(in[2], out[0], dim0, dim1);
}

// --- slice -----------------------------------------------------------------------------------

struct SliceRange {
  int axis;
  std::int64_t start;
  std::int64_t end;
};

SliceRange slice_range(const Attributes& attrs, const Shape& x) {
  const int axis = axis_attr(attrs, "slice", "axis", x);
  const std::int64_t size = x.dim(axis);
  const std::int64_t requested_start = attrs.get_int("slice", "start");
  const std::int64_t requested_end = attrs.get_int("slice", "end");
  const std::int64_t start = requested_start < 0 ? requested_start + size : requested_start;
  const std::int64_t end = requested_end < 0 ? requested_end + size : requested_end;
  if (start < 0 || end > size || start > end) {
    throw Error(
        fmt::format("slice: [{}, {}) is out of range for axis {} (size {}) of x {}: "
                    "expected 0 <= start <= end <= size, negative values counting from "
                    "the end",
                    requested_start, requested_end, axis, size, x.to_string()));
  }
  return {axis, start, end};
}

std::vector<Shape> infer_slice(std::span<const Shape* const> in, const Attributes& attrs) {
  const SliceRange range = slice_range(attrs, *in[0]);
  return {in[0]->with_dim(range.axis, range.end - range.start)};
}

void slice_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                  const Attributes& attrs, const KernelContext&) {
  const SliceRange range = slice_range(attrs, in[0].shape());
  slice_forward(in[0], out[0], range.axis, range.start);
}

// Backward inputs: x (absent), y (absent), grad_y; grad_x has x's shape.
void slice_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  const SliceRange range = slice_range(attrs, out[0].shape());
  slice_backward(in[2], out[0], range.axis, range.start);
}

// --- concat ----------------------------------------------------------------------------------

int concat_axis(const Attributes& attrs, const Shape& shape) {
  return axis_attr(attrs, "concat", "axis", shape);
}

std::vector<Shape> infer_concat(std::span<const Shape* const> in, const Attributes& attrs) {
  const Shape& a = *in[0];
  const Shape& b = *in[1];
  const auto mismatch = [&] {
    return Error(
        fmt::format("concat: a {} and b {} do not match: expected equal ranks and equal "
                    "dims except along axis {}",
                    a.to_string(), b.to_string(), attrs.get_int("concat", "axis")));
  };
  if (a.rank() != b.rank()) throw mismatch();
  const int axis = concat_axis(attrs, a);
  for (int i = 0; i < a.rank(); ++i) {
    if (i != axis && a.dim(i) != b.dim(i)) throw mismatch();
  }
  return {a.with_dim(axis, a.dim(axis) + b.dim(axis))};
}

void concat_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  concat_forward(in[0], in[1], out[0], concat_axis(attrs, in[0].shape()));
}

// Backward inputs: a (absent), b (absent), y (absent), grad_y.
void concat_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  if (!present(out[0]) && !present(out[1])) return;
  concat_backward(in[3], out[0], out[1], concat_axis(attrs, in[3].shape()));
}

// --- sum and mean ----------------------------------------------------------------------------

// The reduced axes of `x` from the "axes" attribute (absent or empty: every axis).
std::vector<bool> reduced_axes(const Attributes& attrs, const Shape& x, std::string_view op) {
  static const std::vector<std::int64_t> kAllAxes;
  const std::vector<std::int64_t>& axes = attrs.has("axes") ? attrs.get_ints(op, "axes") : kAllAxes;
  std::vector<bool> reduced(static_cast<std::size_t>(x.rank()), axes.empty());
  for (const std::int64_t requested : axes) {
    const auto axis = static_cast<std::size_t>(resolve_axis(requested, x, op));
    if (reduced[axis]) {
      throw Error(fmt::format("{}: axis {} appears twice in axes [{}] for shape {}", op, requested,
                              fmt::join(axes, ", "), x.to_string()));
    }
    reduced[axis] = true;
  }
  return reduced;
}

Shape reduced_shape(const Shape& x, const std::vector<bool>& reduced, bool keepdim) {
  std::vector<std::int64_t> dims;
  for (int i = 0; i < x.rank(); ++i) {
    if (!reduced[static_cast<std::size_t>(i)])
      dims.push_back(x.dim(i));
    else if (keepdim)
      dims.push_back(1);
  }
  return Shape(std::move(dims));
}

std::int64_t reduced_count(const Shape& x, const std::vector<bool>& reduced) {
  std::int64_t n = 1;
  for (int i = 0; i < x.rank(); ++i) {
    if (reduced[static_cast<std::size_t>(i)]) n *= x.dim(i);
  }
  return n;
}

std::vector<Shape> infer_sum(std::span<const Shape* const> in, const Attributes& attrs) {
  return {reduced_shape(*in[0], reduced_axes(attrs, *in[0], "sum"), keepdim_attr(attrs, "sum"))};
}
std::vector<Shape> infer_mean(std::span<const Shape* const> in, const Attributes& attrs) {
  return {reduced_shape(*in[0], reduced_axes(attrs, *in[0], "mean"), keepdim_attr(attrs, "mean"))};
}

void sum_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes& attrs, const KernelContext&) {
  sum_forward(in[0], out[0], reduced_axes(attrs, in[0].shape(), "sum"), 1.0);
}

// mean of an empty set is 0 · (1/0) = NaN, as in NumPy.
void mean_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext&) {
  const std::vector<bool> reduced = reduced_axes(attrs, in[0].shape(), "mean");
  sum_forward(in[0], out[0], reduced,
              1.0 / static_cast<double>(reduced_count(in[0].shape(), reduced)));
}

// Backward inputs: x (absent), y (absent), grad_y; grad_x has x's shape.
void sum_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  sum_backward(in[2], out[0], reduced_axes(attrs, out[0].shape(), "sum"), 1.0);
}

void mean_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  const std::vector<bool> reduced = reduced_axes(attrs, out[0].shape(), "mean");
  sum_backward(in[2], out[0], reduced,
               1.0 / static_cast<double>(reduced_count(out[0].shape(), reduced)));
}

// --- max -------------------------------------------------------------------------------------

std::vector<Shape> infer_max(std::span<const Shape* const> in, const Attributes& attrs) {
  const Shape& x = *in[0];
  const int axis = axis_attr(attrs, "max", "axis", x);
  if (x.dim(axis) == 0) {
    throw Error(fmt::format("max: axis {} of x {} is empty; the maximum needs at least one element",
                            axis, x.to_string()));
  }
  std::vector<bool> reduced(static_cast<std::size_t>(x.rank()), false);
  reduced[static_cast<std::size_t>(axis)] = true;
  return {reduced_shape(x, reduced, keepdim_attr(attrs, "max"))};
}

void max_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes& attrs, const KernelContext&) {
  max_forward(in[0], out[0], axis_attr(attrs, "max", "axis", in[0].shape()));
}

// Backward inputs: x, y (absent), grad_y.
void max_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  max_backward(in[0], in[2], out[0], axis_attr(attrs, "max", "axis", in[0].shape()));
}

// --- exp, log, sqrt --------------------------------------------------------------------------

// The row kernels' vector exp (within about 1 ulp, subnormal results included), in pieces over
// the threads; glibc's scalar expf would make this op compute-bound.
void exp_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  const float* x = in[0].data();
  float* y = out[0].data();
  for_row_pieces(1, in[0].numel(), [&](std::int64_t, std::int64_t begin, std::int64_t n) {
    kernels.exp_sum(x + begin, y + begin, n, 1.0f, 0.0f);
  });
}
void log_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  map_unary(in[0].data(), out[0].data(), in[0].numel(), [](float v) { return std::log(v); });
}
void sqrt_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes&, const KernelContext&) {
  map_unary(in[0].data(), out[0].data(), in[0].numel(), [](float v) { return std::sqrt(v); });
}

// Backward inputs: x, y, grad_y (exp and sqrt read y, log reads x).
void exp_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[1].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float y, float g) { return g * y; });
}
void log_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[0].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float x, float g) { return g / x; });
}
void sqrt_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes&, const KernelContext&) {
  if (!present(out[0])) return;
  map_binary(in[1].data(), in[2].data(), out[0].data(), in[2].numel(),
             [](float y, float g) { return 0.5f * g / y; });
}

// --- where -----------------------------------------------------------------------------------

std::vector<Shape> infer_where(std::span<const Shape* const> in, const Attributes&) {
  if (*in[0] != *in[1] || *in[1] != *in[2]) {
    throw Error(
        fmt::format("where: cond {}, a {} and b {} must have equal shapes (no "
                    "broadcasting)",
                    in[0]->to_string(), in[1]->to_string(), in[2]->to_string()));
  }
  return {*in[0]};
}

void where_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                  const Attributes&, const KernelContext&) {
  where_forward(in[0], in[1], in[2], out[0]);
}

// Backward inputs: cond, a (absent), b (absent), y (absent), grad_y. Outputs: grad_cond, grad_a,
// grad_b.
void where_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes&, const KernelContext&) {
  where_backward(in[0], in[4], out[1], out[2]);
  // cond selects, it is not differentiable; should a caller ask anyway, its derivative is zero
  // almost everywhere.
  if (present(out[0])) fill_zero(out[0].data(), out[0].numel());
}

const OpDef kReshapeBackwardOp{.name = "reshape_backward",
                               .inputs = {"x?", "y?", "grad_y?"},
                               .kernel = reshape_backward_kernel};
const OpDef kTransposeBackwardOp{.name = "transpose_backward",
                                 .inputs = {"x?", "y?", "grad_y?"},
                                 .kernel = transpose_backward_kernel};
const OpDef kSliceBackwardOp{
    .name = "slice_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = slice_backward_kernel};
const OpDef kConcatBackwardOp{.name = "concat_backward",
                              .inputs = {"a?", "b?", "y?", "grad_y?"},
                              .output_count = 2,
                              .kernel = concat_backward_kernel};
const OpDef kSumBackwardOp{
    .name = "sum_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = sum_backward_kernel};
const OpDef kMeanBackwardOp{
    .name = "mean_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = mean_backward_kernel};
const OpDef kMaxBackwardOp{
    .name = "max_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = max_backward_kernel};
const OpDef kExpBackwardOp{
    .name = "exp_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = exp_backward_kernel};
const OpDef kLogBackwardOp{
    .name = "log_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = log_backward_kernel};
const OpDef kSqrtBackwardOp{
    .name = "sqrt_backward", .inputs = {"x?", "y?", "grad_y?"}, .kernel = sqrt_backward_kernel};
const OpDef kWhereBackwardOp{.name = "where_backward",
                             .inputs = {"cond?", "a?", "b?", "y?", "grad_y?"},
                             .output_count = 3,
                             .kernel = where_backward_kernel};

}  // namespace

// Bit i of backward_reads: forward value i, counting inputs then outputs.
const OpDef kReshapeOp{.name = "reshape",
                       .inputs = {"x"},
                       .infer_shapes = infer_reshape,
                       .kernel = reshape_kernel,
                       .backward = &kReshapeBackwardOp,
                       .backward_reads = 0b00};
const OpDef kTransposeOp{.name = "transpose",
                         .inputs = {"x"},
                         .infer_shapes = infer_transpose,
                         .kernel = transpose_kernel,
                         .backward = &kTransposeBackwardOp,
                         .backward_reads = 0b00};
const OpDef kSliceOp{.name = "slice",
                     .inputs = {"x"},
                     .infer_shapes = infer_slice,
                     .kernel = slice_kernel,
                     .backward = &kSliceBackwardOp,
                     .backward_reads = 0b00};
const OpDef kConcatOp{.name = "concat",
                      .inputs = {"a", "b"},
                      .infer_shapes = infer_concat,
                      .kernel = concat_kernel,
                      .backward = &kConcatBackwardOp,
                      .backward_reads = 0b000};
const OpDef kSumOp{.name = "sum",
                   .inputs = {"x"},
                   .infer_shapes = infer_sum,
                   .kernel = sum_kernel,
                   .backward = &kSumBackwardOp,
                   .backward_reads = 0b00};
const OpDef kMeanOp{.name = "mean",
                    .inputs = {"x"},
                    .infer_shapes = infer_mean,
                    .kernel = mean_kernel,
                    .backward = &kMeanBackwardOp,
                    .backward_reads = 0b00};
const OpDef kMaxOp{.name = "max",
                   .inputs = {"x"},
                   .infer_shapes = infer_max,
                   .kernel = max_kernel,
                   .backward = &kMaxBackwardOp,
                   .backward_reads = 0b01};
const OpDef kExpOp{.name = "exp",
                   .inputs = {"x"},
                   .infer_shapes = same_shape,
                   .kernel = exp_kernel,
                   .backward = &kExpBackwardOp,
                   .backward_reads = 0b10};
const OpDef kLogOp{.name = "log",
                   .inputs = {"x"},
                   .infer_shapes = same_shape,
                   .kernel = log_kernel,
                   .backward = &kLogBackwardOp,
                   .backward_reads = 0b01};
const OpDef kSqrtOp{.name = "sqrt",
                    .inputs = {"x"},
                    .infer_shapes = same_shape,
                    .kernel = sqrt_kernel,
                    .backward = &kSqrtBackwardOp,
                    .backward_reads = 0b10};
const OpDef kWhereOp{.name = "where",
                     .inputs = {"cond", "a", "b"},
                     .infer_shapes = infer_where,
                     .kernel = where_kernel,
                     .backward = &kWhereBackwardOp,
                     .backward_reads = 0b0001,
                     .nondifferentiable_inputs = 0b001};  // cond

}  // namespace unitscale

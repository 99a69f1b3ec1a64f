// The reductions sum, mean and max: their kernels (over the coalesced ReductionLayout of the
// reduced and kept axes), shape inference and OpDefs, forward and backward.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/primitives_common.hpp"
#include "ops/reduce_kernels.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

using detail::axis_attr;
using detail::ceil_div;
using detail::dims_product;
using detail::kBlock;
using detail::kParallelThreshold;
using detail::resolve_axis;

// Reductions along a non-innermost axis (column sums, column maxima) share the columns out in
// pieces of this many: wide enough for vector loops over a row, narrow enough that a 1024-wide
// matrix still splits four ways.
constexpr std::int64_t kColumnPiece = 256;

// Sums over an outer axis (column sums) split that axis into this many chunks at most, each with
// its own partial sums, so that every thread reads whole rows.
constexpr std::int64_t kReduceChunks = 16;

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
  if (nan != 0) return std::numeric_limits<float>::quiet_NaN();
  // OpenMP starts each lane's private copy at the max reduction's identity, which clang takes to be
  // −FLT_MAX rather than −∞: a row of −∞ would come out as −FLT_MAX, a value it does not hold (and
  // first_argmax would then search past its end). Only that result can be wrong; recompute it.
  if (best == -std::numeric_limits<float>::max()) {
    best = x[0];
    for (std::int64_t i = 1; i < n; ++i) best = x[i] > best ? x[i] : best;
  }
  return best;
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

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
#pragma omp parallel for simd schedule(static) if (parallel : outputs > kParallelThreshold)
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

// ---------------------------------------------------------------------------------------------
// Shape inference and the OpDefs
// ---------------------------------------------------------------------------------------------

namespace {

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

// Scale rules. N = the number of reduced elements per output (the product of the reduced sizes).

// y = Σ x over N independent terms: degree 1 in x, growing as √N.
std::vector<Scale> sum_scale_rule(const ScaleRuleArgs& args) {
  const Shape& x = args.input_shape(0);
  const auto n = static_cast<double>(reduced_count(x, reduced_axes(args.attrs, x, "sum")));
  return {args.fan_in(n) * args.scale(0)};
}

// grad_x = grad_y broadcast over the reduced axes (factor 1): grad_y's scale. Backward inputs: x,
// y (both absent), grad_y.
std::vector<Scale> sum_backward_scale_rule(const ScaleRuleArgs& args) { return {args.scale(2)}; }

// y = (1/N) Σ x: the sum's √N times 1/N, i.e. p2(1/√N) (an empty mean, N = 0, counts as N = 1).
std::vector<Scale> mean_scale_rule(const ScaleRuleArgs& args) {
  const Shape& x = args.input_shape(0);
  const auto n = static_cast<double>(reduced_count(x, reduced_axes(args.attrs, x, "mean")));
  return {args.fan_in(n, 1.0 / std::max(n, 1.0)) * args.scale(0)};
}

// grad_x = grad_y / N broadcast: p2(1/N) · s_g; N comes from grad_x's shape (x is absent).
std::vector<Scale> mean_backward_scale_rule(const ScaleRuleArgs& args) {
  if (!args.has_output(0)) return {Scale{}};
  const Shape& x = args.output_shape(0);
  const auto n = static_cast<double>(reduced_count(x, reduced_axes(args.attrs, x, "mean")));
  return {args.p2(1.0 / std::max(n, 1.0)) * args.scale(2)};
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

// y = max over the axis: one of x's values per output, so degree 1 in x (Scalify passes the scale
// through; the maximum of unit data is O(1), e.g. ≈ 2.4 over 64 normals).
std::vector<Scale> max_scale_rule(const ScaleRuleArgs& args) { return {args.scale(0)}; }

// grad_x routes each grad_y value to its argmax and is 0 elsewhere: its non-zero values are
// grad_y's own, so it keeps grad_y's scale (the zeros are exact in every format). Backward inputs:
// x, y (absent), grad_y.
std::vector<Scale> max_backward_scale_rule(const ScaleRuleArgs& args) { return {args.scale(2)}; }

// Backward inputs: x, y (absent), grad_y.
void max_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  max_backward(in[0], in[2], out[0], axis_attr(attrs, "max", "axis", in[0].shape()));
}

}  // namespace

// Bit i of backward_reads: forward value i, counting inputs then outputs.
const OpDef kSumOp{
    .name = "sum",
    .inputs = {"x"},
    .attributes = {AttributeSpec::integers("axes"), AttributeSpec::integer("keepdim")},
    .infer_shapes = infer_sum,
    .kernel = sum_kernel,
    .backward_kernel = sum_backward_kernel,
    .backward_reads = 0b00,
    .scale_propagation = sum_scale_rule,
    .backward_scale_propagation = sum_backward_scale_rule};
const OpDef kMeanOp{
    .name = "mean",
    .inputs = {"x"},
    .attributes = {AttributeSpec::integers("axes"), AttributeSpec::integer("keepdim")},
    .infer_shapes = infer_mean,
    .kernel = mean_kernel,
    .backward_kernel = mean_backward_kernel,
    .backward_reads = 0b00,
    .scale_propagation = mean_scale_rule,
    .backward_scale_propagation = mean_backward_scale_rule};
const OpDef kMaxOp{
    .name = "max",
    .inputs = {"x"},
    .attributes = {AttributeSpec::integer("axis", kRequired), AttributeSpec::integer("keepdim")},
    .infer_shapes = infer_max,
    .kernel = max_kernel,
    .backward_kernel = max_backward_kernel,
    .backward_reads = 0b01,
    .scale_propagation = max_scale_rule,
    .backward_scale_propagation = max_backward_scale_rule};

// ------------------------------------------------------------------------------------------------
// Builders

namespace {

std::int64_t keepdim_value(const ReduceOptions& options) {
  return options.keepdims == KeepDims::kYes ? 1 : 0;
}

Value record_reduction(const OpDef& op, Value x, const std::vector<int>& axes,
                       const ReduceOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(op, inputs,
                          {{"axes", std::vector<std::int64_t>(axes.begin(), axes.end())},
                           {"keepdim", keepdim_value(options)}});
}

}  // namespace

Value sum(Value x, std::vector<int> axes, const ReduceOptions& options) {
  return record_reduction(kSumOp, x, axes, options);
}

Value mean(Value x, std::vector<int> axes, const ReduceOptions& options) {
  return record_reduction(kMeanOp, x, axes, options);
}

Value max(Value x, int axis, const ReduceOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(kMaxOp, inputs,
                          {{"axis", std::int64_t{axis}}, {"keepdim", keepdim_value(options)}});
}

}  // namespace unitscale

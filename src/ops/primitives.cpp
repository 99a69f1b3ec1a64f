#include "unitscale/ops/primitives.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// Below this many elements the OpenMP fork/join costs more than it saves.
constexpr std::int64_t kParallelThreshold = std::int64_t{1} << 15;

// The product of dims [begin, end) of `shape`.
std::int64_t dims_product(const Shape& shape, int begin, int end) {
  std::int64_t n = 1;
  for (int i = begin; i < end; ++i) n *= shape.dims()[static_cast<std::size_t>(i)];
  return n;
}

void copy_floats(const float* from, float* to, std::int64_t n) {
  if (n > 0) std::memcpy(to, from, static_cast<std::size_t>(n) * sizeof(float));
}

void fill_zero(float* to, std::int64_t n) {
  if (n > 0) std::memset(to, 0, static_cast<std::size_t>(n) * sizeof(float));
}

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

template <class F>
void map_unary(const float* x, float* y, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
void map_binary(const float* a, const float* b, float* y, std::int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
}

// ---------------------------------------------------------------------------------------------
// Reductions over a set of axes: the input is seen as groups of adjacent dims that are all kept or
// all reduced (size-1 dims dropped), so the common cases (trailing or leading axes) become one
// or two groups and the innermost group is a contiguous run.
// ---------------------------------------------------------------------------------------------

struct ReductionLayout {
  std::vector<std::int64_t> sizes;  // coalesced groups, outermost first; never empty
  std::vector<bool> reduced;
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
  return layout;
}

// Calls fn(input_offset, output_offset, run_length, run_is_reduced) for each contiguous run of
// the innermost group, in input order. A reduced run maps every element to output_offset; a kept
// run maps element j to output_offset + j.
template <class Fn>
void for_each_run(const Shape& input_shape, const std::vector<bool>& reduced, Fn&& fn) {
  if (input_shape.numel() == 0) return;
  const ReductionLayout layout = coalesce(input_shape, reduced);
  const std::size_t groups = layout.sizes.size();
  std::vector<std::int64_t> output_stride(groups, 0);
  std::int64_t stride = 1;
  for (std::size_t g = groups; g-- > 0;) {
    if (!layout.reduced[g]) {
      output_stride[g] = stride;
      stride *= layout.sizes[g];
    }
  }
  const std::int64_t run = layout.sizes.back();
  const bool run_reduced = layout.reduced.back();
  const std::int64_t runs = input_shape.numel() / run;
  std::vector<std::int64_t> index(groups - 1, 0);
  std::int64_t output_offset = 0;
  for (std::int64_t r = 0; r < runs; ++r) {
    fn(r * run, output_offset, run, run_reduced);
    for (std::size_t g = groups - 1; g-- > 0;) {  // odometer over the outer groups
      output_offset += output_stride[g];
      if (++index[g] < layout.sizes[g]) break;
      output_offset -= output_stride[g] * layout.sizes[g];
      index[g] = 0;
    }
  }
}

bool max_beats(float candidate, float best) {
  return candidate > best || (std::isnan(candidate) && !std::isnan(best));
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
  // x = [outer, n0, middle, n1, inner] becomes y = [outer, n1, middle, n0, inner].
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, dim0);
  const std::int64_t n0 = shape.dim(dim0);
  const std::int64_t middle = dims_product(shape, dim0 + 1, dim1);
  const std::int64_t n1 = shape.dim(dim1);
  const std::int64_t inner = dims_product(shape, dim1 + 1, shape.rank());
  const float* from = x.data();
  float* to = y.data();
  const std::int64_t blocks = outer * n1;
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
  for (std::int64_t block = 0; block < blocks; ++block) {
    const std::int64_t o = block / n1, j = block % n1;
    for (std::int64_t m = 0; m < middle; ++m) {
      for (std::int64_t i = 0; i < n0; ++i) {
        const float* source = from + (((o * n0 + i) * middle + m) * n1 + j) * inner;
        float* target = to + (((o * n1 + j) * middle + m) * n0 + i) * inner;
        for (std::int64_t c = 0; c < inner; ++c) target[c] = source[c];
      }
    }
  }
}

void slice_forward(ConstTensorView x, TensorView y, int axis, std::int64_t start) {
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t size = shape.dim(axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t width = y.shape().dim(axis) * inner;
#pragma omp parallel for schedule(static) if (y.numel() > kParallelThreshold)
  for (std::int64_t o = 0; o < outer; ++o) {
    copy_floats(x.data() + (o * size + start) * inner, y.data() + o * width, width);
  }
}

void slice_backward(ConstTensorView grad_y, TensorView grad_x, int axis, std::int64_t start) {
  const Shape& shape = grad_x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t size = shape.dim(axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t width = grad_y.shape().dim(axis) * inner;
  const std::int64_t row = size * inner;
  const std::int64_t before = start * inner;
#pragma omp parallel for schedule(static) if (grad_x.numel() > kParallelThreshold)
  for (std::int64_t o = 0; o < outer; ++o) {
    float* target = grad_x.data() + o * row;
    fill_zero(target, before);
    copy_floats(grad_y.data() + o * width, target + before, width);
    fill_zero(target + before + width, row - before - width);
  }
}

void concat_forward(ConstTensorView a, ConstTensorView b, TensorView y, int axis) {
  const std::int64_t outer = dims_product(a.shape(), 0, axis);
  const std::int64_t inner = dims_product(a.shape(), axis + 1, a.shape().rank());
  const std::int64_t width_a = a.shape().dim(axis) * inner;
  const std::int64_t width_b = b.shape().dim(axis) * inner;
#pragma omp parallel for schedule(static) if (y.numel() > kParallelThreshold)
  for (std::int64_t o = 0; o < outer; ++o) {
    float* target = y.data() + o * (width_a + width_b);
    copy_floats(a.data() + o * width_a, target, width_a);
    copy_floats(b.data() + o * width_b, target + width_a, width_b);
  }
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
#pragma omp parallel for schedule(static) if (grad_y.numel() > kParallelThreshold)
  for (std::int64_t o = 0; o < outer; ++o) {
    const float* source = grad_y.data() + o * total;
    if (present(grad_a)) copy_floats(source, grad_a.data() + o * width_a, width_a);
    if (present(grad_b)) copy_floats(source + width_a, grad_b.data() + o * width_b, width_b);
  }
}

void sum_forward(ConstTensorView x, TensorView y, const std::vector<bool>& reduced, double scale) {
  std::vector<double> accumulator(static_cast<std::size_t>(y.numel()), 0.0);
  const float* data = x.data();
  for_each_run(x.shape(), reduced,
               [&](std::int64_t in, std::int64_t out, std::int64_t run, bool run_reduced) {
                 const float* source = data + in;
                 double* target = accumulator.data() + out;
                 if (run_reduced) {
                   double partial = 0;
                   for (std::int64_t j = 0; j < run; ++j) partial += source[j];
                   *target += partial;
                 } else {
                   for (std::int64_t j = 0; j < run; ++j) target[j] += source[j];
                 }
               });
  float* result = y.data();
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    result[i] = static_cast<float>(accumulator[static_cast<std::size_t>(i)] * scale);
  }
}

void sum_backward(ConstTensorView grad_y, TensorView grad_x, const std::vector<bool>& reduced,
                  double scale) {
  const auto factor = static_cast<float>(scale);
  const float* g = grad_y.data();
  float* dx = grad_x.data();
  for_each_run(grad_x.shape(), reduced,
               [&](std::int64_t in, std::int64_t out, std::int64_t run, bool run_reduced) {
                 if (run_reduced) {
                   const float value = factor * g[out];
                   for (std::int64_t j = 0; j < run; ++j) dx[in + j] = value;
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
#pragma omp parallel for schedule(static) if (x.numel() > kParallelThreshold)
  for (std::int64_t o = 0; o < outer; ++o) {
    const float* base = x.data() + o * size * inner;
    float* best = y.data() + o * inner;
    copy_floats(base, best, inner);
    for (std::int64_t k = 1; k < size; ++k) {
      const float* row = base + k * inner;
      for (std::int64_t c = 0; c < inner; ++c) {
        if (max_beats(row[c], best[c])) best[c] = row[c];
      }
    }
  }
}

void max_backward(ConstTensorView x, ConstTensorView grad_y, TensorView grad_x, int axis) {
  const Shape& shape = x.shape();
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t size = shape.dim(axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  fill_zero(grad_x.data(), grad_x.numel());
  std::vector<float> best(static_cast<std::size_t>(inner));
  std::vector<std::int64_t> argmax(static_cast<std::size_t>(inner));
  for (std::int64_t o = 0; o < outer; ++o) {
    const float* base = x.data() + o * size * inner;
    std::copy(base, base + inner, best.begin());
    std::fill(argmax.begin(), argmax.end(), 0);
    for (std::int64_t k = 1; k < size; ++k) {
      const float* row = base + k * inner;
      for (std::int64_t c = 0; c < inner; ++c) {
        const auto ci = static_cast<std::size_t>(c);
        if (max_beats(row[c], best[ci])) {  // strict: ties keep the first argmax
          best[ci] = row[c];
          argmax[ci] = k;
        }
      }
    }
    for (std::int64_t c = 0; c < inner; ++c) {
      grad_x.data()[(o * size + argmax[static_cast<std::size_t>(c)]) * inner + c] =
          grad_y.data()[o * inner + c];
    }
  }
}

void where_forward(ConstTensorView cond, ConstTensorView a, ConstTensorView b, TensorView y) {
  const float* c = cond.data();
  const float* pa = a.data();
  const float* pb = b.data();
  float* out = y.data();
  const std::int64_t n = y.numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = c[i] != 0.0f ? pa[i] : pb[i];
}

void where_backward(ConstTensorView cond, ConstTensorView grad_y, TensorView grad_a,
                    TensorView grad_b) {
  if (present(grad_a)) {
    map_binary(cond.data(), grad_y.data(), grad_a.data(), grad_y.numel(),
               [](float c, float g) { return c != 0.0f ? g : 0.0f; });
  }
  if (present(grad_b)) {
    map_binary(cond.data(), grad_y.data(), grad_b.data(), grad_y.numel(),
               [](float c, float g) { return c != 0.0f ? 0.0f : g; });
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

void exp_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  map_unary(in[0].data(), out[0].data(), in[0].numel(), [](float v) { return std::exp(v); });
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

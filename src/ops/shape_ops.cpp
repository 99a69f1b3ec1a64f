// The shape ops reshape, transpose, slice and concat: their kernels, shape inference and OpDefs,
// forward and backward. They move elements without arithmetic: reshape, transpose and slice those
// of any dtype (OpDef::moves_values: under scale propagation they move stored FP16 or FP8 data as
// it is), concat floats.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/primitives_common.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

using detail::axis_attr;
using detail::ceil_div;
using detail::dims_product;
using detail::for_row_pieces;
using detail::kParallelThreshold;

// Copies `rows` rows of `width` elements of `size` bytes; the strides are in elements.
void copy_rows(const std::byte* from, std::int64_t from_stride, std::byte* to,
               std::int64_t to_stride, std::int64_t rows, std::int64_t width, std::int64_t size) {
  for_row_pieces(rows, width, [&](std::int64_t r, std::int64_t begin, std::int64_t n) {
    std::memcpy(to + (r * to_stride + begin) * size, from + (r * from_stride + begin) * size,
                static_cast<std::size_t>(n * size));
  });
}

void copy_rows(const float* from, std::int64_t from_stride, float* to, std::int64_t to_stride,
               std::int64_t rows, std::int64_t width) {
  copy_rows(reinterpret_cast<const std::byte*>(from), from_stride, reinterpret_cast<std::byte*>(to),
            to_stride, rows, width, sizeof(float));
}

// Zeros `rows` rows of `width` elements of `size` bytes (all-zero bits are +0 in every format).
void zero_rows(std::byte* to, std::int64_t stride, std::int64_t rows, std::int64_t width,
               std::int64_t size) {
  for_row_pieces(rows, width, [&](std::int64_t r, std::int64_t begin, std::int64_t n) {
    std::memset(to + (r * stride + begin) * size, 0, static_cast<std::size_t>(n * size));
  });
}

// A tensor's elements as bytes, and their size: the movers work on any dtype.
std::int64_t element_size(const ConstTensorView& x) {
  return static_cast<std::int64_t>(dtype_size(x.dtype()));
}

// to[j, i] = from[i, j] for rows [i0, i1) and columns [j0, j1) of `from` (row strides in
// elements of type T, which has the elements' size). Blocks of 4 × 4 read four source rows and
// write four target rows four elements at a time, which the compiler turns into register
// shuffles; the ragged edges go one by one.
template <class T>
void transpose_tile(const T* from, std::int64_t from_row, T* to, std::int64_t to_row,
                    std::int64_t i0, std::int64_t i1, std::int64_t j0, std::int64_t j1) {
  const std::int64_t i4 = i0 + (i1 - i0) / 4 * 4, j4 = j0 + (j1 - j0) / 4 * 4;
  for (std::int64_t j = j0; j < j4; j += 4) {
    for (std::int64_t i = i0; i < i4; i += 4) {
      const T* s = from + i * from_row + j;
      T* d = to + j * to_row + i;
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

// transpose_copy for elements of type T (of the dtype's size).
template <class T>
void transpose_elements(const T* x, T* y, const Shape& shape, int dim0, int dim1) {
  // x = [outer, n0, middle, n1, inner] becomes y = [outer, n1, middle, n0, inner]: for each
  // (outer, middle) index, the transpose of an n0 × n1 matrix whose elements are runs of `inner`
  // elements. It goes tile by tile, so that the strided side of the copy (reading a column of x,
  // or writing one of y) stays within cache lines that are reused across the tile.
  const std::int64_t outer = dims_product(shape, 0, dim0);
  const std::int64_t n0 = shape.dim(dim0);
  const std::int64_t middle = dims_product(shape, dim0 + 1, dim1);
  const std::int64_t n1 = shape.dim(dim1);
  const std::int64_t inner = dims_product(shape, dim1 + 1, shape.rank());
  constexpr std::int64_t kTile0 = 64, kTile1 = 32;  // rows of x × columns of x per tile
  const std::int64_t tiles0 = ceil_div(n0, kTile0), tiles1 = ceil_div(n1, kTile1);
  const std::int64_t from_row = middle * n1 * inner;  // x's stride along n0
  const std::int64_t to_row = middle * n0 * inner;    // y's stride along n1
  const std::int64_t items = outer * middle * tiles0 * tiles1;
#pragma omp parallel for schedule(static) if (shape.numel() > kParallelThreshold)
  for (std::int64_t item = 0; item < items; ++item) {
    std::int64_t rest = item;
    const std::int64_t t1 = rest % tiles1;
    rest /= tiles1;
    const std::int64_t t0 = rest % tiles0;
    rest /= tiles0;
    const std::int64_t m = rest % middle, o = rest / middle;
    const std::int64_t i0 = t0 * kTile0, i1 = std::min(n0, i0 + kTile0);
    const std::int64_t j0 = t1 * kTile1, j1 = std::min(n1, j0 + kTile1);
    const T* from = x + ((o * n0 * middle + m) * n1) * inner;  // x[o, 0, m, 0, 0]
    T* to = y + ((o * n1 * middle + m) * n0) * inner;          // y[o, 0, m, 0, 0]
    if (inner == 1) {
      transpose_tile(from, from_row, to, to_row, i0, i1, j0, j1);
      continue;
    }
    for (std::int64_t j = j0; j < j1; ++j) {
      for (std::int64_t i = i0; i < i1; ++i) {
        std::memcpy(to + j * to_row + i * inner, from + i * from_row + j * inner,
                    static_cast<std::size_t>(inner) * sizeof(T));
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

void transpose_copy(ConstTensorView x, TensorView y, int dim0, int dim1) {
  if (dim0 > dim1) std::swap(dim0, dim1);
  const std::int64_t size = element_size(x);
  if (dim0 == dim1) {
    copy_rows(x.bytes(), 0, y.bytes(), 0, 1, x.numel(), size);
    return;
  }
  if (x.numel() == 0) return;
  // Elements as their own type where the tensor has one (f32, i32), as 16-bit codes, or as bytes.
  const Shape& shape = x.shape();
  if (x.dtype() == DType::kF32) {
    transpose_elements(x.data(), y.data(), shape, dim0, dim1);
  } else if (x.dtype() == DType::kI32) {
    transpose_elements(x.data_as<std::int32_t>(), y.data_as<std::int32_t>(), shape, dim0, dim1);
  } else if (size == 2) {
    transpose_elements(reinterpret_cast<const std::uint16_t*>(x.bytes()),
                       reinterpret_cast<std::uint16_t*>(y.bytes()), shape, dim0, dim1);
  } else {
    transpose_elements(reinterpret_cast<const unsigned char*>(x.bytes()),
                       reinterpret_cast<unsigned char*>(y.bytes()), shape, dim0, dim1);
  }
}

void slice_forward(ConstTensorView x, TensorView y, int axis, std::int64_t start) {
  const Shape& shape = x.shape();
  const std::int64_t size = element_size(x);
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t row = shape.dim(axis) * inner;
  const std::int64_t width = y.shape().dim(axis) * inner;
  copy_rows(x.bytes() + start * inner * size, row, y.bytes(), width, outer, width, size);
}

void slice_backward(ConstTensorView grad_y, TensorView grad_x, int axis, std::int64_t start) {
  const Shape& shape = grad_x.shape();
  const std::int64_t size = element_size(grad_y);
  const std::int64_t outer = dims_product(shape, 0, axis);
  const std::int64_t inner = dims_product(shape, axis + 1, shape.rank());
  const std::int64_t row = shape.dim(axis) * inner;
  const std::int64_t width = grad_y.shape().dim(axis) * inner;
  const std::int64_t before = start * inner;
  std::byte* dx = grad_x.bytes();
  zero_rows(dx, row, outer, before, size);
  copy_rows(grad_y.bytes(), width, dx + before * size, row, outer, width, size);
  zero_rows(dx + (before + width) * size, row, outer, row - before - width, size);
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

// ---------------------------------------------------------------------------------------------
// Shape inference and the OpDefs
// ---------------------------------------------------------------------------------------------

namespace {

// --- reshape ---------------------------------------------------------------------------------

Shape reshape_target(const Shape& x, const std::vector<std::int64_t>& requested) {
  const auto fail = [&](std::string_view why) {
    return Error(fmt::format("reshape: cannot reshape x {} ({} elements) to [{}]: {}",
                             x.to_string(), x.numel(), fmt::join(requested, ", "), why));
  };
  std::vector<std::int64_t> dims = requested;
  std::size_t inferred = dims.size();
  std::int64_t known = 1;  // the product of the given non-zero dims (checked), 0 if one is 0
  bool has_zero = false;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (inferred != dims.size()) throw fail("at most one dimension may be -1");
      inferred = i;
    } else if (dims[i] < 0) {
      throw fail("dimensions must be non-negative, or -1 for the one to infer");
    } else if (dims[i] == 0) {
      has_zero = true;
    } else if (__builtin_mul_overflow(known, dims[i], &known)) {
      throw fail("the product of the dimensions overflows int64 (expected at most 2^63 - 1 "
                 "elements)");
    }
  }
  if (has_zero) known = 0;
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

// Any dtype: the elements copied as bytes.
void copy_elements(const ConstTensorView& from, const TensorView& to) {
  copy_rows(from.bytes(), 0, to.bytes(), 0, 1, from.numel(), element_size(from));
}

void reshape_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes&, const KernelContext&) {
  copy_elements(in[0], out[0]);
}

std::vector<DType> same_dtype(std::span<const DType> inputs, const Attributes&) {
  return {inputs[0]};
}

// Scale rules of the data movers (reshape, transpose, slice): y holds some of x's values, moved,
// so it is homogeneous of degree 1 in x and keeps x's scale (an i32 input has scale 1); likewise
// grad_x holds grad_y's values (slice pads them with zeros, which every format holds exactly).
std::vector<Scale> passthrough_scale_rule(const ScaleRuleArgs& args) { return {args.scale(0)}; }

// Backward inputs: x, y, grad_y (x and y absent).
std::vector<Scale> passthrough_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(2)};
}

// Backward inputs: x (absent), y (absent), grad_y.
void reshape_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes&, const KernelContext&) {
  if (present(out[0])) copy_elements(in[2], out[0]);
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
  std::int64_t joined = 0;
  if (__builtin_add_overflow(a.dim(axis), b.dim(axis), &joined)) {
    throw Error(fmt::format("concat: a {} and b {} along axis {}: the joined dimension overflows "
                            "int64 (expected at most 2^63 - 1)",
                            a.to_string(), b.to_string(), axis));
  }
  return {a.with_dim(axis, joined)};
}

void concat_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  concat_forward(in[0], in[1], out[0], concat_axis(attrs, in[0].shape()));
}

// y = [a, b]: each element is an element of a or of b. Scalify's concatenate rule, the larger
// scale, keeps the larger operand's data near 1; the smaller one's data is scaled down with it.
std::vector<Scale> concat_scale_rule(const ScaleRuleArgs& args) {
  return {max_scale({args.scale(0), args.scale(1)})};
}

// grad_a and grad_b are the two parts of grad_y, so both keep its scale. Backward inputs: a, b and
// y (all absent), grad_y.
std::vector<Scale> concat_backward_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(3), args.scale(3)};
}

// Backward inputs: a (absent), b (absent), y (absent), grad_y.
void concat_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  if (!present(out[0]) && !present(out[1])) return;
  concat_backward(in[3], out[0], out[1], concat_axis(attrs, in[3].shape()));
}

}  // namespace

// Bit i of backward_reads: forward value i, counting inputs then outputs.
const OpDef kReshapeOp{.name = "reshape",
                       .inputs = {"x"},
                       .attributes = {AttributeSpec::integers("shape", kRequired)},
                       .input_dtypes = {DTypeSet::all()},
                       .infer_dtypes = same_dtype,
                       .infer_shapes = infer_reshape,
                       .kernel = reshape_kernel,
                       .backward_kernel = reshape_backward_kernel,
                       .backward_reads = 0b00,
                       .scale_propagation = passthrough_scale_rule,
                       .backward_scale_propagation = passthrough_backward_scale_rule,
                       .runs_on_scaled_data = true,
                       .moves_values = true};
const OpDef kTransposeOp{.name = "transpose",
                         .inputs = {"x"},
                         .attributes = {AttributeSpec::integer("dim0", kRequired),
                                        AttributeSpec::integer("dim1", kRequired)},
                         .input_dtypes = {DTypeSet::all()},
                         .infer_dtypes = same_dtype,
                         .infer_shapes = infer_transpose,
                         .kernel = transpose_kernel,
                         .backward_kernel = transpose_backward_kernel,
                         .backward_reads = 0b00,
                         .scale_propagation = passthrough_scale_rule,
                         .backward_scale_propagation = passthrough_backward_scale_rule,
                         .runs_on_scaled_data = true,
                         .moves_values = true};
const OpDef kSliceOp{.name = "slice",
                     .inputs = {"x"},
                     .attributes = {AttributeSpec::integer("axis", kRequired),
                                    AttributeSpec::integer("start", kRequired),
                                    AttributeSpec::integer("end", kRequired)},
                     .input_dtypes = {DTypeSet::all()},
                     .infer_dtypes = same_dtype,
                     .infer_shapes = infer_slice,
                     .kernel = slice_kernel,
                     .backward_kernel = slice_backward_kernel,
                     .backward_reads = 0b00,
                     .scale_propagation = passthrough_scale_rule,
                     .backward_scale_propagation = passthrough_backward_scale_rule,
                     .runs_on_scaled_data = true,
                     .moves_values = true};
const OpDef kConcatOp{.name = "concat",
                      .inputs = {"a", "b"},
                      .attributes = {AttributeSpec::integer("axis", kRequired)},
                      .infer_shapes = infer_concat,
                      .kernel = concat_kernel,
                      .backward_kernel = concat_backward_kernel,
                      .backward_reads = 0b000,
                      .scale_propagation = concat_scale_rule,
                      .backward_scale_propagation = concat_backward_scale_rule};

// ------------------------------------------------------------------------------------------------
// Builders

Value reshape(Value x, std::vector<std::int64_t> shape) {
  const Value inputs[] = {x};
  return x.graph().apply1(kReshapeOp, inputs, {{"shape", std::move(shape)}});
}

Value transpose(Value x, int dim0, int dim1) {
  const Value inputs[] = {x};
  return x.graph().apply1(kTransposeOp, inputs,
                          {{"dim0", std::int64_t{dim0}}, {"dim1", std::int64_t{dim1}}});
}

Value slice(Value x, int axis, std::int64_t start, std::int64_t end) {
  const Value inputs[] = {x};
  return x.graph().apply1(kSliceOp, inputs,
                          {{"axis", std::int64_t{axis}}, {"start", start}, {"end", end}});
}

// Folded left into binary nodes: concat(a, b, c) = concat(concat(a, b), c).
Value concat(std::span<const Value> values, int axis) {
  if (values.empty()) throw Error("concat: needs at least one value, got none");
  Value result = values[0];
  for (std::size_t i = 1; i < values.size(); ++i) {
    const Value inputs[] = {result, values[i]};
    result = values[i].graph().apply1(kConcatOp, inputs, {{"axis", std::int64_t{axis}}});
  }
  return result;
}

Value concat(std::initializer_list<Value> values, int axis) {
  return concat(std::span<const Value>(values.begin(), values.size()), axis);
}

}  // namespace unitscale

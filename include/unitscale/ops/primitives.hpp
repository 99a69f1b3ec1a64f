#pragma once
// Primitive tensor ops that later passes and models are built from. None has a unit-scaling rule
// of its own: they run unscaled (α = β = 1) in every graph, and their backward ops compute the
// true vector-Jacobian products. Negative axes count from the end; an axis out of range throws
// unitscale::Error naming the op and the shape.
//
//   op {attributes}            forward                           backward (g = gradient of y)
//   reshape(x) {shape}         y = x, new shape (one −1 entry    dx = reshape(g, x.shape)
//                                is inferred; f32 or i32, kept)
//   transpose(x) {dim0, dim1}  y = x, dims dim0 and dim1 swapped dx = transpose(g, dim0, dim1)
//   slice(x)                   y = x[..., start:end, ...]        dx = 0; dx[start:end] = g
//     {axis, start, end}         (negative start/end count from
//                                the end; 0 ≤ start ≤ end ≤ size)
//   concat(a, b) {axis}        y = [a, b] along axis (the other  da, db = the two parts of g
//                                dims equal; the builder folds
//                                a list into binary nodes)
//   sum(x) {axes, keepdim}     y = Σ_axes x (empty axes: all)    dx = broadcast(g)
//   mean(x) {axes, keepdim}    y = Σ_axes x / N,                 dx = broadcast(g) / N
//                                N = ∏ reduced dims
//   max(x) {axis, keepdim}     y = max_axis x (NaN wins)         dx = g at the first argmax,
//                                                                  0 elsewhere
//   exp(x)                     y = eˣ                            dx = g · y
//   log(x)                     y = ln x                          dx = g / x
//   sqrt(x)                    y = √x                            dx = g / (2y)
//   where(cond, a, b)          y = cond ≠ 0 ? a : b (equal       da = cond ≠ 0 ? g : 0,
//                                shapes; NaN is nonzero)         db = cond ≠ 0 ? 0 : g;
//                                                                cond gets no gradient
//
// sum and mean accumulate in double, in an order fixed by the shape (16 interleaved partial sums
// per contiguous run, fixed-size blocks and chunks added in order), so their results do not depend
// on the number of threads. keepdim is an integer attribute (0: the reduced dims are
// dropped, 1: they are kept with size 1). The backward ops read only what they need: reshape,
// transpose, slice, concat, sum and mean read no forward value; max and log read x; exp and sqrt
// read y; where reads cond.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kReshapeOp;
extern const OpDef kTransposeOp;
extern const OpDef kSliceOp;
extern const OpDef kConcatOp;
extern const OpDef kSumOp;
extern const OpDef kMeanOp;
extern const OpDef kMaxOp;
extern const OpDef kExpOp;
extern const OpDef kLogOp;
extern const OpDef kSqrtOp;
extern const OpDef kWhereOp;

// The kernels, for direct use and benchmarks. Axes are resolved (non-negative) and shapes already
// checked, as the OpDefs' shape inference does; absent (null) gradient views are skipped.

// y has x's dims with dim0 and dim1 swapped. Being its own inverse, it is also the backward.
void transpose_copy(ConstTensorView x, TensorView y, int dim0, int dim1);

void slice_forward(ConstTensorView x, TensorView y, int axis, std::int64_t start);
void slice_backward(ConstTensorView grad_y, TensorView grad_x, int axis, std::int64_t start);

void concat_forward(ConstTensorView a, ConstTensorView b, TensorView y, int axis);
void concat_backward(ConstTensorView grad_y, TensorView grad_a, TensorView grad_b, int axis);

// y = scale · Σ over the axes with reduced[axis] set (y's layout is x's with those dims removed
// or kept as 1, which is the same memory order). mean is sum with scale 1/N.
void sum_forward(ConstTensorView x, TensorView y, const std::vector<bool>& reduced, double scale);
void sum_backward(ConstTensorView grad_y, TensorView grad_x, const std::vector<bool>& reduced,
                  double scale);

void max_forward(ConstTensorView x, TensorView y, int axis);
void max_backward(ConstTensorView x, ConstTensorView grad_y, TensorView grad_x, int axis);

void where_forward(ConstTensorView cond, ConstTensorView a, ConstTensorView b, TensorView y);
void where_backward(ConstTensorView cond, ConstTensorView grad_y, TensorView grad_a,
                    TensorView grad_b);


// ------------------------------------------------------------------------------------------------
// Builders for the primitive ops. They never scale: the same
// node runs in unscaled and unit-scaled graphs alike.
//
//   Value flat = reshape(x, {-1, 64});
//   Value xt = transpose(x, -1, -2);
//   Value head = slice(x, -1, 0, 16);
//   Value xy = concat({x, y, z}, 0);                  // folded into binary concat nodes
//   Value total = sum(x);                             // every axis, to a scalar
//   Value row_mean = mean(x, {-1}, {.keepdims = KeepDims::kYes});
//   Value largest = max(logits, -1);
//   Value y = where(mask, x, exp(x));
//
// Axes may be negative; an axis out of range throws unitscale::Error naming the op and the shape.

// Whether a reduction keeps the reduced dims (with size 1) or drops them.
enum class KeepDims { kNo, kYes };

struct ReduceOptions {
  KeepDims keepdims = KeepDims::kNo;
};

// One entry of `shape` may be -1: it is inferred from the number of elements.
Value reshape(Value x, std::vector<std::int64_t> shape);
Value transpose(Value x, int dim0, int dim1);
// x[..., start:end, ...] along `axis`; negative start/end count from the end of the axis.
Value slice(Value x, int axis, std::int64_t start, std::int64_t end);
// All values must have equal ranks and equal dims except along `axis`; at least one value.
Value concat(std::span<const Value> values, int axis);
Value concat(std::initializer_list<Value> values, int axis);
// Empty `axes` reduces every axis.
Value sum(Value x, std::vector<int> axes = {}, const ReduceOptions& options = {});
Value mean(Value x, std::vector<int> axes = {}, const ReduceOptions& options = {});
// The gradient flows to the first maximal element along `axis`.
Value max(Value x, int axis, const ReduceOptions& options = {});
Value exp(Value x);
Value log(Value x);
Value sqrt(Value x);
// cond ≠ 0 selects a, else b; all three of equal shapes. cond gets no gradient.
Value where(Value cond, Value a, Value b);

}  // namespace unitscale

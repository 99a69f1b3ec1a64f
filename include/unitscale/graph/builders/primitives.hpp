#pragma once
// Builders for the primitive ops (the maths is in ops/primitives.hpp). They never scale: the same
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

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {

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

#include "unitscale/graph/builders/primitives.hpp"

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

Value record_unary(const OpDef& op, Value x, Attributes attrs = {}) {
  const Value inputs[] = {x};
  return x.graph().apply1(op, inputs, std::move(attrs));
}

std::int64_t keepdim_value(const ReduceOptions& options) {
  return options.keepdims == KeepDims::kYes ? 1 : 0;
}

Value record_reduction(const OpDef& op, Value x, const std::vector<int>& axes,
                       const ReduceOptions& options) {
  return record_unary(op, x,
                      Attributes{{"axes", std::vector<std::int64_t>(axes.begin(), axes.end())},
                                 {"keepdim", keepdim_value(options)}});
}

}  // namespace

Value reshape(Value x, std::vector<std::int64_t> shape) {
  return record_unary(kReshapeOp, x, Attributes{{"shape", std::move(shape)}});
}

Value transpose(Value x, int dim0, int dim1) {
  return record_unary(kTransposeOp, x,
                      Attributes{{"dim0", std::int64_t{dim0}}, {"dim1", std::int64_t{dim1}}});
}

Value slice(Value x, int axis, std::int64_t start, std::int64_t end) {
  return record_unary(kSliceOp, x,
                      Attributes{{"axis", std::int64_t{axis}}, {"start", start}, {"end", end}});
}

// Folded left into binary nodes: concat(a, b, c) = concat(concat(a, b), c).
Value concat(std::span<const Value> values, int axis) {
  if (values.empty()) throw Error("concat: needs at least one value, got none");
  Value result = values[0];
  for (std::size_t i = 1; i < values.size(); ++i) {
    const Value inputs[] = {result, values[i]};
    result = values[i].graph().apply1(kConcatOp, inputs, Attributes{{"axis", std::int64_t{axis}}});
  }
  return result;
}

Value concat(std::initializer_list<Value> values, int axis) {
  return concat(std::span<const Value>(values.begin(), values.size()), axis);
}

Value sum(Value x, std::vector<int> axes, const ReduceOptions& options) {
  return record_reduction(kSumOp, x, axes, options);
}

Value mean(Value x, std::vector<int> axes, const ReduceOptions& options) {
  return record_reduction(kMeanOp, x, axes, options);
}

Value max(Value x, int axis, const ReduceOptions& options) {
  return record_unary(
      kMaxOp, x, Attributes{{"axis", std::int64_t{axis}}, {"keepdim", keepdim_value(options)}});
}

Value exp(Value x) { return record_unary(kExpOp, x); }
Value log(Value x) { return record_unary(kLogOp, x); }
Value sqrt(Value x) { return record_unary(kSqrtOp, x); }

Value where(Value cond, Value a, Value b) {
  const Value inputs[] = {cond, a, b};
  return cond.graph().apply1(kWhereOp, inputs, {});
}

}  // namespace unitscale

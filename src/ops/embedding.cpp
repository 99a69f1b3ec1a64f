#include "unitscale/ops/embedding.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "ops/parallel.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::kParallelThreshold;
// Columns per task in the backward scatter: tasks own disjoint columns, so no two threads ever
// add into the same element.
constexpr std::int64_t kScatterColumns = 64;

// Throws (outside any parallel region) on the first id outside [0, V).
void check_ids(ConstTensorView ids, std::int64_t vocabulary) {
  const std::int32_t* id = ids.data_as<std::int32_t>();
  for (std::int64_t n = 0; n < ids.numel(); ++n) {
    if (id[n] < 0 || id[n] >= vocabulary) {
      throw Error(fmt::format("embedding: id {} at position {} is outside [0, {}) (the table has "
                              "V = {} rows)",
                              id[n], n, vocabulary, vocabulary));
    }
  }
}

std::vector<Shape> infer_embedding(std::span<const Shape* const> in, const Attributes&) {
  const Shape& ids = *in[0];
  const Shape& table = *in[1];
  if (table.rank() != 2 || table.dim(0) < 1) {
    throw Error(fmt::format("embedding: table {} must be [V, d] with V >= 1 (ids {})",
                            table.to_string(), ids.to_string()));
  }
  std::vector<std::int64_t> dims(ids.dims().begin(), ids.dims().end());
  dims.push_back(table.dim(1));
  return {Shape(std::move(dims))};
}

// β_table = √(V / numel(ids)); α = 1.
void unit_scale_embedding(std::span<const Shape* const> in, Attributes& attrs) {
  const auto vocabulary = static_cast<double>(in[1]->dim(0));
  const double tokens = std::max(1.0, static_cast<double>(in[0]->numel()));
  attrs.set("beta_table", std::sqrt(vocabulary / tokens));
}

void embedding_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                      const Attributes& attrs, const KernelContext&) {
  embedding_forward(in[0], in[1], out[0], scale_of(attrs, "alpha"));
}

// Backward inputs: ids, table (absent), y (absent), grad_y. Outputs: grad_ids, grad_table. The ids
// are not differentiable; if a caller still asks for their gradient it is zero (which is also
// the derivative of the piecewise-constant lookup almost everywhere) rather than left unwritten.
void embedding_backward_kernel(std::span<const ConstTensorView> in,
                               std::span<const TensorView> out, const Attributes& attrs, const KernelContext&) {
  if (present(out[0])) out[0].vector().setZero();
  if (!present(out[1])) return;
  embedding_backward(in[3], in[0], out[1], scale_of(attrs, "beta_table"));
}

// y = α·table[ids]: a gather of table rows, so y holds α times the table's values (degree 1 in the
// table): s_y = p2(α)·s_table. The ids are integers and carry no scale.
std::vector<Scale> embedding_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(args.unit_scale("alpha")) * args.scale(1)};
}

// Backward inputs: ids, table (absent), y (absent), grad_y; outputs grad_ids, grad_table.
// grad_table[v] = β·Σ_{n: ids[n] = v} grad_y[n], a scatter-add: degree 1 in grad_y, and row v sums
// count_v rows of grad_y. The counts average T/V (T = numel(ids) tokens over V rows), and the RMS
// over the whole table is √(T/V)·β·s_g whatever the ids are, so s = p2(β·√(T/V))·s_g — exactly
// s_g on the unit-scaled graph (β = √(V/T)). T/V is usually below 1 (most rows get no gradient),
// which is why this is not fan_in, whose count is at least 1; the rows that do get one hold
// β·√count_v·s_g, √(V/T)·√count_v times the scale. The ids have no gradient.
std::vector<Scale> embedding_backward_scale_rule(const ScaleRuleArgs& args) {
  std::vector<Scale> result(2);
  if (args.has_output(1)) {
    const auto vocabulary = static_cast<double>(args.output_shape(1).dim(0));
    const auto tokens = static_cast<double>(std::max<std::int64_t>(1, args.input_shape(0).numel()));
    result[1] =
        args.p2(args.unit_scale("beta_table") * std::sqrt(tokens / vocabulary)) * args.scale(3);
  }
  return result;
}

}  // namespace

void embedding_forward(ConstTensorView ids, ConstTensorView table, TensorView y, float alpha) {
  const std::int64_t vocabulary = table.shape().dim(0);
  const std::int64_t d = table.shape().dim(1);
  check_ids(ids, vocabulary);
  const std::int64_t tokens = ids.numel();
  const std::int32_t* id = ids.data_as<std::int32_t>();
#pragma omp parallel for if (tokens * d >= kParallelThreshold)
  for (std::int64_t n = 0; n < tokens; ++n) {
    const std::int64_t row = id[n];
    Eigen::Map<Eigen::VectorXf>(y.data() + n * d, d) =
        alpha * Eigen::Map<const Eigen::VectorXf>(table.data() + row * d, d);
  }
}

void embedding_backward(ConstTensorView grad_y, ConstTensorView ids, TensorView grad_table,
                        float beta_table) {
  const std::int64_t vocabulary = grad_table.shape().dim(0);
  const std::int64_t d = grad_table.shape().dim(1);
  check_ids(ids, vocabulary);
  grad_table.vector().setZero();
  const std::int64_t tokens = ids.numel();
  const std::int32_t* id = ids.data_as<std::int32_t>();
  const float* g = grad_y.data();
  float* dt = grad_table.data();
#pragma omp parallel for if (tokens * d >= kParallelThreshold)
  for (std::int64_t first = 0; first < d; first += kScatterColumns) {
    const std::int64_t last = std::min(d, first + kScatterColumns);
    for (std::int64_t n = 0; n < tokens; ++n) {
      float* dst = dt + static_cast<std::int64_t>(id[n]) * d;
      const float* src = g + n * d;
      for (std::int64_t c = first; c < last; ++c) dst[c] += beta_table * src[c];
    }
  }
}

// The backward reads only the ids: the table gradient does not depend on the table.
const OpDef kEmbeddingOp{
    .name = "embedding",
    .inputs = {"ids", "table"},
    .scales = {"alpha", "beta_table"},
    .input_dtypes = {{DType::kI32}},
    .infer_shapes = infer_embedding,
    .unit_scale = unit_scale_embedding,
    .kernel = embedding_kernel,
    .backward_kernel = embedding_backward_kernel,
    .backward_reads = 0b001,
    .nondifferentiable_inputs = 0b01,  // ids
    .scale_propagation = embedding_scale_rule,
    .backward_scale_propagation = embedding_backward_scale_rule,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value embedding(Value ids, Value table) {
  const Value inputs[] = {ids, table};
  return ids.graph().apply1(kEmbeddingOp, inputs, {});
}

}  // namespace unitscale

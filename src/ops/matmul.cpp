#include "unitscale/ops/matmul.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/scale_rule_helpers.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"

namespace unitscale {
namespace {

// Below this many multiply-adds a GEMM is too small to split across threads, so a
// batch of them is better spread over threads one matrix each; below kParallelWork in all, a
// parallel region costs more than it saves.
constexpr std::int64_t kSmallGemm = std::int64_t{1} << 20;
constexpr std::int64_t kParallelWork = std::int64_t{1} << 18;

std::vector<std::int64_t> batch_dims(const Shape& s) {
  return {s.dims().begin(), s.dims().end() - 2};
}

std::int64_t product(const std::vector<std::int64_t>& dims) {
  std::int64_t n = 1;
  for (const auto d : dims) n *= d;
  return n;
}

// Checks the operands and returns the output shape [broadcast batch..., M, N].
Shape matmul_shape(const Shape& left, const Shape& right) {
  if (left.rank() < 2 || right.rank() < 2) {
    throw Error(fmt::format("matmul: left {} and right {}: both operands need rank >= 2 (expected "
                            "left [..., M, K] and right [..., K, N])",
                            left.to_string(), right.to_string()));
  }
  if (left.dim(-1) != right.dim(-2)) {
    throw Error(fmt::format("matmul: left {} and right {} do not match: expected left [..., M, K] "
                            "and right [..., K, N] (K = {} vs {})",
                            left.to_string(), right.to_string(), left.dim(-1), right.dim(-2)));
  }
  const std::vector<std::int64_t> lb = batch_dims(left), rb = batch_dims(right);
  const std::size_t rank = std::max(lb.size(), rb.size());
  std::vector<std::int64_t> dims(rank + 2);
  for (std::size_t i = 1; i <= rank; ++i) {
    const std::int64_t dl = i <= lb.size() ? lb[lb.size() - i] : 1;
    const std::int64_t dr = i <= rb.size() ? rb[rb.size() - i] : 1;
    if (dl != dr && dl != 1 && dr != 1) {
      throw Error(fmt::format("matmul: the batch dims of left {} and right {} cannot be broadcast "
                              "({} vs {})",
                              left.to_string(), right.to_string(), dl, dr));
    }
    dims[rank - i] = dl == 1 ? dr : dl;
  }
  dims[rank] = left.dim(-2);
  dims[rank + 1] = right.dim(-1);
  return Shape(std::move(dims));
}

// Which batch matrix of each operand every output batch matrix reads (NumPy broadcasting).
struct BatchMap {
  std::int64_t out_count = 1;
  std::int64_t left_count = 1;
  std::int64_t right_count = 1;
  std::vector<std::int64_t> left_of;   // [out_count]
  std::vector<std::int64_t> right_of;  // [out_count]

  // A 2-D (or all-ones batch) right operand under an unbroadcast left one: the whole product is
  // one tall GEMM.
  bool is_tall() const { return right_count == 1 && left_count == out_count; }
};

BatchMap batch_map(const Shape& left, const Shape& right) {
  const std::vector<std::int64_t> lb = batch_dims(left), rb = batch_dims(right);
  const std::size_t rank = std::max(lb.size(), rb.size());
  // Per output batch dim (outermost first): its size and each operand's stride (0 if broadcast).
  std::vector<std::int64_t> size(rank), left_stride(rank), right_stride(rank);
  std::int64_t ls = 1, rs = 1;
  for (std::size_t i = 1; i <= rank; ++i) {
    const std::int64_t dl = i <= lb.size() ? lb[lb.size() - i] : 1;
    const std::int64_t dr = i <= rb.size() ? rb[rb.size() - i] : 1;
    size[rank - i] = dl == 1 ? dr : dl;
    left_stride[rank - i] = dl == 1 ? 0 : ls;
    right_stride[rank - i] = dr == 1 ? 0 : rs;
    ls *= dl;
    rs *= dr;
  }
  BatchMap map;
  map.out_count = product(size);
  map.left_count = product(lb);
  map.right_count = product(rb);
  map.left_of.resize(static_cast<std::size_t>(map.out_count));
  map.right_of.resize(static_cast<std::size_t>(map.out_count));
  std::vector<std::int64_t> index(rank, 0);
  std::int64_t l = 0, r = 0;
  for (std::int64_t o = 0; o < map.out_count; ++o) {
    map.left_of[static_cast<std::size_t>(o)] = l;
    map.right_of[static_cast<std::size_t>(o)] = r;
    // Odometer step over the output batch index, innermost dim first.
    for (std::size_t d = rank; d-- > 0;) {
      l += left_stride[d];
      r += right_stride[d];
      if (++index[d] < size[d]) break;
      l -= left_stride[d] * size[d];
      r -= right_stride[d] * size[d];
      index[d] = 0;
    }
  }
  return map;
}

// The output batch matrices grouped by the operand matrix they read: members[start[x]..start[x+1])
// are the outputs that operand matrix x contributes to, in increasing order.
struct Groups {
  std::vector<std::int64_t> start;
  std::vector<std::int64_t> members;
};

Groups group_by(const std::vector<std::int64_t>& source_of, std::int64_t source_count) {
  Groups groups;
  groups.start.assign(static_cast<std::size_t>(source_count) + 1, 0);
  for (const auto s : source_of) ++groups.start[static_cast<std::size_t>(s) + 1];
  for (std::size_t s = 0; s < static_cast<std::size_t>(source_count); ++s) {
    groups.start[s + 1] += groups.start[s];
  }
  groups.members.resize(source_of.size());
  std::vector<std::int64_t> next(groups.start.begin(), groups.start.end() - 1);
  for (std::size_t o = 0; o < source_of.size(); ++o) {
    groups.members[static_cast<std::size_t>(next[static_cast<std::size_t>(source_of[o])]++)] =
        static_cast<std::int64_t>(o);
  }
  return groups;
}

// Whether to run `tasks` GEMMs (one per thread at a time) of `gemm_size` multiply-adds each in
// parallel, rather than one after another with the GEMM engine threading each.
bool spread_over_threads(std::int64_t tasks, std::int64_t gemm_size) {
  return tasks > 1 && tasks * gemm_size >= kParallelWork &&
         (tasks >= omp_get_max_threads() || gemm_size < kSmallGemm);
}

}  // namespace

namespace {

// The three products of matmul on one matrix of each operand, described once for the kernels
// (run = gemm) and the prepare hooks (run = gemm_prepare). A tall product (a 2-D right operand)
// is one GEMM with m = all rows of the left operand. The operands are fp32 views or their rounded
// codes (ops/gemm_input_formats.hpp); block(i, rows) is matrix i of one.
struct ProductDims {
  std::int64_t m, k, n;
};

using detail::GemmOperand;

// out = α·l·r
void forward_product(GemmFn run, const GemmMatrix& l, const GemmMatrix& r, float* out,
                     ProductDims d, float alpha) {
  run(l, r, gemm_output(out, d.m, d.n), {.alpha = alpha}, "matmul");
}

// dl (+)= β·g·rᵀ
void grad_left_product(GemmFn run, const GemmMatrix& g, const GemmMatrix& r_transposed, float* dl,
                       ProductDims d, float beta, bool accumulate) {
  run(g, r_transposed, gemm_output(dl, d.m, d.k), {.alpha = beta, .accumulate = accumulate},
      "matmul_backward");
}

// dr (+)= β·lᵀ·g
void grad_right_product(GemmFn run, const GemmMatrix& l_transposed, const GemmMatrix& g, float* dr,
                        ProductDims d, float beta, bool accumulate) {
  run(l_transposed, g, gemm_output(dr, d.k, d.n), {.alpha = beta, .accumulate = accumulate},
      "matmul_backward");
}

ProductDims dims_of(const Shape& left, const Shape& right, bool tall) {
  const std::int64_t k = left.dim(-1);
  return {tall ? left.outer() : left.dim(-2), k, right.dim(-1)};
}

void run_forward(const ConstTensorView& left, const ConstTensorView& right, const TensorView& out,
                 float alpha, const GemmInputFormats& formats, std::uint64_t step) {
  const BatchMap map = batch_map(left.shape(), right.shape());
  const ProductDims d = dims_of(left.shape(), right.shape(), map.is_tall());
  const detail::GemmOperandPair operands = detail::gemm_operands(left, right, formats, step);
  if (map.is_tall()) {
    return forward_product(gemm, operands.left.matrix(), operands.right.matrix(), out.data(), d,
                           alpha);
  }
  const bool parallel = spread_over_threads(map.out_count, d.m * d.n * d.k);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t o = 0; o < map.out_count; ++o) {
    forward_product(gemm, operands.left.block(map.left_of[static_cast<std::size_t>(o)], d.m),
                    operands.right.block(map.right_of[static_cast<std::size_t>(o)], d.k),
                    out.data() + o * d.m * d.n, d, alpha);
  }
}

void run_backward(const ConstTensorView& grad_out, const ConstTensorView& left,
                  const ConstTensorView& right, const TensorView& grad_left,
                  const TensorView& grad_right, float beta_left, float beta_right,
                  const GemmInputFormats& formats, std::uint64_t step) {
  const BatchMap map = batch_map(left.shape(), right.shape());
  const ProductDims d = dims_of(left.shape(), right.shape(), map.is_tall());
  const detail::GemmOperandPair operands = detail::gemm_operands(left, right, formats, step);
  const GemmOperand grad =
      detail::gemm_operand(grad_out, formats, detail::GemmOperandRole::kGradient, step);
  if (map.is_tall()) {
    if (present(grad_left)) {
      grad_left_product(gemm, grad.matrix(), operands.right.matrix(/*transposed=*/true),
                        grad_left.data(), d, beta_left, false);
    }
    if (present(grad_right)) {
      grad_right_product(gemm, operands.left.matrix(/*transposed=*/true), grad.matrix(),
                         grad_right.data(), d, beta_right, false);
    }
    return;
  }
  auto g = [&](std::int64_t o) { return grad.block(o, d.m); };
  auto l = [&](std::int64_t o, bool transposed) {
    return operands.left.block(map.left_of[static_cast<std::size_t>(o)], d.m, transposed);
  };
  auto r = [&](std::int64_t o, bool transposed) {
    return operands.right.block(map.right_of[static_cast<std::size_t>(o)], d.k, transposed);
  };

  // One task per gradient matrix, summing over the output matrices it fed: no two threads write
  // the same memory.
  if (present(grad_left)) {
    const Groups groups = group_by(map.left_of, map.left_count);
    const bool parallel = spread_over_threads(map.left_count, d.m * d.n * d.k);
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t x = 0; x < map.left_count; ++x) {
      float* dl = grad_left.data() + x * d.m * d.k;
      const auto begin = groups.start[static_cast<std::size_t>(x)];
      const auto end = groups.start[static_cast<std::size_t>(x) + 1];
      if (begin == end) std::fill(dl, dl + d.m * d.k, 0.0f);
      for (auto i = begin; i < end; ++i) {
        const std::int64_t o = groups.members[static_cast<std::size_t>(i)];
        grad_left_product(gemm, g(o), r(o, true), dl, d, beta_left, i != begin);
      }
    }
  }
  if (present(grad_right)) {
    const Groups groups = group_by(map.right_of, map.right_count);
    const bool parallel = spread_over_threads(map.right_count, d.m * d.n * d.k);
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t x = 0; x < map.right_count; ++x) {
      float* dr = grad_right.data() + x * d.k * d.n;
      const auto begin = groups.start[static_cast<std::size_t>(x)];
      const auto end = groups.start[static_cast<std::size_t>(x) + 1];
      if (begin == end) std::fill(dr, dr + d.k * d.n, 0.0f);
      for (auto i = begin; i < end; ++i) {
        const std::int64_t o = groups.members[static_cast<std::size_t>(i)];
        grad_right_product(gemm, l(o, true), g(o), dr, d, beta_right, i != begin);
      }
    }
  }
}

}  // namespace

void matmul_forward(ConstTensorView left, ConstTensorView right, TensorView out, float alpha) {
  run_forward(left, right, out, alpha, GemmInputFormats{}, 0);
}

void matmul_backward(ConstTensorView grad_out, ConstTensorView left, ConstTensorView right,
                     TensorView grad_left, TensorView grad_right, float beta_left,
                     float beta_right) {
  run_backward(grad_out, left, right, grad_left, grad_right, beta_left, beta_right,
               GemmInputFormats{}, 0);
}

namespace {

constexpr std::string_view kOpName = "matmul";

std::vector<Shape> infer_matmul(std::span<const Shape* const> in, const Attributes& attrs) {
  GemmInputFormats::of(attrs, kOpName);  // checks the formats, naming the op
  return {matmul_shape(*in[0], *in[1])};
}
void unit_scale_matmul(std::span<const Shape* const> in, Attributes& attrs) {
  const Shape& left = *in[0];
  const Shape& right = *in[1];
  const Shape out = matmul_shape(left, right);
  const double m = static_cast<double>(left.dim(-2));
  const double k = static_cast<double>(left.dim(-1));
  const double n = static_cast<double>(right.dim(-1));
  // Output batch matrices per operand matrix: how many times each operand matrix is reused.
  // (An empty batch reuses nothing; b = 1 keeps the scales finite.)
  const auto out_batches = static_cast<double>(product(batch_dims(out)));
  auto reuse = [&](const Shape& operand) {
    const auto operand_batches = static_cast<double>(product(batch_dims(operand)));
    return out_batches == 0 ? 1.0 : out_batches / operand_batches;
  };
  const double b_left = reuse(left);
  const double b_right = reuse(right);
  std::vector<double> scales = {1 / std::sqrt(k), 1 / std::sqrt(n * b_left),
                                1 / std::sqrt(m * b_right)};
  scales = detail::constrain("matmul", attrs, std::move(scales));
  attrs.set("alpha", scales[0]).set("beta_left", scales[1]).set("beta_right", scales[2]);
}

void matmul_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext& context) {
  run_forward(in[0], in[1], out[0], scale_of(attrs, "alpha"), GemmInputFormats::of(attrs, kOpName),
              context.step);
}

// Backward inputs: left, right, out (absent), grad_out.
void matmul_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext& context) {
  run_backward(in[3], in[0], in[1], out[0], out[1], scale_of(attrs, "beta_left"),
               scale_of(attrs, "beta_right"), GemmInputFormats::of(attrs, kOpName), context.step);
}

// Every product the kernels run has the same dimensions and types, so preparing one of each kind
// (and the accumulating variant where an operand matrix feeds several outputs) covers them all.
void matmul_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs) {
  const BatchMap map = batch_map(in[0].shape(), in[1].shape());
  const ProductDims d = dims_of(in[0].shape(), in[1].shape(), map.is_tall());
  const detail::GemmOperandPair operands = detail::gemm_operands(
      in[0], in[1], GemmInputFormats::of(attrs, kOpName), 0, /*placeholder=*/true);
  forward_product(gemm_prepare, operands.left.block(0, d.m), operands.right.block(0, d.k),
                  out[0].data(), d, 1.0f);
}

// Backward inputs: left, right, out (absent), grad_out.
void matmul_backward_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs) {
  const BatchMap map = batch_map(in[0].shape(), in[1].shape());
  const ProductDims d = dims_of(in[0].shape(), in[1].shape(), map.is_tall());
  const GemmInputFormats formats = GemmInputFormats::of(attrs, kOpName);
  const detail::GemmOperandPair operands =
      detail::gemm_operands(in[0], in[1], formats, 0, /*placeholder=*/true);
  const GemmOperand grad = detail::gemm_operand(in[3], formats, detail::GemmOperandRole::kGradient,
                                                0, /*placeholder=*/true);
  for (const bool accumulate : {false, true}) {
    if (accumulate && map.is_tall()) break;
    if (present(out[0])) {
      grad_left_product(gemm_prepare, grad.block(0, d.m), operands.right.block(0, d.k, true),
                        out[0].data(), d, 1.0f, accumulate);
    }
    if (present(out[1])) {
      grad_right_product(gemm_prepare, operands.left.block(0, d.m, true), grad.block(0, d.m),
                         out[1].data(), d, 1.0f, accumulate);
    }
  }
}

// Output elements per element of `operand`, times K: how many products of grad_out and the other
// operand sum into one element of the operand's gradient. Each output matrix element reads a row or
// column of K elements of each operand matrix, and each operand matrix feeds numel(out)/numel(...)
// of them, so the count is numel(out)·K/numel(operand): N·b_left for left, M·b_right for right,
// where b counts the output batch matrices an operand matrix is broadcast to.
double gradient_terms(const Shape& out, const Shape& operand, std::int64_t k) {
  if (operand.numel() == 0) return 1.0;  // an empty gradient: nothing to scale
  return static_cast<double>(out.numel()) * static_cast<double>(k) /
         static_cast<double>(operand.numel());
}

// out = α·left·right: homogeneous of degree 1 in each operand, and each output element sums K
// independent products, so s_out = p2(α·√K)·s_left·s_right (exactly s_left·s_right when
// α = 1/√K, the unit-scaled graph).
std::vector<Scale> matmul_scale_rule(const ScaleRuleArgs& args) {
  const auto k = static_cast<double>(args.input_shape(0).dim(-1));
  return {args.fan_in(k, args.unit_scale("alpha")) * args.scale(0) * args.scale(1)};
}

// Backward inputs: left, right, out (absent), grad_out; outputs grad_left, grad_right.
// grad_left = β_left·g·rightᵀ (summed over the broadcast batch matrices too): degree 1 in g and in
// right, N·b_left terms; grad_right = β_right·leftᵀ·g, M·b_right terms (gradient_terms).
std::vector<Scale> matmul_backward_scale_rule(const ScaleRuleArgs& args) {
  const Scale& s_left = args.scale(0);
  const Scale& s_right = args.scale(1);
  const Scale& s_grad = args.scale(3);
  std::vector<Scale> result(2);
  if (args.has_output(0)) {
    const Shape& left = args.output_shape(0);
    result[0] = args.fan_in(gradient_terms(args.input_shape(3), left, left.dim(-1)),
                            args.unit_scale("beta_left")) *
                s_grad * s_right;
  }
  if (args.has_output(1)) {
    const Shape& right = args.output_shape(1);
    result[1] = args.fan_in(gradient_terms(args.input_shape(3), right, right.dim(-2)),
                            args.unit_scale("beta_right")) *
                s_left * s_grad;
  }
  return result;
}

std::vector<AttributeSpec> matmul_attributes() {
  std::vector<AttributeSpec> specs = {AttributeSpec::enumeration<Constraint>("constraint")};
  for (const AttributeSpec& spec : GemmInputFormats::attribute_specs()) specs.push_back(spec);
  return specs;
}

}  // namespace

const OpDef kMatmulOp{
    .name = "matmul",
    .inputs = {"left", "right"},
    .outputs = {"out"},
    .attributes = matmul_attributes(),
    .scales = {"alpha", "beta_left", "beta_right"},
    .infer_shapes = infer_matmul,
    .unit_scale = unit_scale_matmul,
    .kernel = matmul_kernel,
    .prepare = matmul_prepare,
    .backward_kernel = matmul_backward_kernel,
    .backward_prepare = matmul_backward_prepare,
    .backward_reads = 0b011,
    .scale_propagation = matmul_scale_rule,
    .backward_scale_propagation = matmul_backward_scale_rule,
    .rounds_gemm_inputs = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value matmul(Value left, Value right, const MatmulOptions& options) {
  const Value inputs[] = {left, right};
  return left.graph().apply1(
      kMatmulOp, inputs,
      Attributes{{"constraint", options.constraint}});
}

}  // namespace unitscale

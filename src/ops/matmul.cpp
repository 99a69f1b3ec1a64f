#include "unitscale/ops/matmul.hpp"

#include <omp.h>

#include <cmath>
#include <fmt/format.h>

#include "unitscale/error.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {
namespace {

// Below this many multiply-adds a GEMM is too small for Eigen to split it across threads, so a
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
// parallel, rather than one after another with Eigen threading each.
bool spread_over_threads(std::int64_t tasks, std::int64_t gemm_size) {
  return tasks > 1 && tasks * gemm_size >= kParallelWork &&
         (tasks >= omp_get_max_threads() || gemm_size < kSmallGemm);
}

}  // namespace

void matmul_forward(ConstTensorView left, ConstTensorView right, TensorView out, float alpha) {
  const std::int64_t m = left.shape().dim(-2), k = left.shape().dim(-1), n = right.shape().dim(-1);
  const BatchMap map = batch_map(left.shape(), right.shape());
  if (map.is_tall()) {
    out.matrix().noalias() = alpha * (left.matrix() * right.matrix());
    return;
  }
  const bool parallel = spread_over_threads(map.out_count, m * n * k);
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t o = 0; o < map.out_count; ++o) {
    const ConstMatrixMap l(left.data() + map.left_of[static_cast<std::size_t>(o)] * m * k, m, k);
    const ConstMatrixMap r(right.data() + map.right_of[static_cast<std::size_t>(o)] * k * n, k, n);
    MatrixMap(out.data() + o * m * n, m, n).noalias() = alpha * (l * r);
  }
}

void matmul_backward(ConstTensorView grad_out, ConstTensorView left, ConstTensorView right,
                     TensorView grad_left, TensorView grad_right, float beta_left,
                     float beta_right) {
  const std::int64_t m = left.shape().dim(-2), k = left.shape().dim(-1), n = right.shape().dim(-1);
  const BatchMap map = batch_map(left.shape(), right.shape());
  if (map.is_tall()) {
    if (present(grad_left)) {
      grad_left.matrix().noalias() = beta_left * (grad_out.matrix() * right.matrix().transpose());
    }
    if (present(grad_right)) {
      grad_right.matrix().noalias() = beta_right * (left.matrix().transpose() * grad_out.matrix());
    }
    return;
  }
  auto g = [&](std::int64_t o) { return ConstMatrixMap(grad_out.data() + o * m * n, m, n); };
  auto l = [&](std::int64_t o) {
    return ConstMatrixMap(left.data() + map.left_of[static_cast<std::size_t>(o)] * m * k, m, k);
  };
  auto r = [&](std::int64_t o) {
    return ConstMatrixMap(right.data() + map.right_of[static_cast<std::size_t>(o)] * k * n, k, n);
  };

  // One task per gradient matrix, summing over the output matrices it fed: no two threads write
  // the same memory.
  if (present(grad_left)) {
    const Groups groups = group_by(map.left_of, map.left_count);
    const bool parallel = spread_over_threads(map.left_count, m * n * k);
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t x = 0; x < map.left_count; ++x) {
      MatrixMap dl(grad_left.data() + x * m * k, m, k);
      const auto begin = groups.start[static_cast<std::size_t>(x)];
      const auto end = groups.start[static_cast<std::size_t>(x) + 1];
      if (begin == end) dl.setZero();
      for (auto i = begin; i < end; ++i) {
        const std::int64_t o = groups.members[static_cast<std::size_t>(i)];
        if (i == begin) dl.noalias() = beta_left * (g(o) * r(o).transpose());
        else dl.noalias() += beta_left * (g(o) * r(o).transpose());
      }
    }
  }
  if (present(grad_right)) {
    const Groups groups = group_by(map.right_of, map.right_count);
    const bool parallel = spread_over_threads(map.right_count, m * n * k);
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t x = 0; x < map.right_count; ++x) {
      MatrixMap dr(grad_right.data() + x * k * n, k, n);
      const auto begin = groups.start[static_cast<std::size_t>(x)];
      const auto end = groups.start[static_cast<std::size_t>(x) + 1];
      if (begin == end) dr.setZero();
      for (auto i = begin; i < end; ++i) {
        const std::int64_t o = groups.members[static_cast<std::size_t>(i)];
        if (i == begin) dr.noalias() = beta_right * (l(o).transpose() * g(o));
        else dr.noalias() += beta_right * (l(o).transpose() * g(o));
      }
    }
  }
}

namespace {

std::vector<Shape> infer_matmul(std::span<const Shape* const> in, const Attributes&) {
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
  const std::string& constraint = attrs.get_string("matmul", "constraint");
  try {  // an unknown name or a constraint of the wrong arity (to_grad_input_scale)
    scales = apply_constraint(constraint_from_name(constraint), std::move(scales));
  } catch (const Error& e) {
    throw Error(fmt::format("matmul: {}", e.what()));
  }
  attrs.set("alpha", scales[0]).set("beta_left", scales[1]).set("beta_right", scales[2]);
}

void matmul_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  matmul_forward(in[0], in[1], out[0], scale_of(attrs, "alpha"));
}

// Backward inputs: left, right, out (absent), grad_out.
void matmul_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  matmul_backward(in[3], in[0], in[1], out[0], out[1], scale_of(attrs, "beta_left"),
                  scale_of(attrs, "beta_right"));
}

const OpDef kMatmulBackwardOp{
    .name = "matmul_backward",
    .inputs = {"left?", "right?", "out?", "grad_out?"},
    .output_count = 2,
    .kernel = matmul_backward_kernel,
};

}  // namespace

const OpDef kMatmulOp{
    .name = "matmul",
    .inputs = {"left", "right"},
    .infer_shapes = infer_matmul,
    .unit_scale = unit_scale_matmul,
    .kernel = matmul_kernel,
    .backward = &kMatmulBackwardOp,
    .backward_reads = 0b011,
};

}  // namespace unitscale

#include "unitscale/ops/elementwise.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/pointwise_common.hpp"
#include "ops/scale_rule_helpers.hpp"
#include "ops/reduce_kernels.hpp"
#include "unitscale/error.hpp"
#include <string>

namespace unitscale {
namespace {

using detail::kParallelThreshold;

// Work is split into blocks of this many output elements; the block layout (not the thread
// count) fixes the order in which reductions add up, so results are reproducible.
constexpr std::int64_t kBlock = std::int64_t{1} << 14;

std::int64_t block_count(std::int64_t numel) { return (numel + kBlock - 1) / kBlock; }

// ---------------------------------------------------------------------------------------------
// Broadcast plan: the output's dimensions with size-1 dimensions dropped and adjacent dimensions
// merged wherever every operand stays contiguous across them, plus each operand's element strides
// over those dimensions (0 where it is broadcast). After collapsing, a same-shape pair is one
// dimension with strides (1, 1), a scalar operand has stride 0 everywhere, and a row vector [n]
// over [rows, n] is dims (rows, n) with strides (n, 1) and (0, 1). The innermost stride of every
// operand is 0 or 1, so the walk below runs contiguous inner segments.
// ---------------------------------------------------------------------------------------------
struct BroadcastPlan {
  std::vector<std::int64_t> dims;
  std::vector<std::int64_t> strides[2];
  std::int64_t numel = 0;

  int rank() const { return static_cast<int>(dims.size()); }
  std::int64_t inner_stride(int operand) const { return strides[operand].back(); }
};

BroadcastPlan make_plan(const Shape& out, const Shape& first, const Shape& second) {
  const int rank = out.rank();
  const Shape* operands[2] = {&first, &second};
  std::vector<std::int64_t> aligned_strides[2];
  for (int k = 0; k < 2; ++k) {
    const Shape& s = *operands[k];
    aligned_strides[k].assign(static_cast<std::size_t>(rank), 0);
    std::int64_t contiguous = 1;
    for (int i = rank - 1, j = s.rank() - 1; i >= 0 && j >= 0; --i, --j) {
      const std::int64_t d = s.dim(j);
      aligned_strides[k][static_cast<std::size_t>(i)] = d == 1 ? 0 : contiguous;
      contiguous *= d;
    }
  }
  BroadcastPlan plan;
  plan.numel = out.numel();
  // Innermost first, then reversed.
  for (int i = rank - 1; i >= 0; --i) {
    const std::int64_t d = out.dim(i);
    const auto si = static_cast<std::size_t>(i);
    if (d == 1) continue;
    if (!plan.dims.empty()) {
      const std::int64_t inner = plan.dims.back();
      const bool mergeable = aligned_strides[0][si] == plan.strides[0].back() * inner &&
                             aligned_strides[1][si] == plan.strides[1].back() * inner;
      if (mergeable) {
        plan.dims.back() *= d;
        continue;
      }
    }
    plan.dims.push_back(d);
    plan.strides[0].push_back(aligned_strides[0][si]);
    plan.strides[1].push_back(aligned_strides[1][si]);
  }
  if (plan.dims.empty()) {  // a single element
    plan.dims.push_back(1);
    plan.strides[0].push_back(0);
    plan.strides[1].push_back(0);
  }
  std::reverse(plan.dims.begin(), plan.dims.end());
  std::reverse(plan.strides[0].begin(), plan.strides[0].end());
  std::reverse(plan.strides[1].begin(), plan.strides[1].end());
  return plan;
}

// Calls segment(out_offset, offset0, offset1, length) for the contiguous inner segments that
// cover output elements [begin, end), in order. Within a segment operand k advances by
// plan.inner_stride(k) (0 or 1) per element.
template <class Segment>
void walk(const BroadcastPlan& plan, std::int64_t begin, std::int64_t end, Segment&& segment) {
  const int rank = plan.rank();
  const std::int64_t inner = plan.dims.back();
  std::vector<std::int64_t> index(static_cast<std::size_t>(rank));
  std::int64_t offset[2] = {0, 0};
  std::int64_t rest = begin;
  for (int i = rank - 1; i >= 0; --i) {
    const auto si = static_cast<std::size_t>(i);
    index[si] = rest % plan.dims[si];
    rest /= plan.dims[si];
    for (int k = 0; k < 2; ++k) offset[k] += index[si] * plan.strides[k][si];
  }
  const auto last = static_cast<std::size_t>(rank - 1);
  std::int64_t position = begin;
  while (position < end) {
    const std::int64_t length = std::min(inner - index[last], end - position);
    segment(position, offset[0], offset[1], length);
    position += length;
    index[last] += length;
    for (int k = 0; k < 2; ++k) offset[k] += length * plan.strides[k][last];
    if (index[last] < inner) continue;
    // Carry into the outer dimensions.
    for (int i = rank - 1; i >= 0; --i) {
      const auto si = static_cast<std::size_t>(i);
      if (i < rank - 1) {
        ++index[si];
        for (int k = 0; k < 2; ++k) offset[k] += plan.strides[k][si];
      }
      if (index[si] < plan.dims[si]) break;
      for (int k = 0; k < 2; ++k) offset[k] -= index[si] * plan.strides[k][si];
      index[si] = 0;
    }
  }
}

// out[k] = op(a[k or 0], b[k or 0]) for k < n; which operands advance is decided once per segment.
template <class Op>
inline void binary_segment(const float* a, bool a_advances, const float* b, bool b_advances,
                           float* out, std::int64_t n, Op op) {
  if (a_advances && b_advances) {
#pragma omp simd
    for (std::int64_t k = 0; k < n; ++k) out[k] = op(a[k], b[k]);
  } else if (a_advances) {
    const float bv = *b;
#pragma omp simd
    for (std::int64_t k = 0; k < n; ++k) out[k] = op(a[k], bv);
  } else if (b_advances) {
    const float av = *a;
#pragma omp simd
    for (std::int64_t k = 0; k < n; ++k) out[k] = op(av, b[k]);
  } else {
    std::fill(out, out + n, op(*a, *b));
  }
}

// out = op(a, b) with a and b broadcast to out's shape as described by `plan`.
template <class Op>
void binary_broadcast(const float* a, const float* b, float* out, const BroadcastPlan& plan,
                      Op op) {
  const std::int64_t numel = plan.numel;
  const bool a_advances = plan.inner_stride(0) != 0;
  const bool b_advances = plan.inner_stride(1) != 0;
  if (plan.rank() == 1) {  // same shape, or a scalar operand: one contiguous loop
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t block = 0; block < block_count(numel); ++block) {
      const std::int64_t begin = block * kBlock;
      const std::int64_t n = std::min(kBlock, numel - begin);
      binary_segment(a_advances ? a + begin : a, a_advances, b_advances ? b + begin : b, b_advances,
                     out + begin, n, op);
    }
    return;
  }
  if (plan.rank() == 2) {  // a row vector over rows, a column along rows, or an outer product
    const std::int64_t rows = plan.dims[0], cols = plan.dims[1];
    const std::int64_t row_stride_a = plan.strides[0][0], row_stride_b = plan.strides[1][0];
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t r = 0; r < rows; ++r) {
      binary_segment(a + r * row_stride_a, a_advances, b + r * row_stride_b, b_advances,
                     out + r * cols, cols, op);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
  for (std::int64_t block = 0; block < block_count(numel); ++block) {
    const std::int64_t begin = block * kBlock;
    walk(plan, begin, std::min(begin + kBlock, numel),
         [&](std::int64_t position, std::int64_t offset_a, std::int64_t offset_b, std::int64_t n) {
           binary_segment(a + offset_a, a_advances, b + offset_b, b_advances, out + position, n,
                          op);
         });
  }
}

// Σ_k g[k] · other[k or 0], in double (other == nullptr: Σ g).
inline double dot_segment(const float* g, const float* other, bool other_advances, std::int64_t n) {
  const detail::ReduceKernels& kernels = detail::reduce_kernels();
  if (other == nullptr) return kernels.sum(g, n);
  if (other_advances) return kernels.dot(g, other, n);
  return kernels.sum(g, n) * static_cast<double>(*other);
}

// acc[k] += g[k] · other[k or 0], in double (other == nullptr: acc += g).
inline void accumulate_segment(double* acc, const float* g, const float* other, bool other_advances,
                               std::int64_t n) {
  const detail::ReduceKernels& kernels = detail::reduce_kernels();
  if (other == nullptr) {
    kernels.accumulate(acc, g, n);
  } else if (other_advances) {
    kernels.accumulate_product(acc, g, other, n);
  } else {
    kernels.accumulate_scaled(acc, g, static_cast<double>(*other), n);
  }
}

// The gradient of an operand that is not broadcast, written during the other operand's reduction
// so that g (and for mul the operands) is read from memory once for both gradients:
// out = beta · g · m, where m is the reduced operand's own values (as broadcast to the output),
// or 1 if `factor` is null (add). out == nullptr: no such gradient.
struct FullGradient {
  float* out = nullptr;
  const float* factor = nullptr;
  float beta = 1.0f;
};

// grad = beta · (g · other) summed over the dimensions that broadcast the target, where `plan`
// was made for (out, target, other) and g has out's shape. other == nullptr means 1 (add). The
// full gradient, if any, is written segment by segment in the same walk.
void reduce_to_target(const float* g, const float* other, const BroadcastPlan& plan, float* grad,
                      std::int64_t target_numel, float beta, const FullGradient& full = {}) {
  const std::int64_t numel = plan.numel;
  const bool target_advances = plan.inner_stride(0) != 0;
  const bool other_advances = other != nullptr && plan.inner_stride(1) != 0;
  static constexpr float kOne = 1.0f;
  const auto full_segment = [&](std::int64_t position, std::int64_t offset_target, std::int64_t n) {
    if (full.out == nullptr) return;
    const float* factor = full.factor != nullptr ? full.factor + offset_target : &kOne;
    binary_segment(g + position, true, factor, full.factor != nullptr && target_advances,
                   full.out + position, n, [b = full.beta](float gv, float m) { return b * gv * m; });
  };

  if (numel == 0) {  // e.g. [3] + [0, 3]: nothing reaches the target
    std::fill(grad, grad + target_numel, 0.0f);
    return;
  }
  if (target_numel == numel) {  // nothing to sum: the target's layout is the output's
    // (Both gradients of a same-shape pair go through same_shape_gradients instead.)
    binary_broadcast(g, other != nullptr ? other : &kOne, grad, plan,
                     [beta](float gv, float ov) { return beta * gv * ov; });
    return;
  }

  if (target_numel == 1) {  // a full reduction: per-block partial sums, added in block order
    const std::int64_t blocks = block_count(numel);
    std::vector<double> partial(static_cast<std::size_t>(blocks));
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t block = 0; block < blocks; ++block) {
      const std::int64_t begin = block * kBlock;
      double sum = 0;
      walk(plan, begin, std::min(begin + kBlock, numel),
           [&](std::int64_t position, std::int64_t offset_target, std::int64_t offset_other,
               std::int64_t n) {
             sum += dot_segment(g + position, other ? other + offset_other : nullptr,
                                other_advances, n);
             full_segment(position, offset_target, n);
           });
      partial[static_cast<std::size_t>(block)] = sum;
    }
    double total = 0;
    for (const double p : partial) total += p;
    grad[0] = static_cast<float>(beta * total);
    return;
  }

  if (plan.rank() == 2 && plan.strides[0][0] == 0 && plan.strides[0][1] == 1) {
    // Column sums: the target is a row vector [n] broadcast over rows. A fixed number of row
    // chunks (independent of the thread count) each accumulate their own partial row.
    const std::int64_t rows = plan.dims[0], cols = plan.dims[1];
    const std::int64_t chunks = std::min<std::int64_t>(rows, 16);
    std::vector<double> partial(static_cast<std::size_t>(chunks * cols), 0.0);
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t c = 0; c < chunks; ++c) {
      double* acc = partial.data() + c * cols;
      for (std::int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) {
        if (other == nullptr && full.out != nullptr && full.factor == nullptr) {
          // add's bias gradient beside β·g: one loop over the row (the common case)
          detail::reduce_kernels().accumulate_and_scale(acc, g + r * cols, full.out + r * cols,
                                                         full.beta, cols);
          continue;
        }
        const float* other_row = other ? other + r * plan.strides[1][0] : nullptr;
        accumulate_segment(acc, g + r * cols, other_row, other_advances, cols);
        full_segment(r * cols, 0, cols);
      }
    }
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t j = 0; j < cols; ++j) {
      double sum = 0;
      for (std::int64_t c = 0; c < chunks; ++c)
        sum += partial[static_cast<std::size_t>(c * cols + j)];
      grad[j] = static_cast<float>(beta * sum);
    }
    return;
  }

  if (plan.rank() == 2 && plan.strides[0][0] == 1 && plan.strides[0][1] == 0) {
    // Row sums: the target is a column [rows, 1] broadcast along rows.
    const std::int64_t rows = plan.dims[0], cols = plan.dims[1];
#pragma omp parallel for schedule(static) if (numel > kParallelThreshold)
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* other_row = other ? other + r * plan.strides[1][0] : nullptr;
      grad[r] =
          static_cast<float>(beta * dot_segment(g + r * cols, other_row, other_advances, cols));
      full_segment(r * cols, r, cols);
    }
    return;
  }

  // Any other pattern: one ordered pass accumulating into a double copy of the target.
  std::vector<double> acc(static_cast<std::size_t>(target_numel), 0.0);
  walk(plan, 0, numel,
       [&](std::int64_t position, std::int64_t offset_target, std::int64_t offset_other,
           std::int64_t n) {
         const float* other_segment = other ? other + offset_other : nullptr;
         if (target_advances) {
           accumulate_segment(acc.data() + offset_target, g + position, other_segment,
                              other_advances, n);
         } else {
           acc[static_cast<std::size_t>(offset_target)] +=
               dot_segment(g + position, other_segment, other_advances, n);
         }
         full_segment(position, offset_target, n);
       });
  for (std::int64_t i = 0; i < target_numel; ++i) {
    grad[i] = static_cast<float>(beta * acc[static_cast<std::size_t>(i)]);
  }
}

// Both operands have the output's shape: one loop writes both gradients, grad_a = β_a·g·b and
// grad_b = β_b·g·a for mul (kProduct), β_a·g and β_b·g for add, rounding as reduce_to_target does.
template <bool kProduct>
void same_shape_gradients(const float* g, const float* a, const float* b, float* grad_a,
                          float* grad_b, float beta_a, float beta_b, std::int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float gv = g[i];
    if constexpr (kProduct) {
      grad_a[i] = beta_a * gv * b[i];
      grad_b[i] = beta_b * gv * a[i];
    } else {
      grad_a[i] = beta_a * gv;
      grad_b[i] = beta_b * gv;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

void add_forward(ConstTensorView a, ConstTensorView b, TensorView out, float alpha) {
  if (out.numel() == 0) return;
  binary_broadcast(a.data(), b.data(), out.data(), make_plan(out.shape(), a.shape(), b.shape()),
                   [alpha](float x, float y) { return alpha * (x + y); });
}

void add_backward(ConstTensorView grad_out, TensorView grad_a, TensorView grad_b, float beta_a,
                  float beta_b) {
  const Shape scalar{};
  const auto reduce = [&](TensorView grad, float beta, const FullGradient& full) {
    reduce_to_target(grad_out.data(), nullptr, make_plan(grad_out.shape(), grad.shape(), scalar),
                     grad.data(), grad.numel(), beta, full);
  };
  const std::int64_t numel = grad_out.numel();
  const bool full_a = present(grad_a) && grad_a.numel() == numel;
  const bool full_b = present(grad_b) && grad_b.numel() == numel;
  if (full_a && full_b) {
    same_shape_gradients<false>(grad_out.data(), nullptr, nullptr, grad_a.data(), grad_b.data(),
                                beta_a, beta_b, numel);
  } else if (full_a && present(grad_b)) {  // β_a·g written while g is summed for b
    reduce(grad_b, beta_b, {grad_a.data(), nullptr, beta_a});
  } else if (full_b && present(grad_a)) {
    reduce(grad_a, beta_a, {grad_b.data(), nullptr, beta_b});
  } else {
    if (present(grad_a)) reduce(grad_a, beta_a, {});
    if (present(grad_b)) reduce(grad_b, beta_b, {});
  }
}

void mul_forward(ConstTensorView a, ConstTensorView b, TensorView out) {
  if (out.numel() == 0) return;
  binary_broadcast(a.data(), b.data(), out.data(), make_plan(out.shape(), a.shape(), b.shape()),
                   [](float x, float y) { return x * y; });
}

void mul_backward(ConstTensorView grad_out, ConstTensorView a, ConstTensorView b, TensorView grad_a,
                  TensorView grad_b) {
  // grad_target = Σ↓ g · other; `full` is the other operand's gradient when it is written in the
  // same pass (g · target, the target's values broadcast).
  const auto reduce = [&](ConstTensorView target, ConstTensorView other, TensorView grad,
                          const FullGradient& full) {
    reduce_to_target(grad_out.data(), other.data(),
                     make_plan(grad_out.shape(), target.shape(), other.shape()), grad.data(),
                     grad.numel(), 1.0f, full);
  };
  const std::int64_t numel = grad_out.numel();
  const bool both = present(grad_a) && present(grad_b);
  if (both && a.numel() == numel && b.numel() == numel) {
    same_shape_gradients<true>(grad_out.data(), a.data(), b.data(), grad_a.data(), grad_b.data(),
                               1.0f, 1.0f, numel);
  } else if (both && a.numel() == numel) {  // g·b written while g·a is summed for b
    reduce(b, a, grad_b, {grad_a.data(), b.data(), 1.0f});
  } else if (both && b.numel() == numel) {
    reduce(a, b, grad_a, {grad_b.data(), a.data(), 1.0f});
  } else {
    if (present(grad_a)) reduce(a, b, grad_a, {});
    if (present(grad_b)) reduce(b, a, grad_b, {});
  }
}

void scale_kernel(ConstTensorView x, TensorView y, float factor) {
  const std::int64_t n = y.numel();
  const float* in = x.data();
  float* out = y.data();
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = factor * in[i];
}

// ---------------------------------------------------------------------------------------------
// OpDefs
// ---------------------------------------------------------------------------------------------
namespace {

std::vector<Shape> infer_add(std::span<const Shape* const> in, const Attributes&) {
  return {broadcast_shapes(*in[0], *in[1], "add")};
}

std::vector<Shape> infer_mul(std::span<const Shape* const> in, const Attributes&) {
  return {broadcast_shapes(*in[0], *in[1], "mul")};
}

void unit_scale_add(std::span<const Shape* const> in, Attributes& attrs) {
  const Shape out = broadcast_shapes(*in[0], *in[1], "add");
  const auto numel_out = static_cast<double>(out.numel());
  auto grad_scale = [&](const Shape& operand) {
    return operand.numel() == 0 ? 1.0
                                : std::pow(numel_out / static_cast<double>(operand.numel()), -0.5);
  };
  const bool scalar_operand = in[0]->numel() == 1 || in[1]->numel() == 1;
  const std::vector<double> scales = detail::constrain(
      "add", attrs,
      {scalar_operand ? 1.0 : 1.0 / std::sqrt(2.0), grad_scale(*in[0]), grad_scale(*in[1])});
  attrs.set("alpha", scales[0]).set("beta_a", scales[1]).set("beta_b", scales[2]);
}

void add_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes& attrs, const KernelContext&) {
  add_forward(in[0], in[1], out[0], scale_of(attrs, "alpha"));
}

// Backward inputs: a, b, out (all absent: only shapes matter), grad_out.
void add_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes& attrs, const KernelContext&) {
  add_backward(in[3], out[0], out[1], scale_of(attrs, "beta_a"), scale_of(attrs, "beta_b"));
}

void mul_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes&, const KernelContext&) {
  mul_forward(in[0], in[1], out[0]);
}

// Backward inputs: a, b, out (absent), grad_out.
void mul_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                         const Attributes&, const KernelContext&) {
  mul_backward(in[3], in[0], in[1], out[0], out[1]);
}

std::vector<Shape> infer_scale(std::span<const Shape* const> in, const Attributes& attrs) {
  for (const char* name : {"alpha", "beta_x"}) {
    const double value = attrs.get_double("scale", name, 1.0);
    if (!std::isfinite(value)) {
      throw Error(
          fmt::format("scale: {} must be finite, got {} (x {})", name, value, in[0]->to_string()));
    }
  }
  return {*in[0]};
}

void scale_forward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  scale_kernel(in[0], out[0], scale_of(attrs, "alpha"));
}

// Backward inputs: x (absent), y (absent), grad_y.
void scale_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                           const Attributes& attrs, const KernelContext&) {
  if (present(out[0])) scale_kernel(in[2], out[0], scale_of(attrs, "beta_x"));
}

// Scale rules. y = α·(a + b) is a sum of two independent terms, a and b broadcast to y: the L2
// rule times α. grad_a = β_a·Σ↓g sums numel(y)/numel(a) elements of g into each element of a (one
// when a is not broadcast): fan_in of that count, times β_a. The backward reads no forward value,
// so the operands' shapes come from the gradient outputs and y's from grad_out (input 3).
std::vector<Scale> add_scale_rule(const ScaleRuleArgs& args) {
  return {args.l2({args.scale(0), args.scale(1)}, args.unit_scale("alpha"))};
}

// Each element of grad_y (numel(y) in all) reaches the gradient of an operand of `numel`
// elements through numel(y)/numel of them summed.
double broadcast_count(const ScaleRuleArgs& args, std::size_t grad_y, std::size_t operand) {
  const auto numel = static_cast<double>(args.output_shape(operand).numel());
  return numel > 0 ? static_cast<double>(args.input_shape(grad_y).numel()) / numel : 1.0;
}

std::vector<Scale> add_backward_scale_rule(const ScaleRuleArgs& args) {
  const Scale& g = args.scale(3);
  std::vector<Scale> grads(2);
  if (args.has_output(0))
    grads[0] = args.fan_in(broadcast_count(args, 3, 0), args.unit_scale("beta_a")) * g;
  if (args.has_output(1))
    grads[1] = args.fan_in(broadcast_count(args, 3, 1), args.unit_scale("beta_b")) * g;
  return grads;
}

// y = a·b: homogeneous in both. grad_a = Σ↓g·b: homogeneous in g and b, a sum of numel(y)/numel(a)
// such products into each element of a (the kernel has no β).
std::vector<Scale> mul_scale_rule(const ScaleRuleArgs& args) {
  return {args.scale(0) * args.scale(1)};
}

std::vector<Scale> mul_backward_scale_rule(const ScaleRuleArgs& args) {
  const Scale& g = args.scale(3);
  std::vector<Scale> grads(2);
  if (args.has_output(0)) grads[0] = args.fan_in(broadcast_count(args, 3, 0)) * g * args.scale(1);
  if (args.has_output(1)) grads[1] = args.fan_in(broadcast_count(args, 3, 1)) * g * args.scale(0);
  return grads;
}

// |factor| as a rule's constant: zero gives the static zero (the output is all zeros), and the
// sign does not change a magnitude.
Scale magnitude_factor(const ScaleRuleArgs& args, double factor) {
  return factor == 0 ? Scale::zero() : args.p2(std::fabs(factor));
}

// y = α·x and grad_x = β_x·grad_y: homogeneous, times |α| and |β_x| (which may be any finite value,
// negative or zero, for this op).
std::vector<Scale> scale_scale_rule(const ScaleRuleArgs& args) {
  return {magnitude_factor(args, args.unit_scale("alpha")) * args.scale(0)};
}

std::vector<Scale> scale_backward_scale_rule(const ScaleRuleArgs& args) {
  if (!args.has_output(0)) return {Scale{}};
  return {magnitude_factor(args, args.unit_scale("beta_x")) * args.scale(2)};
}

}  // namespace

const OpDef kAddOp{
    .name = "add",
    .inputs = {"a", "b"},
    .outputs = {"out"},
    .attributes = {AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_a", "beta_b"},
    .infer_shapes = infer_add,
    .unit_scale = unit_scale_add,
    .kernel = add_kernel,
    .backward_kernel = add_backward_kernel,
    .backward_reads = 0b000,
    .scale_propagation = add_scale_rule,
    .backward_scale_propagation = add_backward_scale_rule,
    .pointwise = true,
};

const OpDef kMulOp{
    .name = "mul",
    .inputs = {"a", "b"},
    .outputs = {"out"},
    .infer_shapes = infer_mul,
    .kernel = mul_kernel,
    .backward_kernel = mul_backward_kernel,
    .backward_reads = 0b011,
    .scale_propagation = mul_scale_rule,
    .backward_scale_propagation = mul_backward_scale_rule,
    .pointwise = true,
};

const OpDef kScaleOp{
    .name = "scale",
    .inputs = {"x"},
    .scales = {"alpha", "beta_x"},
    .infer_shapes = infer_scale,
    .kernel = scale_forward_kernel,
    .backward_kernel = scale_backward_kernel,
    .backward_reads = 0b00,
    .scale_propagation = scale_scale_rule,
    .backward_scale_propagation = scale_backward_scale_rule,
    .pointwise = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value add(Value a, Value b, const AddOptions& options) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(kAddOp, inputs,
                          {{"constraint", options.constraint}});
}

Value add(Value a, float b) {
  const Value constant = a.graph().constant(Tensor::filled(Shape{}, b));
  return add(a, constant);
}

Value mul(Value a, Value b) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(kMulOp, inputs, {});
}

Value scale(Value x, double alpha, double beta) {
  const Value inputs[] = {x};
  return x.graph().apply1(kScaleOp, inputs, {{"alpha", alpha}, {"beta_x", beta}});
}

Value scale_fwd(Value x, double alpha) { return scale(x, alpha, 1.0); }
Value scale_bwd(Value x, double beta) { return scale(x, 1.0, beta); }

}  // namespace unitscale

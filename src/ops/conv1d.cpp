#include "unitscale/ops/conv1d.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fmt/format.h>

#include "ops/scale_rule_helpers.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/gemm.hpp"

namespace unitscale {
namespace {

// Below this many multiply-adds in all, a parallel region costs more than it saves.
constexpr std::int64_t kParallelWork = std::int64_t{1} << 18;

// The number of samples: the product of the dims before [C, L].
std::int64_t leading_count(const Shape& s) {
  std::int64_t n = 1;
  for (int i = 0; i < s.rank() - 2; ++i) n *= s.dim(i);
  return n;
}

// Everything the kernels need, from the shapes and the geometry attributes.
struct ConvDims {
  std::int64_t batch, c_in, length, c_out, k, l_out;
  std::int64_t stride, padding, dilation, groups;
  std::int64_t c_in_group, c_out_group, patch;  // patch = C_in/g · k, one column of im2col

  ConvDims(const Shape& x, const Shape& weight, const Conv1dGeometry& g)
      : batch(leading_count(x)),
        c_in(x.dim(-2)),
        length(x.dim(-1)),
        c_out(weight.dim(0)),
        k(weight.dim(2)),
        l_out((x.dim(-1) + 2 * g.padding - g.dilation * (weight.dim(2) - 1) - 1) / g.stride + 1),
        stride(g.stride),
        padding(g.padding),
        dilation(g.dilation),
        groups(g.groups),
        c_in_group(x.dim(-2) / g.groups),
        c_out_group(weight.dim(0) / g.groups),
        patch(weight.dim(1) * weight.dim(2)) {}

  // Output positions t whose tap reads x at t·s + offset inside [0, L): [first, last).
  std::pair<std::int64_t, std::int64_t> valid_range(std::int64_t offset) const {
    // ⌈−offset/s⌉ written as ⌊(−offset − 1)/s⌋ + 1: no intermediate exceeds −offset, so any
    // stride up to 2^63 − 1 is safe.
    const std::int64_t first = offset >= 0 ? 0 : (-offset - 1) / stride + 1;
    const std::int64_t last =
        length - 1 - offset < 0 ? 0 : std::min(l_out, (length - 1 - offset) / stride + 1);
    return {std::min(first, last), last};
  }

  // With one tap, unit stride and no padding, im2col is the identity: x's group block is cols.
  bool im2col_is_identity() const { return k == 1 && stride == 1 && padding == 0; }

  std::int64_t gemm_work() const { return batch * c_out * patch * l_out; }
};

// cols[c·k + j, t] = x[c, t·s + j·d − p] for the group's C_in/g channels of one sample (0 in the
// padding).
void im2col(const float* x_group, float* cols, const ConvDims& dims) {
  for (std::int64_t c = 0; c < dims.c_in_group; ++c) {
    const float* row = x_group + c * dims.length;
    for (std::int64_t j = 0; j < dims.k; ++j) {
      float* out = cols + (c * dims.k + j) * dims.l_out;
      const std::int64_t offset = j * dims.dilation - dims.padding;
      const auto [first, last] = dims.valid_range(offset);
      std::fill(out, out + first, 0.0f);
      if (dims.stride == 1) {
        std::memcpy(out + first, row + first + offset,
                    static_cast<std::size_t>(last - first) * sizeof(float));
      } else {
        for (std::int64_t t = first; t < last; ++t) out[t] = row[t * dims.stride + offset];
      }
      std::fill(out + last, out + dims.l_out, 0.0f);
    }
  }
}

// The adjoint of im2col: dx[c, t·s + j·d − p] += cols[c·k + j, t] (dx_group must start zeroed).
void col2im_add(const float* cols, float* dx_group, const ConvDims& dims) {
  for (std::int64_t c = 0; c < dims.c_in_group; ++c) {
    float* row = dx_group + c * dims.length;
    for (std::int64_t j = 0; j < dims.k; ++j) {
      const float* in = cols + (c * dims.k + j) * dims.l_out;
      const std::int64_t offset = j * dims.dilation - dims.padding;
      const auto [first, last] = dims.valid_range(offset);
      for (std::int64_t t = first; t < last; ++t) row[t * dims.stride + offset] += in[t];
    }
  }
}

// Threads for a loop over the batch: one sample per thread when there are enough samples and
// enough work, else one thread and Eigen threads each GEMM.
int batch_threads(const ConvDims& dims) {
  const int available = omp_get_max_threads();
  return dims.batch >= available && dims.gemm_work() >= kParallelWork ? available : 1;
}

// The GEMMs of one sample and group, described once for the kernels (run = gemm) and the prepare
// hooks (run = gemm_prepare); they have the same shapes for every sample and group. w is the
// group's [C_out/g, patch] weight block, cols its [patch, L_out] im2col, g and out [C_out/g, L_out].

// out = α·(w·cols + b), the bias per output channel (row)
void forward_gemm(GemmFn run, const float* w, const float* cols, const float* bias, float* out,
                  const ConvDims& dims, float alpha) {
  run(gemm_matrix(w, dims.c_out_group, dims.patch), gemm_matrix(cols, dims.patch, dims.l_out),
      gemm_output(out, dims.c_out_group, dims.l_out),
      {.alpha = alpha, .bias = bias, .bias_per_row = true}, "conv1d");
}

// grad_cols = β_x·wᵀ·g
void grad_cols_gemm(GemmFn run, const float* w, const float* g, float* grad_cols,
                    const ConvDims& dims, float beta_x) {
  run(gemm_matrix(w, dims.c_out_group, dims.patch, /*transposed=*/true),
      gemm_matrix(g, dims.c_out_group, dims.l_out), gemm_output(grad_cols, dims.patch, dims.l_out),
      {.alpha = beta_x}, "conv1d_backward");
}

// dw += β_w·g·colsᵀ, into the group's rows of the [C_out, patch] gradient
void grad_weight_gemm(GemmFn run, const float* g, const float* cols, float* dw,
                      const ConvDims& dims, float beta_weight) {
  run(gemm_matrix(g, dims.c_out_group, dims.l_out),
      gemm_matrix(cols, dims.patch, dims.l_out, /*transposed=*/true),
      gemm_output(dw, dims.c_out_group, dims.patch), {.alpha = beta_weight, .accumulate = true},
      "conv1d_backward");
}

}  // namespace

void conv1d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                    const Conv1dGeometry& geometry, float alpha) {
  const ConvDims dims(x.shape(), weight.shape(), geometry);
  const int threads = batch_threads(dims);
  const bool identity = dims.im2col_is_identity();
  std::vector<RowMajorMatrix> scratch(identity ? 0 : static_cast<std::size_t>(threads));
  for (auto& cols : scratch) cols.resize(dims.patch, dims.l_out);

#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t n = 0; n < dims.batch; ++n) {
    float* cols_data = identity ? nullptr : scratch[static_cast<std::size_t>(omp_get_thread_num())].data();
    for (std::int64_t group = 0; group < dims.groups; ++group) {
      const float* x_group = x.data() + (n * dims.c_in + group * dims.c_in_group) * dims.length;
      if (!identity) im2col(x_group, cols_data, dims);
      forward_gemm(gemm, weight.data() + group * dims.c_out_group * dims.patch,
                   identity ? x_group : cols_data,
                   present(bias) ? bias.data() + group * dims.c_out_group : nullptr,
                   y.data() + (n * dims.c_out + group * dims.c_out_group) * dims.l_out, dims, alpha);
    }
  }
}

void conv1d_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                     TensorView grad_x, TensorView grad_weight, TensorView grad_bias,
                     const Conv1dGeometry& geometry, float beta_x, float beta_weight,
                     float beta_bias) {
  const ConvDims dims(x.shape(), weight.shape(), geometry);
  const int threads = batch_threads(dims);
  const bool identity = dims.im2col_is_identity();
  const bool want_x = present(grad_x), want_weight = present(grad_weight);
  const bool want_bias = present(grad_bias);

  // Per-thread scratch: the im2col of x (for dW) and of dx (for col2im), and the partial sums of
  // dW and db over the thread's samples. Thread 0 accumulates dW in place; the others' partials
  // are added afterwards in thread order, so the result does not depend on scheduling.
  const auto slots = static_cast<std::size_t>(threads);
  std::vector<RowMajorMatrix> cols_scratch(want_weight && !identity ? slots : 0);
  std::vector<RowMajorMatrix> grad_cols_scratch(want_x && !identity ? slots : 0);
  std::vector<RowMajorMatrix> weight_partials(want_weight ? slots - 1 : 0);
  std::vector<Eigen::VectorXd> bias_partials(want_bias ? slots : 0);
  for (auto& m : cols_scratch) m.resize(dims.patch, dims.l_out);
  for (auto& m : grad_cols_scratch) m.resize(dims.patch, dims.l_out);
  for (auto& m : weight_partials) m.setZero(dims.c_out, dims.patch);
  for (auto& v : bias_partials) v.setZero(dims.c_out);
  MatrixMap dw_total(grad_weight.data(), want_weight ? dims.c_out : 0, dims.patch);
  dw_total.setZero();

#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t n = 0; n < dims.batch; ++n) {
    const auto slot = static_cast<std::size_t>(omp_get_thread_num());
    const ConstMatrixMap g_sample(grad_y.data() + n * dims.c_out * dims.l_out, dims.c_out, dims.l_out);
    if (want_bias) bias_partials[slot] += g_sample.rowwise().sum().cast<double>();
    if (want_x) {
      float* dx_sample = grad_x.data() + n * dims.c_in * dims.length;
      if (!identity) std::fill(dx_sample, dx_sample + dims.c_in * dims.length, 0.0f);
      for (std::int64_t group = 0; group < dims.groups; ++group) {
        const float* w = weight.data() + group * dims.c_out_group * dims.patch;
        const float* g = g_sample.data() + group * dims.c_out_group * dims.l_out;
        float* dx_group = dx_sample + group * dims.c_in_group * dims.length;
        if (identity) {
          grad_cols_gemm(gemm, w, g, dx_group, dims, beta_x);
        } else {
          float* grad_cols = grad_cols_scratch[slot].data();
          grad_cols_gemm(gemm, w, g, grad_cols, dims, beta_x);
          col2im_add(grad_cols, dx_group, dims);
        }
      }
    }
    if (want_weight) {
      float* dw = slot == 0 ? dw_total.data() : weight_partials[slot - 1].data();
      for (std::int64_t group = 0; group < dims.groups; ++group) {
        const float* x_group = x.data() + (n * dims.c_in + group * dims.c_in_group) * dims.length;
        if (!identity) im2col(x_group, cols_scratch[slot].data(), dims);
        grad_weight_gemm(gemm, g_sample.data() + group * dims.c_out_group * dims.l_out,
                         identity ? x_group : cols_scratch[slot].data(),
                         dw + group * dims.c_out_group * dims.patch, dims, beta_weight);
      }
    }
  }

  for (const auto& partial : weight_partials) dw_total += partial;
  if (want_bias) {
    Eigen::VectorXd total = Eigen::VectorXd::Zero(dims.c_out);
    for (const auto& partial : bias_partials) total += partial;
    grad_bias.vector() = (static_cast<double>(beta_bias) * total).cast<float>();
  }
}

namespace {

Conv1dGeometry geometry_of(const Attributes& attrs) {
  return {.stride = attrs.get_int("conv1d", "stride", 1),
          .padding = attrs.get_int("conv1d", "padding", 0),
          .dilation = attrs.get_int("conv1d", "dilation", 1),
          .groups = attrs.get_int("conv1d", "groups", 1)};
}

// Checks the operands and attributes; returns y's shape [..., C_out, L_out].
Shape conv1d_shape(std::span<const Shape* const> in, const Attributes& attrs) {
  const Shape& x = *in[0];
  const Shape& w = *in[1];
  const Conv1dGeometry geo = geometry_of(attrs);
  if (geo.stride < 1 || geo.dilation < 1 || geo.groups < 1 || geo.padding < 0) {
    throw Error(fmt::format("conv1d: stride {}, padding {}, dilation {}, groups {}: expected "
                            "stride, dilation and groups >= 1 and padding >= 0",
                            geo.stride, geo.padding, geo.dilation, geo.groups));
  }
  if (x.rank() < 2 || w.rank() != 3) {
    throw Error(fmt::format("conv1d: x {} and weight {}: expected x [..., C_in, L] and weight "
                            "[C_out, C_in/groups, k]",
                            x.to_string(), w.to_string()));
  }
  const std::int64_t c_in = x.dim(-2), c_out = w.dim(0);
  std::int64_t grouped_c_in = 0;  // C_in/groups · groups; an overflow is a mismatch
  if (c_in % geo.groups != 0 || c_out % geo.groups != 0 ||
      __builtin_mul_overflow(w.dim(1), geo.groups, &grouped_c_in) || grouped_c_in != c_in) {
    throw Error(fmt::format("conv1d: x {} and weight {} do not match with groups = {}: expected "
                            "x [..., C_in, L] and weight [C_out, C_in/groups, k], with C_in and "
                            "C_out divisible by groups",
                            x.to_string(), w.to_string(), geo.groups));
  }
  if (in[2] != nullptr && *in[2] != Shape{c_out}) {
    throw Error(fmt::format("conv1d: bias {} does not match weight {}: expected [{}]",
                            in[2]->to_string(), w.to_string(), c_out));
  }
  if (w.dim(2) < 1) {
    throw Error(fmt::format("conv1d: weight {} has an empty kernel (k = 0): expected weight "
                            "[C_out, C_in/groups, k] with k >= 1 (x {})",
                            w.to_string(), x.to_string()));
  }
  // The geometry must keep every index the shape inference and the kernels compute within int64:
  // the kernel span d·(k − 1) + 1 and the padded length L + 2·p. Every other index is bounded by
  // these (ConvDims::valid_range divides before it adds, so the stride may be any int64).
  std::int64_t span = 0, padded = 0;
  if (__builtin_mul_overflow(geo.dilation, w.dim(2) - 1, &span) ||
      __builtin_add_overflow(span, 1, &span)) {
    throw Error(fmt::format("conv1d: dilation {} with weight {} (k = {}): the kernel span "
                            "dilation·(k − 1) + 1 overflows int64 (expected at most 2^63 − 1)",
                            geo.dilation, w.to_string(), w.dim(2)));
  }
  if (__builtin_mul_overflow(geo.padding, 2, &padded) ||
      __builtin_add_overflow(x.dim(-1), padded, &padded)) {
    throw Error(fmt::format("conv1d: padding {} with x {}: the padded length L + 2·padding "
                            "overflows int64 (expected at most 2^63 − 1)",
                            geo.padding, x.to_string()));
  }
  if (padded < span) {
    throw Error(fmt::format("conv1d: x {} is shorter than the kernel of weight {} (dilation {}, "
                            "padding {}): expected L + 2·padding >= dilation·(k − 1) + 1 = {}",
                            x.to_string(), w.to_string(), geo.dilation, geo.padding, span));
  }
  const std::int64_t l_out = (padded - span) / geo.stride + 1;
  return x.with_dim(-2, c_out).with_dim(-1, l_out);
}

std::vector<Shape> infer_conv1d(std::span<const Shape* const> in, const Attributes& attrs) {
  return {conv1d_shape(in, attrs)};
}

void unit_scale_conv1d(std::span<const Shape* const> in, Attributes& attrs) {
  const Shape y = conv1d_shape(in, attrs);
  const Conv1dGeometry geo = geometry_of(attrs);
  const Shape& w = *in[1];
  const auto k = static_cast<double>(w.dim(2));
  const auto fan_in = static_cast<double>(w.dim(1)) * k;
  const auto fan_out = static_cast<double>(w.dim(0)) * k /
                       (static_cast<double>(geo.stride) * static_cast<double>(geo.groups));
  const auto rows = static_cast<double>(leading_count(y) * y.dim(-1));  // B · L_out
  const double p_alpha = attrs.get_double("conv1d", "power_alpha", 0.5);
  const double p_beta_x = attrs.get_double("conv1d", "power_beta_x", 0.5);
  const double p_beta_weight = attrs.get_double("conv1d", "power_beta_weight", 0.5);
  const std::vector<double> scales = detail::constrain(
      "conv1d", attrs, {std::pow(fan_in, -p_alpha), std::pow(fan_out, -p_beta_x)});
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
  attrs.set("beta_weight", std::pow(rows, -p_beta_weight));
  attrs.set("beta_bias", std::pow(rows, -p_beta_weight));
}

// y = α·(w·im2col(x) + b) per group: homogeneous in x and w, each output sums the fan-in
// C_in/groups · k products (weight.dim(1)·weight.dim(2); padding taps read zeros, which only
// lowers the count at the edges), and the bias adds an independent term (L2 rule):
// s_y = p2(α·√(fan_in·(s_x·s_w)² + s_b²)), i.e. p2(α·√fan_in)·s_x·s_w without a bias.
std::vector<Scale> conv1d_scale_rule(const ScaleRuleArgs& args) {
  const Shape& w = args.input_shape(1);
  const auto fan_in = static_cast<double>(w.dim(1) * w.dim(2));
  const Scale bias = args.has_input(2) ? args.scale(2) : Scale::zero();  // absent: no term
  const double alpha = args.unit_scale("alpha");
  return {args.weighted_l2(
      {{alpha * std::sqrt(fan_in), args.scale(0) * args.scale(1)}, {alpha, bias}})};
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y; outputs grad_x, grad_weight,
// grad_bias. Every product w·x of the forward appears once in each gradient, so an element of an
// operand's gradient sums, on average, numel(y)·patch/numel(operand) products (patch =
// C_in/groups·k), as a matmul's does:
//   grad_x = β_x·col2im(wᵀ·g)   degree 1 in g and w; numel(y)·patch/numel(x) terms, about
//                               C_out/groups·k/stride (those reading the padding drop out);
//   grad_w = β_w·g·im2col(x)ᵀ   degree 1 in g and x; numel(y)/C_out = batch·L_out terms;
//   grad_b = β_b·Σ g            degree 1 in g; batch·L_out terms.
// The mean count, not fan_out, is what sets the RMS: it is exact for any stride, where some
// positions of x receive fewer terms (or none) than others.
std::vector<Scale> conv1d_backward_scale_rule(const ScaleRuleArgs& args) {
  const Shape& grad_y = args.input_shape(4);
  const Shape& w = args.input_shape(1);
  const auto outputs = static_cast<double>(grad_y.numel());
  const auto patch = static_cast<double>(w.dim(1) * w.dim(2));
  const double per_channel = w.dim(0) > 0 ? outputs / static_cast<double>(w.dim(0)) : 1.0;
  const Scale& s_g = args.scale(4);
  std::vector<Scale> result(3);
  if (args.has_output(0)) {
    const auto x_count = static_cast<double>(args.output_shape(0).numel());
    const double terms = x_count > 0 ? outputs * patch / x_count : 1.0;
    result[0] = args.fan_in(terms, args.unit_scale("beta_x")) * s_g * args.scale(1);
  }
  if (args.has_output(1)) {
    result[1] = args.fan_in(per_channel, args.unit_scale("beta_weight")) * s_g * args.scale(0);
  }
  if (args.has_output(2)) result[2] = args.fan_in(per_channel, args.unit_scale("beta_bias")) * s_g;
  return result;
}

void conv1d_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  conv1d_forward(in[0], in[1], in[2], out[0], geometry_of(attrs), scale_of(attrs, "alpha"));
}

// Backward inputs: x, weight, bias (absent), y (absent), grad_y.
void conv1d_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes& attrs, const KernelContext&) {
  conv1d_backward(in[4], in[0], in[1], out[0], out[1], out[2], geometry_of(attrs),
                  scale_of(attrs, "beta_x"), scale_of(attrs, "beta_weight"),
                  scale_of(attrs, "beta_bias"));
}

void conv1d_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs) {
  const ConvDims dims(in[0].shape(), in[1].shape(), geometry_of(attrs));
  forward_gemm(gemm_prepare, in[1].data(), in[0].data(), in[2].data(), out[0].data(), dims, 1.0f);
}

// Backward inputs: x, weight, bias, y (absent), grad_y; outputs dx, dw, db.
void conv1d_backward_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs) {
  const ConvDims dims(in[0].shape(), in[1].shape(), geometry_of(attrs));
  float* placeholder = prepare_placeholder();
  if (present(out[0])) grad_cols_gemm(gemm_prepare, in[1].data(), in[4].data(), placeholder, dims, 1.0f);
  if (present(out[1])) grad_weight_gemm(gemm_prepare, in[4].data(), placeholder, out[1].data(), dims, 1.0f);
}

}  // namespace

const OpDef kConv1dOp{
    .name = "conv1d",
    .inputs = {"x", "weight", "bias?"},
    .attributes = {AttributeSpec::integer("stride"),
                   AttributeSpec::integer("padding"),
                   AttributeSpec::integer("dilation"),
                   AttributeSpec::integer("groups"),
                   AttributeSpec::real("power_alpha"),
                   AttributeSpec::real("power_beta_x"),
                   AttributeSpec::real("power_beta_weight"),
                   AttributeSpec::enumeration<Constraint>("constraint")},
    .scales = {"alpha", "beta_x", "beta_weight", "beta_bias"},
    .infer_shapes = infer_conv1d,
    .unit_scale = unit_scale_conv1d,
    .kernel = conv1d_kernel,
    .prepare = conv1d_prepare,
    .backward_kernel = conv1d_backward_kernel, .backward_prepare = conv1d_backward_prepare,
    .backward_reads = 0b011,
    .scale_propagation = conv1d_scale_rule,
    .backward_scale_propagation = conv1d_backward_scale_rule,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value conv1d(Value x, Value weight, const Conv1dOptions& options) {
  const Value inputs[] = {x, weight, options.bias};
  Attributes attrs{{"stride", options.stride},
                   {"padding", options.padding},
                   {"dilation", options.dilation},
                   {"groups", options.groups},
                   {"constraint", options.constraint}};
  return x.graph().apply1(kConv1dOp, inputs, options.scale_power.record_in(attrs));
}

}  // namespace unitscale

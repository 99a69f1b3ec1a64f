#include "unitscale/ops/loss.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::kParallelThreshold;

constexpr std::int64_t kIgnoredRow = -1;

// Validates every label before any work, serially (an exception must not leave an OpenMP region),
// and returns the class id of each row, kIgnoredRow for rows whose label is ignore_index.
std::vector<std::int64_t> checked_class_ids(ConstTensorView labels, std::int64_t vocab,
                                            std::int64_t ignore_index) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(labels.numel()));
  const std::int32_t* data = labels.data_as<std::int32_t>();
  for (std::int64_t row = 0; row < labels.numel(); ++row) {
    const std::int64_t label = data[row];
    std::int64_t id = kIgnoredRow;
    if (label == ignore_index) {
      id = kIgnoredRow;
    } else if (label >= 0 && label < vocab) {
      id = label;
    } else {
      throw Error(
          fmt::format("cross_entropy: label {} at row {} of labels {} is not a class id: "
                      "expected an integer in [0, {}) or ignore_index {}",
                      label, row, labels.shape().to_string(), vocab, ignore_index));
    }
    ids[static_cast<std::size_t>(row)] = id;
  }
  return ids;
}

// One row of softmax(m·z), split at the label. With z_top the logit with the largest m·z and
// e_j = exp(m·(z_j − z_top)) (the shift is subtracted before multiplying by m, which keeps large
// logits exact): own = e_label and rest = Σ_{j≠label} e_j, summed apart so that with a dominant
// label (own = 1, rest tiny) rest, and so 1 − p_label, keeps full relative precision. The e_j go to
// `out` unless it is null.
struct SplitExpSum {
  float top = 0;
  double own = 0, rest = 0;
};

SplitExpSum split_exp_sum(const detail::rows::KernelTable& kernels, const float* z, float* out,
                          std::int64_t vocab, std::int64_t label, float mult) {
  SplitExpSum s;
  s.top = mult >= 0 ? kernels.max(z, vocab) : kernels.min(z, vocab);  // the largest m·z
  auto at = [out](std::int64_t i) { return out != nullptr ? out + i : nullptr; };
  s.rest = kernels.exp_sum(z, at(0), label, mult, s.top) +
           kernels.exp_sum(z + label + 1, at(label + 1), vocab - label - 1, mult, s.top);
  s.own = kernels.exp_sum(z + label, at(label), 1, mult, s.top);
  return s;
}

std::int64_t count_valid(const std::vector<std::int64_t>& ids) {
  std::int64_t valid = 0;
  for (const std::int64_t id : ids) valid += id != kIgnoredRow;
  return valid;
}

LossGradient gradient_of(const Attributes& attrs, std::string_view op) {
  return attrs.get_enum<LossGradient>(op, "gradient", LossGradient::kTrue);
}

}  // namespace

std::string_view reduction_name(Reduction reduction) {
  return reduction == Reduction::kMean ? "mean" : "sum";
}

Reduction reduction_from_name(std::string_view name) {
  if (name == "mean") return Reduction::kMean;
  if (name == "sum") return Reduction::kSum;
  throw Error(fmt::format("unknown reduction '{}'; valid names: mean, sum", name));
}

const EnumType& EnumAttribute<Reduction>::type() {
  return enum_type<Reduction, reduction_name, reduction_from_name>("reduction");
}

std::string_view loss_gradient_name(LossGradient gradient) {
  return gradient == LossGradient::kUnit ? "unit" : "true";
}

LossGradient loss_gradient_from_name(std::string_view name) {
  if (name == "true") return LossGradient::kTrue;
  if (name == "unit") return LossGradient::kUnit;
  throw Error(fmt::format("unknown loss gradient '{}'; valid names: true, unit", name));
}

const EnumType& EnumAttribute<LossGradient>::type() {
  return enum_type<LossGradient, loss_gradient_name, loss_gradient_from_name>("loss gradient");
}

double cross_entropy_grad_scale(std::int64_t vocab_size) {
  const auto v = static_cast<double>(vocab_size);
  return v / std::sqrt(v - 1.0);
}

double mse_loss_grad_scale() { return 1.0 / std::sqrt(8.0); }

float cross_entropy_forward(ConstTensorView logits, ConstTensorView labels, double mult,
                            Reduction reduction, std::int64_t ignore_index) {
  const std::int64_t vocab = logits.shape().inner();
  const std::int64_t rows = logits.shape().outer();
  const std::vector<std::int64_t> ids = checked_class_ids(labels, vocab, ignore_index);
  const float* z = logits.data();
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  const auto mult_f = static_cast<float>(mult);
  double total = 0;
  const bool parallel = rows * vocab > kParallelThreshold;
#pragma omp parallel for reduction(+ : total) schedule(static) if (parallel)
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t id = ids[static_cast<std::size_t>(row)];
    if (id == kIgnoredRow) continue;
    const float* row_z = z + row * vocab;
    const SplitExpSum s = split_exp_sum(kernels, row_z, nullptr, vocab, id, mult_f);
    // ℓ = logsumexp(m·z) − m·z_label = m·(z_top − z_label) + log(own + rest), the log taken as
    // log1p(rest + (own − 1)): own = 1 exactly when the label is the largest logit, and then a
    // tiny loss is as accurate as rest. (Otherwise rest ≥ 1, with no cancellation.)
    total += mult * (static_cast<double>(s.top) - row_z[id]) + std::log1p(s.rest + (s.own - 1.0));
  }
  // "mean" over zero valid rows is 0/0 = NaN, as in a plain mean over an empty set.
  if (reduction == Reduction::kMean) total /= static_cast<double>(count_valid(ids));
  return static_cast<float>(total);
}

void cross_entropy_backward(ConstTensorView logits, ConstTensorView labels, float grad_loss,
                            TensorView grad_logits, double mult, Reduction reduction,
                            std::int64_t ignore_index, LossGradient gradient, float beta_logits) {
  const std::int64_t vocab = logits.shape().inner();
  const std::int64_t rows = logits.shape().outer();
  const std::vector<std::int64_t> ids = checked_class_ids(labels, vocab, ignore_index);
  // The factor on every row's (p − onehot): see the header for the two gradients.
  double coefficient = static_cast<double>(grad_loss) * beta_logits;
  if (gradient == LossGradient::kTrue) {
    coefficient *= mult;
    if (reduction == Reduction::kMean) {
      const std::int64_t valid = count_valid(ids);
      if (valid > 0) coefficient /= static_cast<double>(valid);
    }
  }
  const float* z = logits.data();
  float* dz = grad_logits.data();
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  const auto mult_f = static_cast<float>(mult);
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelThreshold)
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t id = ids[static_cast<std::size_t>(row)];
    float* row_dz = dz + row * vocab;
    if (id == kIgnoredRow) {
      std::fill(row_dz, row_dz + vocab, 0.0f);
      continue;
    }
    // p = e / (own + rest) with the e_j written to dz, then scaled in place; at the label
    // p − 1 = −rest / (own + rest), without the cancellation of subtracting 1 from p.
    const SplitExpSum s = split_exp_sum(kernels, z + row * vocab, row_dz, vocab, id, mult_f);
    const double sum = s.own + s.rest;
    kernels.scale(row_dz, vocab, static_cast<float>(coefficient / sum));
    row_dz[id] = static_cast<float>(-coefficient * s.rest / sum);
  }
}

float mse_loss_forward(ConstTensorView a, ConstTensorView b, Reduction reduction) {
  const std::int64_t n = a.numel();
  const float* x = a.data();
  const float* y = b.data();
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
  double total = 0;
  // Each thread sums one contiguous chunk (vectorised, in double across blocks).
#pragma omp parallel reduction(+ : total) if (n > kParallelThreshold)
  {
    const auto threads = static_cast<std::int64_t>(omp_get_num_threads());
    const auto thread = static_cast<std::int64_t>(omp_get_thread_num());
    const std::int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
    total += kernels.squared_distance(x + begin, y + begin, end - begin);
  }
  if (reduction == Reduction::kMean) total /= static_cast<double>(n);
  return static_cast<float>(total);
}

void mse_loss_backward(ConstTensorView a, ConstTensorView b, float grad_loss, TensorView grad_a,
                       TensorView grad_b, Reduction reduction, LossGradient gradient, float beta_a,
                       float beta_b) {
  const std::int64_t n = a.numel();
  double coefficient = 2.0 * static_cast<double>(grad_loss);
  if (gradient == LossGradient::kTrue && reduction == Reduction::kMean && n > 0) {
    coefficient /= static_cast<double>(n);
  }
  const auto coefficient_a = static_cast<float>(coefficient * beta_a);
  const auto coefficient_b = static_cast<float>(-coefficient * beta_b);
  const float* x = a.data();
  const float* y = b.data();
  float* dx = grad_a.data();
  float* dy = grad_b.data();
  // One loop per set of outputs, so that each vectorises without per-element tests.
  if (dx != nullptr && dy != nullptr) {
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) {
      const float difference = x[i] - y[i];
      dx[i] = coefficient_a * difference;
      dy[i] = coefficient_b * difference;
    }
  } else if (dx != nullptr || dy != nullptr) {
    float* d = dx != nullptr ? dx : dy;
    const float c = dx != nullptr ? coefficient_a : coefficient_b;
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
    for (std::int64_t i = 0; i < n; ++i) d[i] = c * (x[i] - y[i]);
  }
}

namespace {

constexpr std::string_view kCrossEntropy = "cross_entropy";
constexpr std::string_view kMseLoss = "mse_loss";

struct CrossEntropyAttrs {
  double mult;
  Reduction reduction;
  std::int64_t ignore_index;
};

CrossEntropyAttrs cross_entropy_attrs(const Attributes& attrs) {
  const double mult = attrs.get_double(kCrossEntropy, "mult", 1.0);
  if (!std::isfinite(mult) || mult <= 0) {
    throw Error(fmt::format("cross_entropy: mult must be finite and positive, got {}", mult));
  }
  const Reduction reduction =
      attrs.get_enum<Reduction>(kCrossEntropy, "reduction", Reduction::kMean);
  return {mult, reduction, attrs.get_int(kCrossEntropy, "ignore_index", kDefaultIgnoreIndex)};
}

Reduction mse_reduction(const Attributes& attrs) {
  return attrs.get_enum<Reduction>(kMseLoss, "reduction", Reduction::kMean);
}

void check_cross_entropy_shapes(std::span<const Shape* const> in) {
  const Shape& logits = *in[0];
  const Shape& labels = *in[1];
  const bool batched = logits.rank() == 2 && labels == Shape{logits.dim(0)};
  const bool single = logits.rank() == 1 && labels.rank() == 0;
  if (!batched && !single) {
    throw Error(
        fmt::format("cross_entropy: logits {} and labels {} do not match: expected logits "
                    "[B, V] with labels [B], or logits [V] with labels []",
                    logits.to_string(), labels.to_string()));
  }
  if (logits.dim(-1) < 2) {
    throw Error(fmt::format("cross_entropy: logits {} must have at least 2 classes (V = {})",
                            logits.to_string(), logits.dim(-1)));
  }
}

std::vector<Shape> infer_cross_entropy(std::span<const Shape* const> in, const Attributes& attrs) {
  check_cross_entropy_shapes(in);
  cross_entropy_attrs(attrs);  // validates mult and reduction at record time
  return {Shape{}};
}

void unit_scale_cross_entropy(std::span<const Shape* const> in, Attributes& attrs) {
  check_cross_entropy_shapes(in);
  attrs.set("beta_logits", cross_entropy_grad_scale(in[0]->dim(-1)));
  attrs.set("gradient", LossGradient::kUnit);
}

void cross_entropy_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  const CrossEntropyAttrs a = cross_entropy_attrs(attrs);
  out[0].data()[0] = cross_entropy_forward(in[0], in[1], a.mult, a.reduction, a.ignore_index);
}

// Backward inputs: logits, labels, loss (absent), grad_loss. Outputs: grad_logits, grad_labels.
void cross_entropy_backward_kernel(std::span<const ConstTensorView> in,
                                   std::span<const TensorView> out, const Attributes& attrs, const KernelContext&) {
  const CrossEntropyAttrs a = cross_entropy_attrs(attrs);
  if (present(out[0])) {
    cross_entropy_backward(in[0], in[1], in[3].data()[0], out[0], a.mult, a.reduction,
                           a.ignore_index, gradient_of(attrs, kCrossEntropy),
                           scale_of(attrs, "beta_logits"));
  }
  // Labels are class ids, not differentiable; should a caller ask anyway, the (almost everywhere)
  // derivative of a piecewise-constant function is zero.
  if (present(out[1])) out[1].vector().setZero();
}

std::vector<Shape> infer_mse_loss(std::span<const Shape* const> in, const Attributes& attrs) {
  if (*in[0] != *in[1]) {
    throw Error(fmt::format("mse_loss: a {} and b {} must have equal shapes", in[0]->to_string(),
                            in[1]->to_string()));
  }
  mse_reduction(attrs);
  return {Shape{}};
}

void unit_scale_mse_loss(std::span<const Shape* const>, Attributes& attrs) {
  attrs.set("beta_a", mse_loss_grad_scale());
  attrs.set("beta_b", mse_loss_grad_scale());
  attrs.set("gradient", LossGradient::kUnit);
}

void mse_loss_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                     const Attributes& attrs, const KernelContext&) {
  out[0].data()[0] = mse_loss_forward(in[0], in[1], mse_reduction(attrs));
}

// Backward inputs: a, b, loss (absent), grad_loss. Outputs: grad_a, grad_b.
void mse_loss_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                              const Attributes& attrs, const KernelContext&) {
  mse_loss_backward(in[0], in[1], in[3].data()[0], out[0], out[1], mse_reduction(attrs),
                    gradient_of(attrs, kMseLoss), scale_of(attrs, "beta_a"),
                    scale_of(attrs, "beta_b"));
}

// ---- scale rules ----------------------------------------------------------------------------

// Rows of cross_entropy's logits: B for [B, V], 1 for [V]. The rules cannot see which labels are
// ignore_index, so they count every row.
double cross_entropy_rows(const ScaleRuleArgs& args) {
  return static_cast<double>(std::max<std::int64_t>(1, args.input_shape(0).outer()));
}

// loss = r·Σ_b (logsumexp(m·z_b) − m·z_b[y_b]) is not homogeneous in the logits: it tends to ln V
// for small m·s_z (a flat softmax; no input scale reaches it) and to m·s_z·(max_j u_j − u_label)
// ≈ m·s_z·√(2 ln V) for large m·s_z (u the unit data; the largest of V normals is ≈ √(2 ln V)).
// Scale 1 would leave the loss at ~ln V ≈ 7–11 and, in the second regime, at any size the logits'
// scale reaches (2^30 overflows FP16), so the rule tracks both regimes with the L2 rule,
// E ≈ √((ln V)² + 2 ln V·(m·s_z)²) (simulated: the mean loss is 0.7–1.0 of it for V ≥ 10 and any
// m·s_z; V = 2, whose largest logit is well below √(2 ln V), down to 0.4), times the rows the
// reduction adds up: 1 for "mean", B for "sum". Formed as s_z·p2(m·√(2 ln V + (ln V/(m·s_z))²))
// once m·s_z exceeds ln V, so that a large s_z stays exact.
std::vector<Scale> cross_entropy_scale_rule(const ScaleRuleArgs& args) {
  const CrossEntropyAttrs a = cross_entropy_attrs(args.attrs);
  const double log_v = std::log(static_cast<double>(args.input_shape(0).dim(-1)));
  const double terms = a.reduction == Reduction::kSum ? cross_entropy_rows(args) : 1.0;
  const Scale& s_z = args.scale(0);
  const double spread = a.mult * s_z.value();  // m·s_z
  if (spread <= log_v) {
    return {args.p2(terms * std::sqrt(log_v * log_v + 2 * log_v * spread * spread))};
  }
  const double ratio = log_v / spread;
  return {s_z * args.p2(terms * a.mult * std::sqrt(2 * log_v + ratio * ratio))};
}

// Backward inputs: logits, labels, loss (absent), grad_loss; outputs grad_logits, grad_labels.
// dz_b = g·c·(p_b − onehot(y_b)), with c = β (unit gradient) or m·r (true gradient; r = 1/B for
// "mean", the valid rows being taken as all B): degree 1 in g, and p − onehot is bounded whatever
// the logits' scale: its RMS over a row is √(V−1)/V for a flat softmax and √(2/V) for a saturated
// one whose top class is not the label (0 when it is), so s = p2(c·√(V−1)/V)·s_g, exactly s_g
// on the unit-scaled graph (β = V/√(V−1)). The labels have no gradient.
std::vector<Scale> cross_entropy_backward_scale_rule(const ScaleRuleArgs& args) {
  std::vector<Scale> result(2);
  if (!args.has_output(0)) return result;
  const CrossEntropyAttrs a = cross_entropy_attrs(args.attrs);
  double coefficient = args.unit_scale("beta_logits");
  if (gradient_of(args.attrs, kCrossEntropy) == LossGradient::kTrue) {
    coefficient *= a.mult;
    if (a.reduction == Reduction::kMean) coefficient /= cross_entropy_rows(args);
  }
  // √(V−1)/V as the reciprocal of the unit-scaling rule's β, so that β·√(V−1)/V is exactly 1.
  result[0] =
      args.p2(coefficient / cross_entropy_grad_scale(args.output_shape(0).dim(-1))) * args.scale(3);
  return result;
}

// Σ (a − b)² over n elements is homogeneous of degree 2 in (a, b) jointly. For independent a and b,
// a − b has mean square s_a² + s_b² (the L2 rule; max would understate it by up to 2× when the
// scales are equal, and a and b that nearly agree — a fitted regression — make it smaller than
// either, which no rule on scales can see), so loss ≈ r·n·(s_a² + s_b²), r·n = 1 for "mean" and n
// for "sum": s = p2(r·n·(1 + (s_small/s_large)²))·s_large², rounded once.
std::vector<Scale> mse_loss_scale_rule(const ScaleRuleArgs& args) {
  const Scale largest = max_scale({args.scale(0), args.scale(1)});
  if (largest.is_zero()) return {Scale::zero()};
  const double other = std::min(args.scale(0).value(), args.scale(1).value()) / largest.value();
  const double terms =
      mse_reduction(args.attrs) == Reduction::kSum
          ? static_cast<double>(std::max<std::int64_t>(1, args.input_shape(0).numel()))
          : 1.0;
  return {largest * largest * args.p2(terms * (1.0 + other * other))};
}

// Backward inputs: a, b, loss (absent), grad_loss; outputs grad_a, grad_b.
// da = g·c_a·2(a − b), db = −g·c_b·2(a − b), c = β (unit gradient), or r (true gradient: 1/n for
// "mean", 1 for "sum"): degree 1 in g and in a − b, whose RMS is √(s_a² + s_b²) (L2 rule, as for
// the loss): s = l2(s_a, s_b; 2·c)·s_g, exactly s_a·s_g on the unit-scaled graph when s_a = s_b
// (β = 8^-½, and 2·8^-½·√2 = 1).
std::vector<Scale> mse_loss_backward_scale_rule(const ScaleRuleArgs& args) {
  std::vector<Scale> result(2);
  double reduction = 1.0;
  if (gradient_of(args.attrs, kMseLoss) == LossGradient::kTrue &&
      mse_reduction(args.attrs) == Reduction::kMean) {
    const std::int64_t n = args.input_shape(0).numel();
    if (n > 0) reduction = 1.0 / static_cast<double>(n);
  }
  const std::string_view betas[] = {"beta_a", "beta_b"};
  for (std::size_t i = 0; i < 2; ++i) {
    if (!args.has_output(i)) continue;
    result[i] =
        args.l2({args.scale(0), args.scale(1)}, 2.0 * reduction * args.unit_scale(betas[i])) *
        args.scale(3);
  }
  return result;
}

}  // namespace

const OpDef kCrossEntropyOp{
    .name = kCrossEntropy,
    .inputs = {"logits", "labels"},
    .outputs = {"loss"},
    .attributes = {AttributeSpec::real("mult"),
                   AttributeSpec::enumeration<Reduction>("reduction"),
                   AttributeSpec::integer("ignore_index"),
                   AttributeSpec::enumeration<LossGradient>("gradient")},
    .scales = {"beta_logits"},
    .input_dtypes = {{DType::kF32}, {DType::kI32}},
    .infer_shapes = infer_cross_entropy,
    .unit_scale = unit_scale_cross_entropy,
    .kernel = cross_entropy_kernel,
    .backward_kernel = cross_entropy_backward_kernel,
    .backward_reads = 0b011,
    .nondifferentiable_inputs = 0b10,  // labels
    .scale_propagation = cross_entropy_scale_rule,
    .backward_scale_propagation = cross_entropy_backward_scale_rule,
};

const OpDef kMseLossOp{
    .name = kMseLoss,
    .inputs = {"a", "b"},
    .outputs = {"loss"},
    .attributes = {AttributeSpec::enumeration<Reduction>("reduction"),
                   AttributeSpec::enumeration<LossGradient>("gradient")},
    .scales = {"beta_a", "beta_b"},
    .infer_shapes = infer_mse_loss,
    .unit_scale = unit_scale_mse_loss,
    .kernel = mse_loss_kernel,
    .backward_kernel = mse_loss_backward_kernel,
    .backward_reads = 0b011,
    .scale_propagation = mse_loss_scale_rule,
    .backward_scale_propagation = mse_loss_backward_scale_rule,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value cross_entropy(Value logits, Value labels, const CrossEntropyOptions& options) {
  const Value inputs[] = {logits, labels};
  return logits.graph().apply1(
      kCrossEntropyOp, inputs,
      Attributes{{"mult", options.mult},
                 {"reduction", options.reduction},
                 {"ignore_index", options.ignore_index}});
}

Value mse_loss(Value a, Value b, const MseLossOptions& options) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(
      kMseLossOp, inputs,
      Attributes{{"reduction", options.reduction}});
}

}  // namespace unitscale

#include "unitscale/ops/attention.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ops/parallel.hpp"
#include "ops/row_kernels.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"

namespace unitscale {
namespace {

constexpr std::string_view kOpName = "scaled_dot_product_attention";
// The OpenMP threshold, compared here with multiply-adds.
using detail::kParallelThreshold;

// Dropout on the probabilities, with the dropout op's mask (ops/dropout.hpp): element `index` of
// the flattened [..., s_q, s_k] probabilities is kept iff dropout_keeps(seed, index, p), so the
// backward regenerates the mask and attention dropout equals dropout(P) with the same seed.
struct DropoutMask {
  bool active = false;
  std::uint64_t seed = 0;
  double p = 0.0;
  float keep_scale = 1.0f;

  explicit DropoutMask(const AttentionConfig& config)
      : active(config.dropout > 0.0),
        seed(config.seed),
        p(config.dropout),
        keep_scale(static_cast<float>(1.0 / (1.0 - config.dropout))) {}

  // m ∘ M/(1−p) in place; `first` is the flat index of m(0, 0) among all the op's probabilities.
  void apply(RowMajorMatrix& m, std::int64_t first) const {
    dropout_apply_mask(m.data(), m.data(), m.size(), first, p, seed, keep_scale);
  }
};

struct Geometry {
  std::int64_t slices, query_len, key_len, head_dim, value_dim;
};

Geometry geometry_of(const Shape& q, const Shape& k, const Shape& v) {
  return {q.numel() / std::max<std::int64_t>(1, q.dim(-2) * q.dim(-1)), q.dim(-2), k.dim(-2),
          q.dim(-1), v.dim(-1)};
}

// Row softmax of S in place (vectorised kernels; the row sum is accumulated in double across
// blocks). Causal rows keep columns j ≤ i (top-left aligned) and zero the rest: the masked logits
// are −∞, whose exp is 0, so they are never computed.
void softmax_rows(const detail::rows::KernelTable& kernels, RowMajorMatrix& s, bool causal) {
  const std::int64_t cols = s.cols();
  for (std::int64_t i = 0; i < s.rows(); ++i) {
    float* row = s.data() + i * cols;
    const std::int64_t valid = causal ? std::min(i + 1, cols) : cols;
    const double sum = kernels.exp_sum(row, row, valid, 1.0f, kernels.max(row, valid));
    kernels.scale(row, valid, static_cast<float>(1.0 / sum));
    std::fill(row + valid, row + cols, 0.0f);
  }
}

// The GEMMs of one slice, described once for the kernels (run = gemm, on the slice's data) and
// the prepare hooks (run = gemm_prepare): every slice has the same shapes. Operands are the
// slice's matrices: q [s_q, d], k [s_k, d], v [s_k, d_v], probabilities and dS [s_q, s_k],
// g = dy [s_q, d_v]. q, k, v and g are fp32 views or their rounded codes
// (ops/gemm_input_formats.hpp); the probabilities and dS are the op's own fp32 scratch.
using detail::GemmOperand;

// The operands of every slice, rounded as the node's formats say.
struct SliceOperands {
  GemmOperand q, k, v;
  Geometry g;

  GemmMatrix q_of(std::int64_t b, bool transposed = false) const {
    return q.block(b, g.query_len, transposed);
  }
  GemmMatrix k_of(std::int64_t b, bool transposed = false) const {
    return k.block(b, g.key_len, transposed);
  }
  GemmMatrix v_of(std::int64_t b, bool transposed = false) const {
    return v.block(b, g.key_len, transposed);
  }
};

// FP8 operands widened to BF16 once (GemmOperand::widen_fp8_to_bf16): every slice's GEMMs then
// multiply BF16 codes, where the GEMM engine would convert FP8 ones in each call.
SliceOperands widened(SliceOperands operands) {
  for (GemmOperand* operand : {&operands.q, &operands.k, &operands.v}) {
    operand->widen_fp8_to_bf16();
  }
  return operands;
}

// fp32 q, k, v rounded as `formats` say (attention_forward and attention_backward).
SliceOperands slice_operands(std::span<const ConstTensorView> in, const Geometry& g,
                             const GemmInputFormats& formats, std::uint64_t step) {
  using detail::GemmOperandRole;
  return widened({detail::gemm_operand(in[0], formats, GemmOperandRole::kLeft, step),
                  detail::gemm_operand(in[1], formats, GemmOperandRole::kRight, step),
                  detail::gemm_operand(in[2], formats, GemmOperandRole::kThird, step), g});
}

// S = (m/d)·q·kᵀ
void scores_gemm(GemmFn run, const GemmMatrix& q, const GemmMatrix& k_transposed, float* scores,
                 const Geometry& g, float logit_scale) {
  run(q, k_transposed, gemm_output(scores, g.query_len, g.key_len), {.alpha = logit_scale},
      kOpName);
}

// y = α·P·v
void output_gemm(GemmFn run, const GemmMatrix& probs, const GemmMatrix& v, float* y,
                 const Geometry& g, float alpha) {
  run(probs, v, gemm_output(y, g.query_len, g.value_dim), {.alpha = alpha}, kOpName);
}

// dv = β_v·Pᵀ·g
void grad_v_gemm(GemmFn run, const GemmMatrix& probs_transposed, const GemmMatrix& grad_y,
                 float* grad_v, const Geometry& g, float beta_v) {
  run(probs_transposed, grad_y, gemm_output(grad_v, g.key_len, g.value_dim), {.alpha = beta_v},
      kOpName);
}

// dP̃ = g·vᵀ
void grad_probs_gemm(GemmFn run, const GemmMatrix& grad_y, const GemmMatrix& v_transposed,
                     float* grad_probs, const Geometry& g) {
  run(grad_y, v_transposed, gemm_output(grad_probs, g.query_len, g.key_len), {}, kOpName);
}

// dq = scale·dS·k
void grad_q_gemm(GemmFn run, const GemmMatrix& grad_scores, const GemmMatrix& k, float* grad_q,
                 const Geometry& g, float scale) {
  run(grad_scores, k, gemm_output(grad_q, g.query_len, g.head_dim), {.alpha = scale}, kOpName);
}

// dk = scale·dSᵀ·q
void grad_k_gemm(GemmFn run, const GemmMatrix& grad_scores_transposed, const GemmMatrix& q,
                 float* grad_k, const Geometry& g, float scale) {
  run(grad_scores_transposed, q, gemm_output(grad_k, g.key_len, g.head_dim), {.alpha = scale},
      kOpName);
}

// A slice's probabilities or their gradient dS (s_q × s_k), computed in fp32 and handed to the
// GEMMs with v, g, k and q as they are or rounded to BF16 (AttentionConfig::probabilities), so
// that with FP8 or BF16 operands those GEMMs too run on the BF16 units.
class SliceScratch {
 public:
  SliceScratch(const Geometry& g, DType format, bool needed = true)
      : values(needed ? g.query_len : 0, needed ? g.key_len : 0),
        rounded_(needed && format == DType::kBF16 ? static_cast<std::size_t>(values.size()) : 0) {}

  RowMajorMatrix values;

  // Rounds the values for the GEMMs (nearest even); call once they are final.
  void round_for_gemms() {
    if (rounded_.empty()) return;
    detail::encode_codes({values.data(), static_cast<std::size_t>(values.size())}, rounded_.data(),
                         rounded_.size(), 2, kBFloat16, {.overflow = Overflow::kNonFinite});
  }
  GemmMatrix matrix(bool transposed = false) const {
    GemmMatrix m = gemm_matrix(values.data(), values.rows(), values.cols(), transposed);
    if (!rounded_.empty()) {
      m.data = rounded_.data();
      m.type = GemmType::kBF16;
    }
    return m;
  }

 private:
  std::vector<std::uint16_t> rounded_;
};

// What the prepare hooks pass for the probabilities or dS: the type and shape of the GEMM operand.
GemmMatrix placeholder_matrix(const Geometry& g, DType format, bool transposed = false) {
  GemmMatrix m = gemm_matrix(prepare_placeholder(), g.query_len, g.key_len, transposed);
  if (format == DType::kBF16) m.type = GemmType::kBF16;
  return m;
}

// P = softmax((m/d)·q·kᵀ) of slice b, into `probs` (s_q × s_k).
void attention_probabilities(const detail::rows::KernelTable& kernels,
                             const SliceOperands& operands, std::int64_t b,
                             const AttentionConfig& config, RowMajorMatrix& probs) {
  const Geometry& g = operands.g;
  const auto logit_scale = static_cast<float>(config.mult / static_cast<double>(g.head_dim));
  scores_gemm(gemm, operands.q_of(b), operands.k_of(b, /*transposed=*/true), probs.data(), g,
              logit_scale);
  softmax_rows(kernels, probs, config.mask == AttentionMask::kCausal);
}

bool run_parallel(const Geometry& g) {
  return g.slices > 1 &&
         g.slices * g.query_len * g.key_len * (g.head_dim + g.value_dim) >= kParallelThreshold;
}

// ---- attributes, shapes and the unit-scaling rule --------------------------------------------

AttentionConfig config_of(const Attributes& attrs) {
  AttentionConfig config;
  config.mult = attrs.get_double(kOpName, "mult", 1.0);
  if (!(config.mult >= 0.0) || !std::isfinite(config.mult)) {
    throw Error(fmt::format("{}: mult must be finite and >= 0, got {}", kOpName, config.mult));
  }
  config.mask = attrs.get_enum<AttentionMask>(kOpName, "mask", AttentionMask::kNone);
  config.dropout = attrs.get_double(kOpName, "dropout", 0.0);
  if (!(config.dropout >= 0.0 && config.dropout < 1.0)) {
    throw Error(fmt::format("{}: dropout probability must be in [0, 1), got {}", kOpName,
                            config.dropout));
  }
  config.seed = static_cast<std::uint64_t>(attrs.get_int(kOpName, "seed", 0));
  config.gemm_inputs = GemmInputFormats::of(attrs, kOpName);
  config.probabilities = attrs.get_enum<DType>(kOpName, "probabilities_format", DType::kF32);
  if (config.probabilities != DType::kF32 && config.probabilities != DType::kBF16) {
    throw Error(fmt::format("{}: probabilities_format must be f32 or bf16, got {}", kOpName,
                            dtype_name(config.probabilities)));
  }
  return config;
}

std::vector<Shape> infer_attention(std::span<const Shape* const> in, const Attributes& attrs) {
  const Shape& q = *in[0];
  const Shape& k = *in[1];
  const Shape& v = *in[2];
  auto leading = [](const Shape& s) {
    return std::vector<std::int64_t>(s.dims().begin(), s.dims().end() - 2);
  };
  const bool ranks_ok = q.rank() >= 2 && k.rank() == q.rank() && v.rank() == q.rank();
  if (!ranks_ok || leading(q) != leading(k) || leading(q) != leading(v) ||
      k.dim(-1) != q.dim(-1) || v.dim(-2) != k.dim(-2) || q.dim(-1) < 1 || k.dim(-2) < 1) {
    throw Error(fmt::format("{}: q {}, k {} and v {} do not match: expected q [..., s_q, d], "
                            "k [..., s_k, d], v [..., s_k, d_v] with the same leading dims, d >= 1 "
                            "and s_k >= 1",
                            kOpName, q.to_string(), k.to_string(), v.to_string()));
  }
  config_of(attrs);
  return {q.with_dim(-1, v.dim(-1))};
}

void unit_scale_attention(std::span<const Shape* const> in, Attributes& attrs) {
  const AttentionConfig config = config_of(attrs);
  const double sigma =
      attention_unit_scale(in[0]->dim(-1), in[1]->dim(-2), config.mult, config.mask, config.dropout);
  attrs.set("alpha", sigma).set("beta_q", sigma).set("beta_k", sigma).set("beta_v", sigma);
}

// The node's config with its dropout seed advanced to the executor's step, as the dropout op does.
AttentionConfig config_at_step(const Attributes& attrs, const KernelContext& context) {
  AttentionConfig config = config_of(attrs);
  config.seed = dropout_seed_at_step(config.seed, context.step);
  config.step = context.step;
  return config;
}

// ---- scale rules ----------------------------------------------------------------------------
//
// Per slice, S = (m/d)·q·kᵀ, P = softmax(S), y = α·P̃·v (attention.hpp). The output is homogeneous
// of degree 1 in v, but not homogeneous in q and k: their scales set the spread of the logits,
// σ_S = m·s_q·s_k·√d/d = m·s_q·s_k/√d for unit data, and with it how peaked P is: from flat
// (σ_S → 0, y averages s_k values of v) to one-hot (σ_S → ∞, y picks one). So the rules are
// homogeneous where the op is (v, grad_y) and evaluate the op's own spread model at the logit
// spread the input scales give:
// - F = rms_i √(Σ_j P̃_ij²), the RMS of y over α·s_v: the unit-scaling rule's model,
//   F = LI(a, √(c/s_k), 1)/√(1−p) with a = σ_S²/(σ_S² + 4) (= 1/attention_unit_scale at
//   mult m·s_q·s_k), which matches simulated softmaxes within ~15% over all σ_S;
// - H = rms_i √(Σ_j dS_ij²) / (√d_v·s_g·s_v), the score gradient dS = P∘(dP − rowsum(P∘dP)) over
//   the spread of dP = g·vᵀ (√d_v·s_g·s_v; dropout multiplies dP by M/(1−p): 1/√(1−p)). Row by
//   row Σ_j dS_j² ∝ ΣP² − 2ΣP³ + (ΣP²)²: that is ΣP² ≈ F² while P is spread out, but it vanishes
//   for one-hot rows (a saturated softmax has no gradient), so for large σ_S only rows whose top
//   two logits nearly tie (a fraction ∝ 1/σ_S of them) contribute, and H falls as ≈ 0.8/√σ_S
//   (simulated: 0.67–0.94/√σ_S for s_k = 8…512). H ≈ min(LI, 0.8/√σ_S)/√(1−p) is within ~1.4×
//   of simulation at every σ_S; its peak (~0.3, near σ_S ≈ 4) is where the two meet.
// No rule tracks dq and dk once fp32 makes the softmax exactly one-hot (σ_S beyond ~10³–10⁴):
// they are then exactly 0 except at exact ties.

// The softmax spread factors above, for logit multiplier m·s_q·s_k. F is kept as its inverse σ,
// computed exactly as the unit-scaling rule computes α, so that α/σ is exactly 1 (and the scale
// exactly s_v) on the unit-scaled graph with s_q·s_k = 1.
struct SoftmaxSpread {
  double sigma;  // 1/F: attention_unit_scale at mult m·s_q·s_k
  double h;      // H
};

SoftmaxSpread softmax_spread(const ScaleRuleArgs& args, const AttentionConfig& config) {
  const Shape& q = args.input_shape(0);
  const Shape& k = args.input_shape(1);
  const double logit_mult = config.mult * (args.scale(0) * args.scale(1)).value();  // m·s_q·s_k
  const double sigma =
      attention_unit_scale(q.dim(-1), k.dim(-2), logit_mult, config.mask, config.dropout);
  // LI(a, √(c/s), 1) without dropout's factor, and the saturated softmax's H·√(1 − p).
  const double spread = 1.0 / attention_unit_scale(q.dim(-1), k.dim(-2), logit_mult, config.mask);
  // σ_S, kept finite (scales beyond double's range) so that H stays positive.
  const double sigma_s = std::min(logit_mult / std::sqrt(static_cast<double>(q.dim(-1))), 1e300);
  constexpr double kSaturated = 0.8;  // H·√σ_S of a saturated softmax (simulated 0.67–0.94)
  const double saturated = sigma_s > 0 ? kSaturated / std::sqrt(sigma_s) : spread;
  return {sigma, std::min(spread, saturated) / std::sqrt(1.0 - config.dropout)};
}

// y = α·P̃·v: degree 1 in v, and its RMS is α·F·s_v, so s_y = p2(α·F)·s_v — exactly s_v on the
// unit-scaled graph (α = σ = 1/F at s_q = s_k = 1).
std::vector<Scale> attention_scale_rule(const ScaleRuleArgs& args) {
  const AttentionConfig config = config_of(args.attrs);
  const SoftmaxSpread spread = softmax_spread(args, config);
  return {args.p2(args.unit_scale("alpha") / spread.sigma) * args.scale(2)};
}

// Backward inputs: q, k, v, y (absent), grad_y; outputs grad_q, grad_k, grad_v. With L_q, L_k the
// query and key lengths, d the head dim and d_v the value dim:
// - dv = β_v·P̃ᵀ·g: degree 1 in g (P̃ is bounded). dv_j sums P̃_ij·g_i over i, so its mean square
//   over j is s_g²·(1/L_k)·Σ_ij P̃_ij² = s_g²·(L_q/L_k)·F²: s = p2(β_v·F·√(L_q/L_k))·s_g.
// - dq = β_q·(m/d)·dS·k: degree 1 in g and in v (through dP = g·vᵀ, and dS is linear in dP) and
//   degree 1 in k through the explicit factor k — but k also moves the softmax, which is what H
//   accounts for (q likewise, only through H). dq_i = Σ_j dS_ij·k_j has mean square
//   s_k²·Σ_j dS_ij² = s_k²·d_v·s_g²·s_v²·H²: s = p2(β_q·(m/d)·√d_v·H)·s_g·s_v·s_k.
// - dk = β_k·(m/d)·dSᵀ·q: the same with q's factor, and (as for dv) averaged over L_k keys of the
//   L_q rows' Σ_j dS_ij²: s = p2(β_k·(m/d)·√d_v·H·√(L_q/L_k))·s_g·s_v·s_q.
// m = 0 makes dq and dk exactly zero (the kernel multiplies by m/d): the static zero.
std::vector<Scale> attention_backward_scale_rule(const ScaleRuleArgs& args) {
  const AttentionConfig config = config_of(args.attrs);
  const SoftmaxSpread spread = softmax_spread(args, config);
  const Shape& q = args.input_shape(0);
  const Shape& k = args.input_shape(1);
  const Shape& v = args.input_shape(2);
  // √(L_q/L_k); no queries (an empty gradient) counts as one, which keeps the factor positive.
  const double lengths = std::sqrt(static_cast<double>(std::max<std::int64_t>(1, q.dim(-2))) /
                                   static_cast<double>(k.dim(-2)));
  const double score = config.mult / static_cast<double>(q.dim(-1)) *
                       std::sqrt(static_cast<double>(v.dim(-1))) * spread.h;  // (m/d)·√d_v·H
  const Scale& s_g = args.scale(4);
  std::vector<Scale> result(3);
  if (args.has_output(0)) {
    result[0] =
        score > 0 ? args.p2(args.unit_scale("beta_q") * score) * s_g * args.scale(2) * args.scale(1)
                  : Scale::zero();
  }
  if (args.has_output(1)) {
    result[1] = score > 0 ? args.p2(args.unit_scale("beta_k") * score * lengths) * s_g *
                                args.scale(2) * args.scale(0)
                          : Scale::zero();
  }
  if (args.has_output(2)) {
    result[2] = args.p2(args.unit_scale("beta_v") / spread.sigma * lengths) * s_g;
  }
  return result;
}

void attention_forward_on(const SliceOperands& operands, TensorView y,
                          const AttentionConfig& config, float alpha);
void attention_backward_on(const SliceOperands& operands, const GemmOperand& grad_y,
                           TensorView grad_q, TensorView grad_k, TensorView grad_v,
                           const AttentionConfig& config, float beta_q, float beta_k, float beta_v);

// The kernels take q, k, v and grad_y as fp32 (rounded as the node's formats say) or as the
// stored codes of a scaled graph (OpDef::gemm_operands_as_codes, with their scales).
SliceOperands kernel_operands(std::span<const ConstTensorView> in, const Geometry& g,
                              const GemmInputFormats& formats, const KernelContext& context) {
  using detail::GemmOperandRole;
  return widened({detail::gemm_operand(in[0], formats, GemmOperandRole::kLeft, context, 0),
                  detail::gemm_operand(in[1], formats, GemmOperandRole::kRight, context, 1),
                  detail::gemm_operand(in[2], formats, GemmOperandRole::kThird, context, 2), g});
}

void attention_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                      const Attributes& attrs, const KernelContext& context) {
  const AttentionConfig config = config_at_step(attrs, context);
  const Geometry g = geometry_of(in[0].shape(), in[1].shape(), in[2].shape());
  attention_forward_on(kernel_operands(in, g, config.gemm_inputs, context), out[0], config,
                       scale_of(attrs, "alpha"));
}

// Backward inputs: q, k, v, y (absent), grad_y.
void attention_backward_kernel(std::span<const ConstTensorView> in,
                               std::span<const TensorView> out, const Attributes& attrs,
                               const KernelContext& context) {
  const AttentionConfig config = config_at_step(attrs, context);
  const Geometry g = geometry_of(in[0].shape(), in[1].shape(), in[2].shape());
  GemmOperand grad_y = detail::gemm_operand(in[4], config.gemm_inputs,
                                            detail::GemmOperandRole::kGradient, context, 4);
  grad_y.widen_fp8_to_bf16();
  attention_backward_on(kernel_operands(in, g, config.gemm_inputs, context), grad_y, out[0], out[1],
                        out[2], config, scale_of(attrs, "beta_q"), scale_of(attrs, "beta_k"),
                        scale_of(attrs, "beta_v"));
}

// The operands' types as the kernels will see them: stored codes where the inputs hold them.
GemmOperand prepared_operand(const ConstTensorView& x, const GemmInputFormats& formats,
                             detail::GemmOperandRole role) {
  GemmInputFormats as_stored = formats;
  if (x.dtype() != DType::kF32) {
    (role == detail::GemmOperandRole::kGradient ? as_stored.gradients : as_stored.inputs) =
        x.dtype();
  }
  GemmOperand operand = detail::gemm_operand(x, as_stored, role, 0, /*placeholder=*/true);
  operand.widen_fp8_to_bf16();  // as kernel_operands does
  return operand;
}

SliceOperands prepared_operands(std::span<const ConstTensorView> in, const Geometry& g,
                                const GemmInputFormats& formats) {
  using detail::GemmOperandRole;
  return {prepared_operand(in[0], formats, GemmOperandRole::kLeft),
          prepared_operand(in[1], formats, GemmOperandRole::kRight),
          prepared_operand(in[2], formats, GemmOperandRole::kThird), g};
}

void attention_prepare(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                       const Attributes& attrs) {
  const Geometry g = geometry_of(in[0].shape(), in[1].shape(), in[2].shape());
  const AttentionConfig config = config_of(attrs);
  const SliceOperands operands = prepared_operands(in, g, config.gemm_inputs);
  float* placeholder = prepare_placeholder();
  scores_gemm(gemm_prepare, operands.q_of(0), operands.k_of(0, true), placeholder, g, 1.0f);
  output_gemm(gemm_prepare, placeholder_matrix(g, config.probabilities), operands.v_of(0),
              out[0].data(), g, 1.0f);
}

// Backward inputs: q, k, v, y (absent), grad_y; outputs dq, dk, dv, each possibly absent.
void attention_backward_prepare(std::span<const ConstTensorView> in,
                                std::span<const TensorView> out, const Attributes& attrs) {
  const Geometry g = geometry_of(in[0].shape(), in[1].shape(), in[2].shape());
  const AttentionConfig config = config_of(attrs);
  const SliceOperands operands = prepared_operands(in, g, config.gemm_inputs);
  const GemmMatrix grad_y =
      prepared_operand(in[4], config.gemm_inputs, detail::GemmOperandRole::kGradient)
          .block(0, g.query_len);
  float* placeholder = prepare_placeholder();
  const DType format = config.probabilities;
  scores_gemm(gemm_prepare, operands.q_of(0), operands.k_of(0, true), placeholder, g, 1.0f);
  if (present(out[2])) {
    grad_v_gemm(gemm_prepare, placeholder_matrix(g, format, true), grad_y, out[2].data(), g, 1.0f);
  }
  if (!present(out[0]) && !present(out[1])) return;
  grad_probs_gemm(gemm_prepare, grad_y, operands.v_of(0, true), placeholder, g);
  if (present(out[0])) {
    grad_q_gemm(gemm_prepare, placeholder_matrix(g, format), operands.k_of(0), out[0].data(), g,
                1.0f);
  }
  if (present(out[1])) {
    grad_k_gemm(gemm_prepare, placeholder_matrix(g, format, true), operands.q_of(0), out[1].data(),
                g, 1.0f);
  }
}

std::vector<AttributeSpec> attention_attributes() {
  std::vector<AttributeSpec> specs = {
      AttributeSpec::real("mult"), AttributeSpec::enumeration<AttentionMask>("mask"),
      AttributeSpec::real("dropout"), AttributeSpec::integer("seed"),
      AttributeSpec::enumeration<DType>("probabilities_format")};
  for (const AttributeSpec& spec : GemmInputFormats::attribute_specs()) specs.push_back(spec);
  return specs;
}

}  // namespace

std::string_view attention_mask_name(AttentionMask mask) {
  return mask == AttentionMask::kCausal ? "causal" : "none";
}

AttentionMask attention_mask_from_name(std::string_view name) {
  if (name == "none") return AttentionMask::kNone;
  if (name == "causal") return AttentionMask::kCausal;
  throw Error(fmt::format("{}: unknown mask '{}': expected \"none\" or \"causal\"", kOpName, name));
}

const EnumType& EnumAttribute<AttentionMask>::type() {
  return enum_type<AttentionMask, attention_mask_name, attention_mask_from_name>("attention mask");
}

double attention_unit_scale(std::int64_t head_dim, std::int64_t key_length, double mult,
                            AttentionMask mask, double dropout) {
  const auto d = static_cast<double>(head_dim);
  const auto s = static_cast<double>(key_length);
  const double a = 1.0 / (1.0 + 4.0 * d / (mult * mult));
  // A single key makes the output v itself, where ln s = 0 would give an infinite σ.
  const double c = mask == AttentionMask::kCausal && key_length > 1 ? std::log(s) : 1.0;
  return std::sqrt(1.0 - dropout) / log_interpolate(a, std::sqrt(c / s), 1.0);
}

void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView y,
                       const AttentionConfig& config, float alpha) {
  const Geometry g = geometry_of(q.shape(), k.shape(), v.shape());
  const ConstTensorView inputs[] = {q, k, v};
  attention_forward_on(slice_operands(inputs, g, config.gemm_inputs, config.step), y, config,
                       alpha);
}

void attention_backward(ConstTensorView grad_y, ConstTensorView q, ConstTensorView k,
                        ConstTensorView v, TensorView grad_q, TensorView grad_k, TensorView grad_v,
                        const AttentionConfig& config, float beta_q, float beta_k, float beta_v) {
  const Geometry g = geometry_of(q.shape(), k.shape(), v.shape());
  const ConstTensorView inputs[] = {q, k, v};
  GemmOperand rounded_grad_y = detail::gemm_operand(
      grad_y, config.gemm_inputs, detail::GemmOperandRole::kGradient, config.step);
  rounded_grad_y.widen_fp8_to_bf16();
  attention_backward_on(slice_operands(inputs, g, config.gemm_inputs, config.step), rounded_grad_y,
                        grad_q, grad_k, grad_v, config, beta_q, beta_k, beta_v);
}

namespace {

void attention_forward_on(const SliceOperands& operands, TensorView y,
                          const AttentionConfig& config, float alpha) {
  const Geometry& g = operands.g;
  const DropoutMask dropout(config);
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
#pragma omp parallel if (run_parallel(g))
  {
    SliceScratch probs(g, config.probabilities);
#pragma omp for
    for (std::int64_t b = 0; b < g.slices; ++b) {
      attention_probabilities(kernels, operands, b, config, probs.values);
      if (dropout.active) dropout.apply(probs.values, b * g.query_len * g.key_len);
      probs.round_for_gemms();
      output_gemm(gemm, probs.matrix(), operands.v_of(b), y.data() + b * g.query_len * g.value_dim,
                  g, alpha);
    }
  }
}

void attention_backward_on(const SliceOperands& operands, const GemmOperand& grad_y,
                           TensorView grad_q, TensorView grad_k, TensorView grad_v,
                           const AttentionConfig& config, float beta_q, float beta_k,
                           float beta_v) {
  const Geometry& g = operands.g;
  const DropoutMask dropout(config);
  const bool want_scores = present(grad_q) || present(grad_k);
  const auto logit_scale = static_cast<float>(config.mult / static_cast<double>(g.head_dim));
  const detail::rows::KernelTable& kernels = detail::rows::kernels();
#pragma omp parallel if (run_parallel(g))
  {
    SliceScratch probs(g, config.probabilities);
    SliceScratch grad_scores(g, config.probabilities, want_scores);
    SliceScratch dropped(g, config.probabilities, dropout.active);
#pragma omp for
    for (std::int64_t b = 0; b < g.slices; ++b) {
      const std::int64_t first = b * g.query_len * g.key_len;
      attention_probabilities(kernels, operands, b, config, probs.values);
      const GemmMatrix g_b = grad_y.block(b, g.query_len);
      if (present(grad_v)) {
        float* dv_b = grad_v.data() + b * g.key_len * g.value_dim;
        SliceScratch& used = dropout.active ? dropped : probs;
        if (dropout.active) {
          dropped.values = probs.values;
          dropout.apply(dropped.values, first);
        }
        used.round_for_gemms();
        grad_v_gemm(gemm, used.matrix(/*transposed=*/true), g_b, dv_b, g, beta_v);
      }
      if (!want_scores) continue;
      grad_probs_gemm(gemm, g_b, operands.v_of(b, /*transposed=*/true), grad_scores.values.data(),
                      g);
      if (dropout.active) dropout.apply(grad_scores.values, first);  // dP
      // dS = P ∘ (dP − rowsum(P ∘ dP)), the softmax VJP row by row, in place.
      for (std::int64_t i = 0; i < g.query_len; ++i) {
        const float* p_row = probs.values.data() + i * g.key_len;
        float* d_row = grad_scores.values.data() + i * g.key_len;
        const auto row_dot = static_cast<float>(kernels.dot(p_row, d_row, g.key_len));
        kernels.softmax_vjp(p_row, d_row, d_row, g.key_len, 1.0f, row_dot);
      }
      grad_scores.round_for_gemms();
      if (present(grad_q)) {
        grad_q_gemm(gemm, grad_scores.matrix(), operands.k_of(b),
                    grad_q.data() + b * g.query_len * g.head_dim, g, beta_q * logit_scale);
      }
      if (present(grad_k)) {
        grad_k_gemm(gemm, grad_scores.matrix(/*transposed=*/true), operands.q_of(b),
                    grad_k.data() + b * g.key_len * g.head_dim, g, beta_k * logit_scale);
      }
    }
  }
}

}  // namespace

// The backward reads q, k and v (it recomputes the probabilities) but not the output y.
const OpDef kScaledDotProductAttentionOp{
    .name = kOpName,
    .inputs = {"q", "k", "v"},
    .attributes = attention_attributes(),
    .scales = {"alpha", "beta_q", "beta_k", "beta_v"},
    .infer_shapes = infer_attention,
    .unit_scale = unit_scale_attention,
    .kernel = attention_kernel,
    .prepare = attention_prepare,
    .backward_kernel = attention_backward_kernel,
    .backward_prepare = attention_backward_prepare,
    .backward_reads = 0b0111,
    .scale_propagation = attention_scale_rule,
    .backward_scale_propagation = attention_backward_scale_rule,
    .rounds_gemm_inputs = true,
    .gemm_operands_as_codes = true,
    .attention_gemms = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value scaled_dot_product_attention(Value q, Value k, Value v, const AttentionOptions& options) {
  const Value inputs[] = {q, k, v};
  Attributes attrs{{"mult", options.mult},
                   {"mask", options.mask}};
  if (options.dropout != 0.0) {
    attrs.set("dropout", options.dropout);
    const auto position = static_cast<std::int64_t>(q.graph().nodes().size());
    attrs.set("seed", options.seed.value_or(position));
  }
  return q.graph().apply1(kScaledDotProductAttentionOp, inputs, std::move(attrs));
}

}  // namespace unitscale

#pragma once
// scaled_dot_product_attention (arXiv 2303.11257; rules in docs/unit_scaling.md), with μP's 1/d
// logit scale.
//
// q [..., s_q, d], k [..., s_k, d], v [..., s_k, d_v] with identical leading (batch, head) dims;
// y [..., s_q, d_v]. Per slice of the leading dims, with m = "mult":
//
//   forward                                          backward (g = dL/dy; the forward is recomputed)
//   S = (m/d)·q·kᵀ          [s_q, s_k]                dP̃ = g·vᵀ
//   P = softmax_rows(S)     (causal: S_ij = −∞, j > i) dP = dP̃ ∘ M/(1−p)
//   P̃ = P ∘ M/(1−p)         (dropout, M ∈ {0,1})      dS = P ∘ (dP − rowsum(P ∘ dP))
//   y = α·P̃·v                                         dv = β_v·P̃ᵀ·g
//                                                     dq = β_q·(m/d)·dS·k,   dk = β_k·(m/d)·dSᵀ·q
//
// Unit-scaling rule: with s = s_k (key length) and p the dropout probability,
//   σ = √(1−p) / LI(a, √(c/s), 1),   a = 1/(1 + 4d/m²),   c = ln s if causal else 1
//   α = β_q = β_k = β_v = σ
// Near-flat attention (small m·q·kᵀ/d) averages s (causal: ~s/ln s) unit values, giving output
// std √(c/s); one-hot attention gives 1; LI interpolates between the two in log space. A single σ
// for the output and all three gradients makes the backward the exact gradient of the scaled
// forward, so it is consistent by construction and needs no constraint. Only the causal flag
// counts as causal (an arbitrary mask would not). For a causal op with s = 1, ln s = 0 would make σ
// infinite; a single key makes the output equal v, so c = 1 there (σ = √(1−p)).
//
// Causal masking is top-left aligned, as PyTorch's is_causal: query i attends keys j ≤ i.
//
// Low precision: with GemmInputFormats attributes (ops/gemm_input_formats.hpp, set by
// simulate_format's attention_inputs) q, k and v are rounded to the input format and g to the
// gradient format before every GEMM above that reads them; P̃, dS and everything else stay fp32.
//
// Dropout (on the attention probabilities, inverted ×1/(1−p)) uses the dropout op's seeded,
// counter-based mask (ops/dropout.hpp): element e of the flattened [..., s_q, s_k] probabilities is
// kept iff dropout_keeps(seed, e, p). So attention dropout equals dropout(P) with the same seed,
// and the backward regenerates the mask instead of storing it; in a graph the seed advances with
// the executor's step exactly as the dropout op's does. In eval use p = 0.
//
// Memory: the backward recomputes S and P from q and k instead of keeping the [..., s_q, s_k]
// probabilities as a saved output, trading one extra q·kᵀ GEMM and softmax for
// numel(q)/d·s_k floats of saved activation. Working memory is 2 (3 with dropout) s_q×s_k FP32
// buffers per thread. Slices of the leading dims run in parallel.
//
// Attributes: "mult" (double ≥ 0, default 1), "mask" ("none" | "causal", default "none"),
// "dropout" (double in [0, 1), default 0), "seed" (integer, default 0).

#include <cstdint>
#include <optional>
#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

enum class AttentionMask { kNone, kCausal };

// "none" / "causal"; an unknown name throws unitscale::Error naming the op and the valid names.
std::string_view attention_mask_name(AttentionMask mask);
AttentionMask attention_mask_from_name(std::string_view name);
template <>
struct EnumAttribute<AttentionMask> {
  static const EnumType& type();
};

extern const OpDef kScaledDotProductAttentionOp;  // inputs: q, k, v

// σ of the unit-scaling rule above, computed in double.
double attention_unit_scale(std::int64_t head_dim, std::int64_t key_length, double mult,
                            AttentionMask mask, double dropout = 0.0);

struct AttentionConfig {
  double mult = 1.0;
  AttentionMask mask = AttentionMask::kNone;
  double dropout = 0.0;
  std::uint64_t seed = 0;
  // What q, k, v (inputs) and the output's gradient (gradients) are rounded to before the GEMMs
  // (ops/gemm_input_formats.hpp; default: fp32, not rounded). `step` keys stochastic rounding's
  // bits.
  GemmInputFormats gemm_inputs = {};
  std::uint64_t step = 0;
  // The probabilities P and their gradient dS as operands of the GEMMs with v, g, k and q:
  // computed in fp32 (the softmax and its VJP always are) and handed over as they are (f32), or
  // rounded to nearest even BF16 (bf16), as FlashAttention does, so that with FP8 or BF16 q, k, v
  // all six GEMMs run on the CPU's BF16 units rather than two. Attribute "probabilities_format".
  DType probabilities = DType::kF32;
};

// The kernels, for direct use and benchmarks. Absent (null) gradient views are skipped.
void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView y,
                       const AttentionConfig& config, float alpha);
void attention_backward(ConstTensorView grad_y, ConstTensorView q, ConstTensorView k,
                        ConstTensorView v, TensorView grad_q, TensorView grad_k, TensorView grad_v,
                        const AttentionConfig& config, float beta_q, float beta_k, float beta_v);


// ------------------------------------------------------------------------------------------------
// Builder for scaled_dot_product_attention.
// Logits use μP's 1/d_head scale times `mult` (u-μP's α_attn-softmax), not 1/√d_head.
//
//   Value o = scaled_dot_product_attention(q, k, v);                       // [..., s_q, d_v]
//   Value o = scaled_dot_product_attention(q, k, v, {.mult = 4.0, .mask = AttentionMask::kCausal});
//   Value o = scaled_dot_product_attention(q, k, v, {.dropout = 0.1, .seed = step});

struct AttentionOptions {
  double mult = 1.0;
  AttentionMask mask = AttentionMask::kNone;
  double dropout = 0.0;  // on the attention probabilities, in [0, 1); 0 in eval
  // Picks the dropout mask, as for the dropout builder: without a seed, the node's position in
  // the graph is used, so that two dropouts of one graph never share a mask by accident.
  std::optional<std::int64_t> seed = std::nullopt;
};

Value scaled_dot_product_attention(Value q, Value k, Value v, const AttentionOptions& options = {});

}  // namespace unitscale

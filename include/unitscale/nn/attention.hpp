#pragma once
// MultiHeadSelfAttention: causal multi-head self-attention without position encoding (NoPE), as
// in the u-μP reference transformer layer (arXiv 2407.17465).
//
//   x [B, S, W] → qkv = Linear(W → 3W)(x) → q, k, v [B, H, S, W/H]
//              → o = scaled_dot_product_attention(q, k, v, causal) → [B, S, W] → Linear(W → W)
//
// Attention logits are α_attn · s · q·kᵀ, with α_attn = attn_softmax_mult (u-μP's
// α_attn-softmax) and s = attention_logit_scale when set, else the parametrization's
// (1/√d_head for SP, 1/d_head for μP and u-μP). The op computes (mult/d_head)·q·kᵀ, so the
// module records mult = α_attn·s·d_head; in a unit-scaled graph the op's unit scale σ depends on
// that mult (ops/attention.hpp).
//
// Parameters: "<name>.qkv.weight" [3W, W] and "<name>.out.weight" [W, W], hidden weights, both
// constrained to the output scale in unit-scaled graphs (the attention branch is not one whose
// ratios cancel).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/nn/layers.hpp"
#include "unitscale/nn/model.hpp"

namespace unitscale {

struct SelfAttentionConfig {
  std::int64_t width = 0;
  std::int64_t heads = 1;  // must divide width
  std::optional<int> depth = {};
  double attn_softmax_mult = 1.0;                // α_attn-softmax
  std::optional<double> attention_logit_scale = {};  // s; unset: the parametrization's
};

class MultiHeadSelfAttention {
 public:
  // Throws unitscale::Error naming the module if width or heads is below 1, heads does not divide
  // width, or a multiplier or logit scale is not finite and positive.
  MultiHeadSelfAttention(Model& model, std::string_view name, const SelfAttentionConfig& config);

  // x [B, S, width] → [B, S, width]. Throws unitscale::Error naming the module for another shape.
  Value operator()(Value x) const;

  const SelfAttentionConfig& config() const { return config_; }
  std::int64_t head_dim() const { return config_.width / config_.heads; }
  double logit_scale() const { return logit_scale_; }  // s
  double op_mult() const { return op_mult_; }          // α_attn·s·d_head, the op's "mult"
  const Linear& qkv() const { return qkv_; }
  const Linear& out() const { return out_; }

 private:
  Model* model_;
  std::string name_;
  SelfAttentionConfig config_;
  double logit_scale_;
  double op_mult_;
  Linear qkv_;
  Linear out_;
};

}  // namespace unitscale

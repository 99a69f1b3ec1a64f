#pragma once
// Builder for scaled_dot_product_attention (the maths and scale rule are in ops/attention.hpp).
// Logits use μP's 1/d_head scale times `mult` (u-μP's α_attn-softmax), not 1/√d_head.
//
//   Value o = scaled_dot_product_attention(q, k, v);                       // [..., s_q, d_v]
//   Value o = scaled_dot_product_attention(q, k, v, {.mult = 4.0, .mask = AttentionMask::kCausal});
//   Value o = scaled_dot_product_attention(q, k, v, {.dropout = 0.1, .seed = step});

#include <cstdint>
#include <optional>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/attention.hpp"

namespace unitscale {

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

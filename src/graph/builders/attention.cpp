#include "unitscale/graph/builders/attention.hpp"

#include <string>

namespace unitscale {

Value scaled_dot_product_attention(Value q, Value k, Value v, const AttentionOptions& options) {
  const Value inputs[] = {q, k, v};
  Attributes attrs{{"mult", options.mult},
                   {"mask", std::string(attention_mask_name(options.mask))}};
  if (options.dropout != 0.0) {
    attrs.set("dropout", options.dropout);
    const auto position = static_cast<std::int64_t>(q.graph().nodes().size());
    attrs.set("seed", options.seed.value_or(position));
  }
  return q.graph().apply1(kScaledDotProductAttentionOp, inputs, std::move(attrs));
}

}  // namespace unitscale

#include "unitscale/graph/builders/loss.hpp"

#include <string>

namespace unitscale {

Value cross_entropy(Value logits, Value labels, const CrossEntropyOptions& options) {
  const Value inputs[] = {logits, labels};
  return logits.graph().apply1(
      kCrossEntropyOp, inputs,
      Attributes{{"mult", options.mult},
                 {"reduction", std::string(reduction_name(options.reduction))},
                 {"ignore_index", options.ignore_index}});
}

Value mse_loss(Value a, Value b, const MseLossOptions& options) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(
      kMseLossOp, inputs,
      Attributes{{"reduction", std::string(reduction_name(options.reduction))}});
}

}  // namespace unitscale

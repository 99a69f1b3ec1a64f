#include "unitscale/graph/builders/normalization.hpp"

namespace unitscale {

Value layer_norm(Value x, const LayerNormOptions& options) {
  const Value inputs[] = {x, options.weight, options.bias};
  return x.graph().apply1(kLayerNormOp, inputs, Attributes{{"eps", options.eps}});
}

Value rms_norm(Value x, const RmsNormOptions& options) {
  const Value inputs[] = {x, options.weight};
  return x.graph().apply1(kRmsNormOp, inputs, Attributes{{"eps", options.eps}});
}

}  // namespace unitscale

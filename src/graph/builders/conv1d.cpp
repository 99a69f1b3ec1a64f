#include "unitscale/graph/builders/conv1d.hpp"

#include "unitscale/ops/conv1d.hpp"

namespace unitscale {

Value conv1d(Value x, Value weight, const Conv1dOptions& options) {
  const Value inputs[] = {x, weight, options.bias};
  return x.graph().apply1(
      kConv1dOp, inputs,
      Attributes{{"stride", options.stride},
                 {"padding", options.padding},
                 {"dilation", options.dilation},
                 {"groups", options.groups},
                 {"constraint", std::string(constraint_name(options.constraint))},
                 {"power_alpha", options.scale_power.alpha},
                 {"power_beta_x", options.scale_power.beta_x},
                 {"power_beta_weight", options.scale_power.beta_weight}});
}

}  // namespace unitscale

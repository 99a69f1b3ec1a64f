#include "unitscale/graph/builders/conv1d.hpp"

#include "unitscale/ops/conv1d.hpp"

namespace unitscale {

Value conv1d(Value x, Value weight, const Conv1dOptions& options) {
  const Value inputs[] = {x, weight, options.bias};
  Attributes attrs{{"stride", options.stride},
                   {"padding", options.padding},
                   {"dilation", options.dilation},
                   {"groups", options.groups},
                   {"constraint", std::string(constraint_name(options.constraint))}};
  return x.graph().apply1(kConv1dOp, inputs, options.scale_power.record_in(attrs));
}

}  // namespace unitscale

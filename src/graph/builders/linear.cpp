#include "unitscale/graph/builders/linear.hpp"

#include "unitscale/ops/linear.hpp"

namespace unitscale {
namespace {

Value record_linear(const OpDef& op, Value x, Value weight, Value bias, Constraint constraint,
                    const ScalePowers& powers) {
  const Value inputs[] = {x, weight, bias};
  Attributes attrs{{"constraint", std::string(constraint_name(constraint))}};
  return x.graph().apply1(op, inputs, powers.record_in(attrs));
}

}  // namespace

Value linear(Value x, Value weight, const LinearOptions& options) {
  return record_linear(kLinearOp, x, weight, options.bias, options.constraint, options.scale_power);
}

Value linear_readout(Value x, Value weight, const LinearReadoutOptions& options) {
  return record_linear(kLinearReadoutOp, x, weight, options.bias, options.constraint,
                       options.scale_power);
}

}  // namespace unitscale

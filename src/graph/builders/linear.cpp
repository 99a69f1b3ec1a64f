#include "unitscale/graph/builders/linear.hpp"

#include "unitscale/ops/linear.hpp"

namespace unitscale {
namespace {

Value record_linear(const OpDef& op, Value x, Value weight, Value bias, Constraint constraint,
                    const ScalePowers& powers) {
  const Value inputs[] = {x, weight, bias};
  return x.graph().apply1(op, inputs,
                          Attributes{{"constraint", std::string(constraint_name(constraint))},
                                     {"power_alpha", powers.alpha},
                                     {"power_beta_x", powers.beta_x},
                                     {"power_beta_weight", powers.beta_weight}});
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

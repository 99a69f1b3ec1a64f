#include "unitscale/graph/builders/residual.hpp"

namespace unitscale {

ResidualSplit residual_split(Value x, double tau) {
  const Value inputs[] = {x};
  const std::vector<Value> outputs = x.graph().apply(kResidualSplitOp, inputs, Attributes{{"tau", tau}});
  return {outputs.at(0), outputs.at(1)};
}

Value residual_add(Value residual, Value skip, double tau) {
  const Value inputs[] = {residual, skip};
  return residual.graph().apply1(kResidualAddOp, inputs, Attributes{{"tau", tau}});
}

}  // namespace unitscale

#include "unitscale/graph/builders/activation.hpp"

#include <string>

namespace unitscale {

Value relu(Value x) {
  const Value inputs[] = {x};
  return x.graph().apply1(kReluOp, inputs, {});
}

Value gelu(Value x, const GeluOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kGeluOp, inputs,
      {{"mult", options.mult},
       {"approximate", std::string(gelu_approximation_name(options.approximate))},
       {"constraint", std::string(constraint_name(options.constraint))}});
}

Value silu(Value x, const SiluOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kSiluOp, inputs,
      {{"mult", options.mult}, {"constraint", std::string(constraint_name(options.constraint))}});
}

Value silu_glu(Value x, Value gate, const SiluGluOptions& options) {
  const Value inputs[] = {x, gate};
  return x.graph().apply1(kSiluGluOp, inputs, {{"mult", options.mult}});
}

}  // namespace unitscale

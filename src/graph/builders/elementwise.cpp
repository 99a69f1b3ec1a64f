#include "unitscale/graph/builders/elementwise.hpp"

#include <string>

#include "unitscale/ops/elementwise.hpp"

namespace unitscale {

Value add(Value a, Value b, const AddOptions& options) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(kAddOp, inputs,
                          {{"constraint", std::string(constraint_name(options.constraint))}});
}

Value add(Value a, float b) {
  const Value constant = a.graph().constant(Tensor::filled(Shape{}, b));
  return add(a, constant);
}

Value mul(Value a, Value b) {
  const Value inputs[] = {a, b};
  return a.graph().apply1(kMulOp, inputs, {});
}

Value scale(Value x, double alpha, double beta) {
  const Value inputs[] = {x};
  return x.graph().apply1(kScaleOp, inputs, {{"alpha", alpha}, {"beta_x", beta}});
}

Value scale_fwd(Value x, double alpha) { return scale(x, alpha, 1.0); }
Value scale_bwd(Value x, double beta) { return scale(x, 1.0, beta); }

}  // namespace unitscale

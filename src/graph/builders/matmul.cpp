#include "unitscale/graph/builders/matmul.hpp"

#include "unitscale/ops/matmul.hpp"

namespace unitscale {

Value matmul(Value left, Value right, const MatmulOptions& options) {
  const Value inputs[] = {left, right};
  return left.graph().apply1(
      kMatmulOp, inputs,
      Attributes{{"constraint", std::string(constraint_name(options.constraint))}});
}

}  // namespace unitscale

#include "unitscale/graph/builders/softmax.hpp"

#include <string>

#include "unitscale/ops/softmax.hpp"

namespace unitscale {

Value softmax(Value x, const SoftmaxOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(
      kSoftmaxOp, inputs,
      {{"mult", options.mult}, {"constraint", std::string(constraint_name(options.constraint))}});
}

}  // namespace unitscale

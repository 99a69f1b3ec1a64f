#include "unitscale/graph/builders/cast.hpp"

#include <string>

namespace unitscale {

Value cast(Value x, DType to, const CastOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(kCastOp, inputs,
                          {{"dtype", std::string(dtype_name(to))},
                           {"rounding", std::string(rounding_name(options.rounding))},
                           {"overflow", std::string(overflow_name(options.overflow))},
                           {"scale", options.scale},
                           {"seed", options.seed}});
}

}  // namespace unitscale

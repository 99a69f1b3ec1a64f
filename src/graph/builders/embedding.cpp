#include "unitscale/graph/builders/embedding.hpp"

#include "unitscale/ops/embedding.hpp"

namespace unitscale {

Value embedding(Value ids, Value table) {
  const Value inputs[] = {ids, table};
  return ids.graph().apply1(kEmbeddingOp, inputs, {});
}

}  // namespace unitscale

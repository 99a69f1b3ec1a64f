#pragma once
// Builder for embedding (the maths and scale rule are in ops/embedding.hpp).
//
//   Value ids = graph.input("ids", {batch, seq}, DType::kI32);  // token ids
//   Value table = graph.parameter("embedding", {vocab, d_model});
//   Value h = embedding(ids, table);                       // [batch, seq, d_model]
//
// The ids are checked (integral, in [0, V)) when the graph runs, since their values are unknown
// when the node is recorded; the table shape is checked at once.

#include "unitscale/graph/graph.hpp"

namespace unitscale {

Value embedding(Value ids, Value table);

}  // namespace unitscale

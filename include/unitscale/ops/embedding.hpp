#pragma once
// embedding (unit scaling, arXiv 2303.11257): a table lookup.
//
//   forward                                       backward (g = dL/dy)
//   y[..., :] = α·table[ids[...], :]              dtable[v, :] = β_table·Σ_{n: ids[n] = v} g[n, :]
//   ids [...] (i32),                              ids: not differentiable (never gets a gradient)
//   table [V, d], y [..., d]
//
// Unit-scaling rule: the lookup copies unit-variance rows, so α = 1. Each table row receives about
// numel(ids)/V token gradients, so the table gradient (zero for unused rows) has mean-square
// numel(ids)/V and β_table = √(V / numel(ids)); it is a weight-gradient scale, never constrained.
//
// The ids are i32 tensors, so any V up to 2^31 − 1 is addressed exactly (float ids were exact only
// below 2^24). The kernels validate each id (in [0, V)) and throw unitscale::Error naming the op,
// the bad id, its position and V.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kEmbeddingOp;  // inputs: ids, table

// The kernels, for direct use and benchmarks. `grad_table` is overwritten (not accumulated).
void embedding_forward(ConstTensorView ids, ConstTensorView table, TensorView y, float alpha);
void embedding_backward(ConstTensorView grad_y, ConstTensorView ids, TensorView grad_table,
                        float beta_table);


// ------------------------------------------------------------------------------------------------
// Builder for embedding.
//
//   Value ids = graph.input("ids", {batch, seq}, DType::kI32);  // token ids
//   Value table = graph.parameter("embedding", {vocab, d_model});
//   Value h = embedding(ids, table);                       // [batch, seq, d_model]
//
// The ids are checked (integral, in [0, V)) when the graph runs, since their values are unknown
// when the node is recorded; the table shape is checked at once.

Value embedding(Value ids, Value table);

}  // namespace unitscale

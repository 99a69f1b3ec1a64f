#pragma once
// embedding (spec/unit_scaling.md §4): a table lookup.
//
//   forward                                       backward (g = dL/dy)
//   y[..., :] = α·table[ids[...], :]              dtable[v, :] = β_table·Σ_{n: ids[n] = v} g[n, :]
//   ids [...] (float holding integer ids),        ids: not differentiable (never gets a gradient)
//   table [V, d], y [..., d]
//
// Unit-scaling rule: the lookup copies unit-variance rows, so α = 1. Each table row receives about
// numel(ids)/V token gradients, so the table gradient (zero for unused rows) has mean-square
// numel(ids)/V and β_table = √(V / numel(ids)); it is a weight-gradient scale, never constrained.
//
// The ids are float tensors (the library's only dtype) holding exact integers; float32 represents
// every integer up to 2^24, which bounds V. The kernels validate each id — integral and in [0, V)
// — and throw unitscale::Error naming the op, the bad id, its position and V.

#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kEmbeddingOp;  // inputs: ids, table

// The kernels, for direct use and benchmarks. `grad_table` is overwritten (not accumulated).
void embedding_forward(ConstTensorView ids, ConstTensorView table, TensorView y, float alpha);
void embedding_backward(ConstTensorView grad_y, ConstTensorView ids, TensorView grad_table,
                        float beta_table);

}  // namespace unitscale

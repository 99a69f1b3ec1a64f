#pragma once
// softmax along the last dimension (arXiv 2303.11257; rules in docs/unit_scaling.md), with mult m
// (u-μP's α_attn-softmax when used on attention logits; must be positive). With s = softmax(m·x)
// over each row of n elements, forward and backward side by side (g = ∂L/∂y):
//
//   y = α · s                          dx = β · m · s ⊙ (g − Σ_j s_j·g_j)
//
// The backward reads the output y and folds 1/α in (s = y/α), so x can be freed after the forward.
//
// Unit-scaling rule: interpolate between the flat limit (every s_j = 1/n: scale n) and the one-hot
// limit (RMS 1/√n: scale √n); the gradient limits are divided by m:
//   α = LI(a, n, √n),  β = LI(a, n/m, √(n/m)),  a = 1/(1 + 4/m²)
// then the constraint over (α, β), default to_output_scale. At m = 1, α = β (n^0.9). The model is
// rough at m = 1 (measured output RMS ≈ 0.83 at n = 1024), accurate for small m.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kSoftmaxOp;

void softmax_forward(ConstTensorView x, TensorView y, float mult, float alpha);
// y is the (scaled) forward output and alpha the scale it was computed with.
void softmax_backward(ConstTensorView grad_y, ConstTensorView y, TensorView grad_x, float mult,
                      float alpha, float beta);


// ------------------------------------------------------------------------------------------------
// Builder for softmax over the last dimension.
//
//   Value p = softmax(logits);                                        // m = 1, to_output_scale
//   Value p = softmax(logits, {.mult = 0.25, .constraint = Constraint::kNone});

struct SoftmaxOptions {
  // softmax(mult·x); must be positive.
  double mult = 1.0;
  // Over (α, β_x).
  Constraint constraint = Constraint::kToOutputScale;
};

Value softmax(Value x, const SoftmaxOptions& options = {});

}  // namespace unitscale

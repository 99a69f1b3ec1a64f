#pragma once
// Elementwise binary ops with NumPy broadcasting, and the scaled-edge primitive
// (arXiv 2303.11257; rules in docs/unit_scaling.md). Shapes align from the right; a dimension of
// size 1 (or a missing one) is repeated to match the other operand.
//
//   forward                                      backward (g = ∂L/∂out, Σ↓a = sum over the
//                                                          dimensions that broadcast a)
//   add:   out = α · (a + b)                      da = β_a · Σ↓a g          db = β_b · Σ↓b g
//   mul:   out = a · b                            da = Σ↓a (g · b)          db = Σ↓b (g · a)
//   scale: y = α · x                              dx = β_x · g
//
// Unit-scaling rule of add, for i.i.d. unit inputs: a + b has std √2, and the gradient reaching a
// sums numel(out)/numel(a) unit gradients, so
//   α = 2^-½ (1 if either operand has one element: adding a scalar is an ordinary add)
//   β_a = (numel(out)/numel(a))^-½,  β_b = (numel(out)/numel(b))^-½
// then the constraint over (α, β_a, β_b), default to_output_scale (all = α): add sits on the
// residual trunk, where gradient paths merge. With a same-shaped pair, none gives β_a = β_b = 1.
//
// mul has no unit-scaling rule (the product of two unit Gaussians already has unit std); it runs
// unscaled in every graph.
//
// scale(x, α, β) is the primitive the unit-scaled ops are made of; scale_fwd(x, α) = scale(x, α, 1)
// and scale_bwd(x, β) = scale(x, 1, β). Its α and β are explicit attributes set by the builder, so
// they apply in unscaled graphs too: it is not a unit-scaling rule. Prefer folding scales into the
// neighbouring op; a scale node is a separate (memory-bound) pass.
//
// Kernels: broadcasting first collapses adjacent dimensions, so the common patterns become
// dedicated contiguous (vectorised, OpenMP-parallel) loops: same shape and scalar operands are one
// flat loop; a row vector [n] over rows, a column [rows, 1] along rows and an outer product are
// one loop per row. Anything else walks contiguous inner segments, deciding per segment (never per
// element) which operand advances. Gradients of broadcast operands are reduced in double in a fixed
// order (scalar: per-block partial sums; row vector: 16 row chunks; column: per-row sums; other
// patterns: one serial pass), so results do not depend on the number of threads. When both
// gradients are wanted and one operand is not broadcast, its gradient is written in the same pass
// over g as the other's reduction.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kAddOp;
extern const OpDef kMulOp;
extern const OpDef kScaleOp;

// out must have the broadcast shape of a and b. Absent gradient views are skipped.
void add_forward(ConstTensorView a, ConstTensorView b, TensorView out, float alpha);
void add_backward(ConstTensorView grad_out, TensorView grad_a, TensorView grad_b, float beta_a,
                  float beta_b);
void mul_forward(ConstTensorView a, ConstTensorView b, TensorView out);
void mul_backward(ConstTensorView grad_out, ConstTensorView a, ConstTensorView b, TensorView grad_a,
                  TensorView grad_b);
// y = factor · x, elementwise over equal shapes (the forward and the backward of scale).
void scale_kernel(ConstTensorView x, TensorView y, float factor);


// ------------------------------------------------------------------------------------------------
// Builders for add, mul and the scaled-edge primitive.
//
//   Value y = add(a, b);                                   // α = 2^-½, to_output_scale
//   Value y = add(a, b, {.constraint = Constraint::kNone}); // β_a, β_b independent
//   Value y = add(x, 1.0f);                                // a plain scalar: an ordinary add
//   Value z = mul(a, b);                                   // unscaled
//   Value h = scale_fwd(x, 0.5);                           // 0.5·x forward, gradient unchanged
//   Value h = scale_bwd(x, 2.0);                           // x forward, 2·g backward

struct AddOptions {
  // Over (α, β_a, β_b). Arity-2 and matmul-only constraints (to_grad_input_scale,
  // to_left/right_grad_scale) are rejected: add has two inputs.
  Constraint constraint = Constraint::kToOutputScale;
};

Value add(Value a, Value b, const AddOptions& options = {});
// Adds a constant: recorded as add with a one-element constant, which the rule treats as an
// ordinary, unscaled add.
Value add(Value a, float b);
Value mul(Value a, Value b);

// The primitive scale(x, α, β): α·x forward, β·g backward. The scales are explicit, so they apply
// whether or not the graph is unit-scaled.
Value scale(Value x, double alpha, double beta);
Value scale_fwd(Value x, double alpha);
Value scale_bwd(Value x, double beta);

}  // namespace unitscale

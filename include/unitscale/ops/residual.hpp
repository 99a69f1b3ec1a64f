#pragma once
// residual_split and residual_add (arXiv 2303.11257, with the residual τ rule of u-μP, arXiv
// 2407.17465): delayed residual scaling.
//
// A unit-scaled residual block computes  x → (τ·f(x) + x)/√(1+τ²),  τ = std ratio of branch to
// skip, as
//
//   (branch, skip) = residual_split(x, τ)        y = residual_add(f(branch), skip, τ)
//
//   forward                                       backward (g = dL/dy; g_b, g_s = dL/dbranch, dL/dskip)
//   residual_split: branch = x, skip = x          dx = β_branch·g_b + β_skip·g_s
//   residual_add:   y = α_r·r + α_s·s             dr = g,  ds = g        (identity on both)
//
//   β_branch = α_r = τ/√(1+τ²),   β_skip = α_s = 1/√(1+τ²)
//
// The branch weights act in the forward pass at residual_add and in the backward pass at
// residual_split. Because f's backward is linear in its incoming gradient, the gradient reaching x
// is τ/√(1+τ²)·J_fᵀ·g + g/√(1+τ²): exactly the gradient of the block, while every tensor inside f
// sees the unit-scaled (unweighted) gradient g. No constraint is involved.
//
// Unscaled graphs (SP): the scales are not resolved, so residual_add is the plain x + f(x) and
// residual_split is a plain fork (dx = g_b + g_s) whatever τ is, as in spec §11 ("the plain
// residual is x + f(x)"). τ is still validated.
//
// Attributes: "tau" (double, required, in [2^-126, 2^126] so that both weights are positive normal
// floats; τ = 0 would make a weight 0, which is not a unit scale). Resolved scales:
// "alpha_residual", "alpha_skip" (residual_add) and "beta_branch", "beta_skip" (residual_split,
// named after the output whose gradient they weight). An output gradient that is absent counts as
// zero.

#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kResidualSplitOp;  // inputs: x; outputs: branch, skip
extern const OpDef kResidualAddOp;    // inputs: residual, skip; output: y

// The two branch weights of a residual with std ratio τ: {τ/√(1+τ²), 1/√(1+τ²)}.
struct ResidualWeights {
  double branch;
  double skip;
};
ResidualWeights residual_weights(double tau);

// Kernels. Absent gradient views (data() == nullptr) count as zero in residual_split_backward.
void residual_split_forward(ConstTensorView x, TensorView branch, TensorView skip);
void residual_split_backward(ConstTensorView grad_branch, ConstTensorView grad_skip,
                             TensorView grad_x, float beta_branch, float beta_skip);
void residual_add_forward(ConstTensorView residual, ConstTensorView skip, TensorView y,
                          float alpha_residual, float alpha_skip);

// The u-μP residual τ rule (arXiv 2407.17465, its reference library's
// transformer_residual_scaling_rule). Returns τ_0 … τ_{2L−1}
// for a stack of `layers` = L transformer layers whose 2L branches alternate attention (even i)
// and MLP (odd i):
//
//   α_mlp = α_res·√(2/(1 + r²)),  α_attn = r·α_mlp          (α_res = residual_mult, r = residual_attn_ratio)
//   n_attn(i) = ⌊(i+1)/2⌋,  n_mlp(i) = ⌊i/2⌋                (earlier branches of each kind)
//   τ_i = α_branch(i) / √(L + n_attn(i)·α_attn² + n_mlp(i)·α_mlp²)
//
// Equivalently the stream after branch k is (√L·emb + Σ_{j≤k} α_j f_j)/√(L + Σ_{j≤k} α_j²): each
// branch enters with weight α_j/√L relative to the embedding (depth-μP's 1/√L), the final stream
// has unit variance, and with both hyperparameters 1 the embedding, the attention branches and
// the MLP branches each hold ⅓ of its variance.
//
// The reference signature is (residual_mult = 1, residual_attn_ratio = 1, layers); C++ cannot
// default parameters before a required one, so `layers` comes first here. Throws
// unitscale::Error if layers < 1, or residual_mult or residual_attn_ratio is not finite and
// positive: a zero would give branches τ = 0, which the residual ops refuse (a weight of 0 is not
// a unit scale).
std::vector<double> transformer_residual_scaling_rule(int layers, double residual_mult = 1.0,
                                                      double residual_attn_ratio = 1.0);


// ------------------------------------------------------------------------------------------------
// Builders for residual_split and residual_add.
// A residual block with branch f and std ratio τ (from transformer_residual_scaling_rule):
//
//   auto [branch, skip] = residual_split(x, tau);
//   Value y = residual_add(f(branch), skip, tau);    // unit graphs: (τ·f(x) + x)/√(1+τ²)
//                                                    // unscaled graphs: f(x) + x
//
// `branch` must feed f and `skip` the add; in an unscaled graph the two outputs are the same plain
// fork, in a unit-scaled one they weight the backward pass differently.

struct ResidualSplit {
  Value branch;  // feeds the residual branch f
  Value skip;    // feeds residual_add's skip input
};

ResidualSplit residual_split(Value x, double tau);
Value residual_add(Value residual, Value skip, double tau);

}  // namespace unitscale

#pragma once
// matmul (arXiv 2303.11257, with a batch-aware β; rules in docs/unit_scaling.md):
//
//   forward                                   backward (g = ∂loss/∂out)
//   out[..., M, N] = α · L[..., M, K] · R[..., K, N]
//                                             dL = β_L · Σ_broadcast g · Rᵀ
//                                             dR = β_R · Σ_broadcast Lᵀ · g
//
// The batch dims (all but the last two) broadcast as in NumPy; either operand may be 2-D.
// Σ_broadcast sums the per-batch products over the output batch matrices that one matrix of the
// operand fed.
//
// Unit-scaling rule, in the i.i.d. N(0,1) model: an output element sums K products, an element of
// g·Rᵀ sums N, and a gradient of an operand broadcast over b batch matrices sums b times as many.
// With b_X = (output batch matrices) / (batch matrices of X), the number of output matrices each
// matrix of X contributes to (1 when X is not broadcast):
//   α = K^-½,  β_L = (N · b_L)^-½,  β_R = (M · b_R)^-½
// then the constraint over (α, β_L, β_R); the default to_output_scale sets all three to K^-½. The
// reference library uses b = 1 always, so its β_R is too large by √b for a broadcast weight.
//
// The scales are folded into the GEMMs' alpha. A 2-D right operand under a batched left one is
// one (batch·M × K) · (K × N) GEMM forward and for both gradients (the Σ over the broadcast batch
// of dR falls out of the tall GEMM).
//
// Low precision: with GemmInputFormats attributes (ops/gemm_input_formats.hpp, set by
// simulate_format) L and R are rounded to the input format and g to the gradient format, each
// operand as a whole (one per-tensor scale each), before every GEMM above.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kMatmulOp;

// The kernels, for direct use and benchmarks; the shapes must already be valid (see kMatmulOp's
// shape inference). Absent (null) gradient views are skipped.
void matmul_forward(ConstTensorView left, ConstTensorView right, TensorView out, float alpha);
void matmul_backward(ConstTensorView grad_out, ConstTensorView left, ConstTensorView right,
                     TensorView grad_left, TensorView grad_right, float beta_left,
                     float beta_right);


// ------------------------------------------------------------------------------------------------
// Builder for matmul.
//
//   Value scores = matmul(q, k_t);                                  // unit-scaled, to_output_scale
//   Value y = matmul(x, w, {.constraint = Constraint::kNone});      // on a cut edge only
//
// Batch dims broadcast as in NumPy; the gradient scale of a broadcast operand accounts for the
// batch matrices it is summed over.

struct MatmulOptions {
  // Over (α, β_left, β_right); every constraint applies, including to_left_grad_scale and
  // to_right_grad_scale.
  Constraint constraint = Constraint::kToOutputScale;
};

Value matmul(Value left, Value right, const MatmulOptions& options = {});

}  // namespace unitscale

#pragma once
// conv1d (arXiv 2303.11257; rules in docs/unit_scaling.md), a 1-D convolution (cross-correlation,
// as in PyTorch) with zero padding, stride s, dilation d and g groups:
//
//   x [..., C_in, L], W [C_out, C_in/g, k], b [C_out] (optional)  ->  y [..., C_out, L_out]
//   L_out = ⌊(L + 2·padding − d·(k − 1) − 1) / s⌋ + 1
//
//   forward                                              backward (g = ∂loss/∂y)
//   y[n, o, t] = α · (b[o] + Σ_{c,j} W[o, c, j] ·        dx[n, c', t·s + j·d − p] += β_x · Σ_o W[o, c, j] · g[n, o, t]
//                       x[n, c', t·s + j·d − p])          dW[o, c, j] = β_W · Σ_{n,t} g[n, o, t] · x[n, c', t·s + j·d − p]
//     (c' = group(o)·C_in/g + c; x is 0 outside [0, L))   db[o] = β_b · Σ_{n,t} g[n, o, t]
//
// The leading dims of x (any number, including none) are flattened into a batch of B samples.
//
// Unit-scaling rule, in the i.i.d. N(0,1) model (an output sums C_in/g·k products; an input element
// feeds C_out/g channels at about k/s taps each), with scale powers (p0, p1, p2):
//   α = (C_in/g · k)^-p0,  β_x = (s·g / (C_out·k))^p1,  β_W = β_b = (L_out·B)^-p2
// then the constraint over (α, β_x), default to_output_scale. Unlike the reference library, the
// chosen constraint is honoured (spec §12 item 3). Weight and bias gradient scales are never
// constrained.
//
// Kernels: per sample and group, im2col gathers the zero-padded patches into a
// [C_in/g·k, L_out] matrix (the padding is applied there, once) and one GEMM with α folded in
// gives the group's [C_out/g, L_out] block of y in place. The backward GEMMs are Wᵀ·g (then col2im
// scatters it into dx) and g·colsᵀ (summed over the batch into dW).

#include <cstdint>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/ops/scale_powers.hpp"

namespace unitscale {

extern const OpDef kConv1dOp;

struct Conv1dGeometry {
  std::int64_t stride = 1;
  std::int64_t padding = 0;
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
};

// The kernels, for direct use and benchmarks; the shapes must already be valid (see kConv1dOp's
// shape inference). Absent (null) bias / gradient views are skipped.
void conv1d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                    const Conv1dGeometry& geometry, float alpha);
void conv1d_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                     TensorView grad_x, TensorView grad_weight, TensorView grad_bias,
                     const Conv1dGeometry& geometry, float beta_x, float beta_weight,
                     float beta_bias);


// ------------------------------------------------------------------------------------------------
// Builder for conv1d.
//
//   Value h = conv1d(x, w);                                            // x [B, C_in, L]
//   Value y = conv1d(x, w, {.bias = b, .padding = 5, .groups = 4});
//   Value z = conv1d(x, w, {.stride = 2, .constraint = Constraint::kGMean});

struct Conv1dOptions {
  Value bias = {};
  std::int64_t stride = 1;
  std::int64_t padding = 0;  // zeros on both ends
  std::int64_t dilation = 1;
  std::int64_t groups = 1;
  // Over (α, β_x), honoured as given; weight and bias gradient scales are never constrained.
  Constraint constraint = Constraint::kToOutputScale;
  // α = (C_in/g·k)^-alpha, β_x = (s·g/(C_out·k))^beta_x, β_W = β_b = (B·L_out)^-beta_weight.
  ScalePowers scale_power = {};
};

Value conv1d(Value x, Value weight, const Conv1dOptions& options = {});

}  // namespace unitscale

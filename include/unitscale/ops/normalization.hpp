#pragma once
// layer_norm and rms_norm over the last dimension (arXiv 2303.11257; rules in
// docs/unit_scaling.md), with an optional elementwise affine weight w [d] (and bias b [d] for
// layer_norm). Rows are x[r, :], d = x.dim(-1), B = numel(x) / d rows share the affine parameters.
// Statistics are accumulated in vectorised float lanes over the centred row and in double across
// blocks of the row and across rows: accurate to float precision even for rows with a large common
// offset (see normalization.cpp).
//
//   layer_norm                                      backward (g = dL/dy)
//     μ = mean(x),  rstd = 1/√(var(x) + ε)            ĝ = g·w   (g when there is no weight)
//     x̂ = (x − μ)·rstd                                 dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
//     y = α·(x̂·w + b)                                  dw = β_w·Σ_rows g·x̂,   db = β_b·Σ_rows g
//
//   rms_norm
//     rstd = 1/√(mean(x²) + ε)                         ĝ = g·w
//     x̂ = x·rstd                                       dx = rstd·(ĝ − x̂·mean(ĝ·x̂))
//     y = α·x̂·w                                        dw = β_w·Σ_rows g·x̂
//
// Unit-scaling rule: a normalised row already has unit variance and the plain input gradient is
// already unit, so α = 1 and β_x = 1 (plain autograd; no constraint is needed because α = β_x).
// The affine parameters sum B row gradients of std ≈ 1, so β_w = β_b = B^-½ (weight-gradient
// scales are never constrained). The op's unit_scale sets only "beta_weight" / "beta_bias"; the
// kernels still honour an "alpha" / "beta_x" attribute if one is set.
//
// Attributes: "eps" (double, default 1e-5, must be ≥ 0 and finite). Any such eps gives the
// double-precision result rounded to float: a row whose var + ε is tiny (below 2^-100) has its
// statistics recomputed in double, and one whose rstd (times α or β_x) is beyond float's range is
// normalised in double, so rms_norm([1e-40]) with ε = 0 is 1 and a constant row with ε = 1e-100
// gives x̂ = 0. With ε = 0, a row of zero variance is 0/0: its x̂, y and gradients are NaN.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kLayerNormOp;  // inputs: x, weight?, bias?
extern const OpDef kRmsNormOp;    // inputs: x, weight?

inline constexpr double kDefaultNormEps = 1e-5;

// The kernels, for direct use and benchmarks. Absent (null) weight / bias / gradient views are
// skipped; x, y, grad_y, grad_x are [..., d], weight and bias [d].
void layer_norm_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                        TensorView y, double eps, float alpha);
void layer_norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                         TensorView grad_x, TensorView grad_weight, TensorView grad_bias,
                         double eps, float beta_x, float beta_weight, float beta_bias);
void rms_norm_forward(ConstTensorView x, ConstTensorView weight, TensorView y, double eps,
                      float alpha);
void rms_norm_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                       TensorView grad_x, TensorView grad_weight, double eps, float beta_x,
                       float beta_weight);


// ------------------------------------------------------------------------------------------------
// Builders for layer_norm and rms_norm over the last dimension. Affine parameters are off by
// default (the u-μP design default); pass a weight (and for layer_norm a bias) of shape [d] to
// turn them on.
//
//   Value h = rms_norm(x);                                       // no affine
//   Value h = layer_norm(x, {.weight = gain, .bias = shift});    // affine, eps 1e-5
//   Value h = rms_norm(x, {.weight = gain, .eps = 1e-6});

struct LayerNormOptions {
  Value weight = {};  // [d], optional
  Value bias = {};    // [d], optional
  double eps = kDefaultNormEps;
};

struct RmsNormOptions {
  Value weight = {};  // [d], optional
  double eps = kDefaultNormEps;
};

Value layer_norm(Value x, const LayerNormOptions& options = {});
Value rms_norm(Value x, const RmsNormOptions& options = {});

}  // namespace unitscale

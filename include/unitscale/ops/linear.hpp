#pragma once
// linear and linear_readout (arXiv 2303.11257; rules in docs/unit_scaling.md):
//
//   y = α · (x · Wᵀ + b)        x [..., in], W [out, in], b [out] (optional), y [..., out]
//
// Unit-scaling rule, with B = numel(x) / in rows sharing the weight and scale powers (p0, p1, p2):
//   α = in^-p0,  β_x = out^-p1,  β_W = β_b = B^-p2
// then the constraint over (α, β_x); weight and bias gradient scales are never constrained.
//   linear:          p = (½, ½, ½), constraint to_output_scale  ⇒ β_x = in^-½
//   linear_readout:  p = (1, ½, ½), constraint none (it sits after the last residual: a cut edge)
// Backward: dx = β_x · g · W,  dW = β_W · gᵀ · x,  db = β_b · Σ_rows g. The scales are folded into
// the GEMMs' alpha, so a unit-scaled linear costs exactly the three GEMMs of a plain one.

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/ops/scale_powers.hpp"

namespace unitscale {

extern const OpDef kLinearOp;
extern const OpDef kLinearReadoutOp;

// The kernels, for direct use and benchmarks. Absent (null) bias / gradient views are skipped.
void linear_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                    float alpha);
void linear_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView weight,
                     TensorView grad_x, TensorView grad_weight, TensorView grad_bias, float beta_x,
                     float beta_weight, float beta_bias);


// ------------------------------------------------------------------------------------------------
// Builders for linear and linear_readout.
//
//   Value h = linear(x, w1);                                    // unit-scaled, to_output_scale
//   Value logits = linear_readout(h, w_out);                    // α = 1/fan_in, unconstrained
//   Value y = linear(x, w, {.bias = b, .constraint = Constraint::kGMean});

struct LinearOptions {
  Value bias = {};
  Constraint constraint = Constraint::kToOutputScale;
  ScalePowers scale_power = {};
};

struct LinearReadoutOptions {
  Value bias = {};
  Constraint constraint = Constraint::kNone;
  ScalePowers scale_power = {.alpha = 1.0};
};

Value linear(Value x, Value weight, const LinearOptions& options = {});
Value linear_readout(Value x, Value weight, const LinearReadoutOptions& options = {});

}  // namespace unitscale

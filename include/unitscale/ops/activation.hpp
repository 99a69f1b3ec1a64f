#pragma once
// Pointwise activations (arXiv 2303.11257; rules in docs/unit_scaling.md). m is the op's `mult`
// (u-μP's α_ffn-act, default 1, must be positive); σ is the logistic sigmoid, Φ and φ the standard
// normal CDF and density. Forward and backward side by side (g = ∂L/∂y):
//
//   relu:      y = max(x, 0)                    dx = g · [x > 0]
//   gelu:      y = α · gelu(m·x)/m = α · x·Φ(m·x)
//                                               dx = β · g · (Φ(m·x) + m·x·φ(m·x))
//     tanh approximation (GeluApproximation::kTanh), u = √(2/π)·(m·x + 0.044715·(m·x)³):
//              y = α · ½x·(1 + tanh u)
//              dx = β · g · (½(1 + tanh u) + ½x·(1 − tanh² u)·√(2/π)·(m + 0.134145·m³x²))
//   silu:      y = α · x·σ(m·x)                 dx = β · g · σ(m·x)·(1 + m·x·(1 − σ(m·x)))
//   silu_glu:  y = s · x·g′·σ(m·g′)   (g′ the gate, the SwiGLU core)
//                                               dx = s · g · g′·σ(m·g′)
//                                               dg′ = s · g · x·σ(m·g′)·(1 + m·g′·(1 − σ(m·g′)))
//
// Unit-scaling rules. With LI(a, lo, hi) = lo^(1−a)·hi^a, both gelu and silu interpolate between
// m → 0, where f ≈ x/2 (output and gradient std ½, scale 2), and m → ∞, which is ReLU (output std
// √((1−1/π)/2), gradient std √½):
//   gelu:  α = LI(a, 2, √(2/(1−1/π))),  β = LI(a, 2, √2),   a = 1/(1 + 1/(4m²))
//   silu:  α as gelu,                   β = LI(a′, 2, √2),  a′ = 1/(1 + 1/m²)
//   then the constraint over (α, β), default to_output_scale (both on the residual trunk's
//   activation path). The tanh approximation uses the exact form's scales.
//   silu_glu: one scale s = LI(a′, 2, √2) on the output and both gradients (consistent by
//   construction, so it takes no constraint).
//   relu: the spec gives no unit-scaling rule (the reference library has none), so relu runs
//   unscaled (α = β = 1) in every graph. Its output std is √((1−1/π)/2) ≈ 0.584 and its gradient
//   std √½ for unit inputs; gelu with a large mult is the unit-scaled alternative.
//
// Numerics. The gelu, silu and silu_glu kernels compute in FP32 with their own vectorised exp and
// normal CDF (the instruction set is chosen at run time, like the bulk conversions'), within a few
// ulps of the exact values, tails included; the tanh form evaluates ½(1 + tanh u) as σ(2u). At
// x = ±∞ the gradients take their limits, while gelu and silu of −∞ are NaN (−∞·0), as the
// formulas give.

#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

extern const OpDef kReluOp;
extern const OpDef kGeluOp;
extern const OpDef kSiluOp;
extern const OpDef kSiluGluOp;

// Which form of gelu to compute: gelu's "approximate" attribute, named "none" / "tanh" (PyTorch's
// names).
enum class GeluApproximation { kNone, kTanh };
std::string_view gelu_approximation_name(GeluApproximation approximation);
// Throws unitscale::Error naming gelu and the valid names for anything else.
GeluApproximation gelu_approximation_from_name(std::string_view name);
template <>
struct EnumAttribute<GeluApproximation> {
  static const EnumType& type();
};

// The kernels. Absent gradient views are skipped.
void relu_forward(ConstTensorView x, TensorView y);
void relu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x);
void gelu_forward(ConstTensorView x, TensorView y, float mult, GeluApproximation approximation,
                  float alpha);
void gelu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x, float mult,
                   GeluApproximation approximation, float beta);
void silu_forward(ConstTensorView x, TensorView y, float mult, float alpha);
void silu_backward(ConstTensorView grad_y, ConstTensorView x, TensorView grad_x, float mult,
                   float beta);
void silu_glu_forward(ConstTensorView x, ConstTensorView gate, TensorView y, float mult,
                      float alpha);
void silu_glu_backward(ConstTensorView grad_y, ConstTensorView x, ConstTensorView gate,
                       TensorView grad_x, TensorView grad_gate, float mult, float beta_x,
                       float beta_gate);


// ------------------------------------------------------------------------------------------------
// Builders for relu, gelu, silu and silu_glu.
//
//   Value h = gelu(x);                                                 // m = 1, to_output_scale
//   Value h = gelu(x, {.mult = 0.25, .approximate = GeluApproximation::kTanh});
//   Value h = silu(x, {.constraint = Constraint::kNone});
//   Value h = silu_glu(up, gate, {.mult = 2.0});                       // SwiGLU core
//   Value h = relu(x);                                                 // never scaled

struct GeluOptions {
  // u-μP's α_ffn-act: gelu(mult·x)/mult; must be positive.
  double mult = 1.0;
  GeluApproximation approximate = GeluApproximation::kNone;
  // Over (α, β_x).
  Constraint constraint = Constraint::kToOutputScale;
};

struct SiluOptions {
  // x·σ(mult·x); must be positive.
  double mult = 1.0;
  // Over (α, β_x).
  Constraint constraint = Constraint::kToOutputScale;
};

struct SiluGluOptions {
  // x·gate·σ(mult·gate); must be positive.
  double mult = 1.0;
};

Value relu(Value x);
Value gelu(Value x, const GeluOptions& options = {});
Value silu(Value x, const SiluOptions& options = {});
Value silu_glu(Value x, Value gate, const SiluGluOptions& options = {});

}  // namespace unitscale

#pragma once
// Builders for relu, gelu, silu and silu_glu (the maths and scale rules are in
// ops/activation.hpp).
//
//   Value h = gelu(x);                                                 // m = 1, to_output_scale
//   Value h = gelu(x, {.mult = 0.25, .approximate = GeluApproximation::kTanh});
//   Value h = silu(x, {.constraint = Constraint::kNone});
//   Value h = silu_glu(up, gate, {.mult = 2.0});                       // SwiGLU core
//   Value h = relu(x);                                                 // never scaled

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

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

#pragma once
// The transformer MLPs (arXiv 2407.17465's reference layer uses SwiGLU):
//
//   SwiGluMlp:  y = down(silu_glu(up(x), gate(x), mult))      up, gate: W → e·W;  down: e·W → W
//               silu_glu(a, g) = a·g·σ(mult·g)
//   GeluMlp:    y = down(gelu(up(x), mult))                   gelu(m·x)/m
//
// mult is u-μP's α_ffn-act (ffn_act_mult). Parameters "<name>.up.weight", "<name>.gate.weight"
// (SwiGLU only) and "<name>.down.weight", hidden weights.
//
// In unit-scaled graphs the linears are unconstrained by default (linear_constraint = kNone):
// the up (and gate) ratio β_x/α = (W/(e·W))^½ and the down ratio (e·W/W)^½ cancel along the
// branch, and silu_glu's single scale and gelu's constrained scales add no ratio, so the branch's
// gradient is exact while every tensor inside sees unit-scaled gradients (arXiv 2303.11257 §5.1).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/nn/layers.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/ops/constraint.hpp"

namespace unitscale {

struct MlpConfig {
  std::int64_t width = 0;
  std::int64_t expansion = 2;  // e: the hidden width is e·width
  std::optional<int> depth = {};
  double ffn_act_mult = 1.0;  // α_ffn-act
  Constraint linear_constraint = Constraint::kNone;
};

class SwiGluMlp {
 public:
  // Throws unitscale::Error naming the module for a size below 1 or a mult that is not finite and
  // positive.
  SwiGluMlp(Model& model, std::string_view name, const MlpConfig& config);
  Value operator()(Value x) const;  // [..., width] → [..., width]

  const MlpConfig& config() const { return config_; }
  const Linear& up() const { return up_; }
  const Linear& gate() const { return gate_; }
  const Linear& down() const { return down_; }

 private:
  std::string name_;
  MlpConfig config_;
  Linear up_;
  Linear gate_;
  Linear down_;
};

class GeluMlp {
 public:
  GeluMlp(Model& model, std::string_view name, const MlpConfig& config);
  Value operator()(Value x) const;

  const MlpConfig& config() const { return config_; }
  const Linear& up() const { return up_; }
  const Linear& down() const { return down_; }

 private:
  std::string name_;
  MlpConfig config_;
  Linear up_;
  Linear down_;
};

}  // namespace unitscale

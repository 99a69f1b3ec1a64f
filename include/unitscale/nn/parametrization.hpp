#pragma once
// Parametrization: the policy that gives each parameter its initialisation, forward multiplier,
// weight-gradient scale, learning-rate factors and weight-decay mode (a ParameterRule), plus the
// attention-logit scale and whether ops are unit-scaled. Model code is the same for every scheme;
// only this policy differs. Sources: u-μP (Blake et al., arXiv 2407.17465: its parametrization
// and optimizer rules), μP (Yang et al., "Tensor Programs V", arXiv 2203.03466, Table 8, as
// microsoft/mup implements it) and unit scaling (arXiv 2303.11257). docs/umup.md puts the three
// side by side.
//
// Notation: η the global LR; fan_in, fan_out from ParameterInfo; fan_in(p) the optimizer's fan-in
// of the *shape* (shape[0] for 1-D, the product of all dims but the first otherwise, so an
// embedding [V, d] has fan_in(p) = d); D = depth^-½ for parameters in the residual stack (depth =
// L blocks, or 2L branches by option), 1 elsewhere; σ(n) the SP weight init std for fan-in n:
// 1/√(3n) (PyTorch's U(±1/√n), the default) or 0.02 (the "gpt2" variant).
//
// SP: ops unscaled (α = β = 1, residual x + f(x)); attention logits q·kᵀ/√d_head.
//   role       init             multiplier   Adam LR   SGD LR   weight decay
//   embedding  N(0, 1)          1            η         η        coupled to LR
//   weight,    σ(fan_in)        1            η         η        coupled to LR
//   input, output
//   bias       0                1            η         η        coupled to LR
//   norm       1                1            η         η        coupled to LR
//
// μP (TP-V Table 8 form, as microsoft/mup): width multipliers against the parameter's base
// shape. A hidden weight is matrix-like (two width dims): m_in = fan_in(p)/fan_in(p of the base),
// m_out = shape[0]/base[0]. Every other parameter is vector-like (one width dim, or none for, say,
// a readout bias): m_w = shape[d]/base[d] over its width dim d (1 if it has none). μP equals SP
// exactly at the base shape. Attention logits q·kᵀ/d_head. Weight decay coupled to the LR.
//   role       init                          multiplier   Adam LR       SGD LR
//   embedding  N(0, 1)                       α_emb        η·m_w^e       η·m_w
//   input      σ(fan_in)                     α_emb        η             η·m_w
//   weight     σ(fan_in/m_in)·√(1/m_in)      1            η/m_in        η·m_out/m_in
//   output     σ(fan_in/m_w)                 α_out/m_w    η             η·m_w
//   bias       0                             1            η             η·m_w
//   norm       1                             1            η             η·m_w
//   (e = embedding-LR exponent, 0 by default for μP; α_emb = α_out = 1 by default.)
//
// u-μP: ops unit-scaled with the τ residual rule; attention logits q·kᵀ/d_head. No base shapes.
//   role       init      multiplier        weight grad      Adam LR              SGD LR (readout
//                                                                                 kToOutputScale)
//   embedding  N(0, 1)   1                 √(V/numel(ids))  η·D·fan_out^e        Adam·fan_in(p)
//   weight     N(0, 1)   1/√fan_in         B^-½             η·D/√fan_in(p)       Adam·fan_in(p)
//   input      N(0, 1)   1/√fan_in         B^-½             η·D/√fan_in(p)       Adam·fan_in(p)
//   output     N(0, 1)   1/fan_in (bwd     B^-½             η·D                  η·D
//                        1/√fan_out)
//   bias       0         1 (enters as α·b) B^-½             η·D                  Adam·shape[0]
//   norm       1         1                 B^-½             η·D                  Adam·shape[0]
//   (e = −½ by default, the paper's empirical 1/√d_model embedding rule. With the SGD readout
//   constraint kNone, the default, the readout gradient is unit-scaled and SGD uses the Adam
//   factors.) Weight decay is independent of the LR: λ_p = λ/lr_p.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/graph/parameter_info.hpp"
#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/tensor/shape.hpp"

namespace unitscale {

enum class Scheme { kSP, kMuP, kUMuP };
std::string_view scheme_name(Scheme scheme);          // "SP", "muP", "u-muP": files, flags
std::string_view scheme_display_name(Scheme scheme);  // "SP", "μP", "u-μP": plots, reports
// The command-line spelling "sp", "mup" or "umup"; throws unitscale::Error naming `flag` otherwise.
Scheme scheme_from_flag(std::string_view name, std::string_view flag);

// The SP weight initialisation, which μP inherits at its base shape.
enum class SpInit {
  kPyTorchUniform,  // U(±1/√fan_in), std 1/√(3·fan_in): PyTorch's nn.Linear default
  kGpt2Normal,      // N(0, 0.02²), as GPT-2
};

// What the u-μP depth factor D = depth^-½ counts. The u-μP paper's reference code counts blocks;
// Aleph-Alpha's scaling code counts residual branches (2 per transformer block): a constant √2
// that the global LR absorbs.
enum class DepthConvention {
  kBlocks,    // depth = L
  kBranches,  // depth = 2L
};

// u-μP's SGD rule depends on how the readout's backward is constrained (arXiv 2407.17465).
enum class SgdReadoutConstraint {
  kNone,           // unconstrained readout (the default): unit-scaled gradients, SGD = Adam factors
  kToOutputScale,  // readout backward tied to 1/fan_in: SGD factors from TP-V's MuSGD
};

enum class MissingMetadata {
  kError,       // a parameter without ParameterInfo throws (the default)
  kUnscaledLr,  // it gets SP's rule (plain init, multiplier 1, LR factor 1)
};

enum class NormWeightDecay { kDecay, kExclude };

struct ParametrizationOptions {
  SpInit sp_init = SpInit::kPyTorchUniform;  // SP, and μP through its base shapes
  // The exponent e of the embedding LR factor (fan_out^e for u-μP, m_out^e for μP). Unset: the
  // scheme's default, 0 for μP and −½ for u-μP. SP ignores it.
  std::optional<double> embedding_lr_exponent = {};
  // L, the number of residual blocks; required by u-μP when a parameter has a depth.
  int residual_blocks = 0;
  DepthConvention depth_convention = DepthConvention::kBlocks;
  SgdReadoutConstraint sgd_readout = SgdReadoutConstraint::kNone;
  MissingMetadata missing_metadata = MissingMetadata::kError;
  NormWeightDecay norm_weight_decay = NormWeightDecay::kDecay;
  // μP's input and output multipliers α_emb and α_out (TP-V's hyperparameters).
  double mup_input_multiplier = 1.0;
  double mup_output_multiplier = 1.0;
};

class Parametrization {
 public:
  // Throws unitscale::Error on a bad option (residual_blocks < 0, a non-finite exponent or
  // multiplier).
  explicit Parametrization(Scheme scheme, ParametrizationOptions options = {});

  Scheme scheme() const { return scheme_; }
  const ParametrizationOptions& options() const { return options_; }
  double embedding_lr_exponent() const;

  // μP's base shape of the parameter `name`: its shape in the base model, where μP equals SP.
  // Setting the same shape again does nothing (idempotent); a different one throws
  // unitscale::Error. Every scheme accepts base shapes so that model code stays the same; only μP
  // reads them.
  void set_base_shape(std::string_view name, const Shape& base_shape);
  std::optional<Shape> base_shape(std::string_view name) const;

  // The rule for the parameter `name` of shape `shape`. Throws unitscale::Error naming the
  // parameter if the metadata is missing (unless allowed) or invalid for the shape, a fan-in is
  // 0, a μP parameter has no base shape or one that disagrees with its width dims, or a u-μP
  // parameter has a depth but the policy no residual_blocks (or the depth is out of range).
  ParameterRule rule(std::string_view name, const Shape& shape,
                     const std::optional<ParameterInfo>& info) const;

  // The factor on q·kᵀ before the softmax: 1/√d_head (SP) or 1/d_head (μP, u-μP), before any
  // α_attn. Throws unitscale::Error if d_head < 1.
  double attention_logit_scale(std::int64_t d_head) const;

  // kUnscaled for SP and μP (α = β = 1, plain residual x + f(x)); kUnit for u-μP.
  Scaling op_scaling() const {
    return scheme_ == Scheme::kUMuP ? Scaling::kUnit : Scaling::kUnscaled;
  }

 private:
  Scheme scheme_;
  ParametrizationOptions options_;
  std::map<std::string, Shape, std::less<>> base_shapes_;
};

// The optimizer's fan-in of a parameter shape (u-μP, arXiv 2407.17465): shape[0] for 1-D,
// shape[1] for 2-D, and the product of all dims but the first for higher ranks. Throws
// unitscale::Error naming `name` for a scalar shape.
std::int64_t optimizer_fan_in(std::string_view name, const Shape& shape);

}  // namespace unitscale

#pragma once
// PrecisionConfig: the precision a training task runs in, as the tasks' configs and
// unitscale-train's --simulate, --critical-matmuls, --per-tensor-scaling, --stochastic-gradients,
// --round-attention, --loss-scale, --scalify, --scalify-state and --master-weights give it. The
// task applies a simulate_format recipe (graph/simulate_format.hpp) to its training forward and
// its evaluation forwards alike, so the model is evaluated as it trains, and records the loss scale
// in its training step; a scale propagation recipe rewrites the whole recorded step instead
// (train/scalified_step.hpp), evaluation forwards included.

#include <cstdint>
#include <optional>
#include <string>

#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/graph/simulate_format.hpp"
#include "unitscale/optim/loss_scaling.hpp"

namespace unitscale {

struct PrecisionConfig {
  // "fp32", or a simulate_format recipe: "fp8" (E4M3 matmul inputs, E5M2 gradients),
  // "fp8-critical" (fp8 with the attention-out and FFN-down matmuls kept in fp32), "fp16" or
  // "bf16" (every value and gradient rounded, matmuls in the format); or a scale propagation
  // recipe (graph/propagate_scales.hpp, train/scalified_step.hpp), which stores every value of the
  // step as FP16 data times a propagated scale: "scalify-fp16", or "scalify-fp8" (E4M3 matmul
  // operands and E5M2 matmul gradients). Scale propagation needs no loss scaling and takes none
  // of the modifiers below.
  std::string recipe = "fp32";
  // Scale propagation: how the optimizer moments and the trained parameters are stored (f32,
  // f16 or bf16; narrow ones as data with a scale, ScalePolicy::optimizer_state and parameters).
  DType optimizer_state = DType::kF16;
  DType master_weights = DType::kF32;
  // Scale propagation's further narrowing (ScalePolicy::first_moment, saved_activations): Adam's
  // m in an 8-bit format, and 8-bit copies of the activations norms and activations save for
  // the backward, with the weights cast again for the backward GEMMs
  // (recast_weights_for_backward). Unset: as the optimizer state, and as computed.
  std::optional<DType> first_moment = std::nullopt;
  std::optional<DType> saved_activations = std::nullopt;
  // scalify-fp8: where the FP8 casts' scales come from (ScalePolicy::matmul_scaling: the
  // propagated ones, current amax, or delayed amax with a history of amax_history_length steps).
  MatmulScaling matmul_scaling = MatmulScaling::kPropagated;
  int amax_history_length = 16;
  // Power-of-two per-tensor scaling of every matmul operand (for models that are not unit-scaled).
  bool per_tensor_scaling = false;
  // Stochastic rather than nearest rounding of the matmuls' gradients.
  bool stochastic_gradients = false;
  // Static loss scaling: the backward pass starts from loss_scale instead of 1, and the optimizer
  // divides the gradients by it again (a power of two is exact both ways).
  double loss_scale = 1.0;
  // Dynamic loss scaling (optim/loss_scaling.hpp) starting from loss_scale (2^16 when it is 1):
  // steps whose gradients overflow are skipped and halve the scale; 2000 good steps double it.
  bool dynamic_loss_scaling = false;
  // Also round attention's q, k, v and output gradient like matmul operands
  // (SimulateFormatOptions::attention_inputs).
  bool round_attention = false;

  // A precision as one word, for sweep tables and command lines: the recipe, then "+" and any of
  // attention (round_attention), scaled (per_tensor_scaling), sr (stochastic_gradients) and dls
  // (dynamic_loss_scaling), e.g. "fp8+attention" or "fp16+dls". Throws unitscale::Error naming
  // the bad part; the result passes check().
  static PrecisionConfig parse(std::string_view text);
  // The word parse() reads back (the static loss scale is not part of it): modifiers in the order
  // above.
  std::string name() const;

  // Throws unitscale::Error naming `owner` and the bad setting: an unknown recipe, options that
  // need a low precision with fp32, a loss scale that is not finite and positive.
  void check(std::string_view owner) const;
  // Whether the recipe is one of scale propagation's, and its policy (nullopt otherwise).
  bool scalify() const;
  std::optional<ScalePolicy> scale_policy() const;
  // The pass's options (stochastic rounding seeded with `seed`); nullopt for fp32 and the scale
  // propagation recipes.
  std::optional<SimulateFormatOptions> simulate_format_options(std::uint64_t seed) const;
  // The optimizer's dynamic loss scaling, if on; and the static loss scale (1 when dynamic).
  std::optional<DynamicLossScaling> dynamic_loss_scale() const;
  double static_loss_scale() const { return dynamic_loss_scaling ? 1.0 : loss_scale; }
  // {"recipe": ..., "per_tensor_scaling": ..., "stochastic_gradients": ..., "loss_scale": ...,
  //  "dynamic_loss_scaling": ..., "round_attention": ...}, and for the scale propagation recipes
  //  "optimizer_state", "master_weights" and "matmul_scaling" (with "amax_history_length" for
  //  delayed amax, and "first_moment" and "saved_activations" where set) too
  std::string to_json() const;
};

}  // namespace unitscale

#pragma once
// Dynamic loss scaling, recorded in the training graph: the remedy standard (SP) models need to
// train in FP16 or FP8, because their gradients sit below the formats' ranges (unit-scaled and
// u-μP models do not; arXiv 2303.11257 §2, 2407.17465 §4.4). The backward pass starts from the
// seed S instead of 1 (autodiff's seed), so every gradient comes out multiplied by S; the update
// divides it out again. After each step:
//
//   every scaled gradient finite:   the update runs with gradients · c/S   (c: the clipping
//                                   coefficient of the unscaled gradients, 1 without clipping);
//                                   after `growth_interval` such steps in a row, S ← S · growth
//   an Inf or NaN anywhere:         the update is skipped (parameters and optimizer state stay as
//                                   they were: the update ops' grad_multiplier is 0), S ← S · backoff
//
// as PyTorch's GradScaler and TransformerEngine do. S = initial · 2^e with e a state value (zero
// at the start, like every state), so with the default factors 2 and ½ every S is an exact power of
// two and scaling and unscaling round nothing. S stays within [2^-24, 2^100]. "Finite" is decided
// on the sum of the squared scaled gradients (in double, stored in fp32), so a step whose
// gradients are finite but whose squares overflow fp32 counts as an overflow too: the check is a
// little conservative, never lax.
//
// The Adam step counter t keeps counting skipped steps (PyTorch's does not), which only changes
// the bias correction of the first steps after a skip.

#include <cstdint>
#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

// Inputs (log2_scale [1], like); output S = initial · 2^log2_scale, of like's shape (the loss):
// autodiff's seed. Attribute "initial". Not differentiable.
extern const OpDef kLossScaleSeedOp;
// Inputs (log2_scale [1], good_steps [1], sum_of_squares [1]); outputs (log2_scale' and
// good_steps', in place; grad_multiplier [1], skipped [1], norm [1] of the unscaled gradients).
// Attributes "initial", "growth_factor", "backoff_factor", "growth_interval", "max_norm" (0: no
// clipping).
extern const OpDef kLossScaleUpdateOp;

struct DynamicLossScaling {
  double initial = 65536.0;  // 2^16, PyTorch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
  // Throws unitscale::Error naming the bad setting: initial not finite and positive, growth ≤ 1,
  // backoff outside (0, 1), an interval < 1.
  void check() const;
};

// The graph side: the state values (checkpointed with the optimizer's), the seed and what the
// update ops read.
struct LossScaleValues {
  Value log2_scale;    // state [1]
  Value good_steps;    // state [1]: finite steps in a row since the last change of S
  Value seed;          // S, of the loss's shape: give it to autodiff
  Value multiplier;    // [1] c/S, or 0 on overflow: the update ops' grad_multiplier
  Value skipped;       // [1] 1 when the step's update was skipped
  Value norm;          // [1] the unscaled gradients' global norm (Inf on overflow)
  std::vector<Value> updated_state;  // log2_scale' and good_steps': request them to run the update
};

// Records the states and the seed of `loss` (before autodiff).
LossScaleValues record_loss_scale_seed(Graph& graph, Value loss, const DynamicLossScaling& config);
// Records the update of S from `gradients` (after autodiff) and fills multiplier, skipped and
// norm; with max_norm > 0 the multiplier also clips the unscaled gradients' global norm to it.
void record_loss_scale_update(LossScaleValues& values, std::span<const Value> gradients,
                              const DynamicLossScaling& config, double max_norm);

}  // namespace unitscale

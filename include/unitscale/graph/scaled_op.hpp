#pragma once
// Scaled ops: how a graph rewritten by propagate_scales computes. Every node of `op` becomes a node
// of scaled_of(op), which carries each floating value as data (FP16, BF16, FP8 or fp32 storage)
// plus its scale (an f32 scalar; value = data · scale), and computes the op's output scales at run
// time with the op's scale rule (ops/scale_rules.hpp), from the scales its inputs have in this run.
//
//   scaled_of(op): inputs  x, w, ..., x_scale?, w_scale?, ...   (an absent scale: a plain input)
//                  outputs y, ...,    y_scale, ...              (absent: a plain output)
//
// The kernel materialises each scaled input in fp32 (the data decoded exactly and multiplied by its
// scale in fp32, never in the data's format), runs the op's own fp32 kernel, and stores each
// output as output / scale in the output's storage format. The rule therefore chooses where the
// data sits, not what the value is: a rule that tracks magnitudes keeps narrow data near 1 when the
// values are far outside FP16's range. Ops flagged OpDef::runs_on_scaled_data (casts and format
// rounding) apply to the data alone and keep its scale instead, as Scalify's casts do.
//
// Outputs a node updates in place (optimizer states) stay plain when their state is plain. A scaled
// state's scale is a state too, which the node overwrites with a scale measured on the updated
// values rather than the op's rule (the moments' magnitude drifts with the gradients' in ways no
// rule on the inputs' scales can follow): measured_scale, from the rms of a parameter, which other
// ops read, and from the largest magnitude of an optimizer moment (OpDef::private_states).

#include <optional>
#include <string_view>

#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/dynamic_rescale.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

template <>
struct EnumAttribute<Pow2Rounding> {
  static const EnumType& type();
};

// The scaled op of `op` (derived once, then cached; the reference stays valid for the program's
// life). Its attributes are op's plus "p2_rounding" (the rules' power-of-two rounding, default
// down) and "storage_overflow" (how an output too large for its storage is stored: non_finite,
// the default, gives ±Inf as real FP16 storage would; saturate clamps) and
// "measured_output_scales" (1: every scaled output's scale is measured on its values, a dynamic
// L2 rescale, instead of ruled; propagate_scales sets it on the GEMMs of the current-amax policy).
// Throws unitscale::Error naming the op if it has no scale rule.
const OpDef& scaled_of(const OpDef& op);
// A scale measured on values about to be stored in `storage`, from their `statistic`, which is
// `value`:
//   kL2   their rms, rounded to a power of two as `rounding` says, so that the data's rms lands
//         near 1 as the scale rules assume of what other ops read (parameters; GEMM outputs
//         under amax scaling);
//   kMax  their largest magnitude, for a state only its update reads (an optimizer's moment,
//         OpDef::private_states): the power of two that puts it in the format's top binade
//         (amax_scale; FP16 data up to 65504), so that the moment keeps the widest range below it.
//         Adam's v spans the square of the gradients' range: a unit-rms scale flushed the v of
//         coordinates with gradients 2^12 below the typical to 0 while their m survived.
// Scale::zero() for a value of 0 (all zeros); nullopt for one that is not finite, or a kMax
// storage without a format.
std::optional<Scale> measured_scale(RescaleStatistic statistic, double value, DType storage,
                                    Pow2Rounding rounding);

// Whether `op` is a scaled op (one of scaled_of's) or materialize: a node of a scaled graph.
bool is_scaled_op(const OpDef& op);

// materialize(data, scale) = data · scale in fp32 (Scalify's stop_scaling): how a scaled graph
// hands a value back to plain code, e.g. the loss.
extern const OpDef kMaterializeOp;

}  // namespace unitscale

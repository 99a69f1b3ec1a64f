#pragma once
// delayed_rescale: delayed scaling (TransformerEngine's DelayedScaling) as an op of a scaled graph.
// On values it is the identity, and it records max |x| into an amax history, a state of the last
// H steps' amax (oldest first, 0 where no step has been recorded yet):
//
//   y = x          history ← (history[1:], max |x|)
//
// Under scale propagation (graph/propagate_scales.hpp) it also re-centres x's data from the
// history of *earlier* steps, without looking at this step's values first:
//
//   s_y = p2(amax_history / target)        data_y = x / s_y
//
// where amax_history is the history's max (AmaxAlgorithm::kMax) or its newest entry (kMostRecent),
// and, on the first step (an empty history), x's own max |x|. A value that has grown since the
// history was taken lands above 2·target: the FP8 cast after it saturates, as delayed scaling's
// casts must. propagate_scales puts one before each FP8 cast under MatmulScaling::kDelayedAmax.
//
//   Value history = graph.state("x.amax_history", Shape{16});
//   Value y = delayed_rescale(x, history, {.target = 224.0});   // y[0]: x, y[1]: history'

#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {

template <>
struct EnumAttribute<AmaxAlgorithm> {
  static const EnumType& type();
};
std::string_view amax_algorithm_name(AmaxAlgorithm algorithm);  // "max", "most_recent"
AmaxAlgorithm amax_algorithm_from_name(std::string_view name);

// Inputs (x, history): history a state of shape [H], H ≥ 1; outputs (y, history'), the second
// in place.
extern const OpDef kDelayedRescaleOp;

struct DelayedRescaleOptions {
  AmaxAlgorithm algorithm = AmaxAlgorithm::kMax;
  double target = 1.0;  // finite, > 0: where the recorded amax lands in the data
};

// Returns {y, history'}.
std::vector<Value> delayed_rescale(Value x, Value history,
                                   const DelayedRescaleOptions& options = {});

}  // namespace unitscale

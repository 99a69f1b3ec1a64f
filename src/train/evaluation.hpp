#pragma once
// What the tasks' evaluations share: a forward-only executor takes the trained parameters, and
// the loss is recomputed from the logits in double precision, so that a partial last batch (rows
// that hold no example) can be left out exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/model.hpp"

namespace unitscale::detail {

// Copies every parameter of `model` that `destination` uses from `source`.
inline void copy_parameters(Executor& destination, const Executor& source, const Model& model,
                            const ScaledGraph* scaled = nullptr) {
  for (const ModelParameter& p : model.parameters()) {
    if (!destination.has_state(p.value)) continue;
    destination.set_state(p.value, source.state(p.value));
    // A parameter stored scaled: its data means nothing without its scale.
    if (const Value scale = scaled != nullptr ? scaled->scale(p.value) : Value{}; scale.present()) {
      destination.set_state(scale, source.state(scale));
    }
  }
}

// −log softmax(α·z)[target] over `classes` logits: the cross-entropy the loss op computes with
// mult α (α_loss-softmax).
inline double softmax_cross_entropy(const float* z, std::int64_t classes, std::int64_t target,
                                    double alpha) {
  double max = -INFINITY;
  for (std::int64_t v = 0; v < classes; ++v) max = std::max(max, alpha * z[v]);
  double sum = 0;
  for (std::int64_t v = 0; v < classes; ++v) sum += std::exp(alpha * z[v] - max);
  return max + std::log(sum) - alpha * z[target];
}

}  // namespace unitscale::detail

#pragma once
// Builder for dropout (the maths and scale rule are in ops/dropout.hpp).
//
//   Value h = dropout(x, {.p = 0.1, .seed = 42});                     // training, unit-scaled
//   Value h = dropout(x, {.p = 0.1, .mode = DropoutMode::kEval});     // √(1−p)·x when unit-scaled

#include <cstdint>
#include <optional>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/dropout.hpp"

namespace unitscale {

struct DropoutOptions {
  double p = 0.0;  // drop probability, in [0, 1)
  // The mask is a pure function of (seed, element index). Without a seed, the node's position in
  // the graph is used, so that two dropouts of one graph never share a mask by accident.
  std::optional<std::int64_t> seed = std::nullopt;
  DropoutMode mode = DropoutMode::kTraining;
};

Value dropout(Value x, const DropoutOptions& options);

}  // namespace unitscale

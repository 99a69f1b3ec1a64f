#pragma once
// Builders for cross_entropy and mse_loss (the maths and scale rules are in ops/loss.hpp).
//
//   Value loss = cross_entropy(logits, labels);                      // mean over non-ignored rows
//   Value loss = cross_entropy(logits, labels, {.mult = 0.5, .reduction = Reduction::kSum});
//   Value loss = mse_loss(prediction, target);
//
// In a unit-scaled graph the gradients these return are the unit-scaled ones: the logits
// gradient is (softmax(m·logits) − onehot)·V/√(V−1), without the ÷B and ×m of the true gradient;
// mse's is 2(a − b)·8^-½ without the ÷numel. In an unscaled graph they are the true gradients.

#include <cstdint>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/loss.hpp"

namespace unitscale {

struct CrossEntropyOptions {
  double mult = 1.0;  // α_loss-softmax: the loss is CE(softmax(mult · logits)); forward only
  Reduction reduction = Reduction::kMean;
  std::int64_t ignore_index = kDefaultIgnoreIndex;  // rows with this label add no loss, no grad
};

struct MseLossOptions {
  Reduction reduction = Reduction::kMean;
};

// logits [B, V] with labels [B], or logits [V] with labels []; labels are i32 class ids.
Value cross_entropy(Value logits, Value labels, const CrossEntropyOptions& options = {});
// a and b of equal shapes.
Value mse_loss(Value a, Value b, const MseLossOptions& options = {});

}  // namespace unitscale

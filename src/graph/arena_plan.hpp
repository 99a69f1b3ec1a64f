#pragma once
// Placing an executor's buffers in one arena: each buffer is live over a range of steps, and two
// buffers live at a common step must not overlap in memory.
//
// Two strategies, and the smaller arena wins:
// - in step order, each buffer in the best-fitting block of a free list (or past the end);
// - largest first, the offline "greedy by size" of TensorFlow Lite's memory planner: each buffer
//   in the smallest gap it fits in among the buffers already placed that share a step with it,
//   or above them all. Large buffers lie low and the small ones fill the gaps between them.
// Neither is best everywhere. Measured on the u-μP decoder's training step at width 1024: the
// scaled FP8 step with its workspaces packs into 178 MiB largest first and 196 MiB in step order
// (172 MiB live at the fullest step); the fp32 step into 507 MiB in step order and 517 MiB largest
// first (497 MiB live).

#include <cstddef>
#include <vector>

namespace unitscale::detail {

struct ArenaBuffer {
  int first_step = 0, last_step = 0;  // live over [first_step, last_step]
  std::ptrdiff_t bytes = 0;           // a multiple of the alignment the caller wants
};

struct ArenaPlan {
  std::vector<std::ptrdiff_t> offsets;  // per buffer
  std::ptrdiff_t size = 0;
};

ArenaPlan plan_arena(const std::vector<ArenaBuffer>& buffers);

}  // namespace unitscale::detail

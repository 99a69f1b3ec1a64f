#include "graph/arena_plan.hpp"

#include <algorithm>
#include <iterator>
#include <numeric>

namespace unitscale::detail {

namespace {

// Best-fit free list over one growing arena.
class ArenaPlanner {
 public:
  std::ptrdiff_t allocate(std::ptrdiff_t size) {
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->size >= size && (best == free_.end() || it->size < best->size)) best = it;
    }
    if (best == free_.end()) {
      // Grow the arena, absorbing a free block that touches its end.
      if (!free_.empty() && free_.back().offset + free_.back().size == end_) {
        const std::ptrdiff_t offset = free_.back().offset;
        free_.pop_back();
        end_ = offset + size;
        return offset;
      }
      end_ += size;
      return end_ - size;
    }
    const std::ptrdiff_t offset = best->offset;
    best->offset += size;
    best->size -= size;
    if (best->size == 0) free_.erase(best);
    return offset;
  }

  void release(std::ptrdiff_t offset, std::ptrdiff_t size) {
    auto it = std::lower_bound(free_.begin(), free_.end(), offset,
                               [](const Block& b, std::ptrdiff_t o) { return b.offset < o; });
    it = free_.insert(it, Block{offset, size});
    // Coalesce with the neighbours so large values can reuse the space later.
    if (std::next(it) != free_.end() && it->offset + it->size == std::next(it)->offset) {
      it->size += std::next(it)->size;
      free_.erase(std::next(it));
    }
    if (it != free_.begin() && std::prev(it)->offset + std::prev(it)->size == it->offset) {
      std::prev(it)->size += it->size;
      free_.erase(it);
    }
  }

  std::ptrdiff_t end() const { return end_; }

 private:
  struct Block {
    std::ptrdiff_t offset, size;
  };
  std::vector<Block> free_;  // sorted by offset
  std::ptrdiff_t end_ = 0;
};

// In step order: at each step its buffers take the best-fitting free block (or grow the arena),
// then the buffers whose last step it is are freed.
ArenaPlan in_step_order(const std::vector<ArenaBuffer>& buffers) {
  int steps = 0;
  for (const ArenaBuffer& buffer : buffers) steps = std::max(steps, buffer.last_step + 1);
  std::vector<std::vector<std::size_t>> starting(static_cast<std::size_t>(steps)),
      ending(static_cast<std::size_t>(steps));
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    starting[static_cast<std::size_t>(buffers[b].first_step)].push_back(b);
    ending[static_cast<std::size_t>(buffers[b].last_step)].push_back(b);
  }
  ArenaPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  ArenaPlanner planner;
  for (std::size_t s = 0; s < starting.size(); ++s) {
    for (const std::size_t b : starting[s]) plan.offsets[b] = planner.allocate(buffers[b].bytes);
    for (const std::size_t b : ending[s]) planner.release(plan.offsets[b], buffers[b].bytes);
  }
  plan.size = planner.end();
  return plan;
}

ArenaPlan largest_first(const std::vector<ArenaBuffer>& buffers) {
  std::vector<std::size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Largest first; among equals, the earlier first, so that the plan does not depend on the sort.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return buffers[a].bytes > buffers[b].bytes;
  });
  ArenaPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  std::vector<std::size_t> placed;  // by offset
  for (const std::size_t index : order) {
    const ArenaBuffer& buffer = buffers[index];
    std::ptrdiff_t below = 0;  // the end of the overlapping buffers seen so far
    std::ptrdiff_t best = -1, best_gap = 0;
    for (const std::size_t other_index : placed) {
      const ArenaBuffer& other = buffers[other_index];
      if (other.last_step < buffer.first_step || buffer.last_step < other.first_step) continue;
      const std::ptrdiff_t offset = plan.offsets[other_index];
      const std::ptrdiff_t gap = offset - below;
      if (gap >= buffer.bytes && (best < 0 || gap < best_gap)) {
        best = below;
        best_gap = gap;
      }
      below = std::max(below, offset + other.bytes);
    }
    const std::ptrdiff_t offset = best >= 0 ? best : below;
    plan.offsets[index] = offset;
    plan.size = std::max(plan.size, offset + buffer.bytes);
    const auto at =
        std::upper_bound(placed.begin(), placed.end(), offset,
                         [&](std::ptrdiff_t o, std::size_t i) { return o < plan.offsets[i]; });
    placed.insert(at, index);
  }
  return plan;
}

}  // namespace

ArenaPlan plan_arena(const std::vector<ArenaBuffer>& buffers) {
  ArenaPlan by_size = largest_first(buffers), by_step = in_step_order(buffers);
  return by_step.size < by_size.size ? by_step : by_size;
}

}  // namespace unitscale::detail

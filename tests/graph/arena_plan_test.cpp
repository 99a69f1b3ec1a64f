// The executor's arena plan (src/graph/arena_plan.hpp): buffers live at a common step never
// overlap, the arena is at least the most bytes live at one step, and the smaller of the two
// strategies' arenas is chosen.

#include "graph/arena_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

namespace unitscale::detail {
namespace {

// Checks every pair of buffers and returns the most bytes live at one step.
std::ptrdiff_t check_plan(const std::vector<ArenaBuffer>& buffers, const ArenaPlan& plan) {
  EXPECT_EQ(plan.offsets.size(), buffers.size());
  int steps = 0;
  for (const ArenaBuffer& b : buffers) steps = std::max(steps, b.last_step + 1);
  std::vector<std::ptrdiff_t> live(static_cast<std::size_t>(steps), 0);
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    EXPECT_GE(plan.offsets[i], 0);
    EXPECT_LE(plan.offsets[i] + buffers[i].bytes, plan.size) << "buffer " << i;
    for (int s = buffers[i].first_step; s <= buffers[i].last_step; ++s) {
      live[static_cast<std::size_t>(s)] += buffers[i].bytes;
    }
    for (std::size_t j = 0; j < i; ++j) {
      const bool same_time = buffers[i].first_step <= buffers[j].last_step &&
                             buffers[j].first_step <= buffers[i].last_step;
      const bool same_memory = plan.offsets[i] < plan.offsets[j] + buffers[j].bytes &&
                               plan.offsets[j] < plan.offsets[i] + buffers[i].bytes;
      EXPECT_FALSE(same_time && same_memory) << "buffers " << j << " and " << i << " overlap";
    }
  }
  return *std::max_element(live.begin(), live.end());
}

TEST(ArenaPlan, RandomLifetimesNeverOverlapAndPackNearTheLiveMaximum) {
  std::mt19937 rng(7);
  double worst = 1.0;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<ArenaBuffer> buffers;
    const int steps = 60;
    for (int s = 0; s < steps; ++s) {
      const int outputs = std::uniform_int_distribution<int>(0, 3)(rng);
      for (int o = 0; o < outputs; ++o) {
        const int last = std::min(steps - 1, s + std::uniform_int_distribution<int>(0, 20)(rng));
        const std::ptrdiff_t bytes = 64 * std::uniform_int_distribution<int>(1, 1000)(rng);
        buffers.push_back({s, last, bytes});
      }
    }
    const ArenaPlan plan = plan_arena(buffers);
    const std::ptrdiff_t most_live = check_plan(buffers, plan);
    EXPECT_GE(plan.size, most_live);
    worst = std::max(worst, static_cast<double>(plan.size) / static_cast<double>(most_live));
  }
  std::printf("[ report   ] arena / live maximum over the trials: at most %.3f\n", worst);
  // Measured: 1.18 (largest first alone 1.22, step order alone 1.27).
  EXPECT_LE(worst, 1.2);
}

// Step order puts the small c into the hole a leaves, so that the big d no longer fits there and
// goes above everything (1344 bytes); largest first places a and d first, at the same offset, and
// fits b and c beside them (768, the live maximum).
TEST(ArenaPlan, LargestFirstWinsWhereStepOrderFragments) {
  const std::vector<ArenaBuffer> buffers = {
      {0, 1, 640},  // a: freed after step 1
      {0, 3, 64},   // b: lives on
      {2, 3, 64},   // c
      {2, 3, 640},  // d
  };
  const ArenaPlan plan = plan_arena(buffers);
  EXPECT_EQ(plan.size, check_plan(buffers, plan)) << "the live maximum, 640 + 64 + 64";
}

// Largest first can lose to step order: here it stacks the two 100s (placed first, live at step
// 1 together) under the 90, which step order fits into the space freed at step 2.
TEST(ArenaPlan, TheSmallerOfTheTwoPlansIsChosen) {
  const std::vector<ArenaBuffer> buffers = {
      {0, 1, 100 * 64}, {1, 2, 100 * 64}, {0, 0, 90 * 64}, {2, 3, 90 * 64}, {3, 3, 100 * 64},
  };
  const ArenaPlan plan = plan_arena(buffers);
  const std::ptrdiff_t most_live = check_plan(buffers, plan);
  EXPECT_EQ(plan.size, most_live);
}

TEST(ArenaPlan, EmptyIsEmpty) {
  const ArenaPlan plan = plan_arena({});
  EXPECT_EQ(plan.size, 0);
  EXPECT_TRUE(plan.offsets.empty());
}

}  // namespace
}  // namespace unitscale::detail

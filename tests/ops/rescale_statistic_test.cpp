// rescale_statistic and its block partials (ops/dynamic_rescale.hpp): the statistics dynamic
// rescales and the scaled optimizer states are measured with, against double-precision loops.

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <vector>

#include "unitscale/ops/dynamic_rescale.hpp"

namespace unitscale {
namespace {

std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

double reference_max(const std::vector<float>& x) {
  double m = 0.0;
  for (const float v : x) m = std::max(m, std::abs(static_cast<double>(v)));
  return m;
}

// Lengths around the vector width and the block size, the largest magnitude at every position
// class (first, in the vector body, in the tail), negative as often as positive.
TEST(RescaleStatistic, MaxIsTheLargestMagnitudeExactly) {
  for (const std::size_t n :
       {std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{17}, std::size_t{100},
        kRescaleStatisticBlock, kRescaleStatisticBlock + 37}) {
    for (const std::size_t at : {std::size_t{0}, n / 2, n - 1}) {
      std::vector<float> x = random_values(n, static_cast<unsigned>(n + at));
      x[at] = (at % 2 == 0 ? -1.0f : 1.0f) * 1000.0f;
      EXPECT_EQ(rescale_statistic(x, RescaleStatistic::kMax), 1000.0) << n << " at " << at;
      x[at] = 0.0f;
      EXPECT_EQ(rescale_statistic(x, RescaleStatistic::kMax), reference_max(x)) << n;
    }
  }
  EXPECT_EQ(rescale_statistic(std::vector<float>(40, 0.0f), RescaleStatistic::kMax), 0.0);
}

// A NaN anywhere makes the maximum NaN (a rescale then keeps its scale rather than trusting a
// partial maximum); an infinity is the maximum.
TEST(RescaleStatistic, MaxPropagatesNaNAndInfinity) {
  for (const std::size_t at : {std::size_t{0}, std::size_t{20}, std::size_t{39}}) {
    std::vector<float> x = random_values(40, 3);
    x[at] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(rescale_statistic(x, RescaleStatistic::kMax))) << at;
    x[at] = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(rescale_statistic(x, RescaleStatistic::kMax),
              std::numeric_limits<double>::infinity());
  }
}

// The partials of blocks, combined, give the whole tensor's statistic bit for bit (the chunked
// optimizer updates rely on it), for every statistic.
TEST(RescaleStatistic, BlockPartialsCombineToTheWholeStatistic) {
  const std::size_t n = 2 * kRescaleStatisticBlock + 123;
  const std::vector<float> x = random_values(n, 5);
  for (const RescaleStatistic statistic :
       {RescaleStatistic::kMax, RescaleStatistic::kL1, RescaleStatistic::kL2}) {
    std::vector<double> partials;
    for (std::size_t first = 0; first < n; first += kRescaleStatisticBlock) {
      const std::size_t count = std::min(kRescaleStatisticBlock, n - first);
      partials.push_back(rescale_block_partial({x.data() + first, count}, statistic));
    }
    EXPECT_EQ(rescale_statistic_of_partials(partials, n, statistic),
              rescale_statistic(x, statistic))
        << rescale_statistic_name(statistic);
  }
}

}  // namespace
}  // namespace unitscale

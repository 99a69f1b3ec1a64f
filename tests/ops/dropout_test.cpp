#include "unitscale/ops/dropout.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes dropout_attrs(double p, std::int64_t seed = 1234, std::string_view mode = "training") {
  return {{"p", p}, {"seed", seed}, {"mode", std::string(mode)}};
}

TEST(DropoutGradcheck, TrainingWithAFixedSeedAndEval) {
  std::mt19937 rng(1);
  for (const double p : {0.1, 0.5}) {
    testing::gradcheck(kDropoutOp, {random_normal({4, 9}, rng)}, dropout_attrs(p, 42));
    testing::gradcheck(kDropoutOp, {random_normal({4, 9}, rng)}, dropout_attrs(p, 42, "eval"));
  }
}

Tensor run_forward(const Tensor& x, const Attributes& attrs, Scaling scaling = Scaling::kUnscaled) {
  OpRun run(kDropoutOp, {x}, attrs, scaling);
  run.forward();
  return run.output();
}

TEST(DropoutMask, KeptUnitsAreScaledAndMatchTheHash) {
  std::mt19937 rng(2);
  const Tensor x = random_normal({64, 64}, rng);
  const double p = 0.3;
  const Tensor plain = run_forward(x, dropout_attrs(p));
  const Tensor unit = run_forward(x, dropout_attrs(p), Scaling::kUnit);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const bool keep = dropout_keeps(1234, i, p);
    EXPECT_EQ(plain[i], keep ? static_cast<float>(1 / (1 - p)) * x[i] : 0.0f)
        << i;  // inverted dropout
    EXPECT_FLOAT_EQ(unit[i], keep ? static_cast<float>(1 / std::sqrt(1 - p)) * x[i] : 0.0f) << i;
  }
}

TEST(DropoutMask, ReproducibleAndSeedDependent) {
  std::mt19937 rng(3);
  const Tensor x = random_normal({1 << 16}, rng);
  const Tensor first = run_forward(x, dropout_attrs(0.5, 7)),
               again = run_forward(x, dropout_attrs(0.5, 7));
  const Tensor other = run_forward(x, dropout_attrs(0.5, 8));
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(first[i], again[i]);
    differ += (first[i] == 0) != (other[i] == 0);
  }
  // Independent masks disagree on 2p(1−p) = ½ of the units.
  const double n = static_cast<double>(x.numel());
  EXPECT_NEAR(static_cast<double>(differ) / n, 0.5, 5 * 0.5 / std::sqrt(n));
}

// The dropped fraction is p (within 5 binomial standard deviations), neighbouring units and
// consecutive seeds are uncorrelated.
TEST(DropoutMask, DropFractionIsPAndMasksAreUncorrelated) {
  const std::int64_t n = 1 << 18;
  for (const double p : {0.01, 0.1, 0.5, 0.9, 0.99}) {
    double dropped = 0, lag_product = 0, seed_product = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double keep = dropout_keeps(99, i, p), next = dropout_keeps(99, i + 1, p);
      const double other_seed = dropout_keeps(100, i, p);
      dropped += 1 - keep;
      lag_product += (keep - (1 - p)) * (next - (1 - p));
      seed_product += (keep - (1 - p)) * (other_seed - (1 - p));
    }
    const double nd = static_cast<double>(n), variance = p * (1 - p);
    EXPECT_NEAR(dropped / nd, p, 5 * std::sqrt(variance / nd)) << p;
    EXPECT_NEAR(lag_product / nd / variance, 0.0, 5 / std::sqrt(nd)) << p;
    EXPECT_NEAR(seed_product / nd / variance, 0.0, 5 / std::sqrt(nd)) << p;
  }
}

// The mask as 0/1 bytes for indices [first, first + n), through the bulk kernel.
std::vector<std::uint8_t> mask_of(std::uint64_t seed, std::int64_t first, std::int64_t n,
                                  double p) {
  const std::vector<float> ones(static_cast<std::size_t>(n), 1.0f);
  std::vector<float> kept(ones.size());
  dropout_apply_mask(ones.data(), kept.data(), n, first, p, seed, 1.0f);
  std::vector<std::uint8_t> mask(ones.size());
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = kept[i] != 0.0f;
  return mask;
}

// Two masks, each keeping a unit with probability 1 − p, independent of each other, agree on a
// unit with probability a = p² + (1 − p)²; over n units the agreement rate is binomial, within
// 5·√(a(1 − a)/n) of a. Checked for neighbouring seeds, successive steps, indices a small or a
// power-of-two distance apart (attention rows are a power of two long), and across the blocks of
// 2^32 indices that share the hash's round keys. Weak mixers fail many of these by far more than
// 5 standard deviations (a single multiply-xorshift, or a multiply alone, does).
TEST(DropoutMask, NeighbouringSeedsIndicesAndBlocksAgreeOnlyByChance) {
  const std::int64_t n = 1 << 18;
  const std::int64_t k2To32 = std::int64_t{1} << 32;
  for (const double p : {0.5, 0.1, 0.01}) {
    const double a = p * p + (1 - p) * (1 - p);
    const double tolerance = 5 * std::sqrt(a * (1 - a) / static_cast<double>(n));
    auto expect_unrelated = [&](const std::vector<std::uint8_t>& m1,
                                const std::vector<std::uint8_t>& m2, const std::string& what) {
      std::int64_t agree = 0;
      for (std::size_t i = 0; i < m1.size(); ++i) agree += m1[i] == m2[i];
      EXPECT_NEAR(static_cast<double>(agree) / static_cast<double>(m1.size()), a, tolerance)
          << what << ", p = " << p;
    };
    for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{99}, std::uint64_t{1} << 32}) {
      const auto base = mask_of(seed, 0, n, p);
      expect_unrelated(base, mask_of(seed + 1, 0, n, p), fmt::format("seeds {} and +1", seed));
      expect_unrelated(base, mask_of(seed ^ (std::uint64_t{1} << 63), 0, n, p),
                       fmt::format("seed {} and its top bit flipped", seed));
      expect_unrelated(base, mask_of(dropout_seed_at_step(seed, 1), 0, n, p),
                       fmt::format("seed {} at steps 0 and 1", seed));
      expect_unrelated(mask_of(dropout_seed_at_step(seed, 1), 0, n, p),
                       mask_of(dropout_seed_at_step(seed, 2), 0, n, p),
                       fmt::format("seed {} at steps 1 and 2", seed));
      expect_unrelated(base, mask_of(seed, k2To32, n, p),
                       fmt::format("seed {}, blocks 0, 1", seed));
      expect_unrelated(mask_of(seed, 5 * k2To32 - n / 2, n, p),
                       mask_of(seed, 6 * k2To32 - n / 2, n, p),
                       fmt::format("seed {}, across the ends of blocks 4, 5", seed));
      const std::int64_t longest_lag = 1 << 16;
      const auto longer = mask_of(seed, 0, n + longest_lag, p);
      for (const std::int64_t lag : {1, 2, 3, 4, 7, 8, 16, 64, 1000, 1024, 4096, 1 << 16}) {
        const std::vector<std::uint8_t> shifted(longer.begin() + lag, longer.begin() + lag + n);
        expect_unrelated(base, shifted, fmt::format("seed {}, indices {} apart", seed, lag));
      }
    }
  }
}

// The vector kernel of every instruction set, its tail, and the split at a block boundary give
// exactly dropout_keeps, in place or not.
TEST(DropoutMask, BulkMaskEqualsDropoutKeepsAtEverySimdLevel) {
  const float factor = 1.25f;
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    detail::force_simd_level(level);
    SCOPED_TRACE(detail::simd_level_name(level));
    for (const std::int64_t first :
         {std::int64_t{0}, std::int64_t{5}, (std::int64_t{1} << 32) - 37, std::int64_t{3} << 40}) {
      for (const std::int64_t count : {0, 1, 15, 16, 17, 100, 1000}) {
        for (const bool in_place : {false, true}) {
          std::mt19937 rng(static_cast<std::uint32_t>(count));
          std::normal_distribution<float> normal;
          std::vector<float> x(static_cast<std::size_t>(count));
          for (float& v : x) v = normal(rng);
          std::vector<float> y = in_place ? x : std::vector<float>(x.size(), -1.0f);
          const float* in = in_place ? y.data() : x.data();
          dropout_apply_mask(in, y.data(), count, first, 0.3, 17, factor);
          for (std::int64_t e = 0; e < count; ++e) {
            const auto i = static_cast<std::size_t>(e);
            ASSERT_EQ(y[i], dropout_keeps(17, first + e, 0.3) ? factor * x[i] : 0.0f)
                << "first " << first << " count " << count << " in place " << in_place << " e "
                << e;
          }
        }
      }
    }
  }
  detail::force_simd_level(detail::best_simd_level());
}

// The drop probability is p rounded down to a multiple of 2^-32: p = 0 keeps everything and a p
// just below 1 still keeps about (1 − p)·n units rather than none.
TEST(DropoutMask, ExtremeProbabilities) {
  const std::int64_t n = 1 << 16;
  for (std::int64_t i = 0; i < n; ++i) ASSERT_TRUE(dropout_keeps(3, i, 0.0)) << i;
  const auto almost_all = mask_of(3, 0, n, 1.0 - 1.0 / 4096);
  std::int64_t kept = 0;
  for (const std::uint8_t m : almost_all) kept += m;
  EXPECT_NEAR(static_cast<double>(kept), 16.0, 5 * 4.0);  // binomial(2^16, 2^-12): 16 ± 4
}

TEST(DropoutMask, ForwardAndBackwardAgreeWithoutAStoredMask) {
  std::mt19937 rng(4);
  const Tensor x = random_normal({32, 100}, rng), g = random_normal({32, 100}, rng);
  OpRun run(kDropoutOp, {x}, dropout_attrs(0.4, 5), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({g});
  const float factor = static_cast<float>(1 / std::sqrt(0.6));
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const bool kept = run.output()[i] != 0;
    EXPECT_FLOAT_EQ((*grads[0])[i], kept ? factor * g[i] : 0.0f) << i;
  }
}

TEST(DropoutMask, IndependentOfThreadCount) {
  std::mt19937 rng(5);
  const Tensor x = random_normal({1 << 17}, rng);
  const Tensor parallel = run_forward(x, dropout_attrs(0.2, 11));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor serial = run_forward(x, dropout_attrs(0.2, 11));
  omp_set_num_threads(threads);
  for (std::int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(parallel[i], serial[i]) << i;
}

TEST(DropoutScales, RuleAndEvalMode) {
  const Tensor x = Tensor::filled({4, 4}, 2.0f);
  OpRun run(kDropoutOp, {x}, dropout_attrs(0.19), Scaling::kUnit);
  EXPECT_DOUBLE_EQ(run.attrs().get_double("t", "alpha"), 0.9);
  EXPECT_DOUBLE_EQ(run.attrs().get_double("t", "beta_x"), 0.9);
  // Eval: √(1−p)·x when unit-scaled (the training output's expectation), identity unscaled.
  const Tensor eval_unit = run_forward(x, dropout_attrs(0.19, 0, "eval"), Scaling::kUnit);
  const Tensor eval_plain = run_forward(x, dropout_attrs(0.19, 0, "eval"));
  const Tensor no_drop = run_forward(x, dropout_attrs(0.0), Scaling::kUnit);  // p = 0: identity
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_FLOAT_EQ(eval_unit[i], 1.8f);
    EXPECT_EQ(eval_plain[i], 2.0f);
    EXPECT_EQ(no_drop[i], 2.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics (targets measured with the unit-scaling reference library, arXiv 2303.11257): p = 0.1
// gives output 0.998 and gradient 0.999; every p in 0.01 … 0.99 is unit. With 2^19 elements the std
// estimate's standard error is below 0.013 even at p = 0.99 (where E[y⁴] = 3/(1−p)), so ±0.1 is
// ample.
// ---------------------------------------------------------------------------------------------
class DropoutStatistics : public ::testing::TestWithParam<double> {};

TEST_P(DropoutStatistics, UnitOutputAndGradient) {
  const double p = GetParam();
  std::mt19937 rng(6);
  const Shape shape{512, 1024};
  OpRun run(kDropoutOp, {random_normal(shape, rng)}, dropout_attrs(p, 77), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(shape, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), 1.0, 0.1);

  OpRun eval(kDropoutOp, {random_normal(shape, rng)}, dropout_attrs(p, 77, "eval"), Scaling::kUnit);
  eval.forward();
  const double eval_std = std::sqrt(1 - p);  // closed form
  EXPECT_NEAR(testing::std_of(eval.output().span()), eval_std, 0.1 * eval_std);
}

INSTANTIATE_TEST_SUITE_P(Probabilities, DropoutStatistics,
                         ::testing::Values(0.01, 0.1, 0.5, 0.9, 0.99), [](const auto& test_info) {
                           std::string name = "p";  // percent
                           name += std::to_string(std::lround(test_info.param * 100));
                           return name;
                         });

TEST(DropoutStatistics, SpecTargetAtTenPercent) {
  std::mt19937 rng(7);
  OpRun run(kDropoutOp, {random_normal({256, 256}, rng)}, dropout_attrs(0.1, 3), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 256}, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 0.998, 0.1);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), 0.999, 0.1);
}

// ---------------------------------------------------------------------------------------------
// Builder and graph integration
// ---------------------------------------------------------------------------------------------
TEST(DropoutBuilder, RecordsAttributesAndGivesEachNodeItsOwnDefaultSeed) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  dropout(x, {.p = 0.1, .seed = 42, .mode = DropoutMode::kEval});
  const Attributes& explicit_attrs = g.nodes().back().attrs;
  EXPECT_EQ(explicit_attrs.get_int("t", "seed"), 42);
  EXPECT_EQ(explicit_attrs.get_enum_name("t", "mode"), "eval");
  EXPECT_DOUBLE_EQ(explicit_attrs.get_double("t", "alpha"), std::sqrt(0.9));
  const Value a = dropout(x, {.p = 0.1});
  const Value b = dropout(a, {.p = 0.1});
  EXPECT_NE(g.nodes()[1].attrs.get_int("t", "seed"), g.nodes()[2].attrs.get_int("t", "seed"));
  EXPECT_EQ(b.shape(), (Shape{4, 8}));
}

TEST(DropoutBuilder, AutodiffMatchesKernel) {
  std::mt19937 rng(8);
  Graph g;  // unit-scaled
  const Value x = g.input("x", {1, 16}), w = g.parameter("w", {1, 16});
  const Value loss =
      linear(dropout(x, {.p = 0.25, .seed = 9}), w, {.constraint = Constraint::kNone});
  const Value wrt[] = {x};
  const Value grad = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {grad};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({1, 16}, rng), wt = random_normal({1, 16}, rng);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.run();
  // linear(…, w) with constraint none has β_x = out^-½ = 1 here (out = 1).
  OpRun run(kDropoutOp, {xt}, dropout_attrs(0.25, 9), Scaling::kUnit);
  run.forward();
  const auto expected = run.backward({wt});
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(exec.get(grad).data()[i], (*expected[0])[i]);
}

TEST(DropoutErrors, MessagesNameTheOp) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  for (const double p : {1.0, -0.1}) {
    EXPECT_THAT([&] { dropout(x, {.p = p}); },
                ThrowsMessage<Error>(AllOf(HasSubstr("dropout"), HasSubstr("p must be"))));
  }
  EXPECT_THAT([&] { dropout(x, {.p = std::nan("")}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("dropout: attribute 'p' is nan"),
                                         HasSubstr("expected a finite number"))));
  EXPECT_THAT([&] { g.apply1(kDropoutOp, std::vector<Value>{x}, dropout_attrs(0.1, 1, "test")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("dropout"), HasSubstr("test"))));
  EXPECT_THAT(
      [&] {
        g.apply1(kDropoutOp, std::vector<Value>{x}, {{"seed", std::int64_t{1}}});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("dropout"), HasSubstr("p"))));
}

}  // namespace
}  // namespace unitscale

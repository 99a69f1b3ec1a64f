#include "unitscale/ops/embedding.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/builders/embedding.hpp"

namespace unitscale {
namespace {

using namespace testing;

Tensor random_ids(const Shape& shape, std::int64_t vocabulary, std::mt19937& rng) {
  Tensor ids(shape);
  std::uniform_int_distribution<std::int64_t> pick(0, vocabulary - 1);
  for (float& v : ids.span()) v = static_cast<float>(pick(rng));
  return ids;
}

const testing::GradcheckOptions kTableOnly{.differentiable = {false, true}};

TEST(EmbeddingGradcheck, TableGradientWithRepeatedIds) {
  std::mt19937 rng(1);
  testing::gradcheck(kEmbeddingOp, {Tensor({2, 3}, std::vector<float>{0, 4, 2, 4, 4, 1}), random_normal({5, 3}, rng)},
                     {}, kTableOnly);
  testing::gradcheck(kEmbeddingOp, {random_ids({7}, 3, rng), random_normal({3, 2}, rng)}, {}, kTableOnly);
  testing::gradcheck(kEmbeddingOp, {Tensor({}, std::vector<float>{1}), random_normal({2, 4}, rng)}, {}, kTableOnly);
}

TEST(EmbeddingForward, LooksUpRowsAndKeepsIdShape) {
  std::mt19937 rng(2);
  const Tensor ids({2, 2}, std::vector<float>{3, 0, 3, 1});
  const Tensor table = random_normal({4, 5}, rng);
  OpRun run(kEmbeddingOp, {ids, table}, {});
  EXPECT_EQ(run.output().shape(), (Shape{2, 2, 5}));
  run.forward();
  for (std::int64_t n = 0; n < 4; ++n) {
    for (std::int64_t c = 0; c < 5; ++c) {
      EXPECT_EQ(run.output()[n * 5 + c], table[static_cast<std::int64_t>(ids[n]) * 5 + c]);
    }
  }
  // The ids never get a gradient of their own: only a zero one if somebody asks.
  const auto grads = run.backward({random_normal({2, 2, 5}, rng)});
  for (const float v : grads[0]->span()) EXPECT_EQ(v, 0.0f);
  EXPECT_FLOAT_EQ((*grads[1])[2 * 5], 0.0f);  // row 2 is never looked up
}

TEST(EmbeddingScales, TableGradIsBetaTimesUnscaled) {
  std::mt19937 rng(3);
  const Tensor ids = random_ids({3, 8}, 10, rng), table = random_normal({10, 6}, rng);
  const Tensor g = random_normal({3, 8, 6}, rng);
  OpRun plain(kEmbeddingOp, {ids, table}, {}, Scaling::kUnscaled);
  OpRun scaled(kEmbeddingOp, {ids, table}, {}, Scaling::kUnit);
  const double beta = scaled.attrs().get_double("t", "beta_table");
  EXPECT_DOUBLE_EQ(beta, std::sqrt(10.0 / 24.0));
  EXPECT_FALSE(plain.attrs().has("beta_table"));
  plain.forward();
  scaled.forward();
  for (std::int64_t i = 0; i < plain.output().numel(); ++i) EXPECT_EQ(scaled.output()[i], plain.output()[i]);
  const auto gp = plain.backward({g}, {false, true});
  const auto gs = scaled.backward({g}, {false, true});
  for (std::int64_t i = 0; i < table.numel(); ++i) {
    EXPECT_NEAR((*gs[1])[i], beta * (*gp[1])[i], 1e-6 * (1 + std::abs((*gp[1])[i])));
  }
}

// spec/unit_scaling.md §5: V = 4096, 512 ids: out 0.993, table gradient 1.004.
TEST(EmbeddingStatistics, HitsSpecTargets) {
  std::mt19937 rng(4);
  const std::int64_t vocabulary = 4096, d = 256;
  const Tensor ids = random_ids({512}, vocabulary, rng);
  OpRun run(kEmbeddingOp, {ids, random_normal({vocabulary, d}, rng)}, {}, Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({512, d}, rng)}, {false, true});
  EXPECT_FALSE(grads[0].has_value());
  EXPECT_NEAR(testing::std_of(run.output().span()), 0.993, 0.1);
  EXPECT_NEAR(testing::std_of(grads[1]->span()), 1.004, 0.1);
}

// Large enough that the scatter runs in parallel column blocks; compared with a serial sum.
TEST(EmbeddingBackward, ParallelScatterMatchesSerialSum) {
  std::mt19937 rng(5);
  const std::int64_t vocabulary = 50, d = 300, tokens = 400;
  const Tensor ids = random_ids({tokens}, vocabulary, rng);
  const Tensor g = random_normal({tokens, d}, rng);
  Tensor grad_table({vocabulary, d});
  embedding_backward(g, ids, grad_table, 0.5f);
  std::vector<double> expected(static_cast<std::size_t>(vocabulary * d), 0.0);
  for (std::int64_t n = 0; n < tokens; ++n) {
    for (std::int64_t c = 0; c < d; ++c) {
      expected[static_cast<std::size_t>(static_cast<std::int64_t>(ids[n]) * d + c)] += 0.5 * g[n * d + c];
    }
  }
  for (std::int64_t i = 0; i < grad_table.numel(); ++i) {
    EXPECT_NEAR(grad_table[i], expected[static_cast<std::size_t>(i)], 1e-4);
  }
}

TEST(EmbeddingErrors, ShapesNameTheOp) {
  Graph graph;
  const Value ids = graph.input("ids", {4, 8});
  EXPECT_THAT([&] { embedding(ids, graph.parameter("t1", {16})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("[16]"), HasSubstr("[4, 8]"))));
  EXPECT_THAT([&] { embedding(ids, graph.parameter("t3", {2, 3, 4})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("[2, 3, 4]"))));
  const Value y = embedding(ids, graph.parameter("table", {100, 12}));
  EXPECT_EQ(y.shape(), (Shape{4, 8, 12}));
}

TEST(EmbeddingErrors, BadIdsNameTheOpTheIdAndV) {
  std::mt19937 rng(6);
  const Tensor table = random_normal({6, 3}, rng);
  const std::vector<std::pair<float, std::string>> bad = {
      {6.0f, "id 6 "}, {-1.0f, "id -1 "}, {2.5f, "id 2.5 "}, {std::nanf(""), "id nan "}};
  for (const auto& [value, text] : bad) {
    OpRun run(kEmbeddingOp, {Tensor({3}, std::vector<float>{0, value, 1}), table}, {});
    EXPECT_THAT([&] { run.forward(); },
                ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr(text), HasSubstr("position 1"),
                                           HasSubstr("V = 6"))));
    Tensor grad_table({6, 3});
    EXPECT_THAT([&] { embedding_backward(Tensor({3, 3}), Tensor({3}, std::vector<float>{0, value, 1}), grad_table, 1.0f); },
                ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr(text))));
  }
}

}  // namespace
}  // namespace unitscale

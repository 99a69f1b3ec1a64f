#include "unitscale/ops/embedding.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

using Ids = std::vector<std::int32_t>;

Tensor id_tensor(const Shape& shape, const Ids& values) {
  return Tensor(shape, std::span<const std::int32_t>(values));
}

Tensor random_ids(const Shape& shape, std::int64_t vocabulary, std::mt19937& rng) {
  Tensor ids(shape, DType::kI32);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(vocabulary - 1));
  for (std::int32_t& v : ids.span_as<std::int32_t>()) v = pick(rng);
  return ids;
}

// The row an id addresses, as the kernels must read it: the exact integer.
std::int64_t id_at(const Tensor& ids, std::int64_t n) {
  return ids.span_as<std::int32_t>()[static_cast<std::size_t>(n)];
}

const testing::GradcheckOptions kTableOnly{.differentiable = {false, true}};

TEST(EmbeddingGradcheck, TableGradientWithRepeatedIds) {
  std::mt19937 rng(1);
  testing::gradcheck(kEmbeddingOp, {id_tensor({2, 3}, Ids{0, 4, 2, 4, 4, 1}), random_normal({5, 3}, rng)},
                     {}, kTableOnly);
  testing::gradcheck(kEmbeddingOp, {random_ids({7}, 3, rng), random_normal({3, 2}, rng)}, {}, kTableOnly);
  testing::gradcheck(kEmbeddingOp, {id_tensor({}, Ids{1}), random_normal({2, 4}, rng)}, {}, kTableOnly);
  // The default (no differentiable list) is every f32 input: the table, never the i32 ids.
  testing::gradcheck(kEmbeddingOp, {id_tensor({2, 3}, Ids{0, 4, 2, 4, 4, 1}), random_normal({5, 3}, rng)},
                     {});
}

TEST(EmbeddingForward, LooksUpRowsAndKeepsIdShape) {
  std::mt19937 rng(2);
  const Tensor ids = id_tensor({2, 2}, Ids{3, 0, 3, 1});
  const Tensor table = random_normal({4, 5}, rng);
  OpRun run(kEmbeddingOp, {ids, table}, {});
  EXPECT_EQ(run.output().shape(), (Shape{2, 2, 5}));
  EXPECT_EQ(run.output().dtype(), DType::kF32);
  run.forward();
  for (std::int64_t n = 0; n < 4; ++n) {
    for (std::int64_t c = 0; c < 5; ++c) {
      EXPECT_EQ(run.output()[n * 5 + c], table[id_at(ids, n) * 5 + c]);
    }
  }
  // The ids never get a gradient of their own: none by default, only a zero one if somebody asks.
  const Tensor g = random_normal({2, 2, 5}, rng);
  const auto by_default = run.backward({g});
  EXPECT_FALSE(by_default[0].has_value());
  ASSERT_TRUE(by_default[1].has_value());
  const auto grads = run.backward({g}, {true, true});
  ASSERT_TRUE(grads[0].has_value());
  EXPECT_EQ(grads[0]->shape(), ids.shape());
  for (const float v : grads[0]->span()) EXPECT_EQ(v, 0.0f);
  EXPECT_FLOAT_EQ((*grads[1])[2 * 5], 0.0f);  // row 2 is never looked up
  for (std::int64_t i = 0; i < table.numel(); ++i) EXPECT_EQ((*grads[1])[i], (*by_default[1])[i]);
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

// The unit-scaling targets (docs/unit_scaling.md): V = 4096, 512 ids: out 0.993, table gradient 1.004.
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
      expected[static_cast<std::size_t>(id_at(ids, n) * d + c)] += 0.5 * g[n * d + c];
    }
  }
  for (std::int64_t i = 0; i < grad_table.numel(); ++i) {
    EXPECT_NEAR(grad_table[i], expected[static_cast<std::size_t>(i)], 1e-4);
  }
}

TEST(EmbeddingErrors, ShapesNameTheOp) {
  Graph graph;
  const Value ids = graph.input("ids", {4, 8}, DType::kI32);
  EXPECT_THAT([&] { embedding(ids, graph.parameter("t1", {16})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("[16]"), HasSubstr("[4, 8]"))));
  EXPECT_THAT([&] { embedding(ids, graph.parameter("t3", {2, 3, 4})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("[2, 3, 4]"))));
  const Value y = embedding(ids, graph.parameter("table", {100, 12}));
  EXPECT_EQ(y.shape(), (Shape{4, 8, 12}));
  EXPECT_EQ(y.dtype(), DType::kF32);
}

// Every id outside [0, V) is rejected, by the forward and the backward kernel, naming the op, the
// id, its position and V: just past the end, negative, and the extremes of int32.
TEST(EmbeddingErrors, OutOfRangeIdsNameTheOpTheIdAndV) {
  std::mt19937 rng(6);
  const Tensor table = random_normal({6, 3}, rng);
  constexpr std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
  constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();
  const std::vector<std::pair<std::int32_t, std::string>> bad = {
      {6, "id 6 "}, {7, "id 7 "}, {-1, "id -1 "}, {kMin, "id -2147483648 "}, {kMax, "id 2147483647 "}};
  for (const auto& [value, text] : bad) {
    SCOPED_TRACE(text);
    OpRun run(kEmbeddingOp, {id_tensor({3}, Ids{0, value, 1}), table}, {});
    EXPECT_THAT([&] { run.forward(); },
                ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr(text), HasSubstr("position 1"),
                                           HasSubstr("[0, 6)"), HasSubstr("V = 6"))));
    Tensor grad_table({6, 3});
    EXPECT_THAT([&] { embedding_backward(Tensor({3, 3}), id_tensor({3}, Ids{0, value, 1}), grad_table, 1.0f); },
                ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr(text), HasSubstr("position 1"),
                                           HasSubstr("V = 6"))));
  }
  // The boundary ids 0 and V - 1 are valid.
  OpRun ok(kEmbeddingOp, {id_tensor({2}, Ids{0, 5}), table}, {});
  EXPECT_NO_THROW(ok.forward());
}

// The kernels read ids only as i32: a float tensor of ids is refused, never reinterpreted.
TEST(EmbeddingErrors, KernelsRefuseFloatIds) {
  std::mt19937 rng(7);
  const Tensor table = random_normal({6, 3}, rng);
  const Tensor float_ids({3}, std::vector<float>{0, 2, 1});
  Tensor y({3, 3}), grad_table({6, 3});
  EXPECT_THAT([&] { embedding_forward(float_ids, table, y, 1.0f); },
              ThrowsMessage<Error>(AllOf(HasSubstr("expected a i32"), HasSubstr("got f32"))));
  EXPECT_THAT([&] { embedding_backward(Tensor({3, 3}), float_ids, grad_table, 1.0f); },
              ThrowsMessage<Error>(AllOf(HasSubstr("expected a i32"), HasSubstr("got f32"))));
}

// The builder checks the dtypes when the node is recorded: ids of any dtype but i32 (the float
// ids of old, or a low-precision float) and a table of any dtype but f32 fail at once, naming the
// op, the input, the value and both dtypes, and leave the graph unchanged.
TEST(EmbeddingErrors, WrongDtypesFailAtRecordTime) {
  Graph graph;
  const Value table = graph.parameter("table", {10, 4});
  for (const DType bad : {DType::kF32, DType::kBF16, DType::kE4M3FN}) {
    const std::string name(dtype_name(bad));
    SCOPED_TRACE(name);
    const Value ids = graph.input("ids_" + name, {2, 3}, bad);
    const std::size_t nodes = graph.nodes().size();
    EXPECT_THAT([&] { embedding(ids, table); },
                ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("input 'ids'"),
                                           HasSubstr(fmt::format("(%{})", ids.id())),
                                           HasSubstr("has dtype " + name), HasSubstr("expected i32"))));
    EXPECT_EQ(graph.nodes().size(), nodes);
  }
  const Value ids = graph.input("ids", {2, 3}, DType::kI32);
  const Value int_table = graph.input("int_table", {10, 4}, DType::kI32);
  EXPECT_THAT([&] { embedding(ids, int_table); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("input 'table'"),
                                         HasSubstr(fmt::format("(%{})", int_table.id())),
                                         HasSubstr("has dtype i32"), HasSubstr("expected f32"))));
  EXPECT_EQ(embedding(ids, table).shape(), (Shape{2, 3, 4}));
}

// i32 ids address every row exactly, also past 2^24 where float ids could not: with float ids,
// 2^24 + 1 would have rounded to 2^24. V = 2^24 + 3 rows of d = 1 (64 MiB); row v holds v mod 2^16,
// so neighbouring rows differ and every value is exact.
TEST(EmbeddingLargeVocabulary, IdsAtAndBeyond2To24AddressTheirOwnRows) {
  constexpr std::int64_t k2To24 = std::int64_t{1} << 24;
  const std::int64_t vocabulary = k2To24 + 3;
  Tensor table({vocabulary, 1});
  float* t = table.data();
  for (std::int64_t v = 0; v < vocabulary; ++v) t[v] = static_cast<float>(v & 0xFFFF);
  const auto big = [](std::int64_t v) { return static_cast<std::int32_t>(v); };
  const Ids values = {big(k2To24 + 1), big(k2To24), big(k2To24 + 2), big(k2To24 - 1),
                      big(k2To24 + 1), 0,           big(k2To24 + 2)};
  const auto tokens = static_cast<std::int64_t>(values.size());
  const Tensor ids = id_tensor({tokens}, values);

  Tensor y({tokens, 1});
  embedding_forward(ids, table, y, 1.0f);
  for (std::int64_t n = 0; n < tokens; ++n) {
    const std::int64_t row = values[static_cast<std::size_t>(n)];
    EXPECT_EQ(y[n], static_cast<float>(row & 0xFFFF)) << "token " << n << ", id " << row;
  }
  EXPECT_EQ(y[0], 1.0f);   // 2^24 + 1
  EXPECT_EQ(y[1], 0.0f);   // 2^24
  EXPECT_EQ(y[2], 2.0f);   // 2^24 + 2, the last row
  EXPECT_EQ(y[3], 65535.0f);  // 2^24 - 1

  // The scatter adds each token's gradient to exactly its own row (twice for repeated ids), and
  // every other row is zero.
  const std::vector<float> g_values = {1.0f, 2.0f, 4.0f, 8.0f, 16.0f, 32.0f, 64.0f};
  const Tensor g({tokens, 1}, g_values);
  Tensor grad_table({vocabulary, 1});
  embedding_backward(g, ids, grad_table, 0.5f);
  EXPECT_EQ(grad_table[k2To24], 0.5f * 2.0f);
  EXPECT_EQ(grad_table[k2To24 + 1], 0.5f * (1.0f + 16.0f));
  EXPECT_EQ(grad_table[k2To24 + 2], 0.5f * (4.0f + 64.0f));
  EXPECT_EQ(grad_table[k2To24 - 1], 0.5f * 8.0f);
  EXPECT_EQ(grad_table[0], 0.5f * 32.0f);
  std::int64_t nonzero_elsewhere = 0;
  for (std::int64_t v = 1; v < k2To24 - 1; ++v) nonzero_elsewhere += grad_table[v] != 0.0f;
  EXPECT_EQ(nonzero_elsewhere, 0);

  // V is the first invalid id, named in full.
  const Tensor past_end = id_tensor({2}, Ids{big(k2To24), big(vocabulary)});
  EXPECT_THAT([&] { embedding_forward(past_end, table, Tensor({2, 1}), 1.0f); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("id 16777219 "),
                                         HasSubstr("position 1"), HasSubstr("V = 16777219"))));
  EXPECT_THAT([&] { embedding_backward(Tensor({2, 1}), past_end, grad_table, 1.0f); },
              ThrowsMessage<Error>(AllOf(HasSubstr("embedding"), HasSubstr("id 16777219 "),
                                         HasSubstr("position 1"), HasSubstr("V = 16777219"))));
}

// Through the graph: i32 ids bound to an i32 input, the lookup and the table gradient from
// autodiff (seeded with an upstream gradient g) equal the kernels', and the ids get no gradient.
TEST(EmbeddingGraph, BuilderAutodiffAndExecutorMatchTheKernels) {
  std::mt19937 rng(8);
  const Tensor ids = random_ids({3, 4}, 7, rng);
  const Tensor table = random_normal({7, 5}, rng);
  const Tensor g = random_normal({3, 4, 5}, rng);
  for (const Scaling scaling : {Scaling::kUnscaled, Scaling::kUnit}) {
    Graph graph(scaling);
    const Value ids_v = graph.input("ids", ids.shape(), DType::kI32);
    const Value table_v = graph.parameter("table", table.shape());
    const Value upstream = graph.input("upstream", g.shape());
    const Value y = embedding(ids_v, table_v);
    const Value wrt[] = {ids_v, table_v};
    const auto grads = autodiff(graph, y, wrt, {.seed = upstream});
    EXPECT_FALSE(grads[0].present());
    ASSERT_TRUE(grads[1].present());
    const Value outputs[] = {y, grads[1]};
    Executor exec(graph, outputs);
    exec.bind(ids_v, ids);
    exec.bind(table_v, table);
    exec.bind(upstream, g);
    exec.run();

    OpRun run(kEmbeddingOp, {ids, table}, {}, scaling);
    run.forward();
    const auto kernel_grads = run.backward({g});
    EXPECT_FALSE(kernel_grads[0].has_value());
    for (std::int64_t i = 0; i < run.output().numel(); ++i) {
      EXPECT_EQ(exec.get(y).data()[i], run.output()[i]);
    }
    for (std::int64_t i = 0; i < table.numel(); ++i) {
      EXPECT_EQ(exec.get(grads[1]).data()[i], (*kernel_grads[1])[i]);
    }
  }
}

}  // namespace
}  // namespace unitscale

#include "unitscale/graph/executor.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/builders/linear.hpp"
#include "unitscale/ops/linear.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using testing::random_normal;

TEST(Executor, ComputesWhatTheKernelsCompute) {
  std::mt19937 rng(1);
  Graph g;
  const Value x = g.input("x", {5, 6});
  const Value w = g.parameter("w", {3, 6});
  const Value y = linear(x, w);
  const Tensor xt = random_normal({5, 6}, rng), wt = random_normal({3, 6}, rng);
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.run();
  Tensor expected({5, 3});
  linear_forward(xt, wt, {}, expected, static_cast<float>(1 / std::sqrt(6.0)));
  for (int i = 0; i < 15; ++i) EXPECT_FLOAT_EQ(exec.get(y).data()[i], expected[i]);
}

// A chain of n equally sized layers needs two live activations at a time, not n.
TEST(Executor, ReusesMemoryOfDeadValues) {
  Graph g;
  Value h = g.input("x", {64, 64});
  const Value w = g.parameter("w", {64, 64});
  for (int i = 0; i < 10; ++i) h = linear(h, w);
  const Value outputs[] = {h};
  Executor exec(g, outputs);
  EXPECT_EQ(exec.planned_node_count(), 10u);
  EXPECT_EQ(exec.peak_bytes(), 2u * 64 * 64 * sizeof(float));
}

TEST(Executor, RunsOnlyWhatTheOutputsNeed) {
  Graph g;
  const Value x = g.input("x", {2, 2});
  const Value a = linear(x, g.parameter("wa", {2, 2}));
  linear(x, g.parameter("wb", {2, 2}));
  const Value outputs[] = {a};
  EXPECT_EQ(Executor(g, outputs).planned_node_count(), 1u);
}

TEST(Executor, BindingErrorsNameTheValue) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value y = linear(x, g.parameter("w", {4, 3}));
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  Tensor wrong({3, 2});
  EXPECT_THAT([&] { exec.bind(x, wrong); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'x' (%0) expects shape [2, 3], got [3, 2]")));
  EXPECT_THAT([&] { exec.run(); }, ::testing::ThrowsMessage<Error>(HasSubstr("input 'x' (%0) is not bound")));
  EXPECT_THAT([&] { exec.get(x); }, ::testing::ThrowsMessage<Error>(HasSubstr("not requested")));
}

TEST(Executor, DetectsGraphChangesAfterPlanning) {
  Graph g;
  const Value x = g.input("x", {1, 2});
  const Value y = linear(x, g.parameter("w", {2, 2}));
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  linear(y, g.parameter("w2", {2, 2}));
  EXPECT_THAT([&] { exec.run(); }, ::testing::ThrowsMessage<Error>(HasSubstr("graph changed")));
}

}  // namespace
}  // namespace unitscale

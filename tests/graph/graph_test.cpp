#include "unitscale/graph/graph.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unitscale/error.hpp"
#include "unitscale/graph/builders/linear.hpp"
#include "unitscale/graph/dead_code.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;

TEST(Graph, PrinterIsStable) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value w = g.parameter("w", {2, 8});
  const Value b = g.parameter("b", {2});
  linear(x, w, {.bias = b});
  EXPECT_EQ(g.to_string(),
            "%0 = input \"x\" [4, 8]\n"
            "%1 = parameter \"w\" [2, 8]\n"
            "%2 = parameter \"b\" [2]\n"
            "%3 = linear(x=%0, weight=%1, bias=%2) {constraint=\"to_output_scale\", power_alpha=0.5, "
            "power_beta_x=0.5, power_beta_weight=0.5, alpha=0.353553391, beta_x=0.353553391, "
            "beta_weight=0.5, beta_bias=0.5} : [4, 2]\n");
}

TEST(Graph, UnscaledGraphRecordsNoScales) {
  Graph g(Scaling::kUnscaled);
  const Value y = linear(g.input("x", {3, 5}), g.parameter("w", {4, 5}));
  EXPECT_EQ(y.shape(), (Shape{3, 4}));
  EXPECT_FALSE(g.nodes()[0].attrs.has("alpha"));
}

TEST(Graph, ShapeErrorsSurfaceWhenRecorded) {
  Graph g;
  const Value x = g.input("x", {3, 5});
  EXPECT_THAT([&] { linear(x, g.parameter("w", {4, 6})); },
              ::testing::ThrowsMessage<Error>(HasSubstr("linear: x [3, 5] and weight [4, 6]")));
  EXPECT_TRUE(g.nodes().empty());
}

TEST(Graph, MixingGraphsIsAnError) {
  Graph a, b;
  EXPECT_THAT([&] { linear(a.input("x", {1, 2}), b.parameter("w", {2, 2})); },
              ::testing::ThrowsMessage<Error>(HasSubstr("different graph")));
}

TEST(Graph, FindByName) {
  Graph g;
  const Value w = g.parameter("w", {2, 2});
  EXPECT_EQ(g.find("w"), w);
  EXPECT_THAT([&] { g.find("nope"); }, ::testing::ThrowsMessage<Error>(HasSubstr("'nope'")));
}

TEST(DeadCode, RemovesOnlyUnusedNodes) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value used = linear(x, g.parameter("w1", {3, 3}));
  const Value unused = linear(x, g.parameter("w2", {4, 3}));
  const Value y = linear(used, g.parameter("w3", {1, 3}));
  const Value keep[] = {y};
  EXPECT_EQ(eliminate_dead_code(g, keep), 1);
  EXPECT_EQ(g.nodes().size(), 2u);
  EXPECT_TRUE(g.is_dead(unused.id()));
  EXPECT_FALSE(g.is_dead(used.id()));
  EXPECT_THAT([&] { linear(unused, g.parameter("w4", {1, 4})); },
              ::testing::ThrowsMessage<Error>(HasSubstr("removed by a pass")));
}

}  // namespace
}  // namespace unitscale

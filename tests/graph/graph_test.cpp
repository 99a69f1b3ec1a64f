#include "unitscale/graph/graph.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unitscale/error.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/ops/registry.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
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
            "%3 = linear(x=%0, weight=%1, bias=%2) {constraint=to_output_scale, power_alpha=0.5, "
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

TEST(Graph, ParametersCarryTheirMetadataIntoThePrinter) {
  Graph g;
  const Value w = g.parameter("w", {3, 8},
                              {.role = ParameterRole::kWeight, .fan_in = 8, .fan_out = 3,
                               .width_dims = {0, 1}, .depth = 2});
  const Value b = g.parameter("b", {3});
  ASSERT_TRUE(g.info(w).parameter.has_value());
  EXPECT_EQ(g.info(w).parameter->fan_in, 8);
  EXPECT_FALSE(g.info(b).parameter.has_value());
  EXPECT_EQ(g.to_string(),
            "%0 = parameter \"w\" [3, 8] {role=weight, fan_in=8, fan_out=3, width_dims=[0, 1], "
            "depth=2}\n"
            "%1 = parameter \"b\" [3]\n");
  EXPECT_THAT([&] { g.parameter("e", {10, 4}, {.role = ParameterRole::kEmbedding, .width_dims = {2}}); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("'e'"), HasSubstr("width dim 2"))));
  EXPECT_THAT([&] { g.parameter("f", {4}, {.fan_in = 0}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("fan_in and fan_out")));
  EXPECT_THAT([&] { g.parameter("d", {4}, {.depth = -1}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("depth")));
}

TEST(Graph, RemoveNodesRejectsKeepingAConsumerOfARemovedNode) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value h = linear(x, g.parameter("w1", {3, 3}));
  linear(h, g.parameter("w2", {1, 3}));
  const std::uint64_t version = g.version();
  EXPECT_THAT([&] { g.remove_nodes(std::vector<int>{0}); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("node 1 (linear)"),
                                                    HasSubstr("node 0 (linear)"))));
  EXPECT_THAT([&] { g.remove_nodes(std::vector<int>{1, 2}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no node 2 (the graph has 2)")));
  EXPECT_EQ(g.nodes().size(), 2u);  // nothing changed
  EXPECT_EQ(g.version(), version);
  EXPECT_FALSE(g.is_dead(h.id()));
}

// Shapes are checked before the scale rules run: a rank-0 weight is a shape error naming the op,
// and a zero-sized dimension the rule divides by is an error, not a node scaled by ∞.
TEST(Graph, ShapeChecksComeBeforeScaleRules) {
  Graph g;
  const Value x = g.input("x", {4, 3});
  EXPECT_THAT([&] { linear(x, g.parameter("w0", Shape{})); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("linear"), HasSubstr("weight []"))));
  const Value empty = g.input("empty", {4, 0});
  EXPECT_THAT([&] { linear(empty, g.parameter("w", {5, 0})); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("linear"), HasSubstr("alpha"),
                                                    HasSubstr("[4, 0]"))));
}

// A node recorded by name gets the op's own rule: linear_readout is α = 1/fan_in, unconstrained
// (β_x = fan_out^-½), without the builder's attributes.
TEST(Graph, LinearReadoutByNameHasItsDefiningRule) {
  Graph g;
  const Value x = g.input("x", {4, 16});
  const Value w = g.parameter("w", {9, 16});
  const Value inputs[] = {x, w, Value{}};
  const Value y = g.apply1(op_by_name("linear_readout"), inputs, {});
  const Attributes& attrs = g.nodes()[static_cast<std::size_t>(g.info(y).node)].attrs;
  EXPECT_DOUBLE_EQ(attrs.get_double("test", "alpha"), 1.0 / 16);
  EXPECT_DOUBLE_EQ(attrs.get_double("test", "beta_x"), 1.0 / 3);
}

}  // namespace
}  // namespace unitscale

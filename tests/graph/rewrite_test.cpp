// The rewriting primitives passes use (Graph::uses, replace_input, replace_uses, replace_node,
// remove_nodes) and the computed execution order: an inserted node runs before the consumers it
// was wired into, every refused edit changes nothing, and the rewritten graph computes what its
// structure says.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/graph/scaled_op.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

using Uses = std::vector<Graph::Use>;

// data · scale as an fp32 value (the materialize op scaled graphs end in).
Value materialize_value(Graph& g, Value data, Value scale) {
  const Value in[] = {data, scale};
  return g.apply1(kMaterializeOp, in, {});
}

// x → relu → exp, and a second reader sqrt(x).
struct Chain {
  Graph g{Scaling::kUnscaled};
  Value x = g.input("x", {3});
  Value r = relu(x);
  Value e = unitscale::exp(r);
  Value s = unitscale::sqrt(x);
};

TEST(Rewrite, UsesListsEveryReaderInExecutionOrder) {
  Chain c;
  EXPECT_EQ(c.g.uses(c.x), (Uses{{0, 0}, {2, 0}}));
  EXPECT_EQ(c.g.uses(c.r), (Uses{{1, 0}}));
  EXPECT_TRUE(c.g.uses(c.e).empty());
}

// Insert scale(x, 2) between x and its readers: the new node is stored last but runs first, and
// the graph computes relu(2x) and sqrt(2x).
TEST(Rewrite, InsertedNodeRunsBeforeItsNewConsumers) {
  Chain c;
  const Value doubled = scale_fwd(c.x, 2.0);
  EXPECT_EQ(c.g.replace_uses(c.x, doubled), 2);  // scale itself keeps reading x
  EXPECT_EQ(c.g.uses(c.x), (Uses{{3, 0}}));
  EXPECT_EQ(c.g.execution_order(), (std::vector<int>{3, 0, 1, 2}));
  EXPECT_THAT(c.g.to_string(), HasSubstr("%4 = scale(x=%0)"));

  Executor exec(c.g, std::array{c.e, c.s});
  const Tensor x({3}, std::vector<float>{-1.0f, 0.5f, 2.0f});
  exec.bind(c.x, x);
  exec.run();
  // relu(2x) = (0, 1, 4); exp within a few ulps (the kernel's vectorised exp).
  EXPECT_THAT(exec.get(c.e).span(),
              ElementsAre(1.0f, FloatNear(std::exp(1.0f), 1e-6f), FloatNear(std::exp(4.0f), 1e-4f)));
  EXPECT_THAT(exec.get(c.s).span()[2], 2.0f);
}

// Only the chosen consumers are rewired: a cast inserted before relu alone.
TEST(Rewrite, ReplaceUsesRewiresOnlyTheChosenConsumers) {
  Chain c;
  const Value q = cast(cast(c.x, DType::kBF16), DType::kF32);
  const std::array<int, 1> relu_only{0};
  EXPECT_EQ(c.g.replace_uses(c.x, q, relu_only), 1);
  EXPECT_EQ(c.g.nodes()[0].inputs[0], q.id());
  EXPECT_EQ(c.g.nodes()[2].inputs[0], c.x.id());  // sqrt still reads x
  Executor exec(c.g, std::array{c.r, c.s});
  const Tensor x({3}, std::vector<float>{1.00390625f, 3.0f, 4.0f});  // 1 + 2^-8: not a bf16
  exec.bind(c.x, x);
  exec.run();
  EXPECT_THAT(exec.get(c.r).span(), ElementsAre(1.0f, 3.0f, 4.0f));
  EXPECT_EQ(exec.get(c.s).span()[2], 2.0f);
}

TEST(Rewrite, RefusedEditsNameTheProblemAndChangeNothing) {
  Chain c;
  const std::uint64_t version = c.g.version();
  const std::string before = c.g.to_string();
  const Value wide = c.g.input("wide", {4});
  const Value bf16 = cast(c.x, DType::kBF16);
  const std::uint64_t after_records = c.g.version();
  EXPECT_GT(after_records, version);
  EXPECT_THAT([&] { c.g.replace_input(0, 0, wide); },
              ThrowsMessage<Error>(AllOf(HasSubstr("relu input 'x' is [3] f32"),
                                         HasSubstr("[4] f32"))));
  EXPECT_THAT([&] { c.g.replace_uses(c.x, bf16); },
              ThrowsMessage<Error>(HasSubstr("[3] f32 but %")));
  // exp reading its own consumer's output would be a cycle.
  const Value after_exp = unitscale::exp(c.e);
  EXPECT_THAT([&] { c.g.replace_input(1, 0, after_exp); },
              ThrowsMessage<Error>(HasSubstr("would make a cycle")));
  EXPECT_THAT([&] { c.g.replace_input(9, 0, c.x); },
              ThrowsMessage<Error>(HasSubstr("no node 9")));
  EXPECT_THAT([&] { c.g.replace_input(0, 3, c.x); },
              ThrowsMessage<Error>(HasSubstr("relu (node 0) has no input 3")));
  EXPECT_THAT([&] { c.g.remove_nodes(std::vector<int>{0}); },
              ThrowsMessage<Error>(HasSubstr("node 1 (exp) stays but reads")));
  EXPECT_EQ(c.g.nodes()[1].inputs[0], c.r.id());
  EXPECT_EQ(c.g.nodes().size(), 5u);
}

// replace_node turns nodes into other ops in place (propagate_scales makes each node its scaled
// op): relu and exp become scaled_relu and scaled_exp, keeping their indices and output values,
// which now hold FP16 data beside new scale outputs, and the chain computes exp(relu(x)) through
// FP16 storage.
TEST(Rewrite, ReplaceNodeKeepsItsIndexAndOutputValues) {
  Chain c;
  const DType f16[] = {DType::kF16};
  const std::optional<Shape> scale_shape[] = {Shape{}};
  const DType f32[] = {DType::kF32};
  const Value relu_inputs[] = {c.x, Value{}};
  const std::vector<Value> r =
      c.g.replace_node(0, scaled_of(*c.g.nodes()[0].op), relu_inputs, {}, f16, scale_shape, f32);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], c.r) << "the output keeps its value";
  EXPECT_EQ(c.g.info(c.r).dtype, DType::kF16);
  EXPECT_EQ(c.g.info(r[1]).node, 0);
  const Value exp_inputs[] = {c.r, r[1]};
  const std::vector<Value> e =
      c.g.replace_node(1, scaled_of(*c.g.nodes()[1].op), exp_inputs, {}, f16, scale_shape, f32);
  EXPECT_THAT(c.g.to_string(), HasSubstr("scaled_exp(x=%1, x_scale=%"));
  EXPECT_EQ(c.g.execution_order(), (std::vector<int>{0, 1, 2}));

  const Value materialised = materialize_value(c.g, c.e, e[1]);
  Executor exec(c.g, std::array{materialised});
  const Tensor x({3}, std::vector<float>{-1.0f, 0.5f, 2.0f});
  exec.bind(c.x, x);
  exec.run();
  // exp(relu(x)) = (1, e^0.5, e^2), each stored once in FP16 (relative 2^-11).
  EXPECT_THAT(exec.get(materialised).span(), ElementsAre(1.0f, FloatNear(std::exp(0.5f), 2e-3f),
                                                         FloatNear(std::exp(2.0f), 8e-3f)));

  const std::uint64_t version = c.g.version();
  EXPECT_THAT(
      [&] { c.g.replace_node(2, scaled_of(*c.g.nodes()[2].op), relu_inputs, {}, f16, {}, {}); },
      ThrowsMessage<Error>(HasSubstr("replace_node: node 2 (sqrt) has 1 outputs; "
                                     "scaled_sqrt has 2 inputs and 2 outputs")));
  EXPECT_EQ(c.g.version(), version);
}

// Removing nodes renumbers the remaining ones but keeps value ids; the removed outputs are dead,
// and an executor made before the edit refuses to run.
TEST(Rewrite, RemoveNodesKeepsValueIdsAndStaleExecutorsRefuse) {
  Chain c;
  Executor stale(c.g, std::array{c.s});
  c.g.remove_nodes(std::vector<int>{1});  // exp: nobody reads it
  EXPECT_TRUE(c.g.is_dead(c.e.id()));
  EXPECT_EQ(c.g.info(c.s).node, 1);  // sqrt moved from index 2 to 1
  EXPECT_THAT([&] { stale.run(); }, ThrowsMessage<Error>(HasSubstr("make a new executor")));
  EXPECT_THAT([&] { Executor(c.g, std::array{c.e}); },
              ThrowsMessage<Error>(HasSubstr("removed by a pass")));
  EXPECT_THAT([&] { relu(c.e); }, ThrowsMessage<Error>(HasSubstr("removed by a pass")));
}

// Autodiff and dead-code elimination follow the execution order, not storage order: on a graph
// whose inserted node is stored after its consumer, the gradient is that of the rewired graph.
TEST(Rewrite, AutodiffAndDeadCodeFollowTheExecutionOrder) {
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {3});
  const Value y = mul(x, x);
  const Value loss = sum(y);
  const Value tripled = scale_fwd(x, 3.0);
  const std::array<int, 1> mul_node{0};
  EXPECT_EQ(g.replace_uses(x, tripled, mul_node), 2);  // both operands of mul
  const Value unused = unitscale::exp(x);
  EXPECT_EQ(eliminate_dead_code(g, std::array{loss}), 1);
  EXPECT_TRUE(g.is_dead(unused.id()));
  // scale_fwd scales the forward only (its backward is the identity), so the gradient is
  // 2·(3x)·1 = 6x; had autodiff walked storage order, it would have missed the inserted node.
  const Value grad = autodiff(g, loss, std::array{x}).at(0);
  Executor exec(g, std::array{loss, grad});
  const Tensor xs({3}, std::vector<float>{1.0f, -2.0f, 0.5f});
  exec.bind(x, xs);
  exec.run();
  EXPECT_EQ(exec.get(loss).span()[0], 9.0f * (1.0f + 4.0f + 0.25f));
  EXPECT_THAT(exec.get(grad).span(), ElementsAre(6.0f, -12.0f, 3.0f));
}

}  // namespace
}  // namespace unitscale

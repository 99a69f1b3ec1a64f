#include "unitscale/graph/autodiff.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

// loss = v · W · (W · x): W is used twice, so its two gradient contributions must be summed.
struct SharedWeightModel {
  Graph graph{Scaling::kUnscaled};
  Value x = graph.input("x", {1, 4});
  Value w = graph.parameter("w", {4, 4});
  Value v = graph.parameter("v", {1, 4});
  Value loss = linear(linear(linear(x, w), w), v);
};

double run_loss(SharedWeightModel& m, const Tensor& x, const Tensor& w, const Tensor& v) {
  const Value outputs[] = {m.loss};
  Executor exec(m.graph, outputs);
  exec.bind(m.x, x);
  exec.bind(m.w, w);
  exec.bind(m.v, v);
  exec.run();
  return exec.get(m.loss).data()[0];
}

TEST(Autodiff, AccumulatesGradientsThatMeetAndMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  const Tensor x = random_normal({1, 4}, rng), w = random_normal({4, 4}, rng), v = random_normal({1, 4}, rng);
  SharedWeightModel m;
  const Value wrt[] = {m.w, m.x};
  const auto grads = autodiff(m.graph, m.loss, wrt);
  ASSERT_TRUE(grads[0].present());
  EXPECT_EQ(grads[0].shape(), (Shape{4, 4}));
  int accumulations = 0;
  for (const Node& n : m.graph.nodes()) accumulations += n.op->name == "accumulate_grad";
  EXPECT_EQ(accumulations, 1);

  const Value outputs[] = {grads[0], grads[1]};
  Executor exec(m.graph, outputs);
  exec.bind(m.x, x);
  exec.bind(m.w, w);
  exec.bind(m.v, v);
  exec.run();
  const ConstTensorView gw = exec.get(grads[0]);

  SharedWeightModel reference;  // a separate forward-only graph for finite differences
  for (std::int64_t i = 0; i < 16; ++i) {
    Tensor plus = w, minus = w;
    plus[i] += 1e-2f;
    minus[i] -= 1e-2f;
    const double numeric = (run_loss(reference, x, plus, v) - run_loss(reference, x, minus, v)) /
                           (static_cast<double>(plus[i]) - minus[i]);
    EXPECT_NEAR(gw.data()[i], numeric, 2e-3 + 1e-2 * std::abs(numeric)) << "element " << i;
  }
}

TEST(Autodiff, ValuesTheLossDoesNotDependOnGetNoGradient) {
  Graph g;
  const Value x = g.input("x", {1, 3});
  const Value unrelated = g.parameter("u", {2, 2});
  const Value loss = linear(x, g.parameter("w", {1, 3}));
  const Value wrt[] = {unrelated};
  EXPECT_FALSE(autodiff(g, loss, wrt)[0].present());
}

TEST(Autodiff, LossMustBeScalar) {
  Graph g;
  const Value y = linear(g.input("x", {2, 3}), g.parameter("w", {2, 3}));
  const Value wrt[] = {g.find("w")};
  EXPECT_THAT([&] { autodiff(g, y, wrt); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("one element, got shape [2, 2]")));
}

// In a unit-scaled graph the backward nodes carry the β scales: the weight gradient of a single
// linear equals β_W times the unscaled one.
TEST(Autodiff, UnitScaledGraphCarriesBetaIntoBackward) {
  std::mt19937 rng(6);
  const Tensor x = random_normal({1, 9}, rng), w = random_normal({1, 9}, rng);
  auto weight_grad = [&](Scaling scaling) {
    Graph g(scaling);
    const Value xv = g.input("x", {1, 9}), wv = g.parameter("w", {1, 9});
    const Value wrt[] = {wv};
    const Value grad = autodiff(g, linear(xv, wv, {.constraint = Constraint::kNone}), wrt)[0];
    const Value outputs[] = {grad};
    Executor exec(g, outputs);
    exec.bind(xv, x);
    exec.bind(wv, w);
    exec.run();
    return Tensor(Shape{9}, exec.get(grad).span());
  };
  const Tensor plain = weight_grad(Scaling::kUnscaled), scaled = weight_grad(Scaling::kUnit);
  for (int i = 0; i < 9; ++i) EXPECT_FLOAT_EQ(scaled[i], plain[i]);  // B = 1 row: β_W = 1
  for (int i = 0; i < 9; ++i) EXPECT_FLOAT_EQ(plain[i], x[i]);       // d(w·x)/dw = x
}

// Token ids (i32) are not differentiable: autodiff neither asks the embedding's backward for them
// nor returns a gradient, even when asked; nor for cross_entropy's i32 labels.
TEST(Autodiff, NondifferentiableInputsGetNoGradient) {
  Graph g;
  const Value ids = g.input("ids", {3}, DType::kI32);
  const Value table = g.parameter("table", {5, 2});
  const Value logits = g.parameter("logits", {3, 4});
  const Value labels = g.input("labels", {3}, DType::kI32);
  const Value loss = add(sum(embedding(ids, table)), cross_entropy(logits, labels));
  const std::size_t forward_nodes = g.nodes().size();
  const Value wrt[] = {ids, table, labels, logits};
  const auto grads = autodiff(g, loss, wrt);
  EXPECT_FALSE(grads[0].present());
  EXPECT_TRUE(grads[1].present());
  EXPECT_FALSE(grads[2].present());
  EXPECT_TRUE(grads[3].present());
  EXPECT_FALSE(g.grad_of(ids).present());
  EXPECT_FALSE(g.grad_of(labels).present());
  // The backward nodes are asked for the table's and the logits' gradients only: their outputs
  // for the ids and the labels are absent.
  int backward_ops = 0;
  for (std::size_t n = forward_nodes; n < g.nodes().size(); ++n) {
    const Node& node = g.nodes()[n];
    // Which input of the forward op is the i32 one: ids are embedding's first, labels
    // cross_entropy's second.
    std::size_t integer_input = 0;
    if (node.op->name == "embedding_backward") {
      integer_input = 0;
    } else if (node.op->name == "cross_entropy_backward") {
      integer_input = 1;
    } else {
      continue;
    }
    ++backward_ops;
    ASSERT_EQ(node.outputs.size(), 2u) << node.op->name;
    EXPECT_LT(node.outputs[integer_input], 0)
        << node.op->name << " was asked for the gradient of its i32 input";
    EXPECT_GE(node.outputs[1 - integer_input], 0) << node.op->name;
  }
  EXPECT_EQ(backward_ops, 2);
}

// The value→gradient map stays on the graph, and every appended node names the forward value it
// belongs to: the shared weight's accumulate_grad node belongs to w.
TEST(Autodiff, RecordsTheGradientOfEveryValueAndWhatEachNodeBelongsTo) {
  SharedWeightModel m;
  const std::size_t forward_nodes = m.graph.nodes().size();
  const Value wrt[] = {m.w, m.x};
  const std::vector<Value> grads = autodiff(m.graph, m.loss, wrt);
  EXPECT_EQ(m.graph.grad_of(m.w), grads[0]);
  EXPECT_EQ(m.graph.grad_of(m.x), grads[1]);
  EXPECT_TRUE(m.graph.grad_of(m.loss).present());  // the seed
  int accumulations = 0;
  for (std::size_t n = forward_nodes; n < m.graph.nodes().size(); ++n) {
    const Node& node = m.graph.nodes()[n];
    EXPECT_GE(node.differentiates, 0) << node.op->name;
    if (node.op->name == "accumulate_grad") {
      ++accumulations;
      EXPECT_EQ(node.differentiates, m.w.id());
    }
  }
  EXPECT_EQ(accumulations, 1);
}

// A given seed is the upstream gradient (here of a non-scalar "loss"), and the loss scale
// multiplies every gradient, exactly for a power of two.
TEST(Autodiff, SeedsWithAnUpstreamGradientAndALossScale) {
  std::mt19937 rng(8);
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {3, 4});
  const Value w = g.parameter("w", {2, 4});
  const Value y = linear(x, w);  // [3, 2], not a scalar
  const Value upstream = g.input("upstream", {3, 2});
  const Value wrt[] = {w};
  const Value dw = autodiff(g, y, wrt, {.seed = upstream})[0];
  const Value dw_scaled = autodiff(g, y, wrt, {.seed = upstream, .loss_scale = 1024.0})[0];
  const Value outputs[] = {dw, dw_scaled};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({3, 4}, rng), wt = random_normal({2, 4}, rng);
  const Tensor gt = random_normal({3, 2}, rng);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.bind(upstream, gt);
  exec.run();
  for (int o = 0; o < 2; ++o) {
    for (int i = 0; i < 4; ++i) {  // dW = gᵀ·x
      double expected = 0;
      for (int t = 0; t < 3; ++t) expected += double{gt[t * 2 + o]} * xt[t * 4 + i];
      EXPECT_NEAR(exec.get(dw).data()[o * 4 + i], expected, 1e-5);
      EXPECT_EQ(exec.get(dw_scaled).data()[o * 4 + i], 1024.0f * exec.get(dw).data()[o * 4 + i]);
    }
  }
  EXPECT_THAT([&] { autodiff(g, y, wrt); }, ThrowsMessage<Error>(HasSubstr("one element")));
  EXPECT_THAT([&] { autodiff(g, y, wrt, {.seed = x}); },
              ThrowsMessage<Error>(HasSubstr("the loss's shape [3, 2]")));
  EXPECT_THAT([&] { autodiff(g, y, wrt, {.seed = upstream, .loss_scale = 0.0}); },
              ThrowsMessage<Error>(HasSubstr("loss scale")));
}

}  // namespace
}  // namespace unitscale

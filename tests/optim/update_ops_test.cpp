#include "unitscale/optim/update_ops.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/unitscale.hpp"

namespace unitscale {
namespace {

using namespace testing;
using Vec = std::vector<float>;

constexpr float kTol = 1e-6f;

void expect_near(ConstTensorView t, const Vec& expected, const char* what) {
  ASSERT_EQ(t.numel(), static_cast<std::int64_t>(expected.size())) << what;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(t.data()[i], expected[i], kTol) << what << "[" << i << "]";
  }
}

const Vec kW0 = {1.0f, -2.0f, 0.5f};

// An Adam node over states w, m, v with the gradient as an input; each run feeds the next gradient.
struct AdamRig {
  Graph graph{Scaling::kUnscaled};
  Value w = graph.state("w", {3});
  Value m = graph.state("m", {3});
  Value v = graph.state("v", {3});
  Value grad = graph.input("grad", {3});
  Tensor grad_tensor{Shape{3}};
  std::vector<Value> updated;

  explicit AdamRig(const AdamUpdateOptions& options) {
    updated = adam_update(w, grad, m, v, options);
  }
  // Runs one step per gradient and returns the executor for inspection.
  std::unique_ptr<Executor> run(const std::vector<Vec>& grads) {
    auto exec = std::make_unique<Executor>(graph, updated);
    exec->set_state(w, Tensor(Shape{3}, kW0));
    exec->bind(grad, grad_tensor);
    for (const Vec& g : grads) {
      std::copy(g.begin(), g.end(), grad_tensor.data());
      exec->run();
    }
    return exec;
  }
};

// Step 1 from m = v = 0: m̂ = g, v̂ = g², so w moves by lr·g/(|g| + ε) ≈ lr·sign(g). Step 2 with
// g2 = (1, 1, −2), worked by hand:
//   m2 = 0.9·m1 + 0.1·g2 = (0.145, 0.01, −0.02)       v2 = 0.999·v1 + 0.001·g2² =
//   (0.00124975, 0.001999, 0.007996); 1 − β1² = 0.19, 1 − β2² = 0.001999, so
//   m̂ = (0.763157895, 0.052631579, −0.105263158), v̂ = (0.625187594, 1, 4),
//   w2 = w1 − 0.1·m̂/√v̂ = (0.9 − 0.096518201, −1.9 − 0.005263158, 0.4 + 0.005263158).
TEST(AdamUpdate, OneAndTwoStepsWithBiasCorrection) {
  AdamRig rig({.lr = 0.1, .step = 1, .weight_decay = 0.0});
  const auto one = rig.run({{0.5f, -1.0f, 2.0f}});
  expect_near(one->state(rig.w), {0.9f, -1.9f, 0.4f}, "w1");
  expect_near(one->state(rig.m), {0.05f, -0.1f, 0.2f}, "m1");
  expect_near(one->state(rig.v), {0.00025f, 0.001f, 0.004f}, "v1");
  EXPECT_EQ(one->get(rig.updated[0]).data(), one->state(rig.w).data());  // in place

  const auto two = rig.run({{0.5f, -1.0f, 2.0f}, {1.0f, 1.0f, -2.0f}});
  expect_near(two->state(rig.m), {0.145f, 0.01f, -0.02f}, "m2");
  expect_near(two->state(rig.v), {0.00124975f, 0.001999f, 0.007996f}, "v2");
  expect_near(two->state(rig.w), {0.803481799f, -1.905263158f, 0.405263158f}, "w2");
}

// The recorded step is the first run's: a node recorded at step 2 (state loaded from step 1)
// applies step 2's bias correction on its first run.
TEST(AdamUpdate, RecordedStepOffsetsTheBiasCorrection) {
  AdamRig rig({.lr = 0.1, .step = 2});
  Executor exec(rig.graph, rig.updated);
  exec.set_state(rig.w, Tensor(Shape{3}, Vec{0.9f, -1.9f, 0.4f}));
  exec.set_state(rig.m, Tensor(Shape{3}, Vec{0.05f, -0.1f, 0.2f}));
  exec.set_state(rig.v, Tensor(Shape{3}, Vec{0.00025f, 0.001f, 0.004f}));
  const Tensor g(Shape{3}, Vec{1.0f, 1.0f, -2.0f});
  exec.bind(rig.grad, g);
  exec.run();
  expect_near(exec.state(rig.w), {0.803481799f, -1.905263158f, 0.405263158f}, "w2");
}

// AdamW: w ← (1 − lr·λ)·w − lr·m̂/(√v̂ + ε) = 0.95·w0 − 0.1·sign(g) at step 1.
TEST(AdamUpdate, DecoupledWeightDecay) {
  AdamRig rig({.lr = 0.1,
               .step = 1,
               .weight_decay = 0.5,
               .weight_decay_mode = UpdateDecayMode::kDecoupled});
  const auto exec = rig.run({{0.5f, -1.0f, 2.0f}});
  expect_near(exec->state(rig.w), {0.85f, -1.8f, 0.375f}, "w1");
}

// Independent decay: with a zero gradient w shrinks by exactly λ per step, whatever the LR.
TEST(AdamUpdate, IndependentWeightDecayShrinksByLambda) {
  for (const double lr : {0.1, 1.0}) {
    AdamRig rig({.lr = lr,
                 .step = 1,
                 .weight_decay = 0.01,
                 .weight_decay_mode = UpdateDecayMode::kIndependent});
    const auto exec = rig.run({{0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f}});
    expect_near(exec->state(rig.w), {0.9801f, -1.9602f, 0.49005f}, "w2");
  }
}

// Coupled L2: the gradient becomes g + λ·w = 0.5·w0 with g = 0, so Adam's first step moves w by
// lr·sign(w0), and m = 0.1·0.5·w0.
TEST(AdamUpdate, CoupledL2AddsToTheGradient) {
  AdamRig rig({.lr = 0.1,
               .step = 1,
               .weight_decay = 0.5,
               .weight_decay_mode = UpdateDecayMode::kCoupled});
  const auto exec = rig.run({{0.0f, 0.0f, 0.0f}});
  expect_near(exec->state(rig.w), {0.9f, -1.9f, 0.4f}, "w1");
  expect_near(exec->state(rig.m), {0.05f, -0.1f, 0.025f}, "m1");
}

// The gradient scale multiplies the incoming gradient before the moments see it.
TEST(AdamUpdate, GradientScaleMultipliesTheGradient) {
  AdamRig rig({.lr = 0.1, .step = 1, .gradient_scale = 0.25});
  const auto exec = rig.run({{2.0f, -4.0f, 8.0f}});
  expect_near(exec->state(rig.m), {0.05f, -0.1f, 0.2f}, "m1");
  expect_near(exec->state(rig.v), {0.00025f, 0.001f, 0.004f}, "v1");
}

// SGD over three steps from w0 = (1, −2, 0.5), lr = 0.1, gradients below; the expected values are
// the sequences unrolled by hand (PyTorch semantics: the buffer starts as the first gradient).
const std::vector<Vec> kSgdGrads = {{1.0f, 2.0f, -1.0f}, {0.5f, -1.0f, 1.0f}, {-1.0f, 0.0f, 2.0f}};

struct SgdRun {
  Vec w, buffer;
};

SgdRun run_sgd(const SgdUpdateOptions& options, bool with_buffer, int steps) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {3});
  const Value buffer = with_buffer ? graph.state("buffer", {3}) : Value{};
  const Value grad = graph.input("grad", {3});
  const std::vector<Value> updated = sgd_update(w, grad, buffer, options);
  EXPECT_EQ(updated.size(), 2u);
  EXPECT_EQ(updated[1].present(), with_buffer);
  const Value outputs[] = {updated[0]};
  Executor exec(graph, outputs);
  exec.set_state(w, Tensor(Shape{3}, kW0));
  Tensor g(Shape{3});
  exec.bind(grad, g);
  for (int s = 0; s < steps; ++s) {
    std::copy(kSgdGrads[s].begin(), kSgdGrads[s].end(), g.data());
    exec.run();
  }
  SgdRun result;
  result.w.assign(exec.state(w).data(), exec.state(w).data() + 3);
  if (with_buffer) result.buffer.assign(exec.state(buffer).data(), exec.state(buffer).data() + 3);
  return result;
}

void expect_vec(const Vec& got, const Vec& expected, const char* what) {
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], kTol) << what << i;
}

TEST(SgdUpdate, PlainThreeSteps) {
  // w3 = w0 − 0.1·(g1 + g2 + g3) = w0 − 0.1·(0.5, 1, 2)
  expect_vec(run_sgd({.lr = 0.1}, false, 3).w, {0.95f, -2.1f, 0.3f}, "w3");
}

TEST(SgdUpdate, MomentumThreeSteps) {
  // b1 = g1 = (1, 2, −1)            w1 = (0.9, −2.2, 0.6)
  // b2 = 0.9·b1 + g2 = (1.4, 0.8, 0.1)       w2 = (0.76, −2.28, 0.59)
  // b3 = 0.9·b2 + g3 = (0.26, 0.72, 2.09)    w3 = (0.734, −2.352, 0.381)
  const SgdRun r = run_sgd({.lr = 0.1, .momentum = 0.9}, true, 3);
  expect_vec(r.w, {0.734f, -2.352f, 0.381f}, "w3");
  expect_vec(r.buffer, {0.26f, 0.72f, 2.09f}, "b3");
}

TEST(SgdUpdate, NesterovThreeSteps) {
  // step 1: g + 0.9·b1 = 1.9·g1 = (1.9, 3.8, −1.9)                 w1 = (0.81, −2.38, 0.69)
  // step 2: g2 + 0.9·b2 = (1.76, −0.28, 1.09)                      w2 = (0.634, −2.352, 0.581)
  // step 3: g3 + 0.9·b3 = (−0.766, 0.648, 3.881)                   w3 = (0.7106, −2.4168, 0.1929)
  const SgdRun r = run_sgd({.lr = 0.1, .momentum = 0.9, .nesterov = true}, true, 3);
  expect_vec(r.w, {0.7106f, -2.4168f, 0.1929f}, "w3");
  expect_vec(r.buffer, {0.26f, 0.72f, 2.09f}, "b3");
}

TEST(SgdUpdate, DampeningSkipsTheFirstStep) {
  // b1 = g1 (undamped), b2 = 0.9·b1 + 0.5·g2 = (1.15, 1.3, −0.4); w2 = w0 − 0.1·(b1 + b2)
  const SgdRun r = run_sgd({.lr = 0.1, .momentum = 0.9, .dampening = 0.5}, true, 2);
  expect_vec(r.buffer, {1.15f, 1.3f, -0.4f}, "b2");
  expect_vec(r.w, {0.785f, -2.33f, 0.64f}, "w2");
}

TEST(SgdUpdate, WeightDecayModes) {
  // One step, g1 = (1, 2, −1), lr = 0.1, λ = 0.5:
  //   decoupled:   0.95·w0 − 0.1·g1 = (0.85, −2.1, 0.575)
  //   independent: 0.5·w0 − 0.1·g1  = (0.4, −1.2, 0.35)
  //   coupled:     w0 − 0.1·(g1 + 0.5·w0) = (0.85, −2.1, 0.575) as well, so λ = 0.2 there:
  //                w0 − 0.1·(g1 + 0.2·w0) = (0.88, −2.16, 0.59)
  expect_vec(run_sgd({.lr = 0.1, .weight_decay = 0.5,
                      .weight_decay_mode = UpdateDecayMode::kDecoupled}, false, 1).w,
             {0.85f, -2.1f, 0.575f}, "decoupled");
  expect_vec(run_sgd({.lr = 0.1, .weight_decay = 0.5,
                      .weight_decay_mode = UpdateDecayMode::kIndependent}, false, 1).w,
             {0.4f, -1.2f, 0.35f}, "independent");
  expect_vec(run_sgd({.lr = 0.1, .weight_decay = 0.2,
                      .weight_decay_mode = UpdateDecayMode::kCoupled}, false, 1).w,
             {0.88f, -2.16f, 0.59f}, "coupled");
  expect_vec(run_sgd({.lr = 0.1, .gradient_scale = 2.0}, false, 1).w, {0.8f, -2.4f, 0.7f},
             "gradient scale");
}

// One executor run is forward + backward + update: loss = sum(w ⊙ x), so ∂loss/∂w = x, and the
// SGD node recorded after autodiff moves the state w by −lr·x each run; the second run's loss sees
// the updated w.
TEST(UpdateOps, ForwardBackwardAndUpdateInOneRun) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {3});
  const Value x = graph.input("x", {3});
  const Value loss = sum(mul(w, x));
  const Value wrt[] = {w};
  const Value grad = autodiff(graph, loss, wrt)[0];
  ASSERT_TRUE(grad.present());
  const std::vector<Value> updated = sgd_update(w, grad, Value{}, {.lr = 0.5});
  const Value outputs[] = {loss, updated[0]};
  Executor exec(graph, outputs);
  exec.set_state(w, Tensor(Shape{3}, kW0));
  const Tensor xt(Shape{3}, Vec{1.0f, 2.0f, -4.0f});
  exec.bind(x, xt);
  std::vector<Phase> phases;
  exec.add_observer([&](const NodeEvent& event) { phases.push_back(event.phase); });
  exec.run();
  EXPECT_NEAR(exec.get(loss).data()[0], 1.0f - 4.0f - 2.0f, kTol);  // w0·x
  EXPECT_EQ(phases.back(), Phase::kUpdate);
  expect_near(exec.state(w), {0.5f, -3.0f, 2.5f}, "w1");  // w0 − 0.5·x
  exec.run();
  EXPECT_NEAR(exec.get(loss).data()[0], 0.5f - 6.0f - 10.0f, kTol);  // w1·x
  expect_near(exec.state(w), {0.0f, -4.0f, 4.5f}, "w2");
}

// The same with Adam: its moments are states too, and the bias correction follows the executor's
// step counter.
TEST(UpdateOps, AdamInATrainingGraph) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {3});
  const Value m = graph.state("m", {3});
  const Value v = graph.state("v", {3});
  const Value x = graph.input("x", {3});
  const Value wrt[] = {w};
  const Value grad = autodiff(graph, sum(mul(w, x)), wrt)[0];
  const std::vector<Value> updated = adam_update(w, grad, m, v, {.lr = 0.1, .step = 1});
  Executor exec(graph, updated);
  exec.set_state(w, Tensor(Shape{3}, kW0));
  const Tensor xt(Shape{3}, Vec{0.5f, -1.0f, 2.0f});
  exec.bind(x, xt);
  exec.run();
  expect_near(exec.state(w), {0.9f, -1.9f, 0.4f}, "w1");
  exec.run();  // a constant gradient: m̂ = g and v̂ = g² again, another lr·sign(g)
  expect_near(exec.state(w), {0.8f, -1.8f, 0.3f}, "w2");
}

TEST(UpdateOps, BadInputsAreErrorsNamingTheOp) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {3});
  const Value m = graph.state("m", {3});
  const Value v = graph.state("v", {3});
  const Value g = graph.input("g", {3});
  const Value g4 = graph.input("g4", {4});
  auto adam = [&](const AdamUpdateOptions& o, Value grad) { return adam_update(w, grad, m, v, o); };
  EXPECT_THAT([&] { adam({.lr = 0.1}, g4); },
              ThrowsMessage<Error>(AllOf(HasSubstr("adam_update"), HasSubstr("grad has shape [4]"))));
  EXPECT_THAT([&] { adam({.lr = std::nan("")}, g); },
              ThrowsMessage<Error>(AllOf(HasSubstr("adam_update"), HasSubstr("'lr'"))));
  EXPECT_THAT([&] { adam({.lr = -1.0}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: lr must be finite and ≥ 0")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .beta1 = 1.0}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: beta1 must be in [0, 1)")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .beta2 = -0.5}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: beta2 must be in [0, 1)")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .eps = 0.0}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: eps must be > 0")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .step = 0}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: step must be ≥ 1, got 0")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .weight_decay = 0.1,
                          .weight_decay_mode = UpdateDecayMode::kNone}, g); },
              ThrowsMessage<Error>(HasSubstr("decay_mode is none")));
  EXPECT_THAT([&] { adam({.lr = 0.1, .weight_decay = 2.0}, g); },
              ThrowsMessage<Error>(HasSubstr("must be ≤ 1")));
  // Through Graph::apply: a missing required attribute, an unknown mode name.
  const Value inputs[] = {w, g, m, v, Value{}, Value{}};
  EXPECT_THAT([&] { graph.apply(kAdamUpdateOp, inputs, {{"step", std::int64_t{1}}}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("adam_update"), HasSubstr("lr"))));
  EXPECT_THAT([&] {
    graph.apply(kAdamUpdateOp, inputs,
                {{"lr", 0.1}, {"step", std::int64_t{1}}, {"decay_mode", std::string("sideways")}});
  }, ThrowsMessage<Error>(HasSubstr("sideways")));

  // The schedule and clipping multipliers are one-element values.
  EXPECT_THAT([&] { adam({.lr = 0.1, .lr_multiplier = g}, g); },
              ThrowsMessage<Error>(HasSubstr("adam_update: lr_multiplier must have one element")));
  EXPECT_THAT([&] { sgd_update(w, g, Value{}, {.lr = 0.1, .grad_multiplier = g}); },
              ThrowsMessage<Error>(HasSubstr("sgd_update: grad_multiplier must have one element")));

  EXPECT_THAT([&] { sgd_update(w, g, Value{}, {.lr = 0.1, .momentum = 0.9}); },
              ThrowsMessage<Error>(HasSubstr("sgd_update: momentum 0.9 needs a momentum_buffer")));
  EXPECT_THAT([&] { sgd_update(w, g, m, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1,
                                         .nesterov = true}); },
              ThrowsMessage<Error>(HasSubstr("sgd_update: nesterov needs momentum > 0")));
  EXPECT_THAT([&] { sgd_update(w, g4, Value{}, {.lr = 0.1}); },
              ThrowsMessage<Error>(HasSubstr("sgd_update: grad has shape [4]")));
  EXPECT_THAT([&] { sgd_update(w, g, m, {.lr = 0.1, .momentum = 1.0}); },
              ThrowsMessage<Error>(HasSubstr("sgd_update: momentum must be in [0, 1)")));
  // Only states can be updated in place: the executor refuses an input as the parameter.
  const std::vector<Value> on_input = sgd_update(g, g, Value{}, {.lr = 0.1});
  const Value bad[] = {on_input[0]};
  EXPECT_THAT([&] { Executor exec(graph, bad); }, ThrowsMessage<Error>(HasSubstr("only state values")));
}

// The schedule's factor r scales the step and the decay (independent: w·(1 − r·λ); decoupled:
// w·(1 − r·lr·λ)); the gradient multiplier scales only the gradient. With w = (1, −2, 0.5),
// g = (1, 1, 1), lr = 0.1, λ = 0.2, r = 0.5, c = 4:
//   independent: w·0.9 − 0.1·0.5·4 = (0.7, −2.0, 0.25)
//   decoupled:   w·0.99 − 0.2      = (0.79, −2.18, 0.295)
TEST(UpdateOps, MultipliersScaleTheStepTheDecayAndTheGradient) {
  for (const auto mode : {UpdateDecayMode::kIndependent, UpdateDecayMode::kDecoupled}) {
    Graph graph(Scaling::kUnscaled);
    const Value w = graph.state("w", {3});
    const Value g = graph.input("g", {3});
    const Value r = graph.input("r", {1});
    const Value c = graph.input("c", {1});
    const auto updated = sgd_update(w, g, Value{}, {.lr = 0.1, .weight_decay = 0.2,
                                                    .weight_decay_mode = mode,
                                                    .lr_multiplier = r, .grad_multiplier = c});
    Executor exec(graph, {{updated[0]}});  // no momentum buffer: the second output is absent
    exec.set_state(w, Tensor(Shape{3}, kW0));
    const Tensor ones(Shape{3}, Vec{1.0f, 1.0f, 1.0f});
    const Tensor half(Shape{1}, Vec{0.5f});
    const Tensor four(Shape{1}, Vec{4.0f});
    exec.bind(g, ones);
    exec.bind(r, half);
    exec.bind(c, four);
    exec.run();
    if (mode == UpdateDecayMode::kIndependent) {
      expect_near(exec.state(w), {0.7f, -2.0f, 0.25f}, "independent");
    } else {
      expect_near(exec.state(w), {0.79f, -2.18f, 0.295f}, "decoupled");
    }
  }
}

TEST(UpdateOps, UpdateDecayModeNames) {
  for (const auto mode : {UpdateDecayMode::kNone, UpdateDecayMode::kDecoupled,
                          UpdateDecayMode::kIndependent, UpdateDecayMode::kCoupled}) {
    EXPECT_EQ(update_decay_mode_from_name(update_decay_mode_name(mode)), mode);
  }
  EXPECT_THAT([] { update_decay_mode_from_name("l2"); },
              ThrowsMessage<Error>(HasSubstr("none, decoupled, independent or coupled")));
}

}  // namespace
}  // namespace unitscale

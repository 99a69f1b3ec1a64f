#include "unitscale/optim/optimizer.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/optim/clipping.hpp"
#include "unitscale/optim/schedule.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

const auto kQuiet = [](std::string_view) {};

// ---- schedules -----------------------------------------------------------------------------------

TEST(Schedule, ConstantWithAndWithoutWarmup) {
  const Schedule plain = Schedule::constant();
  for (const std::int64_t t : {1, 2, 1000}) EXPECT_EQ(plain.factor(t), 1.0) << t;
  const Schedule warm = Schedule::constant(4);
  const double expected[] = {0.25, 0.5, 0.75, 1.0, 1.0, 1.0};
  for (int t = 1; t <= 6; ++t) EXPECT_DOUBLE_EQ(warm.factor(t), expected[t - 1]) << t;
}

// Warmup 2, decay to 0.1 at step 6: r(3) = 0.1 + 0.9·½(1 + cos(π/4)), r(4) = 0.1 + 0.9·½.
TEST(Schedule, WarmupCosineHitsItsClosedFormValues) {
  const Schedule s = Schedule::warmup_cosine(2, 6, 0.1);
  EXPECT_DOUBLE_EQ(s.factor(1), 0.5);
  EXPECT_DOUBLE_EQ(s.factor(2), 1.0);
  EXPECT_NEAR(s.factor(3), 0.1 + 0.45 * (1.0 + std::cos(std::numbers::pi / 4)), 1e-15);
  EXPECT_NEAR(s.factor(4), 0.55, 1e-15);
  EXPECT_NEAR(s.factor(5), 0.1 + 0.45 * (1.0 + std::cos(3 * std::numbers::pi / 4)), 1e-15);
  EXPECT_DOUBLE_EQ(s.factor(6), 0.1);
  EXPECT_DOUBLE_EQ(s.factor(100), 0.1);
  // Monotone after the warmup.
  const Schedule long_run = Schedule::warmup_cosine(100, 1000);
  for (int t = 101; t < 1000; ++t) ASSERT_LE(long_run.factor(t + 1), long_run.factor(t)) << t;
  EXPECT_EQ(long_run.factor(1000), 0.0);
}

TEST(Schedule, RejectsBadSettings) {
  EXPECT_THAT([] { Schedule::warmup_cosine(10, 10).check(); },
              ThrowsMessage<Error>(HasSubstr("total_steps (10) must be greater than warmup_steps")));
  EXPECT_THAT([] { Schedule::warmup_cosine(0, 10, 1.5).check(); },
              ThrowsMessage<Error>(HasSubstr("final_ratio must be in [0, 1], got 1.5")));
  EXPECT_THAT([] { Schedule::constant(-1).check(); },
              ThrowsMessage<Error>(HasSubstr("warmup_steps must be ≥ 0, got -1")));
  EXPECT_THAT([] { Schedule::constant().factor(0); },
              ThrowsMessage<Error>(HasSubstr("steps count from 1, got 0")));
  Graph graph(Scaling::kUnscaled);
  EXPECT_THAT([&] { lr_schedule(graph, Schedule::warmup_cosine(5, 2)); },
              ThrowsMessage<Error>(HasSubstr("total_steps (2) must be greater")));
}

// The node reads the executor's step counter: run k gives r(first_step + k), and set_step resumes.
TEST(Schedule, NodeFollowsTheExecutorStep) {
  Graph graph(Scaling::kUnscaled);
  const Schedule s = Schedule::warmup_cosine(3, 10, 0.0);
  const Value r = lr_schedule(graph, s, /*first_step=*/1);
  Executor exec(graph, {{r}});
  for (int t = 1; t <= 12; ++t) {
    exec.run();
    EXPECT_FLOAT_EQ(exec.get(r).data()[0], static_cast<float>(s.factor(t))) << t;
  }
  exec.set_step(6);  // resume: the next run is step 7
  exec.run();
  EXPECT_FLOAT_EQ(exec.get(r).data()[0], static_cast<float>(s.factor(7)));
}

// ---- clipping ------------------------------------------------------------------------------------

struct ClipRig {
  Graph graph{Scaling::kUnscaled};
  Value a = graph.input("a", {2});
  Value b = graph.input("b", {1});
  Tensor a_tensor{Shape{2}, std::vector<float>{3.0f, 4.0f}};
  Tensor b_tensor{Shape{1}, std::vector<float>{12.0f}};

  std::pair<float, float> run(double max_norm, double gradient_scale = 1.0) {
    const Value grads[] = {a, Value{}, b};
    const GlobalNormClip clip = clip_by_global_norm(grads, max_norm, gradient_scale);
    Executor exec(graph, {{clip.coefficient, clip.norm}});
    exec.bind(a, a_tensor);
    exec.bind(b, b_tensor);
    exec.run();
    return {exec.get(clip.coefficient).data()[0], exec.get(clip.norm).data()[0]};
  }
};

// ‖(3, 4, 12)‖ = 13.
TEST(Clipping, GlobalNormAndCoefficient) {
  ClipRig rig;
  const auto [c, norm] = rig.run(6.5);
  EXPECT_FLOAT_EQ(norm, 13.0f);
  EXPECT_NEAR(c, 6.5 / (13.0 + 1e-6), 1e-7);
  EXPECT_EQ(rig.run(100.0).first, 1.0f);  // below the threshold: untouched
  const auto [c2, norm2] = rig.run(13.0, /*gradient_scale=*/0.5);  // norm of the scaled gradient
  EXPECT_FLOAT_EQ(norm2, 6.5f);
  EXPECT_EQ(c2, 1.0f);
}

TEST(Clipping, NonFiniteNormGivesNaNAndBadSettingsThrow) {
  ClipRig rig;
  rig.b_tensor.data()[0] = INFINITY;
  EXPECT_TRUE(std::isnan(rig.run(1.0).first));
  EXPECT_THAT([&] { rig.run(0.0); },
              ThrowsMessage<Error>(HasSubstr("max_norm must be finite and > 0, got 0")));
  const Value none[] = {Value{}};
  EXPECT_THAT([&] { clip_by_global_norm(none, 1.0); },
              ThrowsMessage<Error>(HasSubstr("clip_by_global_norm: no gradient to sum")));
}

// ---- the u-μP paper's optimizer test vector --------------------------------------------------------
// Embedding(256, 16), a depth-3 stack of Linear(16, 16, bias), readout 16 → 1024; η = 0.1,
// λ = 1e-3 (arXiv 2407.17465, its reference optimizer test; docs/umup.md).

struct TestVectorModel {
  Parametrization policy;
  Graph graph;
  Model model;
  std::vector<Value> grads;

  explicit TestVectorModel(ParametrizationOptions options, Scheme scheme = Scheme::kUMuP)
      : policy(scheme, options), graph(policy.op_scaling()), model(graph, policy) {
    model.parameter("embedding", {256, 16},
                    {.role = ParameterRole::kEmbedding, .fan_in = 256, .fan_out = 16,
                     .width_dims = {1}});
    for (int block = 0; block < 3; ++block) {
      const std::string prefix = "layers." + std::to_string(block);
      model.parameter(prefix + ".weight", {16, 16},
                      {.role = ParameterRole::kWeight, .fan_in = 16, .fan_out = 16,
                       .width_dims = {0, 1}, .depth = block});
      model.parameter(prefix + ".bias", {16},
                      {.role = ParameterRole::kBias, .fan_in = 16, .fan_out = 16,
                       .width_dims = {0}, .depth = block});
    }
    model.parameter("readout", {1024, 16},
                    {.role = ParameterRole::kOutput, .fan_in = 16, .fan_out = 1024,
                     .width_dims = {1}});
    for (const ModelParameter& p : model.parameters()) {
      grads.push_back(graph.input("grad." + p.rule.name, p.rule.shape));
    }
  }
  OptimizerStep record(OptimizerConfig config) {
    return record_optimizer(graph, model.parameters(), grads, config);
  }
};

double lr_of(const OptimizerStep& step, std::string_view name) {
  for (const ParameterUpdate& u : step.updates) {
    if (u.name == name) return u.lr;
  }
  ADD_FAILURE() << "no update for " << name;
  return 0.0;
}

TEST(Optimizer, UMuPTestVectorAdamAndItsIndependentDecay) {
  TestVectorModel rig({.residual_blocks = 3});
  int logged = 0;
  std::string table;
  const OptimizerStep step = rig.record({.kind = OptimizerKind::kAdamW,
                                         .lr = 0.1,
                                         .weight_decay = 1e-3,
                                         .log = [&](std::string_view text) {
                                           ++logged;
                                           table = text;
                                         }});
  EXPECT_NEAR(lr_of(step, "embedding"), 0.025, 1e-12);
  EXPECT_NEAR(lr_of(step, "layers.1.weight"), 0.1 / 4 / std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(lr_of(step, "layers.1.bias"), 0.1 / std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(lr_of(step, "readout"), 0.1, 1e-12);
  ASSERT_EQ(step.updates.size(), 8u);
  for (const ParameterUpdate& u : step.updates) {
    EXPECT_EQ(u.decay_mode, UpdateDecayMode::kIndependent) << u.name;
    EXPECT_NEAR(u.weight_decay, 1e-3 / u.lr, 1e-12) << u.name;
    // The node keeps the base LR; the schedule is a separate input.
    EXPECT_NEAR(rig.graph.nodes()[static_cast<std::size_t>(rig.graph.info(u.outputs[0]).node)]
                    .attrs.get_double("test", "lr"),
                u.lr, 1e-15);
  }
  EXPECT_EQ(logged, 1);
  EXPECT_THAT(table, AllOf(HasSubstr("η = 0.1"), HasSubstr("layers.1.weight"),
                           HasSubstr("0.0144338"), HasSubstr("independent")));
  EXPECT_EQ(step.state_values().size(), 16u);
  EXPECT_FALSE(step.grad_norm.present());
}

TEST(Optimizer, UMuPTestVectorSgdWithReadoutToOutputScale) {
  TestVectorModel rig({.residual_blocks = 3,
                       .sgd_readout = SgdReadoutConstraint::kToOutputScale});
  const OptimizerStep step = rig.record({.kind = OptimizerKind::kSgd, .lr = 0.1, .log = kQuiet});
  EXPECT_NEAR(lr_of(step, "embedding"), 0.4, 1e-12);
  EXPECT_NEAR(lr_of(step, "layers.0.weight"), 0.23094010767585, 1e-12);
  EXPECT_NEAR(lr_of(step, "layers.2.bias"), 0.92376043070340, 1e-12);
  EXPECT_NEAR(lr_of(step, "readout"), 0.1, 1e-12);
  EXPECT_TRUE(step.state_values().empty());  // no momentum, no buffers
}

TEST(Optimizer, CoupledL2WithIndependentDecayIsRejected) {
  TestVectorModel rig({.residual_blocks = 3});
  EXPECT_THAT([&] { rig.record({.kind = OptimizerKind::kAdam, .weight_decay = 1e-3, .log = kQuiet}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("parameter 'embedding'"),
                                         HasSubstr("independent weight decay"),
                                         HasSubstr("use AdamW"))));
  EXPECT_THAT([&] { rig.record({.kind = OptimizerKind::kSgd, .weight_decay = 1e-3, .log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("sgd_decoupled_weight_decay")));
  // Without decay, or with decoupled SGD decay, nothing is wrong.
  EXPECT_NO_THROW(rig.record({.kind = OptimizerKind::kAdam, .log = kQuiet}));
  EXPECT_NO_THROW(rig.record({.kind = OptimizerKind::kSgd,
                              .sgd_decoupled_weight_decay = true,
                              .weight_decay = 1e-3,
                              .log = kQuiet}));
}

TEST(Optimizer, SpDecayIsCoupledToTheLr) {
  TestVectorModel rig({}, Scheme::kSP);
  const OptimizerStep adam = rig.record({.kind = OptimizerKind::kAdam, .weight_decay = 0.01, .log = kQuiet});
  for (const ParameterUpdate& u : adam.updates) {
    EXPECT_EQ(u.decay_mode, UpdateDecayMode::kCoupled) << u.name;
    EXPECT_EQ(u.weight_decay, 0.01);
    EXPECT_EQ(u.lr, 1e-3);
  }
  const OptimizerStep adamw = rig.record({.kind = OptimizerKind::kAdamW, .weight_decay = 0.01, .log = kQuiet});
  for (const ParameterUpdate& u : adamw.updates) EXPECT_EQ(u.decay_mode, UpdateDecayMode::kDecoupled);
}

TEST(Optimizer, RejectsBadConfigsAndParameters) {
  TestVectorModel rig({.residual_blocks = 3});
  EXPECT_THAT([&] { rig.record({.lr = 0.0, .log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("optimizer adamw: lr (η) must be finite and > 0, got 0")));
  EXPECT_THAT([&] { rig.record({.weight_decay = -1.0, .log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("weight_decay must be finite and ≥ 0")));
  EXPECT_THAT([&] { rig.record({.max_grad_norm = -1.0, .log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("max_grad_norm")));
  EXPECT_THAT([&] { rig.record({.kind = OptimizerKind::kAdam, .sgd_decoupled_weight_decay = true, .log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("applies to SGD only")));
  EXPECT_THAT([&] { record_optimizer(rig.graph, rig.model.parameters(), {}, {.log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("8 parameters but 0 gradients")));
  // A parameter that is not a state value cannot be updated in place.
  Graph graph(Scaling::kUnscaled);
  ParameterRule rule;
  rule.name = "w";
  rule.shape = Shape{2};
  const ModelParameter plain{graph.parameter("w", {2}), rule};
  const Value grad = graph.input("g", {2});
  EXPECT_THAT([&] { record_optimizer(graph, {&plain, 1}, {&grad, 1}, {.log = kQuiet}); },
              ThrowsMessage<Error>(HasSubstr("parameter 'w' is not a state value")));
}

// ---- steps against hand-computed values ---------------------------------------------------------------

// One parameter w = (1, −2), LR factor 1 (SP), gradient fed as an input each step.
struct StepRig {
  Parametrization policy{Scheme::kSP};
  Graph graph{Scaling::kUnscaled};
  Model model{graph, policy};
  Value w = model.parameter("w", {2}, {.role = ParameterRole::kBias, .fan_in = 2, .fan_out = 2});
  Value other = model.parameter("u", {1}, {.role = ParameterRole::kBias, .fan_in = 1, .fan_out = 1});
  Value gw = graph.input("gw", {2});
  Value gu = graph.input("gu", {1});
  Tensor gw_tensor{Shape{2}, std::vector<float>{3.0f, 4.0f}};
  Tensor gu_tensor{Shape{1}, std::vector<float>{12.0f}};

  std::vector<float> run(const OptimizerConfig& config, int steps, OptimizerStep* out = nullptr) {
    const Value grads[] = {gw, gu};
    OptimizerStep step = record_optimizer(graph, model.parameters(), grads, config);
    Executor exec(graph, step.outputs());
    exec.set_state(w, Tensor(Shape{2}, std::vector<float>{1.0f, -2.0f}).view());
    exec.bind(gw, gw_tensor);
    exec.bind(gu, gu_tensor);
    for (int i = 0; i < steps; ++i) exec.run();
    if (out != nullptr) *out = std::move(step);
    const float* data = exec.state(w).data();
    return {data[0], data[1]};
  }
};

// SGD, η = 0.1, warmup 4: steps move by η·r(t)·g with r = ¼, ½, ¾:
// w = (1, −2) − 0.1·1.5·(3, 4) = (0.55, −2.6).
TEST(Optimizer, ScheduleMultipliesTheBaseLr) {
  StepRig rig;
  const auto w = rig.run({.kind = OptimizerKind::kSgd, .lr = 0.1,
                          .schedule = Schedule::constant(4), .log = kQuiet}, 3);
  EXPECT_NEAR(w[0], 0.55f, 1e-6);
  EXPECT_NEAR(w[1], -2.6f, 1e-6);
}

// Clipping to 6.5 over ‖(3, 4, 12)‖ = 13 halves every gradient: w = (1, −2) − 1·(1.5, 2).
TEST(Optimizer, ClippingScalesEveryGradientByTheGlobalCoefficient) {
  StepRig rig;
  OptimizerStep step;
  const auto w = rig.run({.kind = OptimizerKind::kSgd, .lr = 1.0, .max_grad_norm = 6.5, .log = kQuiet}, 1,
                         &step);
  EXPECT_NEAR(w[0], 1.0f - 1.5f, 1e-5);
  EXPECT_NEAR(w[1], -2.0f - 2.0f, 1e-5);
  EXPECT_TRUE(step.grad_norm.present());
}

// AdamW with decoupled (SP: coupled-to-LR) decay λ = 0.5 and η = 0.1: step 1 moves by
// η·sign(g) (m̂/√v̂ = g/|g|, ε negligible) after shrinking w by η·λ:
// w = (1, −2)·(1 − 0.05) − 0.1·(1, 1) = (0.85, −2.0).
TEST(Optimizer, AdamWDecoupledDecayStep) {
  StepRig rig;
  const auto w = rig.run({.kind = OptimizerKind::kAdamW, .lr = 0.1, .weight_decay = 0.5, .log = kQuiet}, 1);
  EXPECT_NEAR(w[0], 0.85f, 1e-6);
  EXPECT_NEAR(w[1], -2.0f, 1e-6);
}

// record_training_step: autodiff plus updates. Least squares on y = 2x with w = 0:
// loss = mean((w·x − y)²) over x = (1, 2), gradient 2·mean(x·(wx − y)) = −10 at w = 0, so one SGD
// step with η = 0.05 gives w = 0.5, then the gradient is −7.5 and w = 0.875.
TEST(Optimizer, TrainingStepDescendsTheLoss) {
  Parametrization policy(Scheme::kSP);
  Graph graph(Scaling::kUnscaled);
  Model model(graph, policy);
  const Value w = model.parameter("w", {1}, {.role = ParameterRole::kBias, .fan_in = 1, .fan_out = 1});
  const Value x = graph.input("x", {2});
  const Value y = graph.input("y", {2});
  const Value loss = mse_loss(mul(x, w), y);
  const OptimizerStep step =
      record_training_step(model, loss, {.kind = OptimizerKind::kSgd, .lr = 0.05, .log = kQuiet});
  Executor exec(graph, step.outputs({loss}));
  model.initialize(exec);
  const Tensor xs(Shape{2}, std::vector<float>{1.0f, 2.0f});
  const Tensor ys(Shape{2}, std::vector<float>{2.0f, 4.0f});
  exec.bind(x, xs);
  exec.bind(y, ys);
  exec.run();
  EXPECT_NEAR(exec.get(loss).data()[0], 10.0f, 1e-5);
  EXPECT_NEAR(exec.state(w).data()[0], 0.5f, 1e-6);
  exec.run();
  EXPECT_NEAR(exec.get(loss).data()[0], 5.625f, 1e-5);
  EXPECT_NEAR(exec.state(w).data()[0], 0.875f, 1e-6);
}

}  // namespace
}  // namespace unitscale

// Dynamic loss scaling: the steps it skips are exactly those whose scaled gradients overflow, the
// scale backs off and grows on the schedule, skipped steps leave parameters and optimizer state as
// they were, and applied steps use the unscaled gradient exactly.

#include "unitscale/optim/loss_scaling.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/optim/optimizer.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

const auto kQuiet = [](std::string_view) {};

// loss = sum(x · w) with x = 2^40, so ∂loss/∂w = 2^40 and the scaled gradient is S · 2^40. The
// finiteness check sums the squared scaled gradients into fp32, so a step counts as an overflow
// exactly when (S · 2^40)² ≥ 2^128, that is S ≥ 2^24.
struct Rig {
  Parametrization policy{Scheme::kSP};
  Graph graph{Scaling::kUnscaled};
  Model model{graph, policy};
  Value w = model.parameter("w", {1}, {.role = ParameterRole::kBias, .fan_in = 1, .fan_out = 1});
  Value x = graph.input("x", {1});
  Value loss = sum(mul(x, w));
  Tensor xs{Shape{1}, std::vector<float>{std::ldexp(1.0f, 40)}};
};

TEST(DynamicLossScaling, SkipsExactlyTheOverflowingStepsAndFollowsTheSchedule) {
  Rig rig;
  // SGD with η = 2^-40: every applied step moves w by exactly −1 (the unscaled gradient is 2^40).
  const OptimizerStep step = record_training_step(
      rig.model, rig.loss,
      {.kind = OptimizerKind::kSgd,
       .lr = std::ldexp(1.0, -40),
       .dynamic_loss_scaling = DynamicLossScaling{.initial = std::ldexp(1.0, 30), .growth_interval = 3},
       .log = kQuiet});
  ASSERT_TRUE(step.skipped.present());
  Executor exec(rig.graph, step.outputs({rig.loss}));
  rig.model.initialize(exec);
  exec.bind(rig.x, rig.xs);

  // The expected run: S starts at 2^30 and halves on each overflow (S ≥ 2^24) down to 2^23; then
  // three good steps double it to 2^24, which overflows once and halves again, and so on.
  double scale = std::ldexp(1.0, 30);
  int good = 0, applied = 0;
  for (int t = 1; t <= 20; ++t) {
    SCOPED_TRACE(t);
    exec.run();
    const bool overflow = scale >= std::ldexp(1.0, 24);
    EXPECT_EQ(exec.get(step.loss_scale).data()[0], static_cast<float>(scale));
    EXPECT_EQ(exec.get(step.skipped).data()[0], overflow ? 1.0f : 0.0f);
    if (overflow) {
      scale /= 2;
      good = 0;
    } else {
      ++applied;
      if (++good == 3) {
        scale *= 2;
        good = 0;
      }
    }
    EXPECT_EQ(exec.state(rig.w).data()[0], static_cast<float>(-applied));
  }
  EXPECT_EQ(applied, 10);  // steps 8-10, 12-14, 16-18, 20
}

TEST(DynamicLossScaling, SkippedStepsLeaveAdamsMomentsAlone) {
  Rig rig;
  const OptimizerStep step = record_training_step(
      rig.model, rig.loss,
      {.kind = OptimizerKind::kAdam,
       .lr = 0.1,
       .dynamic_loss_scaling = DynamicLossScaling{.initial = std::ldexp(1.0, 25)},
       .log = kQuiet});
  Executor exec(rig.graph, step.outputs({rig.loss}));
  rig.model.initialize(exec);
  exec.bind(rig.x, rig.xs);
  const Value m = step.updates[0].state[0], v = step.updates[0].state[1];
  // S = 2^25, then 2^24: both overflow; the third step (S = 2^23) is the first update.
  for (int t = 1; t <= 2; ++t) {
    exec.run();
    EXPECT_EQ(exec.get(step.skipped).data()[0], 1.0f);
    EXPECT_EQ(exec.state(m).data()[0], 0.0f);
    EXPECT_EQ(exec.state(v).data()[0], 0.0f);
    EXPECT_EQ(exec.state(rig.w).data()[0], 0.0f);
  }
  exec.run();
  EXPECT_EQ(exec.get(step.skipped).data()[0], 0.0f);
  // m = (1 − β1)·g with the exact unscaled g = 2^40.
  EXPECT_FLOAT_EQ(exec.state(m).data()[0], 0.1f * std::ldexp(1.0f, 40));
  EXPECT_LT(exec.state(rig.w).data()[0], 0.0f);
  // The scale's state is checkpointed with the optimizer's.
  const std::vector<Value> states = step.state_values();
  EXPECT_NE(std::find(states.begin(), states.end(), step.loss_scaling.log2_scale), states.end());
  EXPECT_NE(std::find(states.begin(), states.end(), step.loss_scaling.good_steps), states.end());
  EXPECT_EQ(exec.state(step.loss_scaling.log2_scale).data()[0], -2.0f);  // S = 2^25 · 2^-2
}

TEST(DynamicLossScaling, ErrorsNameTheBadSetting) {
  EXPECT_THAT([] { DynamicLossScaling{.initial = 0}.check(); },
              ThrowsMessage<Error>(HasSubstr("the initial scale must be finite and positive, got 0")));
  EXPECT_THAT([] { DynamicLossScaling{.backoff_factor = 1.5}.check(); },
              ThrowsMessage<Error>(HasSubstr("backoff_factor must be in (0, 1), got 1.5")));
  EXPECT_THAT([] { DynamicLossScaling{.growth_factor = 1}.check(); },
              ThrowsMessage<Error>(HasSubstr("growth_factor must be > 1, got 1")));
  Rig rig;
  const Value grads[] = {rig.x};
  EXPECT_THAT(
      [&] {
        record_optimizer(rig.graph, rig.model.parameters(), grads,
                         {.dynamic_loss_scaling = DynamicLossScaling{}, .log = kQuiet});
      },
      ThrowsMessage<Error>(HasSubstr("dynamic loss scaling must record its seed before autodiff")));
  EXPECT_THAT(
      [&] {
        record_training_step(rig.model, rig.loss,
                             {.gradient_scale = 0.5,
                              .dynamic_loss_scaling = DynamicLossScaling{},
                              .log = kQuiet});
      },
      ThrowsMessage<Error>(HasSubstr("dynamic loss scaling sets the autodiff seed")));
}

}  // namespace
}  // namespace unitscale

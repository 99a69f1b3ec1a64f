#include "unitscale/graph/executor.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/elementwise.hpp"

namespace unitscale {
namespace {

using namespace testing;

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
  // At its fullest the arena holds a layer's input and output.
  ASSERT_EQ(exec.peak_values().size(), 2u);
  for (const ArenaValue& value : exec.peak_values()) {
    EXPECT_EQ(value.bytes, 64u * 64 * sizeof(float));
    EXPECT_EQ(g.info(value.value).kind, ValueKind::kNodeOutput);
  }
}

// peak_values lists the values live where the most bytes are, largest first: here after the
// widening layer, whose 64×256 output sits beside its 64×64 input.
TEST(Executor, PeakValuesAreTheLiveValuesAtTheFullestStep) {
  Graph g;
  const Value x = g.input("x", {64, 64});
  const Value narrow = relu(x);
  const Value wide = linear(narrow, g.parameter("w_wide", {256, 64}));
  const Value out = linear(wide, g.parameter("w_narrow", {8, 256}));
  const Value outputs[] = {out};
  Executor exec(g, outputs);
  ASSERT_EQ(exec.peak_values().size(), 2u);
  EXPECT_EQ(exec.peak_values()[0].value, wide.id());
  EXPECT_EQ(exec.peak_values()[0].bytes, 64u * 256 * sizeof(float));
  EXPECT_EQ(exec.peak_values()[1].value, narrow.id());
}

TEST(Executor, RunsOnlyWhatTheOutputsNeed) {
  Graph g;
  const Value x = g.input("x", {2, 2});
  const Value a = linear(x, g.parameter("wa", {2, 2}));
  linear(x, g.parameter("wb", {2, 2}));
  const Value outputs[] = {a};
  EXPECT_EQ(Executor(g, outputs).planned_node_count(), 1u);
}

// Each run is a training step with a fresh dropout mask; the forward and backward of one step share
// theirs; the first step's mask is the seed's own, and set_step replays any step.
TEST(Executor, DropoutDrawsAFreshMaskEachStepAndBackwardAgrees) {
  constexpr std::int64_t kN = 4096;
  constexpr double kP = 0.25;
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {kN});
  const Value y = dropout(x, {.p = kP, .seed = 11});
  const Value loss = sum(y);
  const Value wrt[] = {x};
  const Value dx = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {y, dx};
  Executor exec(g, outputs);
  const Tensor ones = Tensor::filled({kN}, 1.0f);
  exec.bind(x, ones);

  auto kept = [&] {
    std::vector<bool> mask(kN);
    for (std::int64_t i = 0; i < kN; ++i) {
      const float yi = exec.get(y).data()[i];
      EXPECT_EQ(yi, exec.get(dx).data()[i]) << "forward and backward masks differ at " << i;
      EXPECT_TRUE(yi == 0.0f || yi == static_cast<float>(1 / (1 - kP))) << yi;
      mask[static_cast<std::size_t>(i)] = yi != 0.0f;
    }
    return mask;
  };
  EXPECT_EQ(exec.step(), 0u);
  exec.run();
  const std::vector<bool> step0 = kept();
  for (std::int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(step0[static_cast<std::size_t>(i)], dropout_keeps(11, i, kP)) << i;
  }
  exec.run();
  EXPECT_EQ(exec.step(), 2u);
  const std::vector<bool> step1 = kept();
  std::int64_t differ = 0, dropped = 0;
  for (std::size_t i = 0; i < step0.size(); ++i) {
    differ += step0[i] != step1[i];
    dropped += !step1[i];
  }
  // Independent masks differ with probability 2p(1−p) = 0.375 per element: 1536 ± 31 (1σ).
  EXPECT_NEAR(static_cast<double>(differ), 2 * kP * (1 - kP) * kN, 6 * 31.0);
  EXPECT_NEAR(static_cast<double>(dropped), kP * kN, 6 * 27.7);  // binomial σ = √(Np(1−p))

  exec.set_step(0);
  exec.run();
  EXPECT_EQ(kept(), step0);
}

// A per-node scale override reaches the forward kernel and, set after autodiff, the backward too.
TEST(Executor, SetScaleOverridesTheRuleInBothPasses) {
  std::mt19937 rng(3);
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value w = g.parameter("w", {3, 8});
  const Value y = linear(x, w);
  const Value wrt[] = {x};
  const Value dx = autodiff(g, sum(y), wrt)[0];
  g.set_scale(y, "alpha", 2.0);
  g.set_scale(y, "beta_x", 3.0);
  const Value outputs[] = {y, dx};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({4, 8}, rng), wt = random_normal({3, 8}, rng);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.run();
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 3; ++j) {
      double dot = 0;
      for (int k = 0; k < 8; ++k) dot += double{xt[i * 8 + k]} * wt[j * 8 + k];
      EXPECT_NEAR(exec.get(y).data()[i * 3 + j], 2.0 * dot, 1e-5) << i << "," << j;
    }
    for (int k = 0; k < 8; ++k) {  // d sum(y)/dx_ik = Σ_j w_jk, times the overridden β_x
      const double column = double{wt[k]} + wt[8 + k] + wt[16 + k];
      EXPECT_NEAR(exec.get(dx).data()[i * 8 + k], 3.0 * column, 1e-5) << i << "," << k;
    }
  }
}

TEST(Executor, SetScaleErrorsNameTheOpAndTheValidScales) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value y = linear(x, g.parameter("w", {3, 8}));
  EXPECT_THAT([&] { g.set_scale(y, "beta_z", 1.0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("linear"), HasSubstr("beta_z"),
                                         HasSubstr("alpha, beta_x, beta_weight, beta_bias"))));
  EXPECT_THAT([&] { g.set_scale(y, "alpha", -1.0); },
              ThrowsMessage<Error>(HasSubstr("finite and positive")));
  EXPECT_THAT([&] { g.set_scale(x, "alpha", 1.0); },
              ThrowsMessage<Error>(HasSubstr("not the output of a node")));
}

TEST(Executor, BindingErrorsNameTheValue) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value y = linear(x, g.parameter("w", {4, 3}));
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  Tensor wrong({3, 2});
  EXPECT_THAT([&] { exec.bind(x, wrong); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'x' (%0) expects [2, 3] f32, got [3, 2] f32")));
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

// Observers see every node right after its kernel, with its outputs before the arena is reused:
// in a chain whose intermediates share memory, each observed copy still matches a direct
// computation. Nodes from autodiff are reported as backward.
TEST(Executor, ObserversSeeEveryNodeWithItsOutputsAndPhase) {
  std::mt19937 rng(11);
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value w = g.parameter("w", {8, 8});
  const Value h1 = linear(x, w);
  const Value h2 = linear(h1, w);
  const Value loss = sum(linear(h2, w));
  const Value wrt[] = {w};
  const Value dw = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {loss, dw};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({4, 8}, rng), wt = random_normal({8, 8}, rng);
  exec.bind(x, xt);
  exec.bind(w, wt);
  std::vector<int> seen;
  std::vector<Phase> phases;
  Tensor observed_h1;
  exec.add_observer([&](const NodeEvent& event) {
    seen.push_back(event.node_index);
    phases.push_back(event.phase);
    EXPECT_EQ(event.phase == Phase::kBackward, event.node.differentiates >= 0);
    if (event.node.outputs[0] == h1.id()) {
      observed_h1 = Tensor(event.outputs[0].shape(), event.outputs[0].span());
    }
  });
  exec.run();
  EXPECT_EQ(seen.size(), exec.planned_node_count());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::count(phases.begin(), phases.end(), Phase::kForward), 4);
  EXPECT_GT(std::count(phases.begin(), phases.end(), Phase::kBackward), 0);
  Tensor expected({4, 8});
  linear_forward(xt, wt, {}, expected, static_cast<float>(1 / std::sqrt(8.0)));
  ASSERT_EQ(observed_h1.numel(), 32);
  for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(observed_h1[i], expected[i]);
}

TEST(Executor, ProfileSumsTimeAndBytesPerOp) {
  Graph g;
  const Value x = g.input("x", {16, 32});
  const Value w = g.parameter("w", {32, 32});
  const Value y = linear(linear(x, w), w);
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  const Tensor xt = Tensor::filled({16, 32}, 0.5f), wt = Tensor::filled({32, 32}, 0.25f);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.run();  // not profiled
  exec.set_profiling(true);
  exec.run();
  exec.run();
  const std::vector<OpProfile> profile = exec.profile();
  ASSERT_EQ(profile.size(), 1u);
  EXPECT_EQ(profile[0].op, "linear");
  EXPECT_EQ(profile[0].calls, 4u);  // two nodes, two runs
  EXPECT_EQ(profile[0].output_bytes, 4u * 16 * 32 * sizeof(float));
  EXPECT_GT(profile[0].seconds, 0.0);
  EXPECT_THAT(exec.profile_table(), HasSubstr("linear"));
}

// A test update op: state += x, written in place into the state's storage.
void add_into_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                     const Attributes&, const KernelContext&) {
  for (std::int64_t i = 0; i < out[0].numel(); ++i) out[0].data()[i] = in[0].data()[i] + in[1].data()[i];
}
std::vector<Shape> add_into_shapes(std::span<const Shape* const> in, const Attributes&) {
  return {*in[0]};
}
const OpDef kAddIntoOp{
    .name = "add_into",
    .inputs = {"state", "x"},
    .in_place = {0},
    .infer_shapes = add_into_shapes,
    .kernel = add_into_kernel,
};

// A state lives in the executor across runs and an in-place update writes it: three runs of
// state += x accumulate three times x, the update is reported as such, and the output of the
// update is the state itself.
TEST(Executor, StateIsKeptAcrossRunsAndUpdatedInPlace) {
  Graph g;
  const Value counter = g.state("counter", {2});
  const Value x = g.input("x", {2});
  const Value inputs[] = {counter, x};
  const Value updated = g.apply1(kAddIntoOp, inputs, {});
  const Value outputs[] = {updated};
  Executor exec(g, outputs);
  EXPECT_EQ(exec.peak_bytes(), 0u);  // the update needs no arena
  const Tensor start(Shape{2}, std::vector<float>{10.0f, 20.0f});
  exec.set_state(counter, start);
  const Tensor xt(Shape{2}, std::vector<float>{1.0f, 2.0f});
  exec.bind(x, xt);
  std::vector<Phase> phases;
  exec.add_observer([&](const NodeEvent& event) { phases.push_back(event.phase); });
  for (int run = 0; run < 3; ++run) exec.run();
  EXPECT_EQ(exec.state(counter).data()[0], 13.0f);
  EXPECT_EQ(exec.state(counter).data()[1], 26.0f);
  EXPECT_EQ(exec.get(updated).data(), exec.state(counter).data());
  EXPECT_EQ(phases, std::vector<Phase>(3, Phase::kUpdate));
  EXPECT_THAT([&] { exec.bind(counter, start); }, ThrowsMessage<Error>(HasSubstr("set_state")));
  EXPECT_NO_THROW(exec.set_state(counter, xt.view()));
  EXPECT_THAT([&] { exec.set_state(counter, Tensor({3}).view()); },
              ThrowsMessage<Error>(HasSubstr("'counter' (%0) is [2] f32, got [3] f32")));
  EXPECT_THAT([&] { exec.set_state(x, xt.view()); }, ThrowsMessage<Error>(HasSubstr("not a state")));
}

// A state that is only requested (no node reads it) still has storage to load and read back.
TEST(Executor, ARequestedStateHasStorageEvenWithoutReaders) {
  Graph g;
  const Value moment = g.state("moment", {3});
  const Value outputs[] = {moment};
  Executor exec(g, outputs);
  EXPECT_EQ(exec.planned_node_count(), 0u);
  exec.set_state(moment, Tensor::filled({3}, 2.5f));
  exec.run();
  ASSERT_NE(exec.get(moment).data(), nullptr);
  EXPECT_EQ(exec.get(moment).data()[2], 2.5f);
}

// The old value of a state is gone once its update has run, so reading it later in the same run
// is a planning error; and only states can be updated in place.
TEST(Executor, InPlaceUpdatesAreCheckedWhenPlanning) {
  Graph g;
  const Value counter = g.state("counter", {2});
  const Value x = g.input("x", {2});
  const Value inputs[] = {counter, x};
  const Value updated = g.apply1(kAddIntoOp, inputs, {});
  const Value late[] = {x, counter};
  const Value stale = g.apply1(kAddOp, late, {});
  const Value both[] = {updated, stale};
  EXPECT_THAT([&] { Executor exec(g, both); },
              ThrowsMessage<Error>(AllOf(HasSubstr("add reads state 'counter'"),
                                         HasSubstr("after add_into updated it"))));
  const Value on_input[] = {x, x};
  const Value bad = g.apply1(kAddIntoOp, on_input, {});
  const Value bad_outputs[] = {bad};
  EXPECT_THAT([&] { Executor exec(g, bad_outputs); },
              ThrowsMessage<Error>(HasSubstr("only state values")));
}

// Dead-code elimination rebuilds the node storage even when it removes nothing; the executor holds
// node indices and the graph's version, so it refuses to run instead of reading freed nodes.
TEST(Executor, RefusesToRunAfterDeadCodeElimination) {
  Graph g;
  const Value x = g.input("x", {1, 2});
  const Value y = linear(x, g.parameter("w", {2, 2}));
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  EXPECT_EQ(eliminate_dead_code(g, outputs), 0);
  EXPECT_THAT([&] { exec.run(); }, ThrowsMessage<Error>(HasSubstr("graph changed")));
  Executor fresh(g, outputs);  // a new executor plans the new graph and runs
  const Tensor xt = Tensor::filled({1, 2}, 1.0f), wt = Tensor::filled({2, 2}, 1.0f);
  fresh.bind(x, xt);
  fresh.bind(g.find("w"), wt);
  fresh.run();
  EXPECT_FLOAT_EQ(fresh.get(y).data()[0], static_cast<float>(2 / std::sqrt(2.0)));
}

TEST(Executor, RefusesToRunAfterAScaleOverride) {
  Graph g;
  const Value x = g.input("x", {1, 2});
  const Value y = linear(x, g.parameter("w", {2, 2}));
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  g.set_scale(y, "alpha", 2.0);
  EXPECT_THAT([&] { exec.run(); }, ThrowsMessage<Error>(HasSubstr("graph changed")));
}

// Each op accepts exactly the scales its kernels read: a name that is declared changes the result
// (checked through the executor for the residual ops, whose names are not alpha/beta_<input>),
// and any other name is an error naming the op.
TEST(Executor, SetScaleAcceptsExactlyTheScalesTheKernelsRead) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value r = relu(x);
  EXPECT_THAT([&] { g.set_scale(r, "alpha", 2.0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("relu"), HasSubstr("no unit scales"))));
  const auto [branch, skip] = residual_split(x, 0.5);
  const Value sum_value = residual_add(branch, skip, 0.5);
  EXPECT_THAT([&] { g.set_scale(sum_value, "beta_residual", 2.0); },
              ThrowsMessage<Error>(HasSubstr("alpha_residual, alpha_skip")));
  const Value outputs[] = {sum_value};
  const Tensor xt = Tensor::filled({2, 3}, 1.0f);
  auto run = [&] {
    Executor exec(g, outputs);
    exec.bind(x, xt);
    exec.run();
    return exec.get(sum_value).data()[0];
  };
  const float before = run();
  g.set_scale(sum_value, "alpha_residual", 0.0625);
  g.set_scale(sum_value, "alpha_skip", 0.125);
  const float after = run();
  EXPECT_NE(before, after);
  EXPECT_FLOAT_EQ(after, 0.0625f + 0.125f);  // x + x with the overridden weights
}

}  // namespace
}  // namespace unitscale

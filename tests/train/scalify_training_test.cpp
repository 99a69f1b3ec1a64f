// Scale propagation over whole training steps (graph/propagate_scales.hpp): the u-μP and SP byte
// decoders' forward, backward and AdamW update (with clipping and a schedule), rewritten so that
// every value the step computes is FP16 data times a propagated scale, track the fp32 step.

#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/language_model.hpp"

namespace unitscale {
namespace {

constexpr std::int64_t kBatch = 4, kSeq = 32, kWidth = 64;

Tensor random_bytes(unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(kBatch * kSeq));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % 256);
  return Tensor(Shape{kBatch, kSeq}, std::span<const std::int32_t>(ids));
}

// The training losses of `steps` AdamW steps (clipping at 1, warmup-cosine schedule), with the
// step rewritten by propagate_scales under `policy` or left in fp32.
std::vector<float> train(Scheme scheme, const std::optional<ScalePolicy>& policy, int steps) {
  const Parametrization parametrization(scheme, {.residual_blocks = 2});
  Graph graph(parametrization.op_scaling());
  Model model(graph, parametrization, {.seed = 1});
  TransformerDecoder decoder(model, "", byte_decoder_config(scheme, kWidth, 2, 16));
  const Value ids = graph.input("ids", Shape{kBatch, kSeq}, DType::kI32);
  const Value targets = graph.input("targets", Shape{kBatch, kSeq}, DType::kI32);
  const Value loss = decoder.loss(ids, targets);
  const OptimizerStep step = record_training_step(model, loss,
                                                  {.kind = OptimizerKind::kAdamW,
                                                   .lr = scheme == Scheme::kUMuP ? 0.5 : 2e-3,
                                                   .weight_decay = 1e-4,
                                                   .schedule = Schedule::warmup_cosine(2, 100),
                                                   .max_grad_norm = 1.0,
                                                   .log = [](std::string_view) {}});
  std::vector<Value> outputs = step.outputs({loss});
  Value loss_out = loss;
  if (policy) {
    const ScaledGraph scaled = propagate_scales(graph, outputs, *policy);
    outputs = scaled.outputs();
    loss_out = scaled.output(loss);
  }
  Executor exec(graph, outputs);
  model.initialize(exec);
  const Tensor id_data = random_bytes(1), target_data = random_bytes(2);
  exec.bind(ids, id_data);
  exec.bind(targets, target_data);
  std::vector<float> losses;
  for (int t = 0; t < steps; ++t) {
    exec.run();
    losses.push_back(exec.get(loss_out).data()[0]);
  }
  return losses;
}

class ScalifyTraining : public ::testing::TestWithParam<Scheme> {};

// FP16 data keeps 11 significant bits: each stored value is off by up to 2^-12 relative, and the
// step's loss by far less. Over 8 steps of memorising one batch the losses fall by ~30% and the
// FP16 run stays within 1% of the fp32 one at every step.
TEST_P(ScalifyTraining, Fp16StepTracksTheFp32Step) {
  constexpr int kSteps = 8;
  const std::vector<float> expected = train(GetParam(), std::nullopt, kSteps);
  const std::vector<float> got = train(GetParam(), ScalePolicy::fp16(), kSteps);
  ASSERT_LT(expected.back(), 0.9f * expected.front()) << "the fp32 run should learn";
  for (int t = 0; t < kSteps; ++t) {
    EXPECT_TRUE(std::isfinite(got[static_cast<std::size_t>(t)])) << "step " << t;
    EXPECT_NEAR(got[static_cast<std::size_t>(t)], expected[static_cast<std::size_t>(t)],
                0.01 * expected[static_cast<std::size_t>(t)])
        << "step " << t;
  }
}

// The FP8 policy: E4M3 operands and E5M2 gradients for every linear, FP16 elsewhere.
TEST_P(ScalifyTraining, Fp8StepLearnsLikeTheFp32Step) {
  constexpr int kSteps = 8;
  const std::vector<float> expected = train(GetParam(), std::nullopt, kSteps);
  const std::vector<float> got = train(GetParam(), ScalePolicy::fp8(), kSteps);
  for (int t = 0; t < kSteps; ++t) {
    EXPECT_NEAR(got[static_cast<std::size_t>(t)], expected[static_cast<std::size_t>(t)],
                0.05 * expected[static_cast<std::size_t>(t)])
        << "step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, ScalifyTraining, ::testing::Values(Scheme::kUMuP, Scheme::kSP),
                         [](const ::testing::TestParamInfo<Scheme>& param_info) {
                           return param_info.param == Scheme::kUMuP ? std::string("Umup")
                                                                    : std::string("Sp");
                         });

}  // namespace
}  // namespace unitscale

// Scale propagation over whole training steps (graph/propagate_scales.hpp): the u-μP and SP byte
// decoders' forward, backward and AdamW update (with clipping and a schedule), rewritten so that
// every value the step computes is FP16 data times a propagated scale, track the fp32 step; and
// the Trainer runs such a step (PrecisionConfig's scalify recipes), FP16 master weights included,
// checkpoints it and resumes it exactly.

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../support/temp_directory.hpp"
#include "../support/tiny_decoder.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/trainer.hpp"

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
// step rewritten by propagate_scales under `policy` or left in fp32. Every node's workspace must
// fit in what the executor's plan set aside for it (OpDef::workspace's estimate).
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
  std::optional<ScaledGraph> scaled;
  if (policy) {
    scaled = propagate_scales(graph, outputs, *policy);
    outputs = scaled->outputs();
    loss_out = scaled->output(loss);
  }
  Executor exec(graph, outputs);
  model.initialize(exec, scaled ? &*scaled : nullptr);
  const Tensor id_data = random_bytes(1), target_data = random_bytes(2);
  exec.bind(ids, id_data);
  exec.bind(targets, target_data);
  std::vector<float> losses;
  for (int t = 0; t < steps; ++t) {
    exec.run();
    losses.push_back(exec.get(loss_out).data()[0]);
    EXPECT_EQ(exec.workspace_beyond_plan(), 0u) << "step " << t;
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

// The smallest footprint (ScalePolicy::fp8 with FP16 master weights, the weights cast again for
// the backward, E4M3 first moments and saved activations) learns like the fp32 step too, and its
// workspaces fit their plan.
TEST_P(ScalifyTraining, CompactFp8StepLearnsLikeTheFp32Step) {
  constexpr int kSteps = 8;
  ScalePolicy policy = ScalePolicy::fp8();
  policy.parameters = DType::kF16;
  policy.recast_weights_for_backward = true;
  policy.first_moment = DType::kE4M3FN;
  policy.saved_activations = DType::kE4M3FN;
  const std::vector<float> expected = train(GetParam(), std::nullopt, kSteps);
  const std::vector<float> got = train(GetParam(), policy, kSteps);
  for (int t = 0; t < kSteps; ++t) {
    EXPECT_NEAR(got[static_cast<std::size_t>(t)], expected[static_cast<std::size_t>(t)],
                0.05 * expected[static_cast<std::size_t>(t)])
        << "step " << t;
  }
}

// ---- Through the Trainer ----

LanguageModelConfig tiny_config(const std::string& recipe,
                                MatmulScaling matmul_scaling = MatmulScaling::kPropagated) {
  LanguageModelConfig config = testing_support::tiny_decoder_config(12);
  config.precision.recipe = recipe;
  if (recipe != "fp32") config.precision.master_weights = DType::kF16;
  config.precision.matmul_scaling = matmul_scaling;
  config.precision.amax_history_length = 4;
  return config;
}

TrainerOptions quiet(TrainerOptions options) {
  options.progress = ProgressMode::kQuiet;
  options.out = nullptr;
  return options;
}

// A run of `config` checkpointed at step 7 and resumed to step 12 gives `full`'s last 5 losses
// bit for bit.
void expect_resumes_exactly(const LanguageModelConfig& config, const TextCorpus& corpus,
                            const std::vector<float>& full) {
  const testing_support::TempDirectory dir;
  const std::filesystem::path checkpoints = dir.path() / "ckpt";
  {
    LanguageModelTask first(config, corpus);
    Trainer(first, quiet({.steps = 7, .checkpoint_dir = checkpoints})).run();
  }
  LanguageModelTask resumed_task(config, corpus);
  Trainer resumed(resumed_task,
                  quiet({.steps = 12, .checkpoint_dir = checkpoints, .resume = true}));
  const TrainingResult rest = resumed.run();
  ASSERT_EQ(rest.losses.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(rest.losses[i], full[7 + i]) << "step " << 8 + i;
  }
}

class ScalifyTrainer : public ::testing::TestWithParam<MatmulScaling> {};

// FP8 matmuls, FP16 values, moments and master weights: the task reports the pass, the Trainer
// checkpoints the parameters' and moments' FP16 data with their scales (and, under delayed
// scaling, the casts' amax histories), learns as the fp32 run does, and a run resumed from step 7
// reproduces the uninterrupted one bit for bit.
TEST_P(ScalifyTrainer, TrainsChecksAndResumesTheScaledStepExactly) {
  const TextCorpus corpus = testing_support::periodic_corpus();
  std::vector<float> reference;
  {
    LanguageModelTask task(tiny_config("fp32"), corpus);
    reference = Trainer(task, quiet({.steps = 12})).run().losses;
  }
  LanguageModelTask task(tiny_config("scalify-fp8", GetParam()), corpus);
  EXPECT_THAT(task.precision_report(), ::testing::HasSubstr("matmul inputs e4m3fn"));
  ASSERT_NE(task.scaled_graph(), nullptr);
  Trainer trainer(task, quiet({.steps = 12}));
  const TrainingResult full = trainer.run();
  ASSERT_EQ(full.losses.size(), 12u);
  EXPECT_LT(full.losses.back(), 0.5f * full.losses.front()) << "the scaled run learns";
  for (std::size_t t = 0; t < 12; ++t) {
    EXPECT_NEAR(full.losses[t], reference[t], 0.05 * reference[t]) << "step " << t + 1;
  }
  ASSERT_TRUE(full.validation_loss.has_value());
  EXPECT_TRUE(std::isfinite(*full.validation_loss));

  std::set<std::string> scale_states;
  std::size_t histories = 0;
  for (const CheckpointValue& v : trainer.checkpoint_values()) {
    if (v.name.starts_with("amax_history.")) ++histories;
    const ValueInfo& info = task.model().graph().info(v.value);
    if (info.parameter) {
      EXPECT_EQ(info.dtype, DType::kF16) << v.name;
    }
    if (v.name.ends_with(".scale")) scale_states.insert(v.name);
  }
  EXPECT_EQ(scale_states.size(), 3 * task.model().parameters().size())
      << "a scale for every parameter and each of its two moments";
  if (GetParam() == MatmulScaling::kDelayedAmax) {  // the training step's casts, not evaluation's
    EXPECT_GT(histories, 0u);
    EXPECT_LT(histories, task.scaled_graph()->amax_histories().size());
  } else {
    EXPECT_EQ(histories, 0u);
  }

  expect_resumes_exactly(tiny_config("scalify-fp8", GetParam()), corpus, full.losses);
}

// The compact policy (FP16 master weights, Adam's m in E4M3, E4M3 saved activations, the weights
// cast again for the backward): the checkpoint holds m as E4M3 data and v as FP16, the run learns
// as fp32 does, and resumes bit for bit.
TEST(ScalifyTrainerCompact, TrainsChecksAndResumesExactly) {
  const TextCorpus corpus = testing_support::periodic_corpus();
  std::vector<float> reference;
  {
    LanguageModelTask task(tiny_config("fp32"), corpus);
    reference = Trainer(task, quiet({.steps = 12})).run().losses;
  }
  LanguageModelConfig config = tiny_config("scalify-fp8");
  config.precision.first_moment = DType::kE4M3FN;
  config.precision.saved_activations = DType::kE4M3FN;
  LanguageModelTask task(config, corpus);
  EXPECT_THAT(task.precision_report(), ::testing::HasSubstr("saved activations e4m3fn"));
  Trainer trainer(task, quiet({.steps = 12}));
  const TrainingResult full = trainer.run();
  ASSERT_EQ(full.losses.size(), 12u);
  for (std::size_t t = 0; t < 12; ++t) {
    EXPECT_NEAR(full.losses[t], reference[t], 0.05 * reference[t]) << "step " << t + 1;
  }
  std::map<DType, int> moments;  // by storage
  for (const CheckpointValue& v : trainer.checkpoint_values()) {
    const ValueInfo& info = task.model().graph().info(v.value);
    if (!info.parameter && !v.name.ends_with(".scale") && info.shape.numel() > 1) {
      ++moments[info.dtype];
    }
  }
  const int parameters = static_cast<int>(task.model().parameters().size());
  EXPECT_EQ(moments[DType::kE4M3FN], parameters) << "every m in E4M3";
  EXPECT_EQ(moments[DType::kF16], parameters) << "every v in FP16";
  expect_resumes_exactly(config, corpus, full.losses);
}

INSTANTIATE_TEST_SUITE_P(MatmulScalings, ScalifyTrainer,
                         ::testing::Values(MatmulScaling::kPropagated, MatmulScaling::kDelayedAmax),
                         [](const ::testing::TestParamInfo<MatmulScaling>& param_info) {
                           return param_info.param == MatmulScaling::kPropagated
                                      ? std::string("Propagated")
                                      : std::string("DelayedAmax");
                         });

INSTANTIATE_TEST_SUITE_P(Schemes, ScalifyTraining, ::testing::Values(Scheme::kUMuP, Scheme::kSP),
                         [](const ::testing::TestParamInfo<Scheme>& param_info) {
                           return param_info.param == Scheme::kUMuP ? std::string("Umup")
                                                                    : std::string("Sp");
                         });

}  // namespace
}  // namespace unitscale

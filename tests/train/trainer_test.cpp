// The Trainer and the language-model task on a tiny decoder and a synthetic corpus: determinism,
// exact resumption (from a checkpoint, after Ctrl-C), clean stops, metrics files, evaluation
// against the training loss, and generation.

#include "unitscale/train/trainer.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "../support/temp_directory.hpp"
#include "../support/tiny_decoder.hpp"
#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/error.hpp"
#include "unitscale/train/checkpoint.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/run_environment.hpp"

namespace us = unitscale;
namespace fs = std::filesystem;

namespace {

using TempDir = us::testing_support::TempDirectory;
using us::testing_support::read_file;

using us::testing_support::periodic_corpus;

us::LanguageModelConfig tiny_config(std::int64_t steps) {
  return us::testing_support::tiny_decoder_config(steps);
}

us::TrainerOptions quiet(us::TrainerOptions options) {
  options.progress = us::ProgressMode::kQuiet;
  options.out = nullptr;
  return options;
}

std::vector<float> train_losses(const us::LanguageModelConfig& config,
                                const us::TextCorpus& corpus, us::TrainerOptions options) {
  us::LanguageModelTask task(config, corpus);
  us::Trainer trainer(task, quiet(std::move(options)));
  return trainer.run().losses;
}

// Raises SIGINT while loading the batch of one step, as a Ctrl-C during that step would.
class InterruptingTask final : public us::TrainingTask {
 public:
  InterruptingTask(us::LanguageModelTask& inner, std::int64_t interrupt_at)
      : inner_(inner), interrupt_at_(interrupt_at) {}
  us::Model& model() override { return inner_.model(); }
  us::Value loss() const override { return inner_.loss(); }
  const us::OptimizerStep& optimizer() const override { return inner_.optimizer(); }
  void bind_inputs(us::Executor& e) override { inner_.bind_inputs(e); }
  void load_batch(std::int64_t step) override {
    inner_.load_batch(step);
    if (step == interrupt_at_) std::raise(SIGINT);
  }
  std::optional<double> evaluate(const us::Executor& e) override { return inner_.evaluate(e); }
  std::int64_t items_per_step() const override { return inner_.items_per_step(); }
  std::map<std::string, std::string> config() const override { return inner_.config(); }

 private:
  us::LanguageModelTask& inner_;
  std::int64_t interrupt_at_;
};

TEST(Trainer, SameSeedGivesTheSameLossesBitForBitAndAnotherSeedDoesNot) {
  const us::TextCorpus corpus = periodic_corpus();
  const auto a = train_losses(tiny_config(6), corpus, {.steps = 6});
  const auto b = train_losses(tiny_config(6), corpus, {.steps = 6});
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a, b);
  us::LanguageModelConfig other = tiny_config(6);
  other.seed = 8;
  EXPECT_NE(train_losses(other, corpus, {.steps = 6}), a);
}

// after_step sees every step in order, and can drive a scale tracker that records one step of
// the run: its weights are the parameters as that step found them.
TEST(Trainer, AfterStepSeesEveryStepAndCanRecordTheScalesOfOne) {
  const us::TextCorpus corpus = periodic_corpus();
  us::LanguageModelTask task(tiny_config(4), corpus);
  std::optional<us::ScaleTracker> tracker;
  std::vector<std::int64_t> seen;
  std::size_t rows_after_step_3 = 0;
  us::TrainerOptions options = quiet({.steps = 4});
  options.after_step = [&](std::int64_t step) {
    seen.push_back(step);
    if (step == 3) rows_after_step_3 = tracker->scales().size();
    tracker->set_recording(step + 1 == 3);  // record step 3 only
  };
  us::Trainer trainer(task, options);
  tracker = us::track_scales(trainer.executor(), task.model().graph());
  tracker->set_recording(false);
  trainer.run();
  EXPECT_EQ(seen, (std::vector<std::int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(tracker->runs(), 1u);
  EXPECT_GT(rows_after_step_3, 0u);
  std::size_t weights = 0;
  for (const us::TensorScale& s : tracker->scales()) weights += s.role == us::TensorRole::kWeight;
  EXPECT_EQ(weights, task.model().parameters().size());
}

TEST(Trainer, LearnsAPeriodicTextAndGeneratesItsContinuation) {
  const us::TextCorpus corpus = periodic_corpus();
  us::LanguageModelConfig config = tiny_config(80);
  config.lr = 1.0;
  us::LanguageModelTask task(config, corpus);
  us::Trainer trainer(task, quiet({.steps = 80}));
  const us::TrainingResult result = trainer.run();
  EXPECT_EQ(result.reason, us::StopReason::kCompleted);
  // ln 256 = 5.55 at the start; the text is deterministic given the previous byte.
  EXPECT_NEAR(result.losses.front(), std::log(256.0), 1.0);
  ASSERT_TRUE(result.validation_loss.has_value());
  EXPECT_LT(*result.validation_loss, 0.5);
  EXPECT_EQ(task.generate(trainer.executor(), "0123", {.max_bytes = 12, .temperature = 0}),
            "456789\n01234");
  // Sampling is reproducible for a seed and has the requested length.
  const us::GenerationOptions sampled{.max_bytes = 30, .temperature = 1.0, .top_k = 5, .seed = 3};
  const std::string s1 = task.generate(trainer.executor(), "", sampled);
  EXPECT_EQ(s1.size(), 30u);
  EXPECT_EQ(task.generate(trainer.executor(), "", sampled), s1);
}

TEST(Trainer, ValidationLossEqualsTheTrainingLossOnTheSameWindow) {
  // One window of S + 1 bytes serves as the whole training stream (every row of every batch is
  // it) and as the validation set: the first step's loss (before its update) is then the
  // validation loss of the initial parameters.
  // A 2-step schedule run for 1 step: the cosine reaches 0 at the last step, which would leave the
  // parameters unchanged.
  us::LanguageModelConfig config = tiny_config(2);
  config.warmup = 0;
  us::TextCorpus corpus;
  for (int i = 0; i <= config.sequence_length; ++i) corpus.train += static_cast<char>(' ' + 3 * i);
  corpus.validation = corpus.train;
  us::LanguageModelTask task(config, corpus);
  us::Trainer trainer(task, quiet({.steps = 1}));
  const double before = task.validation_loss(trainer.executor());
  const us::TrainingResult result = trainer.run();
  ASSERT_EQ(result.losses.size(), 1u);
  EXPECT_NEAR(before, result.losses[0], 2e-6 * before);
  EXPECT_NE(*result.validation_loss, before);  // the update changed the parameters
}

TEST(Trainer, ResumedRunReproducesTheUninterruptedLossesExactly) {
  const TempDir dir;
  const us::TextCorpus corpus = periodic_corpus();
  const us::LanguageModelConfig config = tiny_config(12);
  const auto full = train_losses(config, corpus, {.steps = 12});

  const fs::path checkpoints = dir.path() / "ckpt";
  const auto first = train_losses(config, corpus, {.steps = 7, .checkpoint_dir = checkpoints});
  ASSERT_EQ(first.size(), 7u);
  us::LanguageModelTask task(config, corpus);
  us::Trainer resumed(task, quiet({.steps = 12, .checkpoint_dir = checkpoints, .resume = true}));
  EXPECT_EQ(resumed.completed_steps(), 7);
  const us::TrainingResult rest = resumed.run();
  EXPECT_EQ(rest.first_step, 8);
  ASSERT_EQ(rest.losses.size(), 5u);
  for (std::size_t i = 0; i < 7; ++i) EXPECT_EQ(first[i], full[i]) << "step " << i + 1;
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(rest.losses[i], full[7 + i]) << "step " << 8 + i;
}

TEST(Trainer, CtrlCStopsAfterTheStepWithACheckpointAndResumingFinishesTheRun) {
  const TempDir dir;
  const us::TextCorpus corpus = periodic_corpus();
  const us::LanguageModelConfig config = tiny_config(10);
  const auto full = train_losses(config, corpus, {.steps = 10});

  const fs::path checkpoints = dir.path() / "ckpt";
  {
    us::LanguageModelTask inner(config, corpus);
    InterruptingTask task(inner, 4);
    us::Trainer trainer(task, quiet({.steps = 10, .checkpoint_dir = checkpoints}));
    const us::TrainingResult result = trainer.run();
    EXPECT_EQ(result.reason, us::StopReason::kInterrupted);
    EXPECT_EQ(result.last_step, 4);
    ASSERT_TRUE(result.checkpoint.has_value());
    EXPECT_TRUE(fs::exists(*result.checkpoint));
  }
  // The handler is gone after run(): SIGINT's disposition is what it was (default here).
  struct sigaction current = {};
  ::sigaction(SIGINT, nullptr, &current);
  EXPECT_EQ(current.sa_handler, SIG_DFL);

  us::LanguageModelTask task(config, corpus);
  us::Trainer trainer(task, quiet({.steps = 10, .checkpoint_dir = checkpoints, .resume = true}));
  const us::TrainingResult rest = trainer.run();
  EXPECT_EQ(rest.reason, us::StopReason::kCompleted);
  ASSERT_EQ(rest.losses.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(rest.losses[i], full[4 + i]) << "step " << 5 + i;
}

TEST(Trainer, MismatchedCheckpointIsRefusedAndLeavesTheFilesAlone) {
  const TempDir dir;
  const us::TextCorpus corpus = periodic_corpus();
  const fs::path checkpoints = dir.path() / "ckpt";
  train_losses(tiny_config(3), corpus, {.steps = 3, .checkpoint_dir = checkpoints});
  const us::CheckpointDirectory directory(checkpoints);
  const auto latest = directory.latest();
  ASSERT_TRUE(latest.has_value());
  const std::string bytes = read_file(*latest);

  us::LanguageModelConfig wider = tiny_config(3);
  wider.width = 64;
  us::LanguageModelTask task(wider, corpus);
  try {
    us::Trainer trainer(task, quiet({.steps = 3, .checkpoint_dir = checkpoints, .resume = true}));
    FAIL() << "a checkpoint of another model was loaded";
  } catch (const us::Error& e) {
    EXPECT_NE(std::string(e.what()).find(latest->filename().string()), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(read_file(*latest), bytes);
  EXPECT_EQ(directory.checkpoints().size(), 1u);
}

TEST(Trainer, NonFiniteLossStopsWithAnInspectionCheckpointApartFromTheResumableOnes) {
  const TempDir dir;
  const us::TextCorpus corpus = periodic_corpus();
  us::LanguageModelConfig config = tiny_config(20);
  config.lr = 1e30;  // the first update overflows the weights
  config.warmup = 0;
  const fs::path checkpoints = dir.path() / "ckpt";
  us::LanguageModelTask task(config, corpus);
  us::Trainer trainer(task, quiet({.steps = 20, .checkpoint_dir = checkpoints}));
  const us::TrainingResult result = trainer.run();
  EXPECT_EQ(result.reason, us::StopReason::kNonFiniteLoss);
  EXPECT_LT(result.last_step, 20);
  EXPECT_FALSE(std::isfinite(result.losses.back()));
  EXPECT_FALSE(us::CheckpointDirectory(checkpoints).latest().has_value());
  EXPECT_TRUE(us::CheckpointDirectory(checkpoints / "non-finite").latest().has_value());
}

TEST(Trainer, WritesMetricsLossCurveAndRunInfo) {
  const TempDir dir;
  const us::TextCorpus corpus = periodic_corpus();
  us::LanguageModelTask task(tiny_config(6), corpus);
  us::Trainer trainer(task, quiet({.steps = 6, .eval_every = 3, .output_dir = dir.path()}));
  const us::TrainingResult result = trainer.run();

  const std::string csv = read_file(dir.path() / "metrics.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7);  // header + 6 steps
  std::ifstream jsonl(dir.path() / "metrics.jsonl");
  std::string line;
  int lines = 0, with_validation = 0;
  while (std::getline(jsonl, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("step").get<int>(), ++lines);
    EXPECT_FLOAT_EQ(j.at("train_loss").get<float>(), result.losses[static_cast<std::size_t>(lines - 1)]);
    if (j.contains("validation_loss")) ++with_validation;
  }
  EXPECT_EQ(lines, 6);
  EXPECT_EQ(with_validation, 2);  // steps 3 and 6
  const std::string svg = read_file(dir.path() / "loss.svg");
  EXPECT_EQ(svg.rfind("<svg", 0) == 0 || svg.find("<svg") != std::string::npos, true);
  EXPECT_NE(svg.find("validation"), std::string::npos);
  const auto info = nlohmann::json::parse(read_file(dir.path() / "run.json"));
  EXPECT_EQ(info.at("config").at("model").at("width").get<int>(), 32);
  EXPECT_EQ(info.at("trainer").at("steps").get<int>(), 6);
  // The environment names the machine the figures came from.
  const auto& environment = info.at("environment");
  EXPECT_EQ(environment.at("threads").get<int>(), omp_get_max_threads());
  EXPECT_EQ(environment.at("cpu_model").get<std::string>(), us::cpu_model_name());
  EXPECT_FALSE(environment.at("gemm_isa").get<std::string>().empty());
  EXPECT_FALSE(environment.at("simd").get<std::string>().empty());
  EXPECT_THAT(environment.at("library_version").get<std::string>(),
              testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
}

TEST(Trainer, RefusesBadOptions) {
  const us::TextCorpus corpus = periodic_corpus();
  us::LanguageModelTask task(tiny_config(3), corpus);
  EXPECT_THROW(us::Trainer(task, quiet({.steps = 0})), us::Error);
  EXPECT_THROW(us::Trainer(task, quiet({.steps = 3, .resume = true})), us::Error);
  us::LanguageModelConfig bad = tiny_config(3);
  bad.width = 40;  // not a multiple of head_dim 16
  EXPECT_THROW(us::LanguageModelTask(bad, corpus), us::Error);
}

}  // namespace

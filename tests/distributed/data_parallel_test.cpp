// Data-parallel training over MPI, run as `mpirun -np 2 distributed_data_parallel_test` (ctest
// does): every rank runs every test, and the tests compare the two ranks' training with one
// process training the whole batch. The tiny decoder on periodic text keeps each run to
// milliseconds.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../support/tiny_decoder.hpp"
#include "unitscale/distributed/mpi_communicator.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/train/image_classifier.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/trainer.hpp"

namespace unitscale {
namespace {

Communicator* g_comm = nullptr;

using testing_support::periodic_corpus;
using testing_support::tiny_decoder_config;

// The tiny decoder with a global batch of 8 for `ranks` ranks.
LanguageModelConfig config_for(int ranks, Scheme scheme = Scheme::kUMuP,
                               GradientExchangeOptions exchange = {}, std::int64_t steps = 12) {
  LanguageModelConfig config = tiny_decoder_config(steps);
  config.scheme = scheme;
  config.batch = 8;
  if (scheme != Scheme::kUMuP) config.lr = 1.0 / 64;
  config.data_parallel = {
      .rank = ranks > 1 ? g_comm->rank() : 0, .ranks = ranks, .exchange = exchange};
  return config;
}

TrainingResult train(const LanguageModelConfig& config, Communicator* comm,
                     TrainerOptions options = {}) {
  const TextCorpus corpus = periodic_corpus();
  LanguageModelTask task(config, corpus);
  options.steps = config.steps;
  options.progress = ProgressMode::kQuiet;
  options.out = nullptr;
  options.handle_interrupt = false;
  options.communicator = comm;
  options.checksum_every = 1;  // every step: the ranks' parameters must stay identical
  return Trainer(task, options).run();
}

// Waits until every rank is here (a collective that carries nothing of interest).
void barrier() {
  double nothing[] = {0.0};
  all_reduce_sum(*g_comm, nothing);
}

// Two ranks with half the batch each train like one process with the whole batch: the same
// windows, and gradients combined to the whole batch's (the mean for SP, Σ/√N for u-μP, whose
// backward scales depend on the batch). Not bit for bit: one process sums each gradient over 8
// sequences, two ranks over 4 and then add; the stated tolerance is 1e-5 relative per step. Two
// 2-rank runs agree bit for bit (the exchange sums in a fixed order).
TEST(DataParallel, TwoRanksTrainLikeOneProcessWithTheWholeBatch) {
  for (const Scheme scheme : {Scheme::kUMuP, Scheme::kSP}) {
    const TrainingResult one = train(config_for(1, scheme), nullptr);
    const TrainingResult two = train(config_for(2, scheme), g_comm);
    const TrainingResult again = train(config_for(2, scheme), g_comm);
    ASSERT_EQ(two.losses.size(), one.losses.size());
    for (std::size_t i = 0; i < one.losses.size(); ++i) {
      EXPECT_NEAR(two.losses[i], one.losses[i], 1e-5 * std::fabs(one.losses[i]))
          << scheme_name(scheme) << ", step " << i + 1;
    }
    EXPECT_EQ(two.losses, again.losses) << scheme_name(scheme);
    EXPECT_LT(two.losses.back(), two.losses.front());
  }
}

// The gradients the update reads on two ranks (after the exchange) are those one process computes
// on the whole batch: for SP their mean, for u-μP Σ/√2. (Adam hardly notices a constant factor, so
// the loss comparison above would not tell the two apart.)
TEST(DataParallel, ExchangedGradientsAreTheWholeBatchs) {
  for (const Scheme scheme : {Scheme::kUMuP, Scheme::kSP}) {
    const TextCorpus corpus = periodic_corpus();
    std::vector<std::vector<float>> gradients[2];
    SingleProcessCommunicator single;
    for (const int ranks : {1, 2}) {
      LanguageModelTask task(config_for(ranks, scheme), corpus);
      std::vector<Value> requested;
      for (const ParameterUpdate& u : task.optimizer().updates) requested.push_back(u.grad);
      Executor executor(task.model().graph(), requested);
      GradientExchange exchange(ranks > 1 ? *g_comm : single);
      executor.set_gradient_exchange(&exchange);
      task.bind_inputs(executor);
      task.model().initialize(executor);
      task.load_batch(1);
      executor.run();
      for (const Value g : requested) {
        const ConstTensorView view = executor.get(g);
        gradients[ranks - 1].emplace_back(view.data(), view.data() + view.numel());
      }
    }
    ASSERT_EQ(gradients[0].size(), gradients[1].size());
    for (std::size_t p = 0; p < gradients[0].size(); ++p) {
      float largest = 0;
      for (const float x : gradients[0][p]) largest = std::max(largest, std::fabs(x));
      ASSERT_GT(largest, 0.0f);
      for (std::size_t i = 0; i < gradients[0][p].size(); ++i) {
        ASSERT_NEAR(gradients[1][p][i], gradients[0][p][i], 1e-5f * largest)
            << scheme_name(scheme) << ", parameter " << p << ", element " << i;
      }
    }
  }
}

// The image classifier too, with SGD, whose update is proportional to the gradient (so a wrong
// combine would show in the losses): 2 ranks track 1 process within 1e-5 relative per step.
TEST(DataParallel, TheImageClassifierTrainsLikeOneProcessWithSgd) {
  ImageClassificationData data;
  data.classes = 3;
  data.height = 4;
  data.width = 4;
  data.train_images = Tensor(Shape{64, 16});
  data.train_labels = Tensor(Shape{64}, DType::kI32);
  for (std::int64_t i = 0; i < 64; ++i) {
    data.train_labels.data_as<std::int32_t>()[i] = static_cast<std::int32_t>(i % 3);
    for (std::int64_t p = 0; p < 16; ++p) {
      data.train_images.data_as<float>()[i * 16 + p] =
          static_cast<float>((p == i % 3 ? 2.0 : 0.0) +
                             counter_normal(3, "images", static_cast<std::uint64_t>(i * 16 + p)));
    }
  }
  data.test_images = copy_of(data.train_images);
  data.test_labels = copy_of(data.train_labels);
  for (const Scheme scheme : {Scheme::kUMuP, Scheme::kSP}) {
    std::vector<float> losses[2];
    for (const int ranks : {1, 2}) {
      ImageClassifierConfig config{.scheme = scheme,
                                   .hidden = {32},
                                   .batch = 8,
                                   .optimizer = OptimizerKind::kSgd,
                                   .lr = scheme == Scheme::kUMuP ? 0.5 : 0.05,
                                   .steps = 10};
      config.data_parallel = {.rank = ranks > 1 ? g_comm->rank() : 0, .ranks = ranks};
      ImageClassifierTask task(config, data);
      losses[ranks - 1] = Trainer(task, {.steps = 10,
                                         .progress = ProgressMode::kQuiet,
                                         .out = nullptr,
                                         .handle_interrupt = false,
                                         .communicator = ranks > 1 ? g_comm : nullptr,
                                         .checksum_every = 1})
                              .run()
                              .losses;
    }
    ASSERT_EQ(losses[0].size(), losses[1].size());
    for (std::size_t i = 0; i < losses[0].size(); ++i) {
      EXPECT_NEAR(losses[1][i], losses[0][i], 1e-5 * std::fabs(losses[0][i]))
          << scheme_name(scheme) << ", step " << i + 1;
    }
    EXPECT_LT(losses[1].back(), losses[1].front()) << scheme_name(scheme);
  }
}

// u-μP's gradients are unit-scaled, so FP16, BF16 and FP8 exchanges need no scales: after 40 steps
// each trains to within 1% of the fp32 exchange's loss (the mean of the last 5 steps).
TEST(DataParallel, LowPrecisionExchangesOfUnitScaledGradientsTrackFp32) {
  constexpr std::int64_t kSteps = 40;
  auto tail_loss = [](const TrainingResult& r) {
    double sum = 0;
    for (std::size_t i = r.losses.size() - 5; i < r.losses.size(); ++i) sum += r.losses[i];
    return sum / 5;
  };
  const double fp32 = tail_loss(train(config_for(2, Scheme::kUMuP, {}, kSteps), g_comm));
  for (const DType format : {DType::kF16, DType::kBF16, DType::kE5M2, DType::kE4M3FN}) {
    const TrainingResult r =
        train(config_for(2, Scheme::kUMuP, {.format = format}, kSteps), g_comm);
    EXPECT_NEAR(tail_loss(r), fp32, 0.01 * fp32) << dtype_name(format);
    EXPECT_GT(r.exchange_quantized, 0) << dtype_name(format);
    EXPECT_EQ(r.exchange_saturated, 0) << dtype_name(format);
  }
}

// SP's gradients are far below unit scale (a mean over tokens, then products of small weights): an
// E4M3 exchange without scales flushes much of them to zero, as predicted; per-tensor scales fix
// it.
TEST(DataParallel, Fp8ExchangeOfSpGradientsUnderflowsWithoutScales) {
  const TrainingResult unit = train(config_for(2, Scheme::kSP, {.format = DType::kE4M3FN}), g_comm);
  const TrainingResult per_tensor =
      train(config_for(2, Scheme::kSP,
                       {.format = DType::kE4M3FN, .scaling = ExchangeScaling::kPerTensor}),
            g_comm);
  const TrainingResult umup =
      train(config_for(2, Scheme::kUMuP, {.format = DType::kE4M3FN}), g_comm);
  auto underflow = [](const TrainingResult& r) {
    return static_cast<double>(r.exchange_underflowed) / static_cast<double>(r.exchange_quantized);
  };
  EXPECT_GT(underflow(unit), 0.2);
  EXPECT_LT(underflow(per_tensor), 0.01);
  EXPECT_LT(underflow(umup), 0.05);
}

// A run checkpointed on two ranks resumes on one (and on two) where it stopped.
TEST(DataParallel, ResumesOnAnotherNumberOfRanks) {
  const TrainingResult whole = train(config_for(2), g_comm);
  // Rank 0 names a directory every rank uses (one machine, one file system).
  const auto base = std::filesystem::temp_directory_path() / "unitscale_data_parallel_resume";
  const std::string directory =
      all_gather_strings(*g_comm, (base / std::to_string(::getpid())).string())[0];
  if (g_comm->rank() == 0) std::filesystem::remove_all(directory);
  barrier();
  LanguageModelConfig first_half = config_for(2);
  TrainerOptions options{.checkpoint_dir = directory};
  // The same schedule (its length is part of the config), stopped after step 6.
  {
    const TextCorpus corpus = periodic_corpus();
    LanguageModelTask task(first_half, corpus);
    Trainer trainer(task, {.steps = 6,
                           .checkpoint_dir = directory,
                           .progress = ProgressMode::kQuiet,
                           .out = nullptr,
                           .handle_interrupt = false,
                           .communicator = g_comm});
    trainer.run();
  }
  barrier();
  options.resume = true;
  if (g_comm->rank() == 0) {
    const TrainingResult one = train(config_for(1), nullptr, options);
    EXPECT_EQ(one.first_step, 7);
    ASSERT_EQ(one.losses.size(), 6u);
    for (std::size_t i = 0; i < 6; ++i) {
      EXPECT_NEAR(one.losses[i], whole.losses[6 + i], 1e-5 * whole.losses[6 + i]) << i;
    }
    // That run wrote its own checkpoint at step 12: back to the one at step 6.
    std::filesystem::remove(std::filesystem::path(directory) / "step-00000012.safetensors");
  }
  barrier();
  const TrainingResult two = train(config_for(2), g_comm, options);
  EXPECT_EQ(two.first_step, 7);
  EXPECT_EQ(two.losses, std::vector<float>(whole.losses.begin() + 6, whole.losses.end()));
  barrier();
  if (g_comm->rank() == 0) std::filesystem::remove_all(directory);
}

// Ranks started with different settings stop at the Trainer's construction, each with an error
// that names the difference.
TEST(DataParallel, DifferentConfigurationsFailOnEveryRank) {
  LanguageModelConfig config = config_for(2);
  if (g_comm->rank() == 1) config.width = 64;
  try {
    train(config, g_comm);
    FAIL() << "rank " << g_comm->rank() << " trained";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("different configurations"), std::string::npos) << message;
    EXPECT_NE(message.find("task.model: rank 0 has"), std::string::npos) << message;
  }
}

// A rank whose parameters drift (here: one weight changed on rank 1 after step 2) stops the run on
// every rank at the next checksum, naming the parameter.
TEST(DataParallel, ParametersThatDivergeStopTheRun) {
  const TextCorpus corpus = periodic_corpus();
  LanguageModelTask task(config_for(2), corpus);
  TrainerOptions options{.steps = 6,
                         .progress = ProgressMode::kQuiet,
                         .out = nullptr,
                         .handle_interrupt = false,
                         .communicator = g_comm,
                         .checksum_every = 1};
  Trainer* trainer_pointer = nullptr;
  options.after_step = [&](std::int64_t step) {
    if (step != 2 || g_comm->rank() != 1) return;
    const Value embedding = task.model().parameters().front().value;
    Tensor changed = copy_of(trainer_pointer->executor().state(embedding));
    changed.data()[0] += 1.0f;
    trainer_pointer->executor().set_state(embedding, changed);
  };
  Trainer trainer(task, options);
  trainer_pointer = &trainer;
  try {
    trainer.run();
    FAIL() << "rank " << g_comm->rank() << " did not notice";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("after step 2"), std::string::npos) << message;
    EXPECT_NE(message.find("'embedding.weight' on rank 1"), std::string::npos) << message;
  }
}

TEST(DataParallel, TheTaskMustBeBuiltForTheCommunicatorsRanks) {
  try {
    train(config_for(1), g_comm);
    FAIL() << "a one-rank task trained on two ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built for 1 data-parallel rank(s)"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  unitscale::MpiSession mpi(argc, argv, {.collective_timeout_seconds = 120});
  unitscale::g_comm = &mpi.communicator();
  ::testing::InitGoogleTest(&argc, argv);
  if (unitscale::g_comm->rank() != 0) {
    // One report is enough; a failure on rank 1 still fails the job (its exit status).
    delete ::testing::UnitTest::GetInstance()->listeners().Release(
        ::testing::UnitTest::GetInstance()->listeners().default_result_printer());
  }
  return RUN_ALL_TESTS();
}

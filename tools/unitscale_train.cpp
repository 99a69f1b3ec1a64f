// unitscale-train: trains a model from the command line with the library's Trainer. It prints the
// model summary and the effective per-parameter learning rates, trains with a progress bar,
// evaluates, keeps checkpoints to resume from, writes metrics and the loss curve, and (for a
// language model) prints a sample of generated text.
//
//   unitscale-train --width 128 --depth 2 --steps 1000 --out run
//   unitscale-train --resume --checkpoint-dir run/checkpoints --out run   # after a Ctrl-C

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/distributed/communicator.hpp"
#include "unitscale/error.hpp"
#include "unitscale/io/idx.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/image_classifier.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/trainer.hpp"
#if UNITSCALE_HAVE_MPI
#include "unitscale/distributed/mpi_communicator.hpp"
#endif

namespace fs = std::filesystem;
namespace us = unitscale;

namespace {

struct Arguments {
  std::string model = "decoder";
  std::string scheme = "umup";
  std::int64_t width = 128;
  std::int64_t depth = 2;
  std::int64_t heads = 0;
  std::int64_t mup_base_width = 64;
  std::string hidden = "512,512";
  std::string activation = "gelu";
  std::int64_t sequence_length = 64;
  std::int64_t batch = 16;
  std::int64_t steps = 1000;
  double lr = 0;
  std::string schedule = "cosine";
  std::int64_t warmup = 100;
  double weight_decay = 0;
  double max_grad_norm = 0;
  us::UmupHyperparameters hp;
  std::string data;
  std::int64_t seed = 0;
  std::int64_t threads = 0;
  std::string out;
  std::string checkpoint_dir;
  std::int64_t checkpoint_every = 0;
  std::int64_t keep = 3;
  bool resume = false;
  std::int64_t eval_every = 0;
  std::string progress = "auto";
  std::int64_t track_scales = 0;
  std::string simulate = "fp32";
  bool critical_matmuls = false;
  std::string scalify = "off";
  std::string scalify_state = "f16";
  std::string master_weights = "f32";
  std::string first_moment = "as-state";
  std::string saved_activations = "as-computed";
  std::string scalify_matmuls = "propagated";
  std::int64_t amax_history = 16;
  bool per_tensor_scaling = false;
  bool stochastic_gradients = false;
  bool round_attention = false;
  double loss_scale = 1;
  bool dynamic_loss_scale = false;
  std::int64_t sample_bytes = 300;
  std::string prompt;
  double temperature = 0.8;
  std::int64_t top_k = 40;
  std::string exchange = "f32";
  std::string exchange_scaling = "unit";
  std::string overlap = "auto";
  double collective_timeout = 600;
  std::int64_t checksum_every = 100;
};

us::ProgressMode progress_of(const std::string& name) {
  if (name == "bar") return us::ProgressMode::kBar;
  if (name == "lines") return us::ProgressMode::kLines;
  if (name == "quiet") return us::ProgressMode::kQuiet;
  return us::ProgressMode::kAuto;
}

us::CommandLine make_command_line(Arguments& a) {
  us::CommandLine cli(
      "unitscale-train",
      "Trains a byte-level transformer decoder on a text corpus (by default the Debian fortunes),\n"
      "or an MLP classifier on an IDX image dataset (by default Fashion-MNIST), under SP, muP or\n"
      "u-muP with AdamW, as the library's Trainer does: progress bar, evaluation, checkpoints,\n"
      "metrics, loss curve, and at the end a sample of generated text or the test accuracy.");
  cli.section("Model")
      .choice("--model", &a.model, {"decoder", "mlp"}, "what to train")
      .choice("--scheme", &a.scheme, {"umup", "mup", "sp"}, "parametrization")
      .option("--width", &a.width, "N", "decoder width d", 1)
      .option("--depth", &a.depth, "L", "decoder layers", 1)
      .option("--heads", &a.heads, "N", "attention heads (0: width/32, head dim 32)")
      .option("--hidden", &a.hidden, "LIST", "MLP hidden widths, comma-separated")
      .choice("--activation", &a.activation, {"gelu", "relu"}, "MLP activation")
      .option("--mup-base-width", &a.mup_base_width, "N", "muP's base width", 1)
      .section("u-muP hyperparameters (each 1 by default; act as plain multipliers in SP/muP)")
      .option("--ffn-act-mult", &a.hp.ffn_act_mult, "X", "alpha_ffn-act")
      .option("--attn-softmax-mult", &a.hp.attn_softmax_mult, "X", "alpha_attn-softmax")
      .option("--residual-mult", &a.hp.residual_mult, "X", "alpha_res")
      .option("--residual-attn-ratio", &a.hp.residual_attn_ratio, "X", "alpha_res-attn-ratio")
      .option("--loss-softmax-mult", &a.hp.loss_softmax_mult, "X", "alpha_loss-softmax")
      .section("Training")
      .option("--seq", &a.sequence_length, "S", "decoder: sequence length (windows of S+1 bytes)",
              1)
      .option("--batch", &a.batch, "B", "sequences (images) per step", 1)
      .option("--steps", &a.steps, "N", "training steps", 1)
      .option("--lr", &a.lr, "ETA",
              "global learning rate eta; accepts 2^E (0: 1 for u-muP, 2^-8 for SP and muP)")
      .choice("--schedule", &a.schedule, {"cosine", "constant"},
              "after the warmup: cosine decay to 0, or constant")
      .option("--warmup", &a.warmup, "N", "linear warmup steps")
      .option("--weight-decay", &a.weight_decay, "X",
              "AdamW weight decay (u-muP: independent of the LR)")
      .option("--clip", &a.max_grad_norm, "X", "global gradient-norm clip (0: none)")
      .option("--seed", &a.seed, "N", "parameters and data sampling")
      .option("--threads", &a.threads, "N", "threads (0: the OpenMP default)")
      .section("Data")
      .option("--data", &a.data, "PATH",
              "decoder: a text file, or a directory of fortune files ('%'-separated entries, "
              "every 20th for validation; default " +
                  std::string(us::kFortunesDirectory) +
                  "); mlp: a directory of gzipped IDX files (default " +
                  std::string(us::kFashionMnistDirectory) +
                  ", last 5000 training images for "
                  "validation)")
      .section("Output")
      .option("--out", &a.out, "DIR",
              "metrics.csv, metrics.jsonl, loss.svg, run.json (empty: none)")
      .option("--checkpoint-dir", &a.checkpoint_dir, "DIR",
              "checkpoints (safetensors); default DIR/checkpoints with --out")
      .option("--checkpoint-every", &a.checkpoint_every, "N",
              "steps between checkpoints (0: at the end only)")
      .option("--keep", &a.keep, "K", "checkpoints kept", 1)
      .flag("--resume", &a.resume,
            "continue from the newest checkpoint in the checkpoint directory")
      .option("--eval-every", &a.eval_every, "N", "steps between evaluations (0: at the end only)")
      .choice("--progress", &a.progress, {"auto", "bar", "lines", "quiet"},
              "progress bar on a terminal, plain lines otherwise (auto)")
      .option("--track-scales", &a.track_scales, "N",
              "record every tensor's scale against E4M3, E5M2 and FP16 at step 1 and every Nth "
              "step: DIR/scales/step-NNNNNNNN.{csv,json,svg} (needs --out; 0: off)")
      .section("Precision")
      .choice("--simulate", &a.simulate, {"fp32", "fp8", "fp16", "bf16"},
              "fp8: E4M3 matmul inputs and E5M2 gradients (real FP8 GEMM operands); fp16, bf16: "
              "every value and gradient rounded to the format, matmuls in it")
      .flag("--critical-matmuls", &a.critical_matmuls,
            "with fp8: keep the attention-out and FFN-down matmuls in fp32")
      .flag("--per-tensor-scaling", &a.per_tensor_scaling,
            "scale each matmul operand by the power of two that fits its amax to the format")
      .flag("--stochastic-gradients", &a.stochastic_gradients,
            "round the matmuls' gradients stochastically instead of to nearest")
      .flag("--round-attention", &a.round_attention,
            "round attention's q, k, v and output gradient like the matmuls' operands")
      .choice("--scalify", &a.scalify, {"off", "fp16", "fp8"},
              "scale propagation (Scalify): every value of the step, backward and optimizer "
              "included, stored as FP16 data times a propagated power-of-two scale; fp8 casts "
              "the matmul operands to E4M3 and their gradients to E5M2. No loss scaling")
      .choice("--scalify-state", &a.scalify_state, {"f16", "bf16", "f32"},
              "with --scalify: the optimizer moments' storage (narrow ones scaled)")
      .choice("--master-weights", &a.master_weights, {"f32", "f16", "bf16"},
              "with --scalify: the parameters' storage (narrow ones scaled)")
      .choice("--first-moment", &a.first_moment, {"as-state", "e4m3fn", "e5m2"},
              "with --scalify: Adam's m (SGD's momentum buffer) in FP8, scaled, as FP8-LM keeps "
              "it; v stays in --scalify-state")
      .choice("--saved-activations", &a.saved_activations, {"as-computed", "e4m3fn", "e5m2"},
              "with --scalify: FP8 copies of the activations that norms and activation functions "
              "keep for the backward pass (the values themselves are freed after the forward "
              "pass uses them), and the weights cast again for the backward matmuls rather than "
              "kept")
      .choice("--scalify-matmuls", &a.scalify_matmuls,
              {"propagated", "current-amax", "delayed-amax"},
              "with --scalify fp8: the FP8 casts' scales: the propagated ones, each operand's "
              "current amax, or an amax history of earlier steps (delayed scaling)")
      .option("--amax-history", &a.amax_history, "N",
              "with --scalify-matmuls delayed-amax: the steps each history keeps", 1)
      .option("--loss-scale", &a.loss_scale, "S",
              "static loss scaling: gradients are computed scaled by S, then unscaled (1: off)")
      .flag("--dynamic-loss-scale", &a.dynamic_loss_scale,
            "dynamic loss scaling from --loss-scale (2^16 if 1): overflowing steps are skipped "
            "and halve the scale, 2000 good steps double it")
      .section(
          "Data parallelism (launch with mpirun -np N unitscale-train ...; docs/distributed.md)")
      .choice("--exchange", &a.exchange, {"f32", "bf16", "f16", "e5m2", "e4m3"},
              "the gradient exchange's format (on one rank a low-precision one still quantises "
              "the gradients, to study the format alone)")
      .choice("--exchange-scaling", &a.exchange_scaling, {"unit", "per-tensor"},
              "unit: unit-scaled gradients as they are (u-muP); per-tensor: a power-of-two scale "
              "fitting each tensor's amax to the format (for SP)")
      .choice("--overlap", &a.overlap, {"auto", "on", "off"},
              "exchange the gradients while backward runs (on) or in the update (off); auto: on "
              "when this machine has a core to spare for it beyond the ranks' threads")
      .option("--collective-timeout", &a.collective_timeout, "S",
              "seconds a rank waits for the others before the job is aborted")
      .option("--checksum-every", &a.checksum_every, "N",
              "steps between checks that every rank holds the same parameters (0: at the start "
              "and end only)")
      .section("Sample")
      .option("--sample", &a.sample_bytes, "N",
              "decoder: bytes of text to generate at the end (0: none)")
      .option("--prompt", &a.prompt, "TEXT", "start of the generated text")
      .option("--temperature", &a.temperature, "T", "sampling temperature (0: greedy)")
      .option("--top-k", &a.top_k, "K", "sample among the K most likely bytes (0: all)");
  cli.epilog(
      "Ctrl-C stops after the current step and saves a checkpoint; --resume continues the run\n"
      "exactly where it stopped. Exit status: 0 done, 1 error, 2 non-finite loss, 130 "
      "interrupted.");
  return cli;
}

// --overlap auto: the exchange's thread only pays off with a core of its own. On a 2-core machine
// with 2 ranks of 1 thread each, overlapping cut the time the update waited for the exchange from
// 14 to 1.4 ms per step and the step was no faster (docs/distributed.md).
bool overlap_exchange(const std::string& choice) {
  if (choice != "auto") return choice == "on";
  int local_ranks = 1;
  for (const char* variable : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* value = std::getenv(variable)) local_ranks = std::max(1, std::atoi(value));
  }
  const auto cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > local_ranks * omp_get_max_threads();
}

us::TrainerOptions trainer_options(const Arguments& a, us::Communicator* comm) {
  fs::path checkpoint_dir = a.checkpoint_dir;
  if (checkpoint_dir.empty() && !a.out.empty()) checkpoint_dir = fs::path(a.out) / "checkpoints";
  return {.steps = a.steps,
          .eval_every = a.eval_every,
          .output_dir = a.out,
          .checkpoint_dir = checkpoint_dir,
          .checkpoint_every = a.checkpoint_every,
          .keep_checkpoints = static_cast<int>(a.keep),
          .resume = a.resume,
          .progress = progress_of(a.progress),
          .out = stdout,
          .communicator = comm,
          .overlap_exchange = overlap_exchange(a.overlap),
          .checksum_every = a.checksum_every};
}

// Trains `task` and prints the outcome; returns the exit status.
int train(us::TrainingTask& task, const Arguments& a, us::Communicator* comm,
          const std::function<void(const us::Executor&)>& finish) {
  fmt::print("\n{}\n\n{}\n", task.model().summary(), task.optimizer().learning_rate_table);
  if (const std::string report = task.precision_report(); !report.empty()) {
    fmt::print("{}\n", report);
  }
  us::TrainerOptions options = trainer_options(a, comm);
  // Scale tracking records the steps it is switched on for; after each of them, its reports go
  // to DIR/scales/.
  std::optional<us::ScaleTracker> tracker;
  const fs::path scales_dir = fs::path(a.out) / "scales";
  auto tracked = [&](std::int64_t step) {
    return a.track_scales > 0 && (step == 1 || step % a.track_scales == 0);
  };
  if (a.track_scales > 0) {
    options.after_step = [&](std::int64_t step) {
      if (tracker->recording()) {
        const std::string stem = fmt::format("step-{:08d}", step);
        us::write_file_atomically(scales_dir / (stem + ".csv"), tracker->csv());
        us::write_file_atomically(scales_dir / (stem + ".json"), tracker->json());
        tracker->save_chart(scales_dir / (stem + ".svg"),
                            fmt::format("{}: the tensors of step {}", a.scheme, step));
      }
      tracker->set_recording(tracked(step + 1));
    };
  }
  us::Trainer trainer(task, options);
  if (a.track_scales > 0) {
    fs::create_directories(scales_dir);
    tracker = us::track_scales(trainer.executor(), task.model().graph());
    tracker->set_recording(tracked(trainer.completed_steps() + 1));
  }
  const us::TrainingResult result = trainer.run();
  fmt::print("\n{} after step {}: {:.1f} s, {:.0f} {}/s", us::stop_reason_name(result.reason),
             result.last_step, result.seconds, result.items_per_second, task.item_unit());
  if (!result.losses.empty()) fmt::print(", last training loss {:.4f}", result.losses.back());
  if (result.skipped_steps > 0) {
    fmt::print(", {} steps skipped (gradient overflow)", result.skipped_steps);
  }
  if (result.validation_loss) fmt::print(", validation loss {:.4f}", *result.validation_loss);
  fmt::print("\n");
  if (result.exchange_quantized > 0) {
    const auto quantized = static_cast<double>(result.exchange_quantized);
    fmt::print(
        "gradient exchange ({}): {:.4g}% of {} quantised values underflowed to zero, "
        "{:.4g}% saturated\n",
        a.exchange, 100.0 * static_cast<double>(result.exchange_underflowed) / quantized,
        result.exchange_quantized,
        100.0 * static_cast<double>(result.exchange_saturated) / quantized);
  }
  if (!a.out.empty()) fmt::print("metrics and loss curve in {}\n", a.out);
  if (result.checkpoint) fmt::print("checkpoint {}\n", result.checkpoint->string());
  if (result.reason == us::StopReason::kNonFiniteLoss) return 2;
  if (result.reason == us::StopReason::kInterrupted) return 130;
  finish(trainer.executor());
  return 0;
}

// The settings both tasks' configs have, from the options (and the ranks of `comm`, if any).
template <class Config>
void set_common(Config& config, const Arguments& a, us::Communicator* comm) {
  config.data_parallel = {
      .rank = comm != nullptr ? comm->rank() : 0,
      .ranks = comm != nullptr ? comm->size() : 1,
      .exchange = {.format = us::exchange_format_from_name(a.exchange),
                   .scaling = us::exchange_scaling_from_name(a.exchange_scaling)}};
  if (comm != nullptr) {
    fmt::print("data parallel: {}, {} of the batch's {} per rank, gradient exchange {}{}\n",
               comm->description(), config.data_parallel.shard_rows(a.batch), a.batch,
               config.data_parallel.exchange.name(),
               overlap_exchange(a.overlap) ? " (overlapping backward)" : " (in the update)");
  }
  config.scheme = us::scheme_from_flag(a.scheme, "--scheme");
  config.mup_base_width = a.mup_base_width;
  config.hyperparameters = a.hp;
  config.batch = a.batch;
  config.seed = static_cast<std::uint64_t>(a.seed);
  config.lr = a.lr > 0 ? a.lr : us::default_learning_rate(config.scheme);
  config.steps = a.steps;
  config.warmup = std::min(a.warmup, a.steps);
  config.cosine_decay = a.schedule == "cosine";
  config.weight_decay = a.weight_decay;
  config.max_grad_norm = a.max_grad_norm;
  config.precision = {
      .recipe = a.scalify != "off"                          ? "scalify-" + a.scalify
                : a.simulate == "fp8" && a.critical_matmuls ? "fp8-critical"
                                                            : a.simulate,
      .optimizer_state = us::dtype_from_name(a.scalify_state),
      .master_weights = us::dtype_from_name(a.master_weights),
      .first_moment = a.first_moment == "as-state"
                          ? std::nullopt
                          : std::optional(us::dtype_from_name(a.first_moment)),
      .saved_activations = a.saved_activations == "as-computed"
                               ? std::nullopt
                               : std::optional(us::dtype_from_name(a.saved_activations)),
      .matmul_scaling = a.scalify_matmuls == "current-amax"   ? us::MatmulScaling::kCurrentAmax
                        : a.scalify_matmuls == "delayed-amax" ? us::MatmulScaling::kDelayedAmax
                                                              : us::MatmulScaling::kPropagated,
      .amax_history_length = static_cast<int>(a.amax_history),
      .per_tensor_scaling = a.per_tensor_scaling,
      .stochastic_gradients = a.stochastic_gradients,
      .loss_scale = a.loss_scale,
      .dynamic_loss_scaling = a.dynamic_loss_scale,
      .round_attention = a.round_attention};
}

int train_decoder(const Arguments& a, us::Communicator* comm) {
  us::LanguageModelConfig config;
  set_common(config, a, comm);
  config.width = a.width;
  config.depth = static_cast<int>(a.depth);
  const std::int64_t heads = a.heads > 0 ? a.heads : std::max<std::int64_t>(1, a.width / 32);
  if (a.width % heads != 0) {
    throw us::Error(fmt::format("--heads {} does not divide --width {}", heads, a.width));
  }
  config.head_dim = a.width / heads;
  config.sequence_length = a.sequence_length;

  const std::string path = a.data.empty() ? std::string(us::kFortunesDirectory) : a.data;
  const us::TextCorpus corpus = us::load_text_corpus(path);
  fmt::print("data: {} ({} files, {} entries): {} training bytes, {} validation bytes\n", path,
             corpus.files.size(), corpus.entries, corpus.train.size(), corpus.validation.size());
  us::LanguageModelTask task(config, corpus);
  return train(task, a, comm, [&](const us::Executor& trained) {
    if (a.sample_bytes == 0) return;
    const std::string sample = task.generate(trained, a.prompt,
                                             {.max_bytes = a.sample_bytes,
                                              .temperature = a.temperature,
                                              .top_k = a.top_k,
                                              .seed = static_cast<std::uint64_t>(a.seed)});
    fmt::print("\nsample (temperature {}, top-k {}):\n{}{}\n", a.temperature, a.top_k, a.prompt,
               sample);
  });
}

int train_mlp(const Arguments& a, us::Communicator* comm) {
  us::ImageClassifierConfig config;
  set_common(config, a, comm);
  config.hidden = us::CommandLine::parse_positive_integers("--hidden", a.hidden);
  config.activation =
      a.activation == "relu" ? us::ClassifierActivation::kRelu : us::ClassifierActivation::kGelu;

  const us::ImageDatasetOptions options{.validation_holdout = 5000};
  const us::ImageClassificationData data =
      a.data.empty() ? us::load_fashion_mnist(options)
                     : us::load_idx_image_dataset(a.data, "train", "t10k", options);
  fmt::print("data: {} training, {} validation, {} test images of {}x{}, {} classes\n",
             data.train_images.shape()[0], data.validation_images.shape()[0],
             data.test_images.shape()[0], data.height, data.width, data.classes);
  us::ImageClassifierTask task(config, data);
  return train(task, a, comm, [&](const us::Executor& trained) {
    const auto test = task.evaluate_on(trained, data.test_images, data.test_labels);
    fmt::print("test: loss {:.4f}, accuracy {:.2f}%\n", test.loss, 100 * test.accuracy);
  });
}

int run(int argc, char** argv) {
  Arguments a;
  us::CommandLine cli = make_command_line(a);
  if (!cli.parse(argc, argv)) return 0;
  const int ranks = us::launcher_world_size();
  if (!(a.collective_timeout > 0)) {
    throw us::Error(
        fmt::format("--collective-timeout must be positive, got {}", a.collective_timeout));
  }
  if (a.track_scales > 0 && a.out.empty()) {
    throw us::Error("--track-scales needs --out DIR: the scale reports go to DIR/scales/");
  }
  if (a.critical_matmuls && a.simulate != "fp8") {
    throw us::Error(fmt::format("--critical-matmuls needs --simulate fp8 (got --simulate {})",
                                a.simulate));
  }
  if (a.scalify != "off" && a.simulate != "fp32") {
    throw us::Error(
        fmt::format("--scalify {} and --simulate {}: choose one precision", a.scalify, a.simulate));
  }
  if (a.scalify == "off" &&
      (a.scalify_state != "f16" || a.master_weights != "f32" || a.scalify_matmuls != "propagated" ||
       a.first_moment != "as-state" || a.saved_activations != "as-computed")) {
    throw us::Error(
        "--scalify-state, --master-weights, --scalify-matmuls, --first-moment and "
        "--saved-activations need --scalify fp16 or fp8");
  }
  if (cli.given("--amax-history") && a.scalify_matmuls != "delayed-amax") {
    throw us::Error("--amax-history needs --scalify-matmuls delayed-amax");
  }
  if (a.threads > 0) omp_set_num_threads(static_cast<int>(a.threads));
  auto train_model = [&](us::Communicator* comm) {
    return a.model == "mlp" ? train_mlp(a, comm) : train_decoder(a, comm);
  };
  if (ranks == 1) return train_model(nullptr);
#if UNITSCALE_HAVE_MPI
  us::MpiSession mpi(argc, argv, {.collective_timeout_seconds = a.collective_timeout});
  us::Communicator& comm = mpi.communicator();
  // Rank 0 speaks for the job; the others print errors only.
  if (comm.rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) {
    throw us::Error("rank " + std::to_string(comm.rank()) + ": cannot silence stdout");
  }
  try {
    return train_model(&comm);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "unitscale-train (rank {} of {}): {}\n", comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    // The other ranks may be waiting for this one in a collective: end the job rather than let
    // them time out, after a moment in which ranks that failed the same check print theirs.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    mpi.abort(1);
  }
#else
  throw us::Error(fmt::format(
      "launched as one of {} MPI ranks, but this unitscale-train was built without MPI; install "
      "libopenmpi-dev (scripts/bootstrap.sh does) and rebuild",
      ranks));
#endif
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("unitscale-train", [&] { return run(argc, argv); });
}

#include "unitscale/train/trainer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <nlohmann/json.hpp>

#include "train/fnv1a.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/train/run_environment.hpp"

namespace unitscale {

namespace {

// Set by the SIGINT handler, polled after every step. sig_atomic_t is what a handler may write.
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_interrupt(int) { g_interrupted = 1; }

// Installs the handler for the duration of run(). SA_RESETHAND puts the default action back once
// the first Ctrl-C arrived, so a second one kills the process if the step or the checkpoint
// never finishes.
class InterruptGuard {
 public:
  explicit InterruptGuard(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    g_interrupted = 0;
    struct sigaction action = {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    action.sa_flags = static_cast<int>(SA_RESETHAND);  // an unsigned constant on glibc
    ::sigaction(SIGINT, &action, &previous_);
  }
  ~InterruptGuard() {
    if (enabled_) ::sigaction(SIGINT, &previous_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  bool enabled_;
  struct sigaction previous_ = {};
};

std::vector<CheckpointValue> collect_checkpoint_values(TrainingTask& task,
                                                       const Executor& executor) {
  Graph& graph = task.model().graph();
  std::vector<CheckpointValue> values;
  for (const ModelParameter& p : task.model().parameters()) {
    values.push_back({graph.info(p.value).name, p.value});
  }
  for (const Value v : task.optimizer().state_values()) {
    values.push_back({graph.info(v).name, v});
  }
  if (const ScaledGraph* scaled = task.scaled_graph()) {
    // Those of the training step: the evaluation forwards' casts keep amax histories of their own.
    for (const auto& added : {scaled->scale_states(), scaled->amax_histories()}) {
      for (const Value v : added) {
        if (executor.has_state(v)) values.push_back({graph.info(v).name, v});
      }
    }
  }
  return values;
}

}  // namespace

void DataParallelConfig::check(std::string_view owner, std::int64_t batch,
                               bool scale_propagation) const {
  if (ranks < 1 || rank < 0 || rank >= ranks) {
    throw Error(
        fmt::format("{}: data-parallel rank {} of {} ranks is not one (need 0 ≤ rank < "
                    "ranks)",
                    owner, rank, ranks));
  }
  if (batch % ranks != 0) {
    throw Error(
        fmt::format("{}: the batch of {} does not split into {} equal data-parallel "
                    "shards; use a batch that is a multiple of the number of ranks",
                    owner, batch, ranks));
  }
  exchange.check(owner);
  if (exchanges() && scale_propagation) {
    throw Error(
        fmt::format("{}: data-parallel training (a gradient exchange) does not run under "
                    "scale propagation yet; use another precision recipe",
                    owner));
  }
}

std::string_view stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kCompleted: return "completed";
    case StopReason::kNonFiniteLoss: return "non-finite loss";
    case StopReason::kInterrupted: return "interrupted";
  }
  return "?";
}

Trainer::Trainer(TrainingTask& task, TrainerOptions options)
    : task_(task),
      options_(std::move(options)),
      comm_(options_.communicator != nullptr ? options_.communicator : &single_process_),
      metrics_(comm_->rank() == 0 ? options_.output_dir : std::filesystem::path{},
               "training loss") {
  if (options_.steps < 1) {
    throw Error(fmt::format("Trainer: steps must be ≥ 1, got {}", options_.steps));
  }
  if (options_.eval_every < 0 || options_.checkpoint_every < 0 || options_.keep_checkpoints < 1 ||
      options_.checksum_every < 0) {
    throw Error(
        fmt::format("Trainer: eval_every, checkpoint_every and checksum_every must be ≥ 0 and "
                    "keep_checkpoints ≥ 1, got {}, {}, {} and {}",
                    options_.eval_every, options_.checkpoint_every, options_.checksum_every,
                    options_.keep_checkpoints));
  }
  if (options_.resume && options_.checkpoint_dir.empty()) {
    throw Error("Trainer: resume needs a checkpoint directory");
  }
  if (task_.data_parallel_ranks() != comm_->size()) {
    throw Error(
        fmt::format("Trainer: the task was built for {} data-parallel rank(s), and the "
                    "communicator ({}) has {}",
                    task_.data_parallel_ranks(), comm_->description(), comm_->size()));
  }
  if (!root()) {
    // Rank 0 speaks for the job; the others report errors only (as exceptions).
    options_.out = nullptr;
    options_.progress = ProgressMode::kQuiet;
  }
  if (comm_->size() > 1) check_same_configuration();

  const OptimizerStep& optimizer = task_.optimizer();
  executor_ = std::make_unique<Executor>(
      task_.model().graph(), optimizer.outputs({task_.loss(), optimizer.lr_multiplier}));
  const auto nodes = task_.model().graph().nodes();
  if (std::any_of(nodes.begin(), nodes.end(),
                  [](const Node& n) { return n.op == &kGradientExchangeStartOp; })) {
    exchange_ = std::make_unique<GradientExchange>(*comm_, options_.overlap_exchange);
    executor_->set_gradient_exchange(exchange_.get());
  }
  task_.bind_inputs(*executor_);
  checkpoint_values_ = collect_checkpoint_values(task_, *executor_);
  task_.model().initialize(*executor_, task_.scaled_graph());
  if (!options_.checkpoint_dir.empty() && root()) {
    checkpoints_.emplace(options_.checkpoint_dir, options_.keep_checkpoints);
  }
  if (options_.resume) resume_from_checkpoint();
  if (comm_->size() > 1) check_same_parameters(completed_steps_);
}

// Every rank's configuration (the task's, the Trainer's schedule and the gradient exchange's)
// against rank 0's; every rank throws the same error listing the differences.
void Trainer::check_same_configuration() const {
  nlohmann::json mine;
  for (const auto& [key, value] : task_.config()) mine["task." + key] = value;
  mine["trainer.steps"] = options_.steps;
  mine["trainer.eval_every"] = options_.eval_every;
  mine["trainer.checkpoint_every"] = options_.checkpoint_every;
  mine["trainer.checksum_every"] = options_.checksum_every;
  mine["trainer.resume"] = options_.resume;
  mine["trainer.overlap_exchange"] = options_.overlap_exchange;
  const auto nodes = task_.model().graph().nodes();
  mine["graph.nodes"] = nodes.size();
  for (const Node& node : nodes) {
    if (node.op != &kGradientExchangeStartOp) continue;
    const GradientExchangeOptions exchange{
        .format = node.attrs.get_enum<DType>(node.op->name, "format", DType::kF32),
        .scaling =
            node.attrs.get_enum<ExchangeScaling>(node.op->name, "scaling", ExchangeScaling::kUnit)};
    mine["gradient_exchange"] = exchange.name();
    break;
  }
  const std::vector<std::string> all = all_gather_strings(*comm_, mine.dump());
  const nlohmann::json reference = nlohmann::json::parse(all[0]);
  std::string differences;
  for (std::size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    for (const auto& [key, value] : reference.items()) {
      const std::string theirs = other.contains(key) ? other[key].dump() : "(none)";
      if (theirs != value.dump()) {
        differences +=
            fmt::format("\n  {}: rank 0 has {}, rank {} has {}", key, value.dump(), r, theirs);
      }
    }
  }
  if (!differences.empty()) {
    throw Error(
        "Trainer: the data-parallel ranks were started with different configurations "
        "(every rank must run the same command):" +
        differences);
  }
}

// Rank 0 loads the newest checkpoint (if there is one) and sends every rank its states.
void Trainer::resume_from_checkpoint() {
  std::int64_t loaded_step = -1;
  if (root()) {
    if (const auto latest = checkpoints_->latest()) {
      const LoadedCheckpoint loaded =
          load_checkpoint(*latest, *executor_, checkpoint_values_, task_.config());
      loaded_step = loaded.step;
      if (options_.out != nullptr) {
        fmt::print(options_.out, "resuming from {} (step {}{})\n", latest->string(), loaded.step,
                   comm_->size() > 1 ? fmt::format(", on {} ranks", comm_->size()) : "");
      }
    }
  }
  if (comm_->size() > 1) {
    loaded_step = static_cast<std::int64_t>(
                      broadcast_u64(*comm_, static_cast<std::uint64_t>(loaded_step + 1))) -
                  1;
    if (loaded_step >= 0) {
      for (const CheckpointValue& v : checkpoint_values_) {
        Tensor state = copy_of(executor_->state(v.value));
        comm_->broadcast(std::span(state.bytes(), state.byte_size()), 0);
        executor_->set_state(v.value, state);
      }
    }
  }
  if (loaded_step < 0) return;
  completed_steps_ = loaded_step;
  executor_->set_step(static_cast<std::uint64_t>(loaded_step));
  metrics_.restore(loaded_step);
}

// Compares checksums of every rank's parameters and optimizer states with rank 0's.
void Trainer::check_same_parameters(std::int64_t step) const {
  std::vector<std::uint64_t> mine;
  for (const CheckpointValue& v : checkpoint_values_) {
    const ConstTensorView state = executor_->state(v.value);
    mine.push_back(detail::fnv1a(std::span(state.bytes(), state.byte_size())));
  }
  std::vector<std::uint64_t> all(mine.size() * static_cast<std::size_t>(comm_->size()));
  comm_->all_gather(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all)));
  for (int r = 1; r < comm_->size(); ++r) {
    for (std::size_t i = 0; i < mine.size(); ++i) {
      const std::uint64_t theirs = all[static_cast<std::size_t>(r) * mine.size() + i];
      if (theirs != all[i]) {
        throw Error(fmt::format(
            "Trainer: after step {} the data-parallel ranks' parameters differ: '{}' on rank {} "
            "(checksum {:016x}) is not rank 0's ({:016x}). The ranks must compute the same "
            "update; stopping rather than training {} different models.",
            step, checkpoint_values_[i].name, r, theirs, all[i], comm_->size()));
      }
    }
  }
}

Trainer::~Trainer() = default;

std::filesystem::path Trainer::save_checkpoint(std::int64_t step,
                                               const CheckpointDirectory& directory) {
  return directory.save(step, *executor_, checkpoint_values_, task_.config());
}

void Trainer::write_run_info() const {
  if (options_.output_dir.empty()) return;
  nlohmann::json info;
  for (const auto& [key, value] : task_.config()) {
    // Structured entries are JSON objects in their string form; keep them structured here.
    const nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
    info["config"][key] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  info["trainer"] = {{"steps", options_.steps},
                     {"eval_every", options_.eval_every},
                     {"checkpoint_every", options_.checkpoint_every}};
  info["environment"] = nlohmann::json::parse(to_json(current_run_environment()));
  write_file_atomically(options_.output_dir / "run.json", info.dump(2) + "\n");
}

TrainingResult Trainer::run() {
  TrainingResult result;
  result.first_step = completed_steps_ + 1;
  result.last_step = completed_steps_;
  if (completed_steps_ >= options_.steps) {
    if (options_.out != nullptr) {
      fmt::print(options_.out, "nothing to do: the checkpoint is at step {}, steps is {}\n",
                 completed_steps_, options_.steps);
    }
    return result;
  }
  if (root()) write_run_info();
  InterruptGuard guard(options_.handle_interrupt);
  ProgressReporter progress({.total_steps = options_.steps,
                             .unit = task_.item_unit(),
                             .mode = options_.progress,
                             .out = options_.out});
  progress.start(completed_steps_);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const auto items = static_cast<double>(task_.items_per_step());
  double excluded = 0;  // seconds of evaluation and checkpoints, left out of the throughput
  const Value loss_value = task_.loss();
  const Value lr_value = task_.optimizer().lr_multiplier;
  const Value skipped_value = task_.optimizer().skipped;  // dynamic loss scaling only

  auto stop = [&](StopReason reason, std::string_view message) {
    result.reason = reason;
    progress.message(message);
  };
  for (std::int64_t step = completed_steps_ + 1; step <= options_.steps; ++step) {
    task_.load_batch(step);
    executor_->run();
    completed_steps_ = step;
    result.last_step = step;
    float loss = executor_->get(loss_value).data()[0];
    bool interrupted = g_interrupted != 0;
    std::optional<double> underflow, saturation;
    if (comm_->size() > 1 || exchange_) {
      // The step's loss is the ranks' mean (their shards are equal), and they stop together.
      const ExchangeStatistics exchanged =
          exchange_ ? exchange_->take_statistics() : ExchangeStatistics{};
      double totals[] = {loss, interrupted ? 1.0 : 0.0, static_cast<double>(exchanged.quantized),
                         static_cast<double>(exchanged.underflowed),
                         static_cast<double>(exchanged.saturated)};
      all_reduce_sum(*comm_, totals);
      loss = static_cast<float>(totals[0] / comm_->size());
      interrupted = totals[1] > 0;
      result.exchange_quantized += static_cast<std::int64_t>(totals[2]);
      result.exchange_underflowed += static_cast<std::int64_t>(totals[3]);
      result.exchange_saturated += static_cast<std::int64_t>(totals[4]);
      if (totals[2] > 0) {
        underflow = totals[3] / totals[2];
        saturation = totals[4] / totals[2];
      }
    }
    result.losses.push_back(loss);
    if (skipped_value.present() && executor_->get(skipped_value).data()[0] != 0.0f) {
      ++result.skipped_steps;
    }
    const double seconds = elapsed();
    const double done = items * static_cast<double>(step - result.first_step + 1);
    const double stepping = seconds - excluded;
    MetricRecord record{.step = step,
                        .train_loss = loss,
                        .lr_multiplier = executor_->get(lr_value).data()[0],
                        .tokens_per_second = stepping > 0 ? done / stepping : 0,
                        .elapsed_seconds = seconds,
                        .exchange_underflow = underflow,
                        .exchange_saturation = saturation};
    if (!std::isfinite(loss)) {
      metrics_.add(record);
      std::string where;
      if (checkpoints_) {
        // Kept apart from the resumable checkpoints: these parameters are what the non-finite step
        // left, for inspection, and resuming must not pick them up.
        const CheckpointDirectory debris(options_.checkpoint_dir / "non-finite", 1);
        where = fmt::format(" The state after it is in {} for inspection; the last good "
                            "checkpoint stays the newest in {}.",
                            save_checkpoint(step, debris).string(),
                            options_.checkpoint_dir.string());
      }
      stop(StopReason::kNonFiniteLoss,
           fmt::format("step {}: the training loss is {}; stopping.{} A lower learning rate (or "
                       "more warmup) usually helps.",
                       step, loss, where));
      break;
    }
    const bool last = step == options_.steps;
    if (root() && (last || (options_.eval_every > 0 && step % options_.eval_every == 0))) {
      const double eval_start = elapsed();
      record.validation_loss = task_.evaluate(*executor_);
      progress.exclude(elapsed() - eval_start);
      excluded += elapsed() - eval_start;
      if (record.validation_loss) {
        progress.message(fmt::format("step {}: validation loss {:.4f}", step,
                                     *record.validation_loss));
      }
      if (last) result.validation_loss = record.validation_loss;
    }
    metrics_.add(record);
    progress.update(step, loss, done);
    if (checkpoints_ && (last || (options_.checkpoint_every > 0 &&
                                  step % options_.checkpoint_every == 0))) {
      const double save_start = elapsed();
      result.checkpoint = save_checkpoint(step, *checkpoints_);
      progress.exclude(elapsed() - save_start);
      excluded += elapsed() - save_start;
    }
    if (record.validation_loss || result.checkpoint) metrics_.write();
    if (options_.after_step) {
      const double hook_start = elapsed();
      options_.after_step(step);
      progress.exclude(elapsed() - hook_start);
      excluded += elapsed() - hook_start;
    }
    if (comm_->size() > 1 &&
        (last || (options_.checksum_every > 0 && step % options_.checksum_every == 0))) {
      check_same_parameters(step);
    }
    if (interrupted && !last) {
      std::string where = "no checkpoint directory was given, so nothing is saved";
      if (checkpoints_) {
        result.checkpoint = save_checkpoint(step, *checkpoints_);
        where = fmt::format("saved {}; resume to continue", result.checkpoint->string());
      }
      stop(StopReason::kInterrupted, fmt::format("interrupted after step {}: {}", step, where));
      break;
    }
  }
  progress.finish();
  metrics_.write();
  result.seconds = elapsed();
  const auto steps_done = static_cast<double>(result.losses.size());
  const double stepping = result.seconds - excluded;
  result.items_per_second = stepping > 0 ? items * steps_done / stepping : 0;
  return result;
}

}  // namespace unitscale

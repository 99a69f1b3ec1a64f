#pragma once
// Trainer: runs a training graph step by step the way a person wants to watch and keep a run: a
// progress bar (or plain lines in a log), evaluation every N steps, metrics as CSV, JSON lines
// and an SVG loss curve, checkpoints (safetensors, the last K kept) from which a resumed run
// reproduces the uninterrupted one bit for bit, and a clean stop on a non-finite loss or Ctrl-C,
// both with a checkpoint.
//
//   LanguageModelTask task(config, corpus);            // or any TrainingTask
//   Trainer trainer(task, {.steps = 1000, .eval_every = 200,
//                          .output_dir = "run", .checkpoint_dir = "run/checkpoints"});
//   TrainingResult result = trainer.run();
//
// Determinism: the parameters come from counter-based generators keyed by (seed, name), the
// task's batch of step t is a function of (seed, t), and the kernels' reductions have a fixed
// order for a given thread count, so two runs with the same seed and thread count give the same
// losses to the last bit, and so does a run resumed from any of its checkpoints.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "unitscale/distributed/communicator.hpp"
#include "unitscale/distributed/gradient_exchange.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/checkpoint.hpp"
#include "unitscale/train/metrics_log.hpp"
#include "unitscale/train/progress.hpp"

namespace unitscale {

// Data-parallel training as a task is built for it (docs/distributed.md): this process is rank
// `rank` of `ranks`; the task's batch is the global one, of which each rank trains on its own
// equal shard, and its gradients are exchanged (their mean over the ranks) in `exchange`'s format.
// One rank with a low-precision exchange format still quantises its gradients as the exchange
// would, to study the format on its own.
struct DataParallelConfig {
  int rank = 0;
  int ranks = 1;
  GradientExchangeOptions exchange = {};

  // Whether the task records a gradient exchange, and the optimizer's setting for it
  // (OptimizerConfig::gradient_exchange).
  bool exchanges() const { return ranks > 1 || exchange.format != DType::kF32; }
  std::optional<GradientExchangeOptions> gradient_exchange() const {
    return exchanges() ? std::optional(exchange) : std::nullopt;
  }
  // The rows of a global batch this rank trains on: [first_row(batch), + shard_rows(batch)).
  std::int64_t shard_rows(std::int64_t batch) const { return batch / ranks; }
  std::int64_t first_row(std::int64_t batch) const { return rank * shard_rows(batch); }
  // Throws unitscale::Error naming `owner` and the bad setting (ranks < 1, rank outside [0,
  // ranks), a batch that does not split into `ranks` equal shards, a bad exchange, an exchange
  // under scale propagation, which does not run with one yet).
  void check(std::string_view owner, std::int64_t batch, bool scale_propagation) const;
};

// What a Trainer trains: a model whose graph holds the loss and the optimizer's updates, the data
// that feeds it and the evaluation. The graph must be complete when the Trainer is made (it
// plans an executor over it).
class TrainingTask {
 public:
  virtual ~TrainingTask() = default;

  virtual Model& model() = 0;
  virtual Value loss() const = 0;
  virtual const OptimizerStep& optimizer() const = 0;
  // Binds the graph's inputs to buffers the task owns; called once, on the training executor.
  virtual void bind_inputs(Executor& executor) = 0;
  // Fills those buffers with the batch of training step `step` (1-based). It must depend on the
  // seed and the step only, so that a resumed run sees the batches the uninterrupted run saw.
  virtual void load_batch(std::int64_t step) = 0;
  // The validation loss of the parameters in `trained`; nullopt if the task has no validation data.
  virtual std::optional<double> evaluate(const Executor& trained) = 0;
  // The work of one step for the throughput, and its unit ("tok" for tokens, "img" for images).
  virtual std::int64_t items_per_step() const = 0;
  virtual std::string item_unit() const { return "tok"; }
  // What the precision pass did to the graph ("simulate_format: 9 of 13 matmuls rounded, ..."),
  // for the log; empty when the task trains in fp32.
  virtual std::string precision_report() const { return {}; }
  // The graph as propagate_scales rewrote it, when the task trains under scale propagation
  // (PrecisionConfig's scalify recipes): the Trainer loads the parameters through it and
  // checkpoints its scale states beside the states they scale (and its amax histories). Null
  // otherwise.
  virtual const ScaledGraph* scaled_graph() const { return nullptr; }
  // Data-parallel training: the number of ranks the task was built for (each rank loads its shard
  // of every batch, and the graph exchanges gradients: distributed/gradient_exchange.hpp). The
  // Trainer checks it against its communicator.
  virtual int data_parallel_ranks() const { return 1; }
  // What defines the run (model, parametrization, optimizer, data), as strings (JSON objects for
  // structured ones): saved in every checkpoint, and a resumed run must have the same values.
  virtual std::map<std::string, std::string> config() const = 0;
};

struct TrainerOptions {
  std::int64_t steps = 1000;       // the total, counting the steps a resumed run already did
  std::int64_t eval_every = 0;     // 0: evaluate at the end only
  std::filesystem::path output_dir = {};      // metrics.csv/.jsonl, loss.svg, run.json; empty: none
  std::filesystem::path checkpoint_dir = {};  // empty: no checkpoints (and no resume)
  std::int64_t checkpoint_every = 0;     // 0: a checkpoint at the end (and on a stop) only
  int keep_checkpoints = 3;
  bool resume = false;  // continue from the newest checkpoint in checkpoint_dir, if there is one
  ProgressMode progress = ProgressMode::kAuto;
  std::FILE* out = stderr;  // progress and messages
  // Ctrl-C (SIGINT) during run() stops after the current step with a checkpoint; a second
  // Ctrl-C kills the process as usual.
  bool handle_interrupt = true;
  // Called after every completed step (after its evaluation and checkpoint) with the step's
  // number, e.g. to write a scale chart of the step an executor observer recorded; its time is
  // left out of the throughput, like evaluation's.
  std::function<void(std::int64_t step)> after_step = {};

  // Data-parallel training (docs/distributed.md): the communicator of the ranks this process is
  // one of (it must outlive the Trainer), for a task built for as many ranks; null: one process.
  // Every rank trains the same model on its shard of each batch; rank 0 alone shows progress and
  // writes metrics, run.json and checkpoints, and every rank resumes from rank 0's checkpoint. The
  // ranks check at the start that they run the same configuration.
  Communicator* communicator = nullptr;
  // The gradient exchange runs on a communication thread while backward goes on (else in the
  // update nodes, on the executor's thread).
  bool overlap_exchange = true;
  // Every this many steps and after the last one, the ranks compare checksums of their parameters
  // and optimizer states and stop with an error naming the first that differs; 0: at the start
  // and the end only.
  std::int64_t checksum_every = 100;
};

enum class StopReason { kCompleted, kNonFiniteLoss, kInterrupted };
std::string_view stop_reason_name(StopReason reason);  // "completed", "non-finite loss", ...

struct TrainingResult {
  StopReason reason = StopReason::kCompleted;
  std::int64_t first_step = 1;  // the first step this run did (> 1 when resumed)
  std::int64_t last_step = 0;   // the last step it did
  std::vector<float> losses;    // training loss of each step this run did
  // Steps whose update dynamic loss scaling skipped (their gradients overflowed).
  std::int64_t skipped_steps = 0;
  std::optional<double> validation_loss;  // at the end (not after a non-finite loss)
  double seconds = 0;           // wall time of run(), evaluation and checkpoints included
  double items_per_second = 0;  // over the steps alone
  std::optional<std::filesystem::path> checkpoint;  // the last one written (rank 0)
  // With a low-precision gradient exchange: underflowed and saturated values over every step and
  // rank, of `exchange_quantized` quantised ones.
  std::int64_t exchange_quantized = 0;
  std::int64_t exchange_underflowed = 0;
  std::int64_t exchange_saturated = 0;
};

class Trainer {
 public:
  // Plans the training executor, binds the task's inputs and initialises the parameters (or, with
  // options.resume and a checkpoint present, loads it: throws unitscale::Error naming the
  // checkpoint if it does not match the task, and then changes nothing).
  Trainer(TrainingTask& task, TrainerOptions options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains from the step after the loaded checkpoint (or 1) to options.steps.
  TrainingResult run();

  Executor& executor() { return *executor_; }
  const MetricsLog& metrics() const { return metrics_; }
  // The step the next run() starts after (0, or the resumed checkpoint's step).
  std::int64_t completed_steps() const { return completed_steps_; }
  // The state values a checkpoint holds: every parameter and optimizer state, by name.
  const std::vector<CheckpointValue>& checkpoint_values() const { return checkpoint_values_; }

 private:
  std::filesystem::path save_checkpoint(std::int64_t step, const CheckpointDirectory& directory);
  void write_run_info() const;
  bool root() const { return comm_->rank() == 0; }
  void check_same_configuration() const;
  void resume_from_checkpoint();
  void check_same_parameters(std::int64_t step) const;

  TrainingTask& task_;
  TrainerOptions options_;
  SingleProcessCommunicator single_process_;
  Communicator* comm_;
  std::unique_ptr<GradientExchange> exchange_;
  std::unique_ptr<Executor> executor_;
  std::vector<CheckpointValue> checkpoint_values_;
  std::optional<CheckpointDirectory> checkpoints_;
  MetricsLog metrics_;
  std::int64_t completed_steps_ = 0;
};

}  // namespace unitscale

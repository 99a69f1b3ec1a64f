#pragma once
// Learning-rate sweeps of the byte-level decoder, the u-μP paper's central experiments
// (arXiv 2407.17465, Fig. 1b and §4): whether the optimal learning rate η* transfers across
// width (E3) and depth (E6), and whether u-μP's default hyperparameters are near-optimal (E4).
// docs/results.md states the protocol and the pass criteria.
//
// A sweep is a table of runs, one row per (experiment, scheme, width, depth, η, α's, seed, steps,
// batch, S), saved as CSV after every run: an interrupted sweep continues where it stopped, and
// the criteria are pure functions of the table, so they are tested on made-up tables.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/nn/hyperparameters.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/train/progress.hpp"

namespace unitscale {

struct SweepPoint {
  std::string experiment;  // "E3", "E4", "E6"
  Scheme scheme = Scheme::kUMuP;
  std::int64_t width = 128;
  int depth = 2;
  double lr = 1.0;
  UmupHyperparameters alphas = {};
  std::uint64_t seed = 0;
  std::int64_t steps = 1000;
  std::int64_t batch = 16;
  std::int64_t sequence_length = 64;
  std::int64_t warmup = 100;
  // "fp32", or a low precision as PrecisionConfig::parse reads it ("fp8", "fp8-critical",
  // "fp16", "bf16", with modifiers such as "fp8+attention"; E5).
  std::string precision = "fp32";

  // Identifies the run in a table (every field above).
  std::string key() const;
};

struct SweepResult {
  SweepPoint point;
  double validation_loss = 0;     // final, nats/byte, every validation window
  double train_loss_last = 0;     // mean training loss over the last min(100, steps) steps
  bool diverged = false;          // a non-finite loss, or a final validation loss above ln 256
  double seconds = 0;
  double tokens_per_second = 0;
  // How many seeds' runs this row averages: 1 in the table; SweepTable::select() merges the runs
  // of one point that differ only in their seed (the protocol reruns the points that decide a
  // close criterion with more seeds).
  int seeds = 1;
  // Runs in a low precision: what the step did to the matmuls' operands (E4M3 inputs and weights,
  // E5M2 gradients; analysis/scale_tracking.hpp) at the first and the last step.
  std::optional<MatmulOperandShares> first_step_shares = std::nullopt;
  std::optional<MatmulOperandShares> last_step_shares = std::nullopt;
};

// A learning rate as the tables print it: "2^-8" for a power of two, else 4 significant digits.
std::string learning_rate_text(double lr);

// The ranking loss: diverged runs rank last (+∞).
double ranking_loss(const SweepResult& r);

// Trains the decoder of `point` (AdamW, β = (0.9, 0.95), warmup then cosine decay to 0, no
// weight decay, no clipping) in its precision on `corpus` and evaluates it on every validation
// window; low-precision runs also record their operand shares at the first and last step.
// `progress` shows the run's steps (kQuiet: nothing).
// `losses`, if given, receives every step's training loss.
SweepResult run_sweep_point(const SweepPoint& point, const TextCorpus& corpus,
                            ProgressMode progress = ProgressMode::kQuiet,
                            std::vector<float>* losses = nullptr);

class SweepTable;

// The resumable step of a sweep: runs `point` (with a progress bar on a terminal) unless `table`
// has it, then adds the row, saves the table to `path` (atomically) and prints a one-line summary
// to stdout. Returns the row; `losses` as for run_sweep_point (left empty when the table had it).
SweepResult run_missing_point(SweepTable& table, const std::filesystem::path& path,
                              const SweepPoint& point, const TextCorpus& corpus,
                              std::vector<float>* losses = nullptr);

class SweepTable {
 public:
  SweepTable() = default;
  // Rows from a CSV written by save(); a missing file gives an empty table. Throws
  // unitscale::Error naming the file and line for a malformed row.
  static SweepTable load(const std::filesystem::path& path);
  void save(const std::filesystem::path& path) const;  // atomic
  std::string csv() const;

  const SweepResult* find(const SweepPoint& point) const;
  void add(const SweepResult& result);  // replaces a row with the same key
  const std::vector<SweepResult>& results() const { return results_; }

  // The rows matching `filter`, sorted by η, one per point: runs that differ only in their seed
  // are merged into their mean (losses, tokens/s; diverged if any diverged; seconds summed), the
  // first seed naming the merged point.
  std::vector<SweepResult> select(const std::function<bool(const SweepResult&)>& filter) const;

 private:
  std::vector<SweepResult> results_;
};

// The η with the lowest ranking loss among `rows` (nullopt if empty); ties: the smaller η.
std::optional<SweepResult> best_of(const std::vector<SweepResult>& rows);

struct Criterion {
  std::string name;
  bool pass = false;
  std::string detail = {};  // the numbers it was decided on
  bool report_only = false;  // a quantity the protocol asks to report, not a pass/fail test
};
std::string criteria_markdown(const std::vector<Criterion>& criteria);

// E3 over the E3 rows of `table` at `widths` (ascending; the first is the transfer source).
std::vector<Criterion> evaluate_lr_transfer(const SweepTable& table,
                                            const std::vector<std::int64_t>& widths);
// E4 over the E4 rows: the all-defaults run, the single-α runs and the combined run.
std::vector<Criterion> evaluate_independent_search(const SweepTable& table);
// E6 over the E6 rows at `depths` (ascending).
std::vector<Criterion> evaluate_depth_transfer(const SweepTable& table,
                                               const std::vector<int>& depths);

// The gap (L − L_fp32) / L_fp32 of the depth-2 run in `precision` against the fp32 run of the same
// scheme, width and η, from any experiment: +∞ if the low-precision run diverged, nullopt if either
// run is missing or the fp32 run diverged.
std::optional<double> precision_gap(const SweepTable& table, Scheme scheme, std::int64_t width,
                                    double lr, std::string_view precision);

// E5 over the rows of any experiment with each scheme's η* (`lr_star`) at `widths` (ascending):
// the FP8 gap (L_fp8 − L_fp32) / L_fp32 of u-μP (≤ 2% everywhere) against SP's (larger everywhere,
// and at least twice u-μP's at the widest width, or diverged), and SP's E5M2 gradient underflow
// against u-μP's (at least 10× at every width, at the first and at the last step); then, as
// reports, μP's gaps, the critical-matmul, FP16 and η*/2 arms.
std::vector<Criterion> evaluate_fp8_training(
    const SweepTable& table, const std::vector<std::int64_t>& widths,
    const std::function<double(Scheme, std::int64_t)>& lr_star);

}  // namespace unitscale

#pragma once
// The coord check (μP, "Tensor Programs V", arXiv 2203.03466): train the same model at several
// widths for a few steps and watch the typical size of its activations. Under a parametrization
// that transfers across width (μP, u-μP arXiv 2407.17465) every hidden coordinate stays Θ(1) as
// the width grows; under the standard parametrization (SP) the updates grow with the width, so
// activations and logits blow up after the first step. This is experiment E1 of docs/results.md.
//
//   Tensor ids, targets;                          // one fixed [batch, seq] i32 batch
//   CoordBatch batch = coord_check_batch(bytes, 8, 64);
//   CoordCheckConfig config;                      // widths 32 … 1024, 3 seeds, 5 steps
//   std::vector<CoordRecord> records = run_coord_check(config, batch.ids, batch.targets);
//   std::vector<CoordMean> means = coord_check_means(records);
//   std::vector<CoordSlope> slopes = coord_check_slopes(means, config.min_fit_width);
//   std::vector<CoordCriterion> verdict = evaluate_coord_check(slopes, means);
//
// The model is the byte-level decoder M(d, L) (nn/transformer.hpp): untied embedding and
// readout, pre-norm RMSNorm without affine, causal NoPE attention with a fixed head dim (so the
// number of heads grows with d), SwiGLU with expansion 2, no biases. Each (scheme, width, seed)
// gets a fresh model, and Adam (no schedule, no weight decay, no clipping) trains it on the same
// batch every step. Step t = 1 measures the model before any update; step t measures it after
// t − 1 updates. Per step the decoder's trace (DecoderTrace) is read back:
//
//   module                  what
//   "embedding"             the embedding output
//   "layers.{i}.attn"       attention-branch output of layer i, before the residual combine
//   "layers.{i}.mlp"        FFN-branch output of layer i, before the residual combine
//   "layers.{i}.residual"   the residual stream after layer i
//   "logits"                the readout output
//
// with l1 = mean|x| and rms = √mean(x²) over all its elements. The slope of a module at step t is
// the least-squares slope of log2(seed-mean l1) against log2(width), over the widths ≥
// min_fit_width (the smallest width is recorded but left out: finite-width effects are largest
// there).
//
// Scheme settings (identical otherwise):
//   SP    PyTorch-default init, plain residual, attention logits q·kᵀ/√d_head;
//   μP    TP-V Table 8 with base width mup_base_width; attention q·kᵀ/√d_head as well, which is
//         valid because d_head is fixed and only the number of heads grows;
//   u-μP  unit-scaled ops, the τ residual rule and D = L^-½ over residual_blocks = L, the
//         parametrization's attention scale.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/nn/parametrization.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

struct CoordCheckConfig {
  std::vector<std::int64_t> widths = {32, 64, 128, 256, 512, 1024};
  int depth = 2;  // L
  int seeds = 3;  // model seeds first_seed, first_seed + 1, …
  std::uint64_t first_seed = 0;
  int steps = 5;  // t = 1 … steps; t = 1 is before any update
  std::int64_t batch = 8;
  std::int64_t seq = 64;
  std::int64_t vocab = 256;
  std::int64_t head_dim = 32;  // heads = width / head_dim
  std::vector<Scheme> schemes = {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP};
  // Deliberately high Adam learning rates, so that a parametrization that does not scale its
  // updates with the width shows it within a few steps.
  double sp_lr = 1.0 / 64;   // 2^-6
  double mup_lr = 1.0 / 64;  // 2^-6
  double umup_lr = 4.0;      // 2^2 (u-μP's η is of order 1; docs/umup.md)
  std::int64_t mup_base_width = 32;
  // The embedding-LR exponent e of μP and u-μP (ParametrizationOptions); unset: each scheme's
  // default (0 for μP, −½ for u-μP). A diagnostic knob: E1 runs the defaults.
  std::optional<double> embedding_lr_exponent = {};
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  std::int64_t min_fit_width = 64;  // widths below are recorded, not fitted
  // Called with a one-line message as each (scheme, width, seed) finishes; null: silent.
  std::function<void(std::string_view)> progress = nullptr;
};

// The learning rate η the config gives `scheme`.
double coord_check_lr(const CoordCheckConfig& config, Scheme scheme);

// One measurement of one module.
struct CoordRecord {
  Scheme scheme;
  std::int64_t width = 0;
  std::uint64_t seed = 0;
  std::string module;
  int t = 0;
  double l1 = 0;   // mean |x|
  double rms = 0;  // √mean(x²)
};

enum class CoordModuleKind { kEmbedding, kAttentionBranch, kMlpBranch, kResidual, kLogits };
// The kind of a module name as run_coord_check writes it; throws unitscale::Error otherwise.
CoordModuleKind coord_module_kind(std::string_view module);

// A fixed batch from bytes: row r is the window bytes[r·(seq+1), (r+1)·(seq+1)), ids its first seq
// bytes and targets its last seq (the next byte). Throws unitscale::Error if there are fewer than
// batch·(seq+1) bytes.
struct CoordBatch {
  Tensor ids;      // [batch, seq] i32
  Tensor targets;  // [batch, seq] i32
};
CoordBatch coord_check_batch(std::span<const unsigned char> bytes, std::int64_t batch,
                             std::int64_t seq);

// Runs every (scheme, width, seed) of the config on the fixed batch (ids and targets i32 [batch,
// seq], every id below vocab) and returns one record per (scheme, width, seed, module, t), in that
// order. Throws unitscale::Error for a bad config (no widths or schemes, a width not divisible by
// head_dim, a μP base width that is not, fewer than 1 seed or step, …) or batch. A run that
// blows up is recorded as it is (inf or NaN values), and the progress line shows its losses.
std::vector<CoordRecord> run_coord_check(const CoordCheckConfig& config, const Tensor& ids,
                                         const Tensor& targets);

// The seed mean of l1 and rms per (scheme, width, module, t).
struct CoordMean {
  Scheme scheme;
  std::int64_t width = 0;
  std::string module;
  int t = 0;
  double l1 = 0;
  double rms = 0;
  int seeds = 0;
};
std::vector<CoordMean> coord_check_means(std::span<const CoordRecord> records);

// The least-squares slope of log2(l1) against log2(width) per (scheme, module, t), over the
// widths ≥ min_fit_width. Throws unitscale::Error if fewer than two such widths were recorded.
struct CoordSlope {
  Scheme scheme;
  std::string module;
  int t = 0;
  double slope = 0;  // NaN if an l1 is 0 or not finite
  int widths = 0;    // the number of widths fitted
};
std::vector<CoordSlope> coord_check_slopes(std::span<const CoordMean> means,
                                           std::int64_t min_fit_width = 64);

// The pass criteria of experiment E1 (docs/results.md):
//   1. μP and u-μP: |s| ≤ 0.1 at every t ≥ 2 for the embedding, every branch output and every
//      residual stream (one row per scheme, module and t);
//   2. μP and u-μP: the logits' s ≤ 0.1 at every t (they must not grow; at t = 1 they shrink as
//      d^-½, since the readout multiplier is 1/fan_in);
//   3. SP: s ≥ 0.4 at every t ≥ 3 for the logits (one row per t) and for at least one branch
//      output (one row per t: the largest branch slope, module naming that branch);
//   4. u-μP at t = 1: the seed-mean l1 of the embedding, branch outputs and residual streams is
//      within √(2/π) ± 0.15 (unit scale: mean|x| of N(0, 1)) at every width (one row per width
//      and module).
// A criterion whose scheme or steps were not run has no rows.
struct CoordCriterion {
  int criterion = 0;  // 1 … 4
  Scheme scheme;
  std::string module;
  int t = 0;
  std::int64_t width = 0;  // criterion 4 only; 0 elsewhere
  double value = 0;        // the slope (1–3) or the seed-mean l1 (4)
  bool pass = false;
};
inline constexpr double kCoordFlatSlope = 0.1;         // criteria 1 and 2
inline constexpr double kCoordGrowthSlope = 0.4;       // criterion 3
inline constexpr double kCoordUnitL1Tolerance = 0.15;  // criterion 4, around √(2/π)
std::vector<CoordCriterion> evaluate_coord_check(std::span<const CoordSlope> slopes,
                                                 std::span<const CoordMean> means);
// What each criterion asserts, in one line (criterion 1 … 4).
std::string_view coord_criterion_description(int criterion);

// CSV text (a header line, then one row each; schemes as scheme_name()):
//   records:   scheme,width,seed,module,t,l1,rms
//   slopes:    scheme,module,t,slope,widths
//   criteria:  criterion,scheme,module,t,width,value,pass
std::string coord_check_csv(std::span<const CoordRecord> records);
std::string coord_slopes_csv(std::span<const CoordSlope> slopes);
std::string coord_criteria_csv(std::span<const CoordCriterion> criteria);
// The same, written atomically (write_file_atomically); errors name the path.
void write_coord_check_csv(const std::filesystem::path& path, std::span<const CoordRecord> records);
void write_coord_slopes_csv(const std::filesystem::path& path, std::span<const CoordSlope> slopes);
void write_coord_criteria_csv(const std::filesystem::path& path,
                              std::span<const CoordCriterion> criteria);

// Plain-text tables for logs: slopes as one row per (scheme, module) and one column per t; the
// criteria one row each with PASS or FAIL, then a count per criterion.
std::string coord_slopes_table(std::span<const CoordSlope> slopes);
std::string coord_criteria_table(std::span<const CoordCriterion> criteria);

// The coord-check figure, as in TP-V's coord-check plots: one panel per scheme side by side, x =
// width and y = seed-mean l1 (both log2 axes, shared y range), one line per module at step t
// (the last recorded step when t = 0). Throws unitscale::Error if there is nothing to plot.
std::string coord_check_svg(std::span<const CoordMean> means, int t = 0);
void save_coord_check_svg(const std::filesystem::path& path, std::span<const CoordMean> means,
                          int t = 0);  // atomic

}  // namespace unitscale

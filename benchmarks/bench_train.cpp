// Training-step throughput: tokens/s of one full step (forward + backward + AdamW update, one
// Executor::run) of the u-μP byte-level decoder, beside an SP decoder of the same shape, the
// forward pass alone and a GEMM-only yardstick. benchmarks/compare/train_step_torch.py times the
// same model and step in PyTorch; benchmarks/compare/run.sh runs both in one session.
//
// The model (TransformerDecoder, nn/transformer.hpp): vocab 256 (bytes), depth L = 4, width d,
// d/32 heads of 32, pre-norm RMSNorm without affine, NoPE causal attention, SwiGLU with expansion
// 2, final RMSNorm, readout 256, mean cross-entropy; batch B = 16 of S = 128 tokens (T = B·S =
// 2048 tokens per step), FP32, AdamW (record_training_step). Widths 64, 256 (the main row: 8
// heads, 2.7 M parameters) and 1024; at 64 the step is a few dozen small ops per layer and shows
// the per-node and per-GEMM fixed costs, at 1024 it is GEMM-bound.
//
// Rows, per width (in this order, so that the yardstick runs first; the last three compare with
// the umup row, docs/fp8_training.md):
//   train_step/gemm_only/width:d   the GEMMs of one u-μP training step and nothing else: every
//                                  problem the engine ran during one step (gemm_profile(): shape,
//                                  layout, call count) replayed through unitscale::gemm() on
//                                  buffers of the right size. What the step would cost if
//                                  everything but the matmuls were free.
//   train_step/umup/width:d        u-μP (Parametrization(Scheme::kUMuP), unit-scaled graph): the
//                                  main row
//   train_step/sp/width:d          SP (unscaled graph, attention logits q·kᵀ/√32, PyTorch-style
//                                  init): the same step without unit scaling, to show what the
//                                  scaling costs
//   forward/umup/width:d           the u-μP forward pass alone (Executor(graph, {loss}), no
//                                  autodiff, no optimizer)
//   train_step/umup_fp8/width:d    the u-μP step after simulate_format's FP8 recipe: every linear
//                                  rounds x and W to E4M3 and its gradient to E5M2, and runs its
//                                  GEMMs on the codes (BF16 units where the CPU has them)
//   train_step/umup_fp8_critical/width:d   the same, attention-out and FFN-down kept in fp32
//   train_step/umup_tracked/width:d        the fp32 u-μP step with track_scales recording every
//                                  tensor (statistics against E4M3, E5M2, FP16) of every step
//
// Counters:
//   tokens/s        T per step ÷ wall time (items_per_second is the same figure)
//   flops           the model's FLOPs per step ÷ wall time (printed as e.g. 150G/s), from the usual
//                   cost model FLOPs = 6·N_mm·T + 12·L·S·d·T for a step (forward alone: a third),
//                   N_mm = 10·L·d² + 256·d the matmul parameters (per layer qkv 3d², out d², up
//                   and gate 2·2d², down 2d·d: 10d², exact for SwiGLU ×2; plus the readout; the
//                   embedding is a lookup) and 12·L·S·d·T the attention products (q·kᵀ and p·v,
//                   forward and backward, full S×S: causal masking skips nothing here)
//   gemm_gflop      the GEMM FLOPs the engine actually ran in one step, in GFLOP (2·m·n·k per
//                   product, from gemm_profile()), to check the cost model against
//   gemm_share      (step rows) the gemm_only row's time ÷ this row's time: 1.0 would be a step
//                   bound by its matmuls alone. Uses the last measurement of the gemm_only row of
//                   the same width, so run it too (it is first in each width's group).
//   arena_MiB       Executor::peak_bytes(): the planned arena holding every intermediate (the
//                   activations kept for backward, gradients, temporaries)
//   params          Model::parameter_count(); weights, Adam's m and v add 12 bytes each outside
//                   the arena
//   peak_rss_MiB    the process's peak resident set during this row (VmHWM of /proc/self/status,
//                   reset through /proc/self/clear_refs before the row is built; the context says
//                   whether the reset works: where it does not, the peak is the process's
//                   lifetime peak, and each row needs its own process: --benchmark_filter)
//   rss_growth_MiB  peak_rss_MiB − the resident set just before the row was built (after
//                   malloc_trim): what the model, its step and its run took. This is the figure to
//                   compare with PyTorch's, whose baseline (the torch libraries) is far larger.
// A summary after the table gives, per width, the tokens/s of each row, u-μP ÷ SP, the GEMM share
// and the u-μP row's memory (medians with --benchmark_repetitions).
//
// Every row builds its model (seed 1), binds random bytes as ids and targets, runs the step once
// untimed (first touch, oneDNN's primitives are already made when the executor plans), then at
// least kMinTime of wall time (--benchmark_min_time overrides it). With
// UNITSCALE_BENCH_TRAIN_PROFILE=1 each row also prints its per-op time table (Executor profiling,
// one extra run) to stderr. On a shared machine a busy core stalls every two-thread region for a
// scheduler time slice; run with --benchmark_repetitions=3 and read medians. Google Benchmark
// appends "/real_time" to every name, so filters end in "/", e.g.
//   bench_train --benchmark_filter='width:256/' --benchmark_repetitions=3
//   bench_train --benchmark_filter='train_step/umup/width:1024/'   one row in its own process

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "support/bench_context.hpp"
#include "support/memory_probe.hpp"
#include "support/random_tokens.hpp"
#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/graph/simulate_format.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/tensor/tensor.hpp"
#include "unitscale/train/language_model.hpp"

namespace unitscale {
namespace {

constexpr double kMinTime = 1.0;  // seconds per row, the default of --benchmark_min_time
constexpr std::int64_t kBatch = 16, kSeq = 128, kVocab = 256, kHeadDim = 32;
constexpr int kDepth = 4;
constexpr std::int64_t kTokens = kBatch * kSeq;
constexpr std::int64_t kWidths[] = {64, 256, 1024};

using Clock = std::chrono::steady_clock;

enum class Variant {
  kGemmOnly,
  kTrainUmup,
  kTrainSp,
  kForwardUmup,
  kTrainUmupFp8,
  kTrainUmupFp8Critical,
  kTrainUmupTracked,
};

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kGemmOnly: return "train_step/gemm_only";
    case Variant::kTrainUmup: return "train_step/umup";
    case Variant::kTrainSp: return "train_step/sp";
    case Variant::kForwardUmup: return "forward/umup";
    case Variant::kTrainUmupFp8: return "train_step/umup_fp8";
    case Variant::kTrainUmupFp8Critical: return "train_step/umup_fp8_critical";
    case Variant::kTrainUmupTracked: return "train_step/umup_tracked";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// FLOPs
// ---------------------------------------------------------------------------------------------

// The cost model (see the header comment): a training step's FLOPs, or with `forward_only` the
// forward pass's (a third).
double model_flops(std::int64_t width, bool forward_only) {
  const double d = static_cast<double>(width), t = static_cast<double>(kTokens);
  const double n_mm = 10.0 * kDepth * d * d + static_cast<double>(kVocab) * d;
  const double train = 6.0 * n_mm * t + 12.0 * kDepth * static_cast<double>(kSeq) * d * t;
  return forward_only ? train / 3.0 : train;
}

double gemm_flops(const std::vector<GemmProfileEntry>& profile) {
  double sum = 0;
  for (const GemmProfileEntry& e : profile) {
    const GemmProblem& p = e.problem;
    sum += 2.0 * static_cast<double>(p.batch) * static_cast<double>(p.m) *
           static_cast<double>(p.n) * static_cast<double>(p.k) * static_cast<double>(e.calls);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

// A decoder, its loss and, for training, its AdamW step, with an executor ready to run. Not
// movable (the graph and model refer to each other), hence made in place behind a unique_ptr.
struct DecoderRun {
  Parametrization parametrization;
  Graph graph;
  Model model;
  TransformerDecoder decoder;
  Value ids, targets, loss;
  Tensor id_data, target_data;
  std::unique_ptr<Executor> exec;

  std::optional<ScaleTracker> tracker;

  DecoderRun(Scheme scheme, std::int64_t width, bool train,
             const std::optional<SimulateFormatOptions>& precision = std::nullopt,
             bool track_scales_of_every_step = false)
      : parametrization(scheme, {.residual_blocks = kDepth}),
        graph(parametrization.op_scaling()),
        model(graph, parametrization, {.seed = 1}),
        decoder(model, "", byte_decoder_config(scheme, width, kDepth, kHeadDim)),
        ids(graph.input("ids", Shape{kBatch, kSeq}, DType::kI32)),
        targets(graph.input("targets", Shape{kBatch, kSeq}, DType::kI32)),
        loss(decoder.loss(ids, targets)),
        id_data(bench::random_tokens({kBatch, kSeq}, kVocab, 1)),
        target_data(bench::random_tokens({kBatch, kSeq}, kVocab, 2)) {
    if (precision) simulate_format(graph, *precision);
    if (train) {
      // u-μP wants η of order 1, SP about 1e-3 (docs/umup.md); modest values keep a long run
      // finite. The cost of the update does not depend on them.
      const OptimizerStep step =
          record_training_step(model, loss,
                               {.kind = OptimizerKind::kAdamW,
                                .lr = scheme == Scheme::kUMuP ? 0.1 : 1e-3,
                                .weight_decay = 1e-4,
                                .log = [](std::string_view) {}});
      exec = std::make_unique<Executor>(graph, step.outputs({loss}));
    } else {
      const Value outputs[] = {loss};
      exec = std::make_unique<Executor>(graph, outputs);
    }
    model.initialize(*exec);
    exec->bind(ids, id_data);
    exec->bind(targets, target_data);
    if (track_scales_of_every_step) tracker = track_scales(*exec, graph);
  }
};

// ---------------------------------------------------------------------------------------------
// The GEMM-only yardstick
// ---------------------------------------------------------------------------------------------

// Elements a stored operand spans: `batch` matrices of rows × cols with the given strides (batch
// stride 0: one matrix for all).
std::int64_t span_elements(std::int64_t batch, std::int64_t rows, std::int64_t cols,
                           std::int64_t row_stride, std::int64_t batch_stride) {
  const std::int64_t one = rows == 0 ? 0 : (rows - 1) * row_stride + cols;
  return (batch > 1 && batch_stride > 0 ? (batch - 1) * batch_stride : 0) + one;
}

// One problem of the profile with buffers for its operands, replayed `calls` times per step.
struct ReplayGemm {
  GemmMatrix a, b;
  GemmOutput c;
  GemmOptions options;
  std::uint64_t calls;
  std::vector<float> a_data, b_data, c_data, bias;
};

std::vector<float> small_values(std::int64_t n, std::uint64_t seed) {
  std::vector<float> v(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)));
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(2 * counter_uniform(seed, "bench-values", i) - 1);
  }
  return v;
}

std::vector<ReplayGemm> replay_of(const std::vector<GemmProfileEntry>& profile) {
  std::vector<ReplayGemm> out;
  out.reserve(profile.size());
  std::uint64_t seed = 10;
  for (const GemmProfileEntry& e : profile) {
    const GemmProblem& p = e.problem;
    ReplayGemm r;
    r.calls = e.calls;
    const std::int64_t a_rows = p.a_transposed ? p.k : p.m, a_cols = p.a_transposed ? p.m : p.k;
    const std::int64_t b_rows = p.b_transposed ? p.n : p.k, b_cols = p.b_transposed ? p.k : p.n;
    // The profile of an FP32 step holds FP32 operands only; other types get FP32-sized buffers
    // (large enough for any type) of small values, which are valid codes of every format.
    r.a_data = small_values(span_elements(p.batch, a_rows, a_cols, p.a_row_stride,
                                          p.a_batch_stride), ++seed);
    r.b_data = small_values(span_elements(p.batch, b_rows, b_cols, p.b_row_stride,
                                          p.b_batch_stride), ++seed);
    r.c_data.assign(static_cast<std::size_t>(std::max<std::int64_t>(
                        span_elements(p.batch, p.m, p.n, p.c_row_stride, p.c_batch_stride), 1)),
                    0.0f);
    if (p.bias) r.bias = small_values(p.bias_per_row ? p.m : p.n, ++seed);
    r.a = {.data = r.a_data.data(), .type = p.a_type, .rows = a_rows, .cols = a_cols,
           .row_stride = p.a_row_stride, .batch_stride = p.a_batch_stride,
           .transposed = p.a_transposed};
    r.b = {.data = r.b_data.data(), .type = p.b_type, .rows = b_rows, .cols = b_cols,
           .row_stride = p.b_row_stride, .batch_stride = p.b_batch_stride,
           .transposed = p.b_transposed};
    r.c = {.data = r.c_data.data(), .rows = p.m, .cols = p.n, .row_stride = p.c_row_stride,
           .batch_stride = p.c_batch_stride};
    r.options = {.alpha = 1.0f,
                 .bias = p.bias ? r.bias.data() : nullptr,
                 .bias_per_row = p.bias_per_row,
                 .accumulate = p.accumulate,
                 .batch = p.batch};
    out.push_back(std::move(r));
  }
  return out;
}

void run_replay(const std::vector<ReplayGemm>& gemms) {
  for (const ReplayGemm& r : gemms) {
    for (std::uint64_t i = 0; i < r.calls; ++i) gemm(r.a, r.b, r.c, r.options, "gemm_only");
  }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

// The gemm_only row's last time per step, by width, for the step rows' gemm_share.
std::map<std::int64_t, double>& gemm_seconds() {
  static std::map<std::int64_t, double> s;
  return s;
}

void print_op_profile_once(const std::string& row, Executor& exec) {
  static std::set<std::string> printed;
  const char* env = std::getenv("UNITSCALE_BENCH_TRAIN_PROFILE");
  if (env == nullptr || std::string_view(env).empty() || std::string_view(env) == "0") return;
  if (!printed.insert(row).second) return;
  exec.set_profiling(true);
  exec.run();
  exec.set_profiling(false);
  std::fprintf(stderr, "\n%s: per-op time of one profiled run\n%s\n", row.c_str(),
               exec.profile_table().c_str());
}

void bm_row(benchmark::State& state, Variant variant, std::int64_t width) {
  const bench::MemoryProbe memory;
  const bool forward_only = variant == Variant::kForwardUmup;
  const Scheme scheme = variant == Variant::kTrainSp ? Scheme::kSP : Scheme::kUMuP;
  std::optional<SimulateFormatOptions> precision;
  if (variant == Variant::kTrainUmupFp8) precision = SimulateFormatOptions::fp8();
  if (variant == Variant::kTrainUmupFp8Critical) precision = SimulateFormatOptions::fp8(true);
  auto run = std::make_unique<DecoderRun>(scheme, width, !forward_only, precision,
                                          variant == Variant::kTrainUmupTracked);

  // The untimed first run, with the GEMM engine's profile of exactly one step.
  reset_gemm_profile();
  run->exec->run();
  const std::vector<GemmProfileEntry> profile = gemm_profile();
  state.counters["gemm_gflop"] = gemm_flops(profile) * 1e-9;
  state.counters["arena_MiB"] = static_cast<double>(run->exec->peak_bytes()) / (1024.0 * 1024.0);
  state.counters["params"] = static_cast<double>(run->model.parameter_count());

  std::vector<ReplayGemm> replay;
  if (variant == Variant::kGemmOnly) {
    run.reset();  // the yardstick needs only the GEMMs' buffers
    replay = replay_of(profile);
    run_replay(replay);  // untimed: first touch
  }

  const auto start = Clock::now();
  for (auto _ : state) {
    if (variant == Variant::kGemmOnly) {
      run_replay(replay);
    } else {
      run->exec->run();
    }
    benchmark::ClobberMemory();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double per_step = seconds / static_cast<double>(std::max<benchmark::IterationCount>(
                                        state.iterations(), 1));

  if (run != nullptr && !std::isfinite(run->exec->get(run->loss).data()[0])) {
    state.SkipWithError("the loss is not finite");
  }
  state.SetItemsProcessed(state.iterations() * kTokens);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(kTokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flops"] =
      benchmark::Counter(model_flops(width, forward_only),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  if (variant == Variant::kGemmOnly) {
    gemm_seconds()[width] = per_step;
  } else if (variant != Variant::kForwardUmup) {
    const auto it = gemm_seconds().find(width);
    if (it != gemm_seconds().end()) state.counters["gemm_share"] = it->second / per_step;
  }
  memory.report(state);
  if (run != nullptr) {
    print_op_profile_once(std::string(variant_name(variant)) + "/width:" + std::to_string(width),
                          *run->exec);
  }
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

struct RowKey {
  std::int64_t width;
  Variant variant;
  bool operator<(const RowKey& o) const {
    return width != o.width ? width < o.width : variant < o.variant;
  }
};
std::map<std::string, RowKey>& row_keys() {
  static std::map<std::string, RowKey> k;
  return k;
}

// The counters of the reported runs (per repetition, or the median aggregate alone).
using Counters = std::map<std::string, double>;
std::map<RowKey, std::vector<Counters>>& reported() {
  static std::map<RowKey, std::vector<Counters>> r;
  return r;
}

// bench::RecordingReporter's record: each row's counters, per repetition or the median alone.
void record_row(const benchmark::BenchmarkReporter::Run& run, bool replaces_repetitions) {
  const auto key = row_keys().find(run.run_name.function_name);
  if (key == row_keys().end()) return;
  Counters c;
  for (const auto& [name, counter] : run.counters) c[name] = counter.value;
  std::vector<Counters>& values = reported()[key->second];
  if (replaces_repetitions) values.clear();
  values.push_back(std::move(c));
}

double median_counter(const RowKey& key, const std::string& name) {
  const auto it = reported().find(key);
  if (it == reported().end()) return 0.0;
  std::vector<double> v;
  for (const Counters& c : it->second) {
    const auto f = c.find(name);
    if (f != c.end()) v.push_back(f->second);
  }
  return bench::median(v);
}

void print_summary() {
  if (reported().empty()) return;
  std::printf(
      "\nSummary: tokens/s (medians of the reported runs), B=%lld S=%lld depth %d, FP32, AdamW\n",
      static_cast<long long>(kBatch), static_cast<long long>(kSeq), kDepth);
  std::printf("%-6s %10s %12s %12s %12s %12s %9s %10s %9s %11s %11s\n", "width", "params",
              "gemm_only", "umup_step", "sp_step", "umup_fwd", "umup/sp", "gemm_share",
              "GFLOP/s", "arena_MiB", "rss_grow_MiB");
  for (const std::int64_t w : kWidths) {
    const RowKey gemm{w, Variant::kGemmOnly}, umup{w, Variant::kTrainUmup},
        sp{w, Variant::kTrainSp}, fwd{w, Variant::kForwardUmup};
    const double g = median_counter(gemm, "tokens/s"), u = median_counter(umup, "tokens/s"),
                 s = median_counter(sp, "tokens/s"), f = median_counter(fwd, "tokens/s");
    if (g == 0 && u == 0 && s == 0 && f == 0) continue;
    auto ratio = [](double a, double b) { return a > 0 && b > 0 ? a / b : 0.0; };
    std::printf("%-6lld %9.2fM %12.0f %12.0f %12.0f %12.0f %9.2f %10.2f %9.1f %11.1f %11.1f\n",
                static_cast<long long>(w), median_counter(umup, "params") * 1e-6, g, u, s, f,
                ratio(u, s), ratio(u, g), median_counter(umup, "flops") * 1e-9,
                median_counter(umup, "arena_MiB"), median_counter(umup, "rss_growth_MiB"));
  }
  std::printf("(gemm_share = umup_step ÷ gemm_only tokens/s: the GEMMs' share of the step time; "
              "GFLOP/s by the cost model 6·N_mm·T + 12·L·S·d·T; rss_grow = the u-μP step row's "
              "peak RSS − RSS before it was built)\n");
  std::printf("\nLow precision and scale tracking against the fp32 u-μP step (step-time ratios: "
              "below 1 is faster)\n");
  std::printf("%-6s %12s %12s %12s %12s %10s %14s %12s\n", "width", "umup_step", "fp8_step",
              "fp8_critical", "tracked", "fp8/fp32", "fp8_crit/fp32", "tracked/fp32");
  for (const std::int64_t w : kWidths) {
    const double u = median_counter({w, Variant::kTrainUmup}, "tokens/s");
    const double f = median_counter({w, Variant::kTrainUmupFp8}, "tokens/s");
    const double c = median_counter({w, Variant::kTrainUmupFp8Critical}, "tokens/s");
    const double t = median_counter({w, Variant::kTrainUmupTracked}, "tokens/s");
    if (f == 0 && c == 0 && t == 0) continue;
    auto time_ratio = [u](double x) { return x > 0 && u > 0 ? u / x : 0.0; };
    std::printf("%-6lld %12.0f %12.0f %12.0f %12.0f %10.2f %14.2f %12.2f\n",
                static_cast<long long>(w), u, f, c, t, time_ratio(f), time_ratio(c), time_ratio(t));
  }
  std::printf("(fp8: simulate_format's E4M3 inputs and E5M2 gradients on every linear; "
              "fp8_critical: attention-out and FFN-down kept in fp32; tracked: track_scales "
              "recording every tensor of every step)\n");
}

void add_context() {
  benchmark::AddCustomContext(
      "model", "u-muP byte-level decoder: vocab 256, depth 4, heads width/32, SwiGLU x2, RMSNorm "
               "(no affine), NoPE causal attention; batch 16 x 128 tokens; FP32; AdamW");
  benchmark::AddCustomContext(
      "peak_rss", bench::peak_rss_resettable()
                      ? "per row (VmHWM reset through /proc/self/clear_refs before each row)"
                      : "process lifetime (clear_refs not writable): run rows one per process");
}

void register_benchmarks() {
  for (const std::int64_t w : kWidths) {
    for (const Variant v :
         {Variant::kGemmOnly, Variant::kTrainUmup, Variant::kTrainSp, Variant::kForwardUmup,
          Variant::kTrainUmupFp8, Variant::kTrainUmupFp8Critical, Variant::kTrainUmupTracked}) {
      const std::string name = std::string(variant_name(v)) + "/width:" + std::to_string(w);
      row_keys()[name] = {w, v};
      benchmark::RegisterBenchmark(name.c_str(), [v, w](benchmark::State& s) { bm_row(s, v, w); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

void add_rows() {
  add_context();
  register_benchmarks();
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  unitscale::bench::RecordingReporter reporter(unitscale::record_row);
  return unitscale::bench::run_benchmark_program(argc, argv,
                                                 {.default_min_time = unitscale::kMinTime,
                                                  .add_rows = unitscale::add_rows,
                                                  .summary = unitscale::print_summary,
                                                  .reporter = &reporter});
}

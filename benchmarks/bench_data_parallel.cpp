// Data-parallel training (docs/distributed.md): the step time of the decoder on 2 ranks with each
// gradient exchange format, against one process with the whole batch, and a scale-out model from
// the measured figures. Run it twice, as benchmarks/run_data_parallel.sh does:
//
//   OMP_NUM_THREADS=2 bench_data_parallel             # 1 rank × 2 threads (and × 1 thread)
//   OMP_NUM_THREADS=1 mpirun -np 2 bench_data_parallel # 2 ranks × 1 thread
//
// The model is bench_train's main one: the u-μP byte-level decoder, width 256, depth 4, heads of
// 32, SwiGLU ×2, RMSNorm, NoPE causal attention, AdamW; a global batch of 16 × 128 tokens (each of
// N ranks trains on 16/N sequences), random bytes as data.
//
// Rows (every row runs a fixed number of steps, the same on every rank, after one untimed step):
//   step/one_process                the whole batch in one process: the baseline (launched alone)
//   local_step/no_exchange          (N ranks) each rank's share of the batch, no exchange: the
//                                   compute of one rank while the others compute theirs
//   step/exchange:F/overlap:O       (N ranks) the data-parallel step, gradients exchanged in F
//                                   (f32, bf16, f16, e5m2, e4m3fn), overlapping backward (O = 1) or
//                                   in the update (O = 0); includes the step's loss all-reduce
//
// Counters: tokens/s (the global batch's tokens ÷ step time), step_ms, sent_KiB (what one rank
// sends per step), exposed_ms (time per step the update waited for the exchange), underflow (the
// fraction of quantised gradient values that became zero).
//
// After the table, rank 0 prints the scale-out model: the measured per-rank compute and bytes per
// step extrapolated to 8–1024 ranks at 10, 100 and 400 Gb/s (a model, not a measurement).

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/bench_context.hpp"
#include "unitscale/distributed/gradient_exchange.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/train/language_model.hpp"
#if UNITSCALE_HAVE_MPI
#include "unitscale/distributed/mpi_communicator.hpp"
#endif

namespace unitscale {
namespace {

constexpr std::int64_t kWidth = 256, kDepth = 4, kBatch = 16, kSeq = 128;
constexpr int kSteps = 20;

Communicator* g_comm = nullptr;
SingleProcessCommunicator g_single;

// Random bytes (the benchmark must not need the Debian fortunes).
const TextCorpus& random_corpus() {
  static const TextCorpus corpus = [] {
    TextCorpus c;
    for (std::uint64_t i = 0; i < (1u << 20); ++i) {
      c.train += static_cast<char>(counter_uniform(1, "bench-bytes", i) * 256.0);
    }
    c.validation = c.train.substr(0, 4096);
    c.text = c.train;
    c.entries = 1;
    return c;
  }();
  return corpus;
}

struct Measured {
  double step_seconds = 0;
  double sent_bytes = 0;  // per rank and step
};
std::map<std::string, Measured> g_measured;
std::int64_t g_parameters = 0;
std::int64_t g_tensors = 0;

// One row: `ranks` data-parallel ranks (1 with exchange nullopt: no exchange at all), `batch`
// sequences in all.
void run_steps(benchmark::State& state, const std::string& row, int ranks, std::int64_t batch,
               std::optional<GradientExchangeOptions> exchange, bool overlap) {
  LanguageModelConfig config{.scheme = Scheme::kUMuP,
                             .width = kWidth,
                             .depth = kDepth,
                             .sequence_length = kSeq,
                             .batch = batch,
                             .steps = 1000,
                             .warmup = 10};
  if (exchange) {
    config.data_parallel = {
        .rank = ranks > 1 ? g_comm->rank() : 0, .ranks = ranks, .exchange = *exchange};
  }
  LanguageModelTask task(config, random_corpus());
  const Value loss = task.loss();
  Executor executor(task.model().graph(),
                    task.optimizer().outputs({loss, task.optimizer().lr_multiplier}));
  Communicator& comm = ranks > 1 ? *g_comm : g_single;
  GradientExchange gradient_exchange(comm, overlap);
  executor.set_gradient_exchange(&gradient_exchange);
  task.bind_inputs(executor);
  task.model().initialize(executor);
  g_parameters = task.model().parameter_count();
  g_tensors = static_cast<std::int64_t>(task.model().parameters().size());

  std::int64_t step = 1;
  auto one_step = [&] {
    task.load_batch(step++);
    executor.run();
    if (ranks > 1) {
      double totals[] = {executor.get(loss).data()[0]};
      all_reduce_sum(comm, totals);
      benchmark::DoNotOptimize(totals[0]);
    }
  };
  one_step();  // untimed: first-touch of the arena, the GEMM primitives' caches
  gradient_exchange.take_statistics();
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) one_step();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ExchangeStatistics statistics = gradient_exchange.take_statistics();

  const double steps = static_cast<double>(state.iterations());
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(kBatch * kSeq) * steps, benchmark::Counter::kIsRate);
  state.counters["step_ms"] = 1e3 * seconds / steps;
  state.counters["sent_KiB"] = static_cast<double>(statistics.bytes_sent) / steps / 1024.0;
  state.counters["exposed_ms"] = 1e3 * statistics.exposed_seconds / steps;
  state.counters["underflow"] =
      statistics.quantized > 0
          ? static_cast<double>(statistics.underflowed) / static_cast<double>(statistics.quantized)
          : 0.0;
  g_measured[row].sent_bytes = static_cast<double>(statistics.bytes_sent) / steps;
}

void add_rows() {
  const int ranks = g_comm->size();
  benchmark::AddCustomContext("ranks", std::to_string(ranks));
  benchmark::AddCustomContext("communicator", g_comm->description());
  auto fixed = [](benchmark::internal::Benchmark* b) {
    b->Iterations(kSteps)->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  if (ranks == 1) {
    fixed(benchmark::RegisterBenchmark("step/one_process", [](benchmark::State& s) {
      run_steps(s, "step/one_process", 1, kBatch, std::nullopt, true);
    }));
    return;
  }
  fixed(benchmark::RegisterBenchmark("local_step/no_exchange", [ranks](benchmark::State& s) {
    run_steps(s, "local_step/no_exchange", 1, kBatch / ranks, std::nullopt, true);
  }));
  for (const DType format : exchange_formats()) {
    for (const bool overlap : {true, false}) {
      if (!overlap && format != DType::kF32 && format != DType::kE4M3FN) continue;
      const std::string name =
          fmt::format("step/exchange:{}/overlap:{}", dtype_name(format), overlap ? 1 : 0);
      fixed(benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
        run_steps(s, name, ranks, kBatch, GradientExchangeOptions{.format = format}, overlap);
      }));
    }
  }
}

// Keeps each row's real time per iteration for the model; prints like the console reporter.
class Recorder : public benchmark::ConsoleReporter {
 public:
  Recorder() : ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    // One value a row: the median of the repetitions when there are several.
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.run_type != Run::RT_Iteration && !median) continue;
      // The row's name without the "/iterations:N/real_time" the fixed settings add.
      const std::string name = run.run_name.function_name;
      g_measured[name].step_seconds = run.GetAdjustedRealTime() / 1e3;  // the rows are in ms
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// The other ranks run every row too, and print nothing.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

// Weak scaling: every rank keeps its measured share of the batch and compute C. Exchanging in
// format F adds the encoding and decoding the 2-rank rows measured (F's step minus f32's, both
// overlapping), and moving its bytes over a ring at bandwidth W costs
// T = 2 (N − 1)/N · P · bytes(F) / W plus a latency of 2 ⌈log₂ N⌉ · 10 µs per tensor; the
// efficiency is C / (C + codec + T), with no overlap.
void print_scale_out_model() {
  auto seconds_of = [](const std::string& row) {
    const auto it = g_measured.find(row);
    return it == g_measured.end() ? 0.0 : it->second.step_seconds;
  };
  const double compute = seconds_of("local_step/no_exchange");
  const double f32_step = seconds_of("step/exchange:f32/overlap:1");
  if (compute <= 0 || f32_step <= 0) return;
  std::printf(
      "\nScale-out model (not a measurement): per-rank compute C = %.1f ms (the "
      "local_step row), P = %lld parameters in %lld tensors, ring exchange T = 2(N-1)/N "
      "* P * bytes / W + 2 ceil(log2 N) * 10 us * tensors, codec = this format's step - "
      "f32's (2 ranks, measured); efficiency C / (C + codec + T), no overlap.\n",
      1e3 * compute, static_cast<long long>(g_parameters), static_cast<long long>(g_tensors));
  std::printf("| exchange | codec (ms) | W (Gb/s) | N = 8 | N = 64 | N = 256 | N = 1024 |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const DType format : {DType::kF32, DType::kBF16, DType::kE4M3FN}) {
    const double step = seconds_of(fmt::format("step/exchange:{}/overlap:1", dtype_name(format)));
    const double codec = std::max(0.0, step - f32_step);
    for (const double gbits : {10.0, 100.0, 400.0}) {
      std::printf("| %s | %.1f | %.0f |", std::string(dtype_name(format)).c_str(), 1e3 * codec,
                  gbits);
      for (const int n : {8, 64, 256, 1024}) {
        const double bytes =
            static_cast<double>(g_parameters) * static_cast<double>(dtype_size(format));
        const double bandwidth = gbits * 1e9 / 8;
        const double exchange =
            2.0 * (n - 1) / n * bytes / bandwidth +
            2.0 * std::ceil(std::log2(n)) * 10e-6 * static_cast<double>(g_tensors);
        std::printf(" %.0f%% |", 100.0 * compute / (compute + codec + exchange));
      }
      std::printf("\n");
    }
  }
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  using namespace unitscale;
#if UNITSCALE_HAVE_MPI
  std::unique_ptr<MpiSession> mpi;
  if (launcher_world_size() > 1) {
    mpi = std::make_unique<MpiSession>(argc, argv);
    g_comm = &mpi->communicator();
  }
#else
  if (launcher_world_size() > 1) {
    std::fprintf(stderr, "bench_data_parallel: built without MPI; it runs on one rank only\n");
    return 1;
  }
#endif
  if (g_comm == nullptr) g_comm = &g_single;
  Recorder recorder;
  Silent silent;
  return bench::run_benchmark_program(
      argc, argv,
      {.add_rows = add_rows,
       .summary =
           [] {
             if (g_comm->rank() == 0) print_scale_out_model();
           },
       .reporter =
           g_comm->rank() == 0 ? static_cast<benchmark::BenchmarkReporter*>(&recorder) : &silent});
}

// Optimizer update throughput: the in-place Adam and SGD-with-momentum update ops
// (optim/update_ops.hpp) run by an Executor, beside the same maths in plain Eigen and a
// memory-bandwidth yardstick that moves the same bytes.
//
// Goal: the update runs at >= 50% of memory bandwidth, i.e. x_bandwidth >= 0.5 on the executor
// rows. The update is a single streaming pass with a few flops per element, so the memory system,
// not arithmetic, should bound it.
//
// Rows, for N = 2^20 (4 MiB per array: Adam's 16 MiB and SGD's 12 MiB fit in a 32 MiB last-level
// cache, so these rows measure the cache and expose the kernel's arithmetic) and N = 2^24
// (64 MiB per array: DRAM) fp32 elements, in this order so that each measured row has its
// yardstick and baseline just above it:
//   bandwidth/adam_bytes/N   reads w, g, m, v and writes w, m, v (28 bytes per element) with a
//                            trivial body, OpenMP over both cores like the kernel: the speed of
//                            the memory system for Adam's traffic
//   adam/eigen/N             Adam as a user would write it: Eigen::Map<ArrayXf> expressions with
//                            the textbook bias-corrected m̂ / (√v̂ + ε), each thread on its share
//   adam_update/executor/N   Graph(Scaling::kUnscaled) with states w, m, v, an input grad and a
//                            one-element state lr_multiplier (a schedule's factor, as a training
//                            graph has), one adam_update node, Executor::run(): the library's path
//   bandwidth/sgd_bytes/N, sgd/eigen/N, sgd_update/executor/N
//                            the same for SGD with momentum 0.9 (reads w, g, buf; writes w, buf:
//                            20 bytes per element)
// No weight decay and gradient scale 1 (the kernel multiplies by the decay factor and the scale
// anyway, so its cost does not depend on them); lr 1e-3, betas 0.9 and 0.999, ε 1e-8.
//
// Counters. bytes_per_second counts the bytes the update must move (each array read once, each
// state written once; no write-allocate, since every written array is also read), the same figure
// for the three rows of a group, so ratios read off directly:
//   x_bandwidth  this row's bytes/s ÷ the median bytes/s of the group's bandwidth row so far
//   x_eigen      the executor row's bytes/s ÷ the median of the group's Eigen row so far
// After the table, a summary gives each group's medians over all repetitions (in GB/s, 10^9
// bytes/s, where the table's G/s are 2^30) and the fractions of bandwidth, the goal's figure.
//
// The context names the CPU, the OpenMP thread count, the instruction set the update kernels are
// compiled for (they are portable code in src/optim: no run-time dispatch, so that is the build's
// baseline, SSE2 on x86-64 unless UNITSCALE_NATIVE=ON), the best level the SIMD-dispatched op
// kernels use on this CPU, and Eigen's SIMD sets.
//
// Every row uses real time (the kernels run OpenMP threads), runs its body once untimed first
// (first touch, thread start-up, SGD's first step that copies g into the buffer) and then for at
// least kMinTime (the default of --benchmark_min_time, which overrides it). On a shared machine a
// busy core stalls every two-thread parallel region for up to a scheduler time slice: the 2^20
// rows then all read about 8 ms per iteration whatever their work, and only the 2^24 rows mean
// something (OMP_NUM_THREADS=1 gives the steadier per-core comparison). Run with repetitions and
// read medians, e.g.
//   bench_optim --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//   bench_optim --benchmark_filter='/16777216' --benchmark_min_time=0.5   DRAM size only

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "support/bench_context.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/optim/update_ops.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {
namespace {

// Seconds per row: the default of --benchmark_min_time (see main). Each DRAM-size Adam iteration
// moves 448 MiB, tens of milliseconds, so this still gives about ten or more iterations per row.
constexpr double kMinTime = 0.5;

constexpr std::int64_t kSizes[] = {std::int64_t{1} << 20, std::int64_t{1} << 24};

// The hyperparameters of both the update ops and the Eigen baselines.
constexpr double kLr = 1e-3, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8, kMomentum = 0.9;

// Bytes each update must move per element: Adam reads w, g, m, v and writes w, m, v; SGD with
// momentum reads w, g, buf and writes w, buf.
constexpr std::int64_t kAdamBytes = 7 * sizeof(float);
constexpr std::int64_t kSgdBytes = 5 * sizeof(float);

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) · scale (Irwin-Hall: four 16-bit uniforms summed), filled in parallel so
// that setting up 64 MiB arrays is cheap; with `square` the squares (a plausible v, which must
// be ≥ 0). No update's speed depends on more than the rough distribution of its inputs.
Tensor random_tensor(std::int64_t n, std::uint64_t seed, float scale = 1.0f, bool square = false) {
  Tensor t(Shape{n});
  float* data = t.data();
  const std::uint64_t key = splitmix64(seed);
  const float unit = std::sqrt(3.0f) / 65536.0f;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t bits = splitmix64(key ^ static_cast<std::uint64_t>(i));
    std::uint64_t sum = 0;
    for (int k = 0; k < 4; ++k) sum += (bits >> (16 * k)) & 0xFFFFu;
    const float x = static_cast<float>(static_cast<std::int64_t>(sum) - 131072) * unit * scale;
    data[i] = square ? x * x : x;
  }
  return t;
}

// The starting point of every row: a parameter, its gradient and optimizer state as after some
// training (m and v not zero, so no row runs on special values).
struct UpdateData {
  Tensor w, g, m, v;
  explicit UpdateData(std::int64_t n)
      : w(random_tensor(n, 1)),
        g(random_tensor(n, 2)),
        m(random_tensor(n, 3, 0.1f)),
        v(random_tensor(n, 4, 0.1f, /*square=*/true)) {}
};

// f(begin, count) on every OpenMP thread for its contiguous share of [0, n): the same split as the
// kernels' `omp parallel for schedule(static)`.
template <class F>
void parallel_ranges(std::int64_t n, F&& f) {
#pragma omp parallel
  {
    const auto threads = static_cast<std::int64_t>(omp_get_num_threads());
    const auto thread = static_cast<std::int64_t>(omp_get_thread_num());
    const std::int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
    if (end > begin) f(begin, end - begin);
  }
}

ArrayMap chunk(float* data, std::int64_t begin, std::int64_t count) {
  return {data + begin, count};
}
ConstArrayMap chunk(const float* data, std::int64_t begin, std::int64_t count) {
  return {data + begin, count};
}

// ---------------------------------------------------------------------------------------------
// Timing and the ratios to the yardstick and baseline rows
// ---------------------------------------------------------------------------------------------

// What a row is to the ratios: the group's bandwidth yardstick, its Eigen baseline, or the
// executor row measured against both. The summary indexes its columns by these values.
enum class Role { kBandwidth = 0, kEigen = 1, kExecutor = 2 };

// A row's place in the ratios: its group ("adam/1048576") and role, by registered name.
struct RowInfo {
  std::string group;
  Role role;
};
std::map<std::string, RowInfo>& row_info() {
  static std::map<std::string, RowInfo> info;
  return info;
}

// Bytes/s of the runs Google Benchmark has reported, by group and role: one per repetition, or
// the median aggregate alone with --benchmark_report_aggregates_only. Only reported runs count:
// a row's function is also called for the iteration-count probes that precede each run, and
// those short runs are the noisiest.
std::map<std::string, std::map<Role, std::vector<double>>>& rates() {
  static std::map<std::string, std::map<Role, std::vector<double>>> r;
  return r;
}

// bench::RecordingReporter's record: a reported run's bytes/s, into rates().
void record_rate(const benchmark::BenchmarkReporter::Run& run, bool replaces_repetitions) {
  const auto info = row_info().find(run.run_name.function_name);
  const auto bytes = run.counters.find("bytes_per_second");
  if (info == row_info().end() || bytes == run.counters.end()) return;
  std::vector<double>& values = rates()[info->second.group][info->second.role];
  if (replaces_repetitions) values.clear();
  values.push_back(bytes->second.value);
}

// Runs `body` once untimed and then once per iteration; sets bytes_per_second and, for the rows
// measured against others, x_bandwidth and x_eigen (against the rows that ran before it).
template <class Body>
void timed_loop(benchmark::State& state, std::int64_t bytes_per_iteration, const std::string& group,
                Role role, Body&& body) {
  body();
  const auto start = Clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> elapsed = Clock::now() - start;
  state.SetBytesProcessed(state.iterations() * bytes_per_iteration);
  const double rate =
      static_cast<double>(bytes_per_iteration) * static_cast<double>(state.iterations()) /
      elapsed.count();
  const auto& group_rates = rates()[group];
  auto ratio_to = [&](Role yardstick, const char* counter) {
    const auto it = group_rates.find(yardstick);
    if (it != group_rates.end() && !it->second.empty()) {
      state.counters[counter] = rate / bench::median(it->second);
    }
  };
  if (role != Role::kBandwidth) ratio_to(Role::kBandwidth, "x_bandwidth");
  if (role == Role::kExecutor) ratio_to(Role::kEigen, "x_eigen");
}

std::string group_name(std::string_view optimizer, std::int64_t n) {
  return std::string(optimizer) + "/" + std::to_string(n);
}

// ---------------------------------------------------------------------------------------------
// Adam
// ---------------------------------------------------------------------------------------------

// The yardstick: Adam's reads and writes with a multiply-add or two in place of its maths. The
// factors keep the values bounded over thousands of iterations (no overflow, no denormals), and
// `omp parallel for simd` lets the compiler vectorise without proving the arrays disjoint.
void bm_bandwidth_adam(benchmark::State& state, std::int64_t n) {
  UpdateData d(n);
  float* w = d.w.data();
  const float* g = d.g.data();
  float* m = d.m.data();
  float* v = d.v.data();
  timed_loop(state, kAdamBytes * n, group_name("adam", n), Role::kBandwidth, [&] {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      m[i] = 0.5f * m[i] + gi;
      v[i] = 0.5f * v[i] + gi;
      w[i] = w[i] + 1e-6f * gi;
    }
  });
}

// Plain Eigen Adam: what a user would write without unitscale, each thread on its share.
void bm_adam_eigen(benchmark::State& state, std::int64_t n) {
  UpdateData d(n);
  const auto b1 = static_cast<float>(kBeta1), b2 = static_cast<float>(kBeta2);
  const auto lr = static_cast<float>(kLr), eps = static_cast<float>(kEps);
  std::int64_t t = 0;
  timed_loop(state, kAdamBytes * n, group_name("adam", n), Role::kEigen, [&] {
    ++t;
    const auto bias1 = static_cast<float>(1.0 - std::pow(kBeta1, static_cast<double>(t)));
    const auto bias2 = static_cast<float>(1.0 - std::pow(kBeta2, static_cast<double>(t)));
    parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
      ArrayMap w = chunk(d.w.data(), i, c), m = chunk(d.m.data(), i, c),
               v = chunk(d.v.data(), i, c);
      const ConstArrayMap g = chunk(std::as_const(d.g).data(), i, c);
      m = b1 * m + (1.0f - b1) * g;
      v = b2 * v + (1.0f - b2) * g.square();
      w -= lr * (m / bias1) / ((v / bias2).sqrt() + eps);
    });
  });
}

// The library's path: one adam_update node over state values, run by an executor.
void bm_adam_executor(benchmark::State& state, std::int64_t n) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {n});
  const Value m = graph.state("m", {n});
  const Value v = graph.state("v", {n});
  const Value lr_multiplier = graph.state("lr_multiplier", {1});
  const Value grad = graph.input("grad", {n});
  const std::vector<Value> updated = adam_update(w, grad, m, v,
                                                 {.lr = kLr,
                                                  .beta1 = kBeta1,
                                                  .beta2 = kBeta2,
                                                  .eps = kEps,
                                                  .step = 1,
                                                  .lr_multiplier = lr_multiplier});
  Executor exec(graph, updated);
  {
    // set_state copies, so the start values need not outlive this block.
    const UpdateData d(n);
    exec.set_state(w, d.w);
    exec.set_state(m, d.m);
    exec.set_state(v, d.v);
  }
  exec.set_state(lr_multiplier, Tensor::filled({1}, 1.0f));
  const Tensor g = random_tensor(n, 2);
  exec.bind(grad, g);
  timed_loop(state, kAdamBytes * n, group_name("adam", n), Role::kExecutor, [&] { exec.run(); });
}

// ---------------------------------------------------------------------------------------------
// SGD with momentum
// ---------------------------------------------------------------------------------------------

void bm_bandwidth_sgd(benchmark::State& state, std::int64_t n) {
  UpdateData d(n);
  float* w = d.w.data();
  const float* g = d.g.data();
  float* buf = d.m.data();
  timed_loop(state, kSgdBytes * n, group_name("sgd", n), Role::kBandwidth, [&] {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      const float b = 0.5f * buf[i] + g[i];
      buf[i] = b;
      w[i] = w[i] + 1e-6f * b;
    }
  });
}

// PyTorch's SGD momentum (dampening 0, no Nesterov): b ← μ·b + g, w ← w − η·b.
void bm_sgd_eigen(benchmark::State& state, std::int64_t n) {
  UpdateData d(n);
  const auto mu = static_cast<float>(kMomentum), lr = static_cast<float>(kLr);
  timed_loop(state, kSgdBytes * n, group_name("sgd", n), Role::kEigen, [&] {
    parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
      ArrayMap w = chunk(d.w.data(), i, c), b = chunk(d.m.data(), i, c);
      const ConstArrayMap g = chunk(std::as_const(d.g).data(), i, c);
      b = mu * b + g;
      w -= lr * b;
    });
  });
}

void bm_sgd_executor(benchmark::State& state, std::int64_t n) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {n});
  const Value buf = graph.state("momentum_buffer", {n});
  const Value lr_multiplier = graph.state("lr_multiplier", {1});
  const Value grad = graph.input("grad", {n});
  const std::vector<Value> updated =
      sgd_update(w, grad, buf,
                 {.lr = kLr, .momentum = kMomentum, .step = 1, .lr_multiplier = lr_multiplier});
  Executor exec(graph, updated);
  {
    const UpdateData d(n);
    exec.set_state(w, d.w);
    exec.set_state(buf, d.m);
  }
  exec.set_state(lr_multiplier, Tensor::filled({1}, 1.0f));
  const Tensor g = random_tensor(n, 2);
  exec.bind(grad, g);
  timed_loop(state, kSgdBytes * n, group_name("sgd", n), Role::kExecutor, [&] { exec.run(); });
}

// ---------------------------------------------------------------------------------------------
// Context, registration and the summary
// ---------------------------------------------------------------------------------------------

// The instruction set this file, and with it src/optim (same flags), is compiled for.
const char* compiled_isa() {
#if defined(__AVX512F__)
  return "AVX-512 (compile-time: -march flags)";
#elif defined(__AVX2__)
  return "AVX2 (compile-time: -march flags)";
#elif defined(__AVX__)
  return "AVX (compile-time: -march flags)";
#elif defined(__SSE2__)
  return "SSE2 (compile-time baseline: no -march)";
#else
  return "no x86 SIMD (compile-time baseline)";
#endif
}

void add_context() {
  // The update kernels are compiled for one ISA; they do not dispatch like the op kernels.
  benchmark::AddCustomContext("update_kernel_isa", compiled_isa());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
}

void register_benchmarks() {
  auto add = [](const std::string& name, void (*fn)(benchmark::State&, std::int64_t),
                std::int64_t n, std::string_view optimizer, Role role) {
    row_info()[name] = {group_name(optimizer, n), role};
    benchmark::RegisterBenchmark(name.c_str(), [fn, n](benchmark::State& s) { fn(s, n); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  for (const std::int64_t n : kSizes) {
    const std::string size = std::to_string(n);
    add("bandwidth/adam_bytes/" + size, bm_bandwidth_adam, n, "adam", Role::kBandwidth);
    add("adam/eigen/" + size, bm_adam_eigen, n, "adam", Role::kEigen);
    add("adam_update/executor/" + size, bm_adam_executor, n, "adam", Role::kExecutor);
  }
  for (const std::int64_t n : kSizes) {
    const std::string size = std::to_string(n);
    add("bandwidth/sgd_bytes/" + size, bm_bandwidth_sgd, n, "sgd", Role::kBandwidth);
    add("sgd/eigen/" + size, bm_sgd_eigen, n, "sgd", Role::kEigen);
    add("sgd_update/executor/" + size, bm_sgd_executor, n, "sgd", Role::kExecutor);
  }
}

// One line per group that ran: the medians of its reported runs in GB/s (10^9 bytes/s; the
// table's G/s are 2^30), and the fractions.
void print_summary() {
  if (rates().empty()) return;
  std::printf("\nSummary (medians of the reported runs; goal: executor >= 0.50 of bandwidth)\n");
  std::printf("%-14s %12s %12s %12s %13s %13s %11s\n", "group", "bandwidth", "eigen", "executor",
              "eigen/bandw.", "exec./bandw.", "exec./eigen");
  for (const auto& [group, by_role] : rates()) {
    double med[3] = {0.0, 0.0, 0.0};
    for (const auto& [role, values] : by_role) med[static_cast<int>(role)] = bench::median(values) * 1e-9;
    auto ratio = [](double a, double b) { return b > 0.0 && a > 0.0 ? a / b : 0.0; };
    std::printf("%-14s %9.2f GB/s %7.2f GB/s %7.2f GB/s %13.2f %13.2f %11.2f\n", group.c_str(),
                med[0], med[1], med[2], ratio(med[1], med[0]), ratio(med[2], med[0]),
                ratio(med[2], med[1]));
  }
}

void add_rows() {
  add_context();
  register_benchmarks();
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  unitscale::bench::RecordingReporter reporter(unitscale::record_rate);
  return unitscale::bench::run_benchmark_program(argc, argv,
                                                 {.default_min_time = unitscale::kMinTime,
                                                  .add_rows = unitscale::add_rows,
                                                  .summary = unitscale::print_summary,
                                                  .reporter = &reporter});
}

#pragma once
// Shared by the benchmark programs (benchmarks/bench_*.cpp): the machine context printed above
// every table (CPU model, thread count, instruction sets), main()'s body with its default
// --benchmark_min_time, and a reporter that records rows for a summary after the table.
// Header-only, so that it needs no target of its own (the glob in benchmarks/CMakeLists.txt makes
// one program per bench_*.cpp; this directory is outside it).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/train/run_environment.hpp"

namespace unitscale::bench {

// The context every program that runs the library's kernels prints: the CPU, the OpenMP thread
// count, the ISA oneDNN dispatches the GEMMs to (and whether BF16 is native), oneDNN's version and
// the best SIMD level the dispatched element-wise kernels use on this CPU.
inline void add_machine_context() {
  const RunEnvironment environment = current_run_environment();
  benchmark::AddCustomContext("cpu_model", environment.cpu_model);
  benchmark::AddCustomContext("omp_threads", std::to_string(environment.threads));
  benchmark::AddCustomContext("gemm_isa", environment.gemm_isa);
  benchmark::AddCustomContext("gemm_has_native_bf16", environment.gemm_native_bf16 ? "yes" : "no");
  benchmark::AddCustomContext("onednn_version", environment.onednn_version);
  benchmark::AddCustomContext("dispatched_op_kernels_isa",
                              std::string(detail::simd_level_name(detail::active_simd_level())));
}

// --op_kernels_isa=LEVEL (scalar, generic, avx2 or avx512): the element-wise kernels run at that
// SIMD level, at most this CPU's best. With ONEDNN_MAX_CPU_ISA capping the GEMMs, it stands in for a
// smaller CPU. Removes the flag from args; false (with a message) for an unknown or unsupported
// level.
inline bool apply_op_kernels_isa_flag(std::vector<char*>& args) {
  constexpr std::string_view kFlag = "--op_kernels_isa=";
  const auto it = std::find_if(args.begin() + 1, args.end(), [&](const char* a) {
    return std::string_view(a).starts_with(kFlag);
  });
  if (it == args.end()) return true;
  const std::string_view wanted = std::string_view(*it).substr(kFlag.size());
  args.erase(it);
  std::string supported;
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    if (detail::simd_level_name(level) == wanted) {
      detail::force_simd_level(level);
      return true;
    }
    supported += std::string(supported.empty() ? "" : ", ") +
                 std::string(detail::simd_level_name(level));
  }
  std::fprintf(stderr, "--op_kernels_isa: '%.*s' is not a level this CPU runs (%s)\n",
               static_cast<int>(wanted.size()), wanted.data(), supported.c_str());
  return false;
}

// The console reporter of the programs that summarise their rows after the table (plain text: it
// replaces the one --benchmark_format and --benchmark_color would choose; --benchmark_out still
// writes its file). Each reported run goes to `record` first: every repetition, then its
// "median" aggregate with `replaces_repetitions` set, so that a summary reads one value a row.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  using Record = std::function<void(const Run& run, bool replaces_repetitions)>;
  explicit RecordingReporter(Record record)
      : ConsoleReporter(OO_None), record_(std::move(record)) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (run.run_type == Run::RT_Iteration) record_(run, false);
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") record_(run, true);
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  Record record_;
};

inline double median(std::vector<double> x) {
  if (x.empty()) return 0.0;
  std::sort(x.begin(), x.end());
  const std::size_t h = x.size() / 2;
  return x.size() % 2 == 1 ? x[h] : 0.5 * (x[h - 1] + x[h]);
}

struct BenchmarkProgram {
  // The default --benchmark_min_time in seconds, which the flag still overrides (MinTime() on each
  // row would override the flag and add "/min_time:..." to every row's name); 0: the library's.
  double default_min_time = 0;
  std::function<void()> add_rows = {};  // registers the rows and any context of the program's own
  std::function<void()> summary = {};   // printed after the table (may be empty)
  benchmark::BenchmarkReporter* reporter = nullptr;  // nullptr: the one the flags choose
};

// main()'s body for every program: flags, the machine context, the rows, the run, the summary.
inline int run_benchmark_program(int argc, char** argv, const BenchmarkProgram& program) {
  std::vector<char*> args(argv, argv + argc);
  std::string min_time = "--benchmark_min_time=" + std::to_string(program.default_min_time);
  const bool given = std::any_of(args.begin() + 1, args.end(), [](const char* a) {
    return std::string_view(a).starts_with("--benchmark_min_time");
  });
  if (program.default_min_time > 0 && !given) args.insert(args.begin() + 1, min_time.data());
  if (!apply_op_kernels_isa_flag(args)) return 1;
  if (std::any_of(args.begin() + 1, args.end(),
                  [](const char* a) { return std::string_view(a) == "--help"; })) {
    std::printf(
        "Also: --op_kernels_isa=LEVEL  run the element-wise kernels at SIMD level LEVEL (scalar, "
        "generic, avx2, avx512; at most this CPU's), with ONEDNN_MAX_CPU_ISA=... for the GEMMs\n\n");
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  add_machine_context();
  if (program.add_rows) program.add_rows();
  if (program.reporter != nullptr) {
    benchmark::RunSpecifiedBenchmarks(program.reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  if (program.summary) program.summary();
  benchmark::Shutdown();
  return 0;
}

}  // namespace unitscale::bench

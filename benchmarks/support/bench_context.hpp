#pragma once
// Shared by the benchmark programs (benchmarks/bench_*.cpp): the machine context printed above
// every table (CPU model, thread count, instruction sets) and main()'s default
// --benchmark_min_time. Header-only, so that it needs no target of its own (the glob in
// benchmarks/CMakeLists.txt makes one program per bench_*.cpp; this directory is outside it).

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <string_view>
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
                              std::string(detail::simd_level_name(detail::best_simd_level())));
}

// argv with "--benchmark_min_time=<seconds>" inserted unless the caller gave that flag: a
// program-wide default that the flag still overrides (MinTime() on each row would override the
// flag and add "/min_time:..." to every row's name). Google Benchmark 1.7 reads a plain number
// of seconds. The returned vector ends with a null pointer; its size() - 1 is the new argc. It
// points into `storage`, which must outlive it.
inline std::vector<char*> args_with_default_min_time(int argc, char** argv, double seconds,
                                                     std::string& storage) {
  std::vector<char*> args(argv, argv + argc);
  bool given = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with("--benchmark_min_time")) given = true;
  }
  storage = "--benchmark_min_time=" + std::to_string(seconds);
  if (!given) args.insert(args.begin() + 1, storage.data());
  args.push_back(nullptr);
  return args;
}

}  // namespace unitscale::bench

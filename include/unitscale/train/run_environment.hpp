#pragma once
// What a measurement ran on, recorded beside every training run (run.json), sweep
// (environment.json) and benchmark table, so that figures from different machines are never
// compared as if they came from one: throughput depends on the CPU, the thread count and the
// instruction set oneDNN and the element-wise kernels dispatch to.

#include <string>

namespace unitscale {

struct RunEnvironment {
  std::string cpu_model;         // /proc/cpuinfo's "model name", or "unknown"
  int threads = 0;               // OpenMP threads the kernels use
  unsigned hardware_threads = 0;
  std::string simd;              // the element-wise kernels' dispatched level (e.g. "avx2")
  std::string gemm_isa;          // the ISA oneDNN runs the matmuls with
  bool gemm_native_bf16 = false; // BF16 dot products in hardware (AVX512-BF16 or AMX)
  std::string onednn_version;
  std::string compiler;
  std::string library_version;
};

RunEnvironment current_run_environment();

// The CPU's model name from /proc/cpuinfo ("unknown (...)" where there is none).
std::string cpu_model_name();

// `environment` as a JSON object (keys as the member names), for files next to results.
std::string to_json(const RunEnvironment& environment);

}  // namespace unitscale

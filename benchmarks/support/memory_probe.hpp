#pragma once
// Shared by the benchmark programs that report memory (bench_train, bench_scalify): the process's
// resident set and its peak, read from /proc/self/status, with the peak reset before each row so
// that a row reports its own. Header-only, like bench_context.hpp.

#include <benchmark/benchmark.h>
#include <malloc.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

namespace unitscale::bench {

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"), or -1.
inline long status_kib(std::string_view key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':') {
      return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

// Resets VmHWM to the current resident set (Linux ≥ 4.0: "5" to /proc/self/clear_refs).
inline bool reset_peak_rss() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  if (!clear_refs) return false;
  clear_refs << "5";
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

inline bool peak_rss_resettable() {
  static const bool ok = reset_peak_rss();
  return ok;
}

// The resident set before a row: free heap returned to the system first (malloc_trim), so that
// memory an earlier row freed but glibc kept does not hide this row's growth, then the peak reset.
struct MemoryProbe {
  long baseline_kib;
  MemoryProbe() {
    malloc_trim(0);
    reset_peak_rss();
    baseline_kib = status_kib("VmRSS");
  }
  void report(benchmark::State& state) const {
    const long peak = status_kib("VmHWM");
    state.counters["peak_rss_MiB"] = static_cast<double>(peak) / 1024.0;
    state.counters["rss_growth_MiB"] = static_cast<double>(peak - baseline_kib) / 1024.0;
  }
};

}  // namespace unitscale::bench

#include "unitscale/train/run_environment.hpp"

#include <omp.h>

#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>

#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/ops/gemm.hpp"

namespace unitscale {
namespace {

std::string compiler_name() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#else
  return "unknown compiler";
#endif
}

}  // namespace

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.starts_with("model name")) {
      const auto colon = line.find(':');
      const auto start = line.find_first_not_of(" \t", colon + 1);
      if (colon != std::string::npos && start != std::string::npos) return line.substr(start);
    }
  }
  return "unknown (no model name in /proc/cpuinfo)";
}

RunEnvironment current_run_environment() {
  const dnnl_version_t* v = dnnl::version();
  return {.cpu_model = cpu_model_name(),
          .threads = omp_get_max_threads(),
          .hardware_threads = std::thread::hardware_concurrency(),
          .simd = std::string(detail::simd_level_name(detail::active_simd_level())),
          .gemm_isa = gemm_isa(),
          .gemm_native_bf16 = gemm_has_native_bf16(),
          .onednn_version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                            std::to_string(v->patch),
          .compiler = compiler_name(),
          .library_version = UNITSCALE_VERSION};
}

std::string to_json(const RunEnvironment& e) {
  const nlohmann::json json = {{"cpu_model", e.cpu_model},
                               {"threads", e.threads},
                               {"hardware_threads", e.hardware_threads},
                               {"simd", e.simd},
                               {"gemm_isa", e.gemm_isa},
                               {"gemm_native_bf16", e.gemm_native_bf16},
                               {"onednn_version", e.onednn_version},
                               {"compiler", e.compiler},
                               {"library_version", e.library_version}};
  return json.dump(2);
}

}  // namespace unitscale

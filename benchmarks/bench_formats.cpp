// Throughput of the bulk format conversions (format/bulk.hpp).
//
// Rows are named <operation>/<variant>/<size>, where size is that of the FP32 array (4 KiB to
// 64 MiB) and the variants are
//   memcpy_fp32/threads:T   copying the FP32 bytes: the memory-bound baseline
//   <op>/naive              a plain loop over the scalar reference codec (detail::encode_bits /
//                           decode_bits), one thread: what the SIMD kernels are measured against
//   <op>/bulk/threads:T     the bulk API on the best instruction set of this CPU (the label names
//                           it), with T OpenMP threads
// bytes_per_second counts the FP32 side only, so rates compare directly with memcpy. Two ratio
// columns read off the goals: x_memcpy (against memcpy of the same size and thread count) and
// x_naive (against the naive loop of the same size). All times are wall-clock times.
//
// FP8 encoders use the training defaults (RNE, saturating) with the per-tensor scale amax / max,
// which is not a power of two, so every element costs one FP32 division; FP16/BF16 encoders are
// plain casts (scale 1). Every encoder also returns amax.

#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "support/bench_context.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace us = unitscale;

namespace {

struct Size {
  const char* name;
  std::size_t elements;
};
constexpr Size kSizes[] = {
    {"4KiB", 1 << 10}, {"256KiB", 1 << 16}, {"4MiB", 1 << 20}, {"64MiB", 1 << 24}};
constexpr int kThreadCounts[] = {1, 2};

enum class Variant { kMemcpy, kNaive, kBulk };

// Activation-like data: mostly near 1, with a heavy tail so that some elements saturate.
std::vector<float> test_data(std::size_t n) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = normal(rng) * (i % 97 == 0 ? 1000.0f : 1.0f);
  return x;
}

// Rates (bytes/s) of the rows the ratios divide by: memcpy keyed by (size, threads), naive loops
// by (size, 0). Rows run in registration order, so the baselines come first.
std::map<std::pair<std::size_t, int>, double>& baseline_rates() {
  static std::map<std::pair<std::size_t, int>, double> rates;
  return rates;
}

// Runs `body` once per benchmark iteration and sets the rates and ratios of the row.
void run_row(benchmark::State& state, Variant variant, std::size_t n, int threads,
             const std::function<void()>& body) {
  omp_set_num_threads(threads);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  const double bytes = static_cast<double>(state.iterations() * n * sizeof(float));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));

  const double rate = bytes / elapsed.count();
  auto& rates = baseline_rates();
  const std::pair<std::size_t, int> memcpy_key{n, threads}, naive_key{n, 0};
  switch (variant) {
    case Variant::kMemcpy:
      rates[memcpy_key] = rate;
      return;
    case Variant::kNaive:
      rates[naive_key] = rate;
      break;
    case Variant::kBulk:
      if (rates.contains(naive_key)) state.counters["x_naive"] = rate / rates[naive_key];
      state.SetLabel(std::string(us::detail::simd_level_name(us::detail::active_simd_level())));
      break;
  }
  if (rates.contains(memcpy_key)) state.counters["x_memcpy"] = rate / rates[memcpy_key];
}

void register_row(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), std::move(fn))->UseRealTime();
}

// Returns a callable that converts all of x once (reading x, writing buffers it owns).
using MakeBody = std::function<std::function<void()>(std::vector<float>& x, Variant variant)>;

template <class T>
std::function<void()> encode_body(std::vector<float>& x, Variant variant, float scale) {
  using Traits = us::FormatTraits<T>;
  auto codes = std::make_shared<std::vector<T>>(x.size());
  if (variant == Variant::kNaive) {
    return [&x, codes, scale] {
      float amax = 0.0f;
      for (std::size_t i = 0; i < x.size(); ++i) {
        amax = std::fmax(amax, std::fabs(x[i]));
        (*codes)[i] = Traits::from_bits(static_cast<typename Traits::Bits>(us::detail::encode_bits(
            x[i] / scale, Traits::kSpec, us::Rounding::kNearestEven, us::Overflow::kSaturate)));
      }
      benchmark::DoNotOptimize(amax);
    };
  }
  return [&x, codes, scale] {
    benchmark::DoNotOptimize(
        us::encode(std::span<const float>(x), std::span<T>(*codes), {.scale = scale}));
  };
}

// FP8 encoders scale by amax / max, which is not a power of two.
template <class T>
MakeBody encode_rows(float format_max) {
  return [format_max](std::vector<float>& x, Variant variant) {
    return encode_body<T>(x, variant, us::amax(x) / format_max);
  };
}

// FP16 and BF16 encoders are plain casts.
template <class T>
MakeBody cast_rows() {
  return [](std::vector<float>& x, Variant variant) { return encode_body<T>(x, variant, 1.0f); };
}

template <class T>
MakeBody decode_rows() {
  return [](std::vector<float>& x, Variant variant) -> std::function<void()> {
    using Traits = us::FormatTraits<T>;
    auto codes = std::make_shared<std::vector<T>>(x.size());
    us::encode(std::span<const float>(x), std::span<T>(*codes));
    if (variant == Variant::kNaive) {
      return [&x, codes] {
        for (std::size_t i = 0; i < x.size(); ++i) {
          x[i] = us::detail::decode_bits(Traits::to_bits((*codes)[i]), Traits::kSpec);
        }
      };
    }
    return [&x, codes] { us::decode(std::span<const T>(*codes), std::span<float>(x)); };
  };
}

MakeBody fake_quantize_rows() {
  return [](std::vector<float>& x, Variant variant) -> std::function<void()> {
    const float scale = us::amax(x) / 448.0f;
    if (variant == Variant::kNaive) {
      return [&x, scale] {
        for (float& v : x) {
          const std::uint32_t code = us::detail::encode_bits(
              v / scale, us::kFloat8E4M3FN, us::Rounding::kNearestEven, us::Overflow::kSaturate);
          v = us::detail::decode_bits(code, us::kFloat8E4M3FN) * scale;
        }
      };
    }
    return [&x, scale] {
      benchmark::DoNotOptimize(
          us::fake_quantize(std::span<float>(x), us::kFloat8E4M3FN, {.scale = scale}));
    };
  };
}

void register_memcpy_rows() {
  for (const Size& size : kSizes) {
    for (const int threads : kThreadCounts) {
      const std::string name = "memcpy_fp32/threads:" + std::to_string(threads) + "/" + size.name;
      register_row(name, [size, threads](benchmark::State& state) {
        const std::vector<float> x = test_data(size.elements);
        std::vector<float> y(size.elements);
        // Like the bulk API, which splits spans over threads only above 64K elements.
        const bool split = threads > 1 && size.elements > 65536;
        const std::size_t per_thread = size.elements / static_cast<std::size_t>(threads);
        run_row(state, Variant::kMemcpy, size.elements, threads, [&] {
          if (!split) {
            std::memcpy(y.data(), x.data(), size.elements * sizeof(float));
            return;
          }
#pragma omp parallel for num_threads(threads) schedule(static)
          for (int t = 0; t < threads; ++t) {
            const std::size_t begin = static_cast<std::size_t>(t) * per_thread;
            std::memcpy(y.data() + begin, x.data() + begin, per_thread * sizeof(float));
          }
        });
      });
    }
  }
}

void register_operation_rows(const std::string& operation, const MakeBody& make) {
  for (const Size& size : kSizes) {
    register_row(operation + "/naive/" + size.name, [make, size](benchmark::State& state) {
      std::vector<float> x = test_data(size.elements);
      run_row(state, Variant::kNaive, size.elements, 1, make(x, Variant::kNaive));
    });
  }
  for (const int threads : kThreadCounts) {
    for (const Size& size : kSizes) {
      const std::string name =
          operation + "/bulk/threads:" + std::to_string(threads) + "/" + size.name;
      register_row(name, [make, size, threads](benchmark::State& state) {
        std::vector<float> x = test_data(size.elements);
        run_row(state, Variant::kBulk, size.elements, threads, make(x, Variant::kBulk));
      });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return us::bench::run_benchmark_program(argc, argv, {.add_rows = [] {
    register_memcpy_rows();
    register_operation_rows("encode_e4m3", encode_rows<us::float8_e4m3fn>(448.0f));
    register_operation_rows("encode_e5m2", encode_rows<us::float8_e5m2>(57344.0f));
    register_operation_rows("decode_e4m3", decode_rows<us::float8_e4m3fn>());
    register_operation_rows("encode_fp16", cast_rows<us::float16>());
    register_operation_rows("decode_fp16", decode_rows<us::float16>());
    register_operation_rows("encode_bf16", cast_rows<us::bfloat16>());
    register_operation_rows("decode_bf16", decode_rows<us::bfloat16>());
    register_operation_rows("fake_quantize_e4m3", fake_quantize_rows());
  }});
}

// Op benchmarks: forward + backward of every op family beside a plain Eigen (fp32) implementation
// of the same maths written here (the baseline rows), a STREAM-like memory-bandwidth reference,
// and the executor's per-node overhead.
//
// Goals (issue 3):
//   - unit-scaled linear/matmul forward+backward within 3% of three raw Eigen GEMMs at
//     1024x1024x1024 (compare linear/unitscale/1024 with linear/eigen_baseline/1024);
//   - elementwise ops at >= 50% of memory bandwidth (compare their bytes_per_second with
//     memory_bandwidth/copy and memory_bandwidth/triad, which run on the same 2^22 floats);
//   - graph overhead < 1 us per node (executor/per_node_overhead: 1e9 / items_per_second ns).
//   - planning a 10,000-node graph < 50 ms (executor/plan/10000); recording it (graph/record/10000,
//     shape and attribute checks, scale rules, autodiff) is measured beside it.
// Goal (issue 9): building a u-μP decoder of width 1024 and depth 12 with its backward and AdamW
// update (model/decoder_build/1024x12: modules, autodiff, optimizer; no executor) < 100 ms.
//
// Reading the table. Rows are named <op>/<variant>/<size>, variant eigen_baseline or unitscale, so
// the two sort next to each other. Every row is one forward plus one backward; the counters fwd_ms
// and bwd_ms split the time between them (wall clock per iteration). bytes_per_second counts the
// bytes the op must read and write (each input read once, each output written once, in both
// passes; the same figure for both variants), STREAM-style without write-allocate traffic.
// flops counts 2·M·N·K per GEMM the maths needs.
//
// The baselines are what a competent plain-Eigen implementation would be: Eigen expressions over
// maps, both threads via OpenMP over rows or chunks where the loop is embarrassingly parallel
// (Eigen does not thread coefficient-wise expressions itself), Eigen's own threading for GEMMs,
// fp32 throughout (the unitscale kernels accumulate some statistics in double), and Eigen's
// vectorised exp/tanh/erf/logistic. Dropout's baseline applies a mask already in memory (the
// unitscale kernel regenerates it from a counter-based hash), i.e. it is a lower bound. Eigen 3.4's
// select() is a branchy scalar loop, so the relu-backward and where baselines are slow on random
// data; the unitscale rows beating them says little.
//
// Every benchmark uses real time (the kernels run OpenMP threads) and MinTime(kMinTime), so the
// default run stays well under two minutes. On a shared machine a busy core stalls every
// two-thread parallel region for up to a scheduler time slice; OMP_NUM_THREADS=1 then gives the
// steadier per-core comparison.

#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "support/bench_context.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/conv1d.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/matmul.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/ops/softmax.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"

namespace unitscale {
namespace {

// ---------------------------------------------------------------------------------------------
// Sizes and helpers
// ---------------------------------------------------------------------------------------------

constexpr double kMinTime = 0.2;
constexpr std::int64_t kElementwise = std::int64_t{1} << 22;  // 16 MiB of floats
constexpr std::int64_t kRows = 4096, kCols = 1024;             // row-wise ops: [4096, 1024]

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
using Clock = std::chrono::steady_clock;

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) (Irwin-Hall: four 16-bit uniforms summed and rescaled), filled in
// parallel so that setting up 16 MiB inputs is cheap. The speed of no kernel here depends on
// more than the rough distribution of its inputs.
Tensor random_tensor(const Shape& shape, std::uint64_t seed) {
  Tensor t(shape);
  float* data = t.data();
  const std::int64_t n = t.numel();
  const std::uint64_t key = splitmix64(seed);
  const float scale = std::sqrt(3.0f) / 65536.0f;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t bits = splitmix64(key ^ static_cast<std::uint64_t>(i));
    std::uint64_t sum = 0;
    for (int k = 0; k < 4; ++k) sum += (bits >> (16 * k)) & 0xFFFFu;
    data[i] = static_cast<float>(static_cast<std::int64_t>(sum) - 131072) * scale;
  }
  return t;
}

// Integers in [0, bound) as an i32 tensor (token ids, class labels).
Tensor random_ids(const Shape& shape, std::int64_t bound, std::uint64_t seed) {
  Tensor t(shape, DType::kI32);
  const std::uint64_t key = splitmix64(seed);
  std::int32_t* ids = t.data_as<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const std::uint64_t bits = splitmix64(key ^ static_cast<std::uint64_t>(i));
    ids[i] = static_cast<std::int32_t>(bits % static_cast<std::uint64_t>(bound));
  }
  return t;
}

// 0 or 1 as an f32 tensor (where's condition).
Tensor random_mask(const Shape& shape, std::uint64_t seed) {
  const Tensor bits = random_ids(shape, 2, seed);
  Tensor mask(shape);
  for (std::int64_t i = 0; i < mask.numel(); ++i) {
    mask[i] = static_cast<float>(bits.data_as<std::int32_t>()[i]);
  }
  return mask;
}

// f(begin, count) on every OpenMP thread for its contiguous share of [0, n).
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

// Splits each iteration's wall time into forward and backward; reported as the counters fwd_ms
// and bwd_ms (averages per iteration).
class PhaseTimer {
 public:
  void start() { start_ = Clock::now(); }
  void forward_done() {
    middle_ = Clock::now();
    forward_ += middle_ - start_;
  }
  void backward_done() { backward_ += Clock::now() - middle_; }
  void report(benchmark::State& state) const {
    using Ms = std::chrono::duration<double, std::milli>;
    state.counters["fwd_ms"] =
        benchmark::Counter(Ms(forward_).count(), benchmark::Counter::kAvgIterations);
    state.counters["bwd_ms"] =
        benchmark::Counter(Ms(backward_).count(), benchmark::Counter::kAvgIterations);
  }

 private:
  Clock::time_point start_, middle_;
  Clock::duration forward_{}, backward_{};
};

// bytes_per_second from the floats one iteration must read and write.
void set_bytes(benchmark::State& state, std::int64_t floats) {
  state.SetBytesProcessed(state.iterations() * floats *
                          static_cast<std::int64_t>(sizeof(float)));
}

// flops: floating-point operations per second (printed as e.g. 28.1G/s).
void set_flops(benchmark::State& state, double flops) {
  state.counters["flops"] = benchmark::Counter(
      flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

double gemm_flops(std::int64_t m, std::int64_t n, std::int64_t k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

// Runs fwd() then bwd() per iteration, timing each phase.
template <class Forward, class Backward>
void run_fwd_bwd(benchmark::State& state, Forward&& fwd, Backward&& bwd) {
  PhaseTimer timer;
  for (auto _ : state) {
    timer.start();
    fwd();
    timer.forward_done();
    bwd();
    timer.backward_done();
    benchmark::ClobberMemory();
  }
  timer.report(state);
}

// Calls an OpDef's kernel (for ops whose kernels are only reachable through their OpDef).
void call_kernel(const OpDef& op, std::vector<ConstTensorView> in, std::vector<TensorView> out,
                 const Attributes& attrs = {}) {
  op.kernel(in, out, attrs, KernelContext{});
}

// ---------------------------------------------------------------------------------------------
// Memory bandwidth reference: STREAM copy and triad over the same 2^22 floats, both threads.
// A large last-level cache can hold much of copy's 32 MiB (triad's 48 MiB less so), so the
// 2^26-float rows (256 MiB per array) give the DRAM figure for comparison.
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kDramSize = std::int64_t{1} << 26;

void bm_bandwidth_copy(benchmark::State& state, std::int64_t n) {
  const Tensor b = random_tensor({n}, 1);
  Tensor a({n});
  const float* src = b.data();
  float* dst = a.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) dst[i] = src[i];
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * n);
}

void bm_bandwidth_triad(benchmark::State& state, std::int64_t n) {
  const Tensor b = random_tensor({n}, 1), c = random_tensor({n}, 2);
  Tensor a({n});
  const float* pb = b.data();
  const float* pc = c.data();
  float* pa = a.data();
  const float s = 3.0f;
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3 * n);
}

// ---------------------------------------------------------------------------------------------
// linear: y = α x Wᵀ, dx = β_x g W, dW = β_W gᵀ x (the baseline: the three raw GEMMs)
// ---------------------------------------------------------------------------------------------

void bm_linear_baseline(benchmark::State& state, std::int64_t n) {
  const Tensor x = random_tensor({n, n}, 1), w = random_tensor({n, n}, 2),
               g = random_tensor({n, n}, 3);
  RowMajorMatrix y(n, n), dx(n, n), dw(n, n);
  run_fwd_bwd(
      state, [&] { y.noalias() = x.matrix() * w.matrix().transpose(); },
      [&] {
        dx.noalias() = g.matrix() * w.matrix();
        dw.noalias() = g.matrix().transpose() * x.matrix();
      });
  set_flops(state, 3 * gemm_flops(n, n, n));
}

void bm_linear_unitscale(benchmark::State& state, std::int64_t n) {
  const Tensor x = random_tensor({n, n}, 1), w = random_tensor({n, n}, 2),
               g = random_tensor({n, n}, 3);
  Tensor y({n, n}), dx({n, n}), dw({n, n});
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  run_fwd_bwd(
      state, [&] { linear_forward(x, w, {}, y, scale); },
      [&] { linear_backward(g, x, w, dx, dw, {}, scale, scale, scale); });
  set_flops(state, 3 * gemm_flops(n, n, n));
}

// ---------------------------------------------------------------------------------------------
// matmul: out = α L R, dL = β_L g Rᵀ, dR = β_R Lᵀ g; 2-D and batched
// ---------------------------------------------------------------------------------------------

void bm_matmul_baseline(benchmark::State& state, std::int64_t batch, std::int64_t n) {
  const Tensor l = random_tensor({batch, n, n}, 1), r = random_tensor({batch, n, n}, 2),
               g = random_tensor({batch, n, n}, 3);
  Tensor out({batch, n, n}), dl({batch, n, n}), dr({batch, n, n});
  const std::int64_t stride = n * n;
  auto cmat = [&](const Tensor& t, std::int64_t b) { return ConstMatrixMap(t.data() + b * stride, n, n); };
  auto mat = [&](Tensor& t, std::int64_t b) { return MatrixMap(t.data() + b * stride, n, n); };
  run_fwd_bwd(
      state,
      [&] {
        for (std::int64_t b = 0; b < batch; ++b) mat(out, b).noalias() = cmat(l, b) * cmat(r, b);
      },
      [&] {
        for (std::int64_t b = 0; b < batch; ++b) {
          mat(dl, b).noalias() = cmat(g, b) * cmat(r, b).transpose();
          mat(dr, b).noalias() = cmat(l, b).transpose() * cmat(g, b);
        }
      });
  set_flops(state, 3 * static_cast<double>(batch) * gemm_flops(n, n, n));
}

void bm_matmul_unitscale(benchmark::State& state, std::int64_t batch, std::int64_t n) {
  const Shape shape = batch == 1 ? Shape{n, n} : Shape{batch, n, n};
  const Tensor l = random_tensor(shape, 1), r = random_tensor(shape, 2), g = random_tensor(shape, 3);
  Tensor out(shape), dl(shape), dr(shape);
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  run_fwd_bwd(
      state, [&] { matmul_forward(l, r, out, scale); },
      [&] { matmul_backward(g, l, r, dl, dr, scale, scale); });
  set_flops(state, 3 * static_cast<double>(batch) * gemm_flops(n, n, n));
}

// ---------------------------------------------------------------------------------------------
// elementwise: add (same shape and bias-row broadcast), mul, scale
// ---------------------------------------------------------------------------------------------

constexpr float kAlpha = 0.70710678f, kBeta = 0.5f;

void bm_add_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor out({n}), da({n}), db({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(out.data(), i, c) = kAlpha * (chunk(a.data(), i, c) + chunk(b.data(), i, c));
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap gc = chunk(g.data(), i, c);
          chunk(da.data(), i, c) = kBeta * gc;
          chunk(db.data(), i, c) = kBeta * gc;
        });
      });
  set_bytes(state, 6 * n);  // fwd: read a, b, write out; bwd: read g, write da, db
}

void bm_add_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor out({n}), da({n}), db({n});
  run_fwd_bwd(
      state, [&] { add_forward(a, b, out, kAlpha); },
      [&] { add_backward(g, da, db, kBeta, kBeta); });
  set_bytes(state, 6 * n);
}

// x [4096, 1024] + bias [1024]; the backward sums g over the rows for the bias.
void bm_add_bias_baseline(benchmark::State& state) {
  const Tensor a = random_tensor({kRows, kCols}, 1), b = random_tensor({kCols}, 2),
               g = random_tensor({kRows, kCols}, 3);
  Tensor out({kRows, kCols}), da({kRows, kCols}), db({kCols});
  std::vector<Eigen::ArrayXf> partial(static_cast<std::size_t>(omp_get_max_threads()));
  const ConstArrayMap bias(b.data(), kCols);
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          for (std::int64_t r = r0; r < r0 + rows; ++r) {
            chunk(out.data(), r * kCols, kCols) = kAlpha * (chunk(a.data(), r * kCols, kCols) + bias);
          }
        });
      },
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          Eigen::ArrayXf& sum = partial[static_cast<std::size_t>(omp_get_thread_num())];
          sum.setZero(kCols);
          for (std::int64_t r = r0; r < r0 + rows; ++r) {
            const ConstArrayMap gr = chunk(g.data(), r * kCols, kCols);
            chunk(da.data(), r * kCols, kCols) = kBeta * gr;
            sum += gr;
          }
        });
        ArrayMap total(db.data(), kCols);
        total.setZero();
        for (const Eigen::ArrayXf& sum : partial) {
          if (sum.size() == kCols) total += sum;
        }
        total *= kBeta;
      });
  set_bytes(state, 4 * kRows * kCols);  // fwd: read a, write out; bwd: read g, write da
}

void bm_add_bias_unitscale(benchmark::State& state) {
  const Tensor a = random_tensor({kRows, kCols}, 1), b = random_tensor({kCols}, 2),
               g = random_tensor({kRows, kCols}, 3);
  Tensor out({kRows, kCols}), da({kRows, kCols}), db({kCols});
  run_fwd_bwd(
      state, [&] { add_forward(a, b, out, kAlpha); },
      [&] { add_backward(g, da, db, kBeta, kBeta); });
  set_bytes(state, 4 * kRows * kCols);
}

void bm_mul_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor out({n}), da({n}), db({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(out.data(), i, c) = chunk(a.data(), i, c) * chunk(b.data(), i, c);
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap gc = chunk(g.data(), i, c);
          chunk(da.data(), i, c) = gc * chunk(b.data(), i, c);
          chunk(db.data(), i, c) = gc * chunk(a.data(), i, c);
        });
      });
  set_bytes(state, 8 * n);  // fwd: read a, b, write out; bwd: read g, a, b, write da, db
}

void bm_mul_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor out({n}), da({n}), db({n});
  run_fwd_bwd(
      state, [&] { mul_forward(a, b, out); }, [&] { mul_backward(g, a, b, da, db); });
  set_bytes(state, 8 * n);
}

void bm_scale_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(y.data(), i, c) = kAlpha * chunk(x.data(), i, c);
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(dx.data(), i, c) = kBeta * chunk(g.data(), i, c);
        });
      });
  set_bytes(state, 4 * n);
}

void bm_scale_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state, [&] { scale_kernel(x, y, kAlpha); }, [&] { scale_kernel(g, dx, kBeta); });
  set_bytes(state, 4 * n);
}

// ---------------------------------------------------------------------------------------------
// activations (mult m = 1): relu, gelu (erf and tanh forms), silu, silu_glu
// ---------------------------------------------------------------------------------------------

constexpr float kInvSqrt2 = static_cast<float>(1.0 / std::numbers::sqrt2);
constexpr float kInvSqrt2Pi = static_cast<float>(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
constexpr float kSqrt2OverPi = static_cast<float>(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
constexpr float kGeluCubic = 0.044715f;

// A unary activation: fwd y = f(x), bwd dx = f'(x)·g; 5 floats of traffic per element.
template <class Forward, class Backward>
void unary_activation_baseline(benchmark::State& state, Forward&& fwd, Backward&& bwd) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          fwd(chunk(x.data(), i, c), chunk(y.data(), i, c));
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          bwd(chunk(g.data(), i, c), chunk(x.data(), i, c), chunk(dx.data(), i, c));
        });
      });
  set_bytes(state, 5 * n);  // fwd: read x, write y; bwd: read g, x, write dx
}

template <class Forward, class Backward>
void unary_activation_unitscale(benchmark::State& state, Forward&& fwd, Backward&& bwd) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state, [&] { fwd(x, y); }, [&] { bwd(g, x, dx); });
  set_bytes(state, 5 * n);
}

void bm_relu_baseline(benchmark::State& state) {
  unary_activation_baseline(
      state, [](ConstArrayMap x, ArrayMap y) { y = x.max(0.0f); },
      [](ConstArrayMap g, ConstArrayMap x, ArrayMap dx) { dx = (x > 0.0f).select(g, 0.0f); });
}

void bm_relu_unitscale(benchmark::State& state) {
  unary_activation_unitscale(
      state, [](const Tensor& x, Tensor& y) { relu_forward(x, y); },
      [](const Tensor& g, const Tensor& x, Tensor& dx) { relu_backward(g, x, dx); });
}

void bm_gelu_baseline(benchmark::State& state) {
  unary_activation_baseline(
      state,
      [](ConstArrayMap x, ArrayMap y) { y = (kAlpha * 0.5f) * x * (1.0f + (kInvSqrt2 * x).erf()); },
      [](ConstArrayMap g, ConstArrayMap x, ArrayMap dx) {
        dx = kBeta * g *
             (0.5f * (1.0f + (kInvSqrt2 * x).erf()) + kInvSqrt2Pi * x * (-0.5f * x.square()).exp());
      });
}

void bm_gelu_unitscale(benchmark::State& state) {
  unary_activation_unitscale(
      state,
      [](const Tensor& x, Tensor& y) { gelu_forward(x, y, 1.0f, GeluApproximation::kNone, kAlpha); },
      [](const Tensor& g, const Tensor& x, Tensor& dx) {
        gelu_backward(g, x, dx, 1.0f, GeluApproximation::kNone, kBeta);
      });
}

void bm_gelu_tanh_baseline(benchmark::State& state) {
  unary_activation_baseline(
      state,
      [](ConstArrayMap x, ArrayMap y) {
        y = (kAlpha * 0.5f) * x * (1.0f + (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh());
      },
      [](ConstArrayMap g, ConstArrayMap x, ArrayMap dx) {
        // Two Eigen expressions: t = tanh(u) goes into dx first, then dx is overwritten in place.
        dx = (kSqrt2OverPi * (x + kGeluCubic * x.cube())).tanh();
        dx = kBeta * g *
             (0.5f * (1.0f + dx) + 0.5f * x * (1.0f - dx.square()) * kSqrt2OverPi *
                                       (1.0f + 3.0f * kGeluCubic * x.square()));
      });
}

void bm_gelu_tanh_unitscale(benchmark::State& state) {
  unary_activation_unitscale(
      state,
      [](const Tensor& x, Tensor& y) { gelu_forward(x, y, 1.0f, GeluApproximation::kTanh, kAlpha); },
      [](const Tensor& g, const Tensor& x, Tensor& dx) {
        gelu_backward(g, x, dx, 1.0f, GeluApproximation::kTanh, kBeta);
      });
}

void bm_silu_baseline(benchmark::State& state) {
  unary_activation_baseline(
      state, [](ConstArrayMap x, ArrayMap y) { y = kAlpha * x * x.logistic(); },
      [](ConstArrayMap g, ConstArrayMap x, ArrayMap dx) {
        dx = x.logistic();
        dx = kBeta * g * dx * (1.0f + x * (1.0f - dx));
      });
}

void bm_silu_unitscale(benchmark::State& state) {
  unary_activation_unitscale(
      state, [](const Tensor& x, Tensor& y) { silu_forward(x, y, 1.0f, kAlpha); },
      [](const Tensor& g, const Tensor& x, Tensor& dx) { silu_backward(g, x, dx, 1.0f, kBeta); });
}

void bm_silu_glu_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), gate = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n}), dgate({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap gt = chunk(gate.data(), i, c);
          chunk(y.data(), i, c) = kAlpha * chunk(x.data(), i, c) * gt * gt.logistic();
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap gt = chunk(gate.data(), i, c);
          const ConstArrayMap gc = chunk(g.data(), i, c);
          ArrayMap dxc = chunk(dx.data(), i, c);
          ArrayMap dgc = chunk(dgate.data(), i, c);
          dgc = gt.logistic();  // σ(gate), then overwritten in place
          dxc = kBeta * gc * gt * dgc;
          dgc = kBeta * gc * chunk(x.data(), i, c) * dgc * (1.0f + gt * (1.0f - dgc));
        });
      });
  set_bytes(state, 8 * n);  // fwd: read x, gate, write y; bwd: read g, x, gate, write dx, dgate
}

void bm_silu_glu_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), gate = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n}), dgate({n});
  run_fwd_bwd(
      state, [&] { silu_glu_forward(x, gate, y, 1.0f, kAlpha); },
      [&] { silu_glu_backward(g, x, gate, dx, dgate, 1.0f, kBeta, kBeta); });
  set_bytes(state, 8 * n);
}

// ---------------------------------------------------------------------------------------------
// softmax over the last dim of [4096, 1024]: y = α softmax(x), dx = β/α y ⊙ (g − Σ y g / α)
// ---------------------------------------------------------------------------------------------

void bm_softmax_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kCols}, 3);
  Tensor y({kRows, kCols}), dx({kRows, kCols});
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) {
          const ConstArrayMap xr = chunk(x.data(), r * kCols, kCols);
          ArrayMap yr = chunk(y.data(), r * kCols, kCols);
          yr = (xr - xr.maxCoeff()).exp();
          yr *= kAlpha / yr.sum();
        }
      },
      [&] {
        const float factor = kBeta / kAlpha;
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) {
          const ConstArrayMap yr(y.data() + r * kCols, kCols);
          const ConstArrayMap gr = chunk(g.data(), r * kCols, kCols);
          const float mean_g = (yr * gr).sum() / kAlpha;
          chunk(dx.data(), r * kCols, kCols) = factor * yr * (gr - mean_g);
        }
      });
  set_bytes(state, 5 * kRows * kCols);  // fwd: read x, write y; bwd: read g, y, write dx
}

void bm_softmax_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kCols}, 3);
  Tensor y({kRows, kCols}), dx({kRows, kCols});
  run_fwd_bwd(
      state, [&] { softmax_forward(x, y, 1.0f, kAlpha); },
      [&] { softmax_backward(g, y, dx, 1.0f, kAlpha, kBeta); });
  set_bytes(state, 5 * kRows * kCols);
}

// ---------------------------------------------------------------------------------------------
// dropout p = 0.1, training mode
// ---------------------------------------------------------------------------------------------

constexpr double kDropout = 0.1;
constexpr std::uint64_t kDropoutSeed = 1234;

// Baseline: the mask is already in memory (as keep/(1−p) factors), the cheapest dropout there is.
void bm_dropout_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor mask({n}), y({n}), dx({n});
  const auto keep_scale = static_cast<float>(1.0 / (1.0 - kDropout));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    mask[i] = dropout_keeps(kDropoutSeed, i, kDropout) ? keep_scale : 0.0f;
  }
  const float scale = std::sqrt(static_cast<float>(1.0 - kDropout));
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(y.data(), i, c) = scale * chunk(mask.data(), i, c) * chunk(x.data(), i, c);
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(dx.data(), i, c) = scale * chunk(mask.data(), i, c) * chunk(g.data(), i, c);
        });
      });
  set_bytes(state, 4 * n);  // fwd: read x, write y; bwd: read g, write dx (the mask is extra)
}

void bm_dropout_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 3);
  Tensor y({n}), dx({n});
  const float scale = std::sqrt(static_cast<float>(1.0 - kDropout));
  run_fwd_bwd(
      state,
      [&] { dropout_forward(x, y, kDropout, kDropoutSeed, DropoutMode::kTraining, scale); },
      [&] { dropout_backward(g, dx, kDropout, kDropoutSeed, DropoutMode::kTraining, scale); });
  set_bytes(state, 4 * n);
}

// ---------------------------------------------------------------------------------------------
// layer_norm and rms_norm over the last dim of [4096, 1024], with affine weight (and bias)
// ---------------------------------------------------------------------------------------------

constexpr float kEps = 1e-5f;

template <bool kCenter>
void norm_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kCols}, 3);
  const Tensor w = random_tensor({kCols}, 4), b = random_tensor({kCols}, 5);
  Tensor y({kRows, kCols}), dx({kRows, kCols}), dw({kCols}), db({kCols});
  const ConstArrayMap wa(w.data(), kCols), ba(b.data(), kCols);
  const auto threads = static_cast<std::size_t>(omp_get_max_threads());
  std::vector<Eigen::ArrayXf> acc_w(threads), acc_b(threads);
  // mean and rstd of a row (mean 0 for rms_norm).
  auto stats = [](const ConstArrayMap& xr) {
    const float mean = kCenter ? xr.mean() : 0.0f;
    const float var = (xr - mean).square().mean();
    return std::pair{mean, 1.0f / std::sqrt(var + kEps)};
  };
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) {
          const ConstArrayMap xr = chunk(x.data(), r * kCols, kCols);
          const auto [mean, rstd] = stats(xr);
          if constexpr (kCenter) {
            chunk(y.data(), r * kCols, kCols) = kAlpha * ((xr - mean) * rstd * wa + ba);
          } else {
            chunk(y.data(), r * kCols, kCols) = kAlpha * (xr * rstd * wa);
          }
        }
      },
      [&] {
#pragma omp parallel
        {
          const auto t = static_cast<std::size_t>(omp_get_thread_num());
          acc_w[t].setZero(kCols);
          if constexpr (kCenter) acc_b[t].setZero(kCols);
          Eigen::ArrayXf xhat(kCols), ghat(kCols);
#pragma omp for schedule(static)
          for (std::int64_t r = 0; r < kRows; ++r) {
            const ConstArrayMap xr = chunk(x.data(), r * kCols, kCols);
            const ConstArrayMap gr = chunk(g.data(), r * kCols, kCols);
            const auto [mean, rstd] = stats(xr);
            xhat = (xr - mean) * rstd;
            ghat = gr * wa;
            const float mean_gh = kCenter ? ghat.mean() : 0.0f;
            const float mean_gh_xh = (ghat * xhat).mean();
            chunk(dx.data(), r * kCols, kCols) = (kBeta * rstd) * (ghat - mean_gh - xhat * mean_gh_xh);
            acc_w[t] += gr * xhat;
            if constexpr (kCenter) acc_b[t] += gr;
          }
        }
        ArrayMap dwa(dw.data(), kCols), dba(db.data(), kCols);
        dwa.setZero();
        dba.setZero();
        for (std::size_t t = 0; t < threads; ++t) {
          if (acc_w[t].size() == kCols) dwa += acc_w[t];
          if (kCenter && acc_b[t].size() == kCols) dba += acc_b[t];
        }
        dwa *= kBeta;
        dba *= kBeta;
      });
  set_bytes(state, 5 * kRows * kCols);  // fwd: read x, write y; bwd: read g, x, write dx
}

void bm_layer_norm_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kCols}, 3);
  const Tensor w = random_tensor({kCols}, 4), b = random_tensor({kCols}, 5);
  Tensor y({kRows, kCols}), dx({kRows, kCols}), dw({kCols}), db({kCols});
  run_fwd_bwd(
      state, [&] { layer_norm_forward(x, w, b, y, kEps, kAlpha); },
      [&] { layer_norm_backward(g, x, w, dx, dw, db, kEps, kBeta, kBeta, kBeta); });
  set_bytes(state, 5 * kRows * kCols);
}

void bm_rms_norm_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kCols}, 3);
  const Tensor w = random_tensor({kCols}, 4);
  Tensor y({kRows, kCols}), dx({kRows, kCols}), dw({kCols});
  run_fwd_bwd(
      state, [&] { rms_norm_forward(x, w, y, kEps, kAlpha); },
      [&] { rms_norm_backward(g, x, w, dx, dw, kEps, kBeta, kBeta); });
  set_bytes(state, 5 * kRows * kCols);
}

// ---------------------------------------------------------------------------------------------
// scaled_dot_product_attention, q = k = v = [4, 8, 256, 64] (batch 4, 8 heads), no mask
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kAttnBatch = 4, kAttnHeads = 8, kAttnSeq = 256, kAttnDim = 64;
constexpr std::int64_t kAttnSlices = kAttnBatch * kAttnHeads;

// Forward 2 GEMMs, backward 5 (the probabilities are recomputed, in both variants).
double attention_flops() {
  return 7.0 * static_cast<double>(kAttnSlices) * gemm_flops(kAttnSeq, kAttnSeq, kAttnDim);
}

// Baseline: per slice, parallel over slices, recomputing P in the backward as the op does.
void bm_attention_baseline(benchmark::State& state) {
  const Shape shape{kAttnBatch, kAttnHeads, kAttnSeq, kAttnDim};
  const Tensor q = random_tensor(shape, 1), k = random_tensor(shape, 2), v = random_tensor(shape, 3),
               g = random_tensor(shape, 4);
  Tensor y(shape), dq(shape), dk(shape), dv(shape);
  const auto sigma = static_cast<float>(
      attention_unit_scale(kAttnDim, kAttnSeq, 1.0, AttentionMask::kNone));
  const float logit_scale = 1.0f / static_cast<float>(kAttnDim);
  const std::int64_t stride = kAttnSeq * kAttnDim;
  auto slice = [&](const Tensor& t, std::int64_t b) {
    return ConstMatrixMap(t.data() + b * stride, kAttnSeq, kAttnDim);
  };
  auto out = [&](Tensor& t, std::int64_t b) {
    return MatrixMap(t.data() + b * stride, kAttnSeq, kAttnDim);
  };
  auto probabilities = [&](std::int64_t b, RowMajorMatrix& p) {
    p.noalias() = logit_scale * (slice(q, b) * slice(k, b).transpose());
    for (Eigen::Index i = 0; i < p.rows(); ++i) {
      auto row = p.row(i).array();
      row = (row - row.maxCoeff()).exp();
      row /= row.sum();
    }
  };
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel
        {
          RowMajorMatrix p(kAttnSeq, kAttnSeq);
#pragma omp for schedule(static)
          for (std::int64_t b = 0; b < kAttnSlices; ++b) {
            probabilities(b, p);
            out(y, b).noalias() = sigma * (p * slice(v, b));
          }
        }
      },
      [&] {
#pragma omp parallel
        {
          RowMajorMatrix p(kAttnSeq, kAttnSeq), ds(kAttnSeq, kAttnSeq);
#pragma omp for schedule(static)
          for (std::int64_t b = 0; b < kAttnSlices; ++b) {
            probabilities(b, p);
            out(dv, b).noalias() = sigma * (p.transpose() * slice(g, b));
            ds.noalias() = slice(g, b) * slice(v, b).transpose();
            const Eigen::VectorXf row_dot = (p.array() * ds.array()).rowwise().sum().matrix();
            ds.array() = p.array() * (ds.colwise() - row_dot).array();
            out(dq, b).noalias() = (sigma * logit_scale) * (ds * slice(k, b));
            out(dk, b).noalias() = (sigma * logit_scale) * (ds.transpose() * slice(q, b));
          }
        }
      });
  set_flops(state, attention_flops());
}

void bm_attention_unitscale(benchmark::State& state) {
  const Shape shape{kAttnBatch, kAttnHeads, kAttnSeq, kAttnDim};
  const Tensor q = random_tensor(shape, 1), k = random_tensor(shape, 2), v = random_tensor(shape, 3),
               g = random_tensor(shape, 4);
  Tensor y(shape), dq(shape), dk(shape), dv(shape);
  const auto sigma = static_cast<float>(
      attention_unit_scale(kAttnDim, kAttnSeq, 1.0, AttentionMask::kNone));
  const AttentionConfig config{};
  run_fwd_bwd(
      state, [&] { attention_forward(q, k, v, y, config, sigma); },
      [&] { attention_backward(g, q, k, v, dq, dk, dv, config, sigma, sigma, sigma); });
  set_flops(state, attention_flops());
}

// ---------------------------------------------------------------------------------------------
// losses: cross_entropy on logits [4096, 1024] (mean, unit-scaled gradient); mse_loss on 2^22
// ---------------------------------------------------------------------------------------------

void bm_cross_entropy_baseline(benchmark::State& state) {
  const Tensor logits = random_tensor({kRows, kCols}, 1);
  const Tensor labels = random_ids({kRows}, kCols, 2);
  const std::int32_t* label = labels.data_as<std::int32_t>();
  Tensor dz({kRows, kCols});
  const auto beta = static_cast<float>(cross_entropy_grad_scale(kCols));
  float loss = 0;
  auto lse = [](const ConstArrayMap& z) {
    const float top = z.maxCoeff();
    return top + std::log((z - top).exp().sum());
  };
  run_fwd_bwd(
      state,
      [&] {
        double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (std::int64_t r = 0; r < kRows; ++r) {
          const ConstArrayMap z = chunk(logits.data(), r * kCols, kCols);
          total += static_cast<double>(lse(z) - z(static_cast<Eigen::Index>(label[r])));
        }
        loss = static_cast<float>(total / static_cast<double>(kRows));
        benchmark::DoNotOptimize(loss);
      },
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) {
          const ConstArrayMap z = chunk(logits.data(), r * kCols, kCols);
          ArrayMap d = chunk(dz.data(), r * kCols, kCols);
          d = beta * (z - lse(z)).exp();
          d(static_cast<Eigen::Index>(label[r])) -= beta;
        }
      });
  set_bytes(state, 3 * kRows * kCols);  // fwd: read z; bwd: read z, write dz
}

void bm_cross_entropy_unitscale(benchmark::State& state) {
  const Tensor logits = random_tensor({kRows, kCols}, 1);
  const Tensor labels = random_ids({kRows}, kCols, 2);
  Tensor dz({kRows, kCols});
  const auto beta = static_cast<float>(cross_entropy_grad_scale(kCols));
  run_fwd_bwd(
      state,
      [&] {
        float loss =
            cross_entropy_forward(logits, labels, 1.0, Reduction::kMean, kDefaultIgnoreIndex);
        benchmark::DoNotOptimize(loss);
      },
      [&] {
        cross_entropy_backward(logits, labels, 1.0f, dz, 1.0, Reduction::kMean,
                               kDefaultIgnoreIndex, LossGradient::kUnit, beta);
      });
  set_bytes(state, 3 * kRows * kCols);
}

void bm_mse_loss_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2);
  Tensor da({n}), db({n});
  const auto beta = static_cast<float>(mse_loss_grad_scale());
  run_fwd_bwd(
      state,
      [&] {
        double total = 0;
#pragma omp parallel reduction(+ : total)
        {
          const auto threads = static_cast<std::int64_t>(omp_get_num_threads());
          const auto t = static_cast<std::int64_t>(omp_get_thread_num());
          const std::int64_t begin = n * t / threads, end = n * (t + 1) / threads;
          total += static_cast<double>(
              (chunk(a.data(), begin, end - begin) - chunk(b.data(), begin, end - begin))
                  .square()
                  .sum());
        }
        float loss = static_cast<float>(total / static_cast<double>(n));
        benchmark::DoNotOptimize(loss);
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          ArrayMap dac = chunk(da.data(), i, c);
          dac = (2.0f * beta) * (chunk(a.data(), i, c) - chunk(b.data(), i, c));
          chunk(db.data(), i, c) = -dac;
        });
      });
  set_bytes(state, 6 * n);  // fwd: read a, b; bwd: read a, b, write da, db
}

void bm_mse_loss_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2);
  Tensor da({n}), db({n});
  const auto beta = static_cast<float>(mse_loss_grad_scale());
  run_fwd_bwd(
      state,
      [&] {
        float loss = mse_loss_forward(a, b, Reduction::kMean);
        benchmark::DoNotOptimize(loss);
      },
      [&] {
        mse_loss_backward(a, b, 1.0f, da, db, Reduction::kMean, LossGradient::kUnit, beta, beta);
      });
  set_bytes(state, 6 * n);
}

// ---------------------------------------------------------------------------------------------
// embedding: V = 4096, d = 256, 4096 ids
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kVocab = 4096, kEmbedDim = 256, kTokens = 4096;

// fwd: read ids and T rows, write T rows; bwd: read ids and g (T rows), write the V-row table.
constexpr std::int64_t kEmbeddingFloats = 2 * kTokens + 3 * kTokens * kEmbedDim + kVocab * kEmbedDim;

void bm_embedding_baseline(benchmark::State& state) {
  const Tensor ids = random_ids({kTokens}, kVocab, 1), table = random_tensor({kVocab, kEmbedDim}, 2),
               g = random_tensor({kTokens, kEmbedDim}, 3);
  Tensor y({kTokens, kEmbedDim}), dtable({kVocab, kEmbedDim});
  const std::int32_t* id = ids.data_as<std::int32_t>();
  const auto beta = static_cast<float>(std::sqrt(static_cast<double>(kVocab) / static_cast<double>(kTokens)));
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t n = 0; n < kTokens; ++n) {
          y.matrix().row(n) = table.matrix().row(static_cast<Eigen::Index>(id[n]));
        }
      },
      [&] {
        // Each thread owns a band of columns, so the scatter-add needs no synchronisation.
        parallel_ranges(kEmbedDim, [&](std::int64_t c0, std::int64_t cols) {
          MatrixMap dt = dtable.matrix();
          dt.middleCols(c0, cols).setZero();
          for (std::int64_t n = 0; n < kTokens; ++n) {
            dt.block(static_cast<Eigen::Index>(id[n]), c0, 1, cols) +=
                g.matrix().block(n, c0, 1, cols);
          }
          dt.middleCols(c0, cols) *= beta;
        });
      });
  set_bytes(state, kEmbeddingFloats);
}

void bm_embedding_unitscale(benchmark::State& state) {
  const Tensor ids = random_ids({kTokens}, kVocab, 1), table = random_tensor({kVocab, kEmbedDim}, 2),
               g = random_tensor({kTokens, kEmbedDim}, 3);
  Tensor y({kTokens, kEmbedDim}), dtable({kVocab, kEmbedDim});
  const auto beta = static_cast<float>(std::sqrt(static_cast<double>(kVocab) / static_cast<double>(kTokens)));
  run_fwd_bwd(
      state, [&] { embedding_forward(ids, table, y, 1.0f); },
      [&] { embedding_backward(g, ids, dtable, beta); });
  set_bytes(state, kEmbeddingFloats);
}

// ---------------------------------------------------------------------------------------------
// conv1d: x [8, 192, 448], W [320, 192, 11], bias, padding 5 (so L_out = 448), stride 1
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kConvBatch = 8, kConvIn = 192, kConvLength = 448, kConvOut = 320,
                       kConvKernel = 11, kConvPadding = 5;
constexpr std::int64_t kConvLengthOut = kConvLength + 2 * kConvPadding - kConvKernel + 1;
constexpr std::int64_t kConvPatch = kConvIn * kConvKernel;

double conv1d_flops() {
  return 3.0 * static_cast<double>(kConvBatch) * gemm_flops(kConvOut, kConvLengthOut, kConvPatch);
}

// Baseline: per sample, im2col with Eigen block copies, one Eigen GEMM per product (Eigen
// threads each GEMM), col2im.
void bm_conv1d_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kConvBatch, kConvIn, kConvLength}, 1),
               w = random_tensor({kConvOut, kConvIn, kConvKernel}, 2),
               bias = random_tensor({kConvOut}, 3),
               g = random_tensor({kConvBatch, kConvOut, kConvLengthOut}, 4);
  Tensor y({kConvBatch, kConvOut, kConvLengthOut}), dx({kConvBatch, kConvIn, kConvLength}),
      dw({kConvOut, kConvIn, kConvKernel}), dbias({kConvOut});
  const float alpha = 1.0f / std::sqrt(static_cast<float>(kConvPatch));
  const float beta = alpha;
  const ConstMatrixMap wm(w.data(), kConvOut, kConvPatch);
  MatrixMap dwm(dw.data(), kConvOut, kConvPatch);
  RowMajorMatrix cols(kConvPatch, kConvLengthOut), dcols(kConvPatch, kConvLengthOut);
  // The valid output range [first, last) of tap j (offset j − padding).
  auto valid = [](std::int64_t j) {
    const std::int64_t offset = j - kConvPadding;
    const std::int64_t first = std::max<std::int64_t>(0, -offset);
    const std::int64_t last = std::min(kConvLengthOut, kConvLength - offset);
    return std::pair{first, last};
  };
  auto im2col = [&](std::int64_t n) {
    const ConstMatrixMap xs(x.data() + n * kConvIn * kConvLength, kConvIn, kConvLength);
    cols.setZero();
    for (std::int64_t c = 0; c < kConvIn; ++c) {
      for (std::int64_t j = 0; j < kConvKernel; ++j) {
        const auto [first, last] = valid(j);
        cols.row(c * kConvKernel + j).segment(first, last - first) =
            xs.row(c).segment(first + j - kConvPadding, last - first);
      }
    }
  };
  run_fwd_bwd(
      state,
      [&] {
        for (std::int64_t n = 0; n < kConvBatch; ++n) {
          im2col(n);
          MatrixMap ys(y.data() + n * kConvOut * kConvLengthOut, kConvOut, kConvLengthOut);
          ys.noalias() = alpha * (wm * cols);
          ys.colwise() += alpha * bias.view().vector();
        }
      },
      [&] {
        dwm.setZero();
        VectorMap db = dbias.view().vector();
        db.setZero();
        for (std::int64_t n = 0; n < kConvBatch; ++n) {
          const ConstMatrixMap gs(g.data() + n * kConvOut * kConvLengthOut, kConvOut,
                                  kConvLengthOut);
          db += gs.rowwise().sum();
          im2col(n);
          dwm.noalias() += gs * cols.transpose();
          dcols.noalias() = beta * (wm.transpose() * gs);
          MatrixMap dxs(dx.data() + n * kConvIn * kConvLength, kConvIn, kConvLength);
          dxs.setZero();
          for (std::int64_t c = 0; c < kConvIn; ++c) {
            for (std::int64_t j = 0; j < kConvKernel; ++j) {
              const auto [first, last] = valid(j);
              dxs.row(c).segment(first + j - kConvPadding, last - first) +=
                  dcols.row(c * kConvKernel + j).segment(first, last - first);
            }
          }
        }
        dwm *= beta;
        db *= beta;
      });
  set_flops(state, conv1d_flops());
}

void bm_conv1d_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kConvBatch, kConvIn, kConvLength}, 1),
               w = random_tensor({kConvOut, kConvIn, kConvKernel}, 2),
               bias = random_tensor({kConvOut}, 3),
               g = random_tensor({kConvBatch, kConvOut, kConvLengthOut}, 4);
  Tensor y({kConvBatch, kConvOut, kConvLengthOut}), dx({kConvBatch, kConvIn, kConvLength}),
      dw({kConvOut, kConvIn, kConvKernel}), dbias({kConvOut});
  const float alpha = 1.0f / std::sqrt(static_cast<float>(kConvPatch));
  const Conv1dGeometry geometry{.padding = kConvPadding};
  run_fwd_bwd(
      state, [&] { conv1d_forward(x, w, bias, y, geometry, alpha); },
      [&] { conv1d_backward(g, x, w, dx, dw, dbias, geometry, alpha, alpha, alpha); });
  set_flops(state, conv1d_flops());
}

// ---------------------------------------------------------------------------------------------
// residual_add (y = α_r r + α_s s; dr = ds = g) and residual_split (branch = skip = x;
// dx = β_b g_b + β_s g_s), τ = 0.5, on 2^22 floats
// ---------------------------------------------------------------------------------------------

const ResidualWeights kResidual = residual_weights(0.5);

void bm_residual_add_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor r = random_tensor({n}, 1), s = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor y({n}), dr({n}), ds({n});
  const auto wr = static_cast<float>(kResidual.branch), ws = static_cast<float>(kResidual.skip);
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(y.data(), i, c) = wr * chunk(r.data(), i, c) + ws * chunk(s.data(), i, c);
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap gc = chunk(g.data(), i, c);
          chunk(dr.data(), i, c) = gc;
          chunk(ds.data(), i, c) = gc;
        });
      });
  set_bytes(state, 6 * n);  // fwd: read r, s, write y; bwd: read g, write dr, ds
}

void bm_residual_add_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor r = random_tensor({n}, 1), s = random_tensor({n}, 2), g = random_tensor({n}, 3);
  Tensor y({n}), dr({n}), ds({n});
  const auto wr = static_cast<float>(kResidual.branch), ws = static_cast<float>(kResidual.skip);
  run_fwd_bwd(
      state, [&] { residual_add_forward(r, s, y, wr, ws); },
      [&] {
        // Backward inputs: residual, skip, y (absent), grad_y.
        call_kernel(backward_of(kResidualAddOp), {ConstTensorView{}, ConstTensorView{}, ConstTensorView{}, g},
                    {dr, ds});
      });
  set_bytes(state, 6 * n);
}

void bm_residual_split_baseline(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), gb = random_tensor({n}, 2), gs = random_tensor({n}, 3);
  Tensor branch({n}), skip({n}), dx({n});
  const auto wb = static_cast<float>(kResidual.branch), ws = static_cast<float>(kResidual.skip);
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap xc = chunk(x.data(), i, c);
          chunk(branch.data(), i, c) = xc;
          chunk(skip.data(), i, c) = xc;
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(dx.data(), i, c) = wb * chunk(gb.data(), i, c) + ws * chunk(gs.data(), i, c);
        });
      });
  set_bytes(state, 6 * n);  // fwd: read x, write branch, skip; bwd: read g_b, g_s, write dx
}

void bm_residual_split_unitscale(benchmark::State& state) {
  const std::int64_t n = kElementwise;
  const Tensor x = random_tensor({n}, 1), gb = random_tensor({n}, 2), gs = random_tensor({n}, 3);
  Tensor branch({n}), skip({n}), dx({n});
  const auto wb = static_cast<float>(kResidual.branch), ws = static_cast<float>(kResidual.skip);
  run_fwd_bwd(
      state, [&] { residual_split_forward(x, branch, skip); },
      [&] { residual_split_backward(gb, gs, dx, wb, ws); });
  set_bytes(state, 6 * n);
}

// ---------------------------------------------------------------------------------------------
// primitives on [4096, 1024]: transpose, slice, concat, sum, max (last axis), exp, where
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kPrimitiveFloats = kRows * kCols;

void bm_transpose_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kCols, kRows}, 2);
  Tensor y({kCols, kRows}), dx({kRows, kCols});
  // Each thread writes its band of output rows.
  auto transpose = [](ConstMatrixMap from, MatrixMap to) {
    parallel_ranges(to.rows(), [&](std::int64_t r0, std::int64_t rows) {
      to.middleRows(r0, rows) = from.middleCols(r0, rows).transpose();
    });
  };
  run_fwd_bwd(
      state, [&] { transpose(x.matrix(), y.matrix()); },
      [&] { transpose(g.matrix(), dx.matrix()); });
  set_bytes(state, 4 * kPrimitiveFloats);
}

void bm_transpose_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kCols, kRows}, 2);
  Tensor y({kCols, kRows}), dx({kRows, kCols});
  run_fwd_bwd(
      state, [&] { transpose_copy(x, y, 0, 1); }, [&] { transpose_copy(g, dx, 0, 1); });
  set_bytes(state, 4 * kPrimitiveFloats);
}

// x[:, 256:768] of [4096, 1024]: fwd reads and writes half; bwd reads half, writes all of dx.
constexpr std::int64_t kSliceStart = 256, kSliceWidth = 512;
constexpr std::int64_t kSliceFloats = kRows * (2 * kSliceWidth + kSliceWidth + kCols);

void bm_slice_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kSliceWidth}, 2);
  Tensor y({kRows, kSliceWidth}), dx({kRows, kCols});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          y.matrix().middleRows(r0, rows) =
              x.matrix().block(r0, kSliceStart, rows, kSliceWidth);
        });
      },
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          MatrixMap d = dx.matrix();
          d.block(r0, 0, rows, kSliceStart).setZero();
          d.block(r0, kSliceStart, rows, kSliceWidth) = g.matrix().middleRows(r0, rows);
          d.block(r0, kSliceStart + kSliceWidth, rows, kCols - kSliceStart - kSliceWidth)
              .setZero();
        });
      });
  set_bytes(state, kSliceFloats);
}

void bm_slice_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows, kSliceWidth}, 2);
  Tensor y({kRows, kSliceWidth}), dx({kRows, kCols});
  run_fwd_bwd(
      state, [&] { slice_forward(x, y, 1, kSliceStart); },
      [&] { slice_backward(g, dx, 1, kSliceStart); });
  set_bytes(state, kSliceFloats);
}

// [4096, 512] ++ [4096, 512] along the last axis, and back.
void bm_concat_baseline(benchmark::State& state) {
  const std::int64_t half = kCols / 2;
  const Tensor a = random_tensor({kRows, half}, 1), b = random_tensor({kRows, half}, 2),
               g = random_tensor({kRows, kCols}, 3);
  Tensor y({kRows, kCols}), da({kRows, half}), db({kRows, half});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          MatrixMap ym = y.matrix();
          ym.block(r0, 0, rows, half) = a.matrix().middleRows(r0, rows);
          ym.block(r0, half, rows, half) = b.matrix().middleRows(r0, rows);
        });
      },
      [&] {
        parallel_ranges(kRows, [&](std::int64_t r0, std::int64_t rows) {
          da.matrix().middleRows(r0, rows) = g.matrix().block(r0, 0, rows, half);
          db.matrix().middleRows(r0, rows) = g.matrix().block(r0, half, rows, half);
        });
      });
  set_bytes(state, 4 * kPrimitiveFloats);
}

void bm_concat_unitscale(benchmark::State& state) {
  const std::int64_t half = kCols / 2;
  const Tensor a = random_tensor({kRows, half}, 1), b = random_tensor({kRows, half}, 2),
               g = random_tensor({kRows, kCols}, 3);
  Tensor y({kRows, kCols}), da({kRows, half}), db({kRows, half});
  run_fwd_bwd(
      state, [&] { concat_forward(a, b, y, 1); }, [&] { concat_backward(g, da, db, 1); });
  set_bytes(state, 4 * kPrimitiveFloats);
}

// Row sums: [4096, 1024] -> [4096]; the backward broadcasts g back over the rows.
void bm_sum_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows}, 2);
  Tensor y({kRows}), dx({kRows, kCols});
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) y[r] = chunk(x.data(), r * kCols, kCols).sum();
      },
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) chunk(dx.data(), r * kCols, kCols).setConstant(g[r]);
      });
  set_bytes(state, 2 * kPrimitiveFloats);
}

void bm_sum_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows}, 2);
  Tensor y({kRows}), dx({kRows, kCols});
  const std::vector<bool> reduced{false, true};
  run_fwd_bwd(
      state, [&] { sum_forward(x, y, reduced, 1.0); },
      [&] { sum_backward(g, dx, reduced, 1.0); });
  set_bytes(state, 2 * kPrimitiveFloats);
}

// Row maxima; the backward routes g to the first argmax of each row.
void bm_max_baseline(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows}, 2);
  Tensor y({kRows}), dx({kRows, kCols});
  run_fwd_bwd(
      state,
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) y[r] = chunk(x.data(), r * kCols, kCols).maxCoeff();
      },
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t r = 0; r < kRows; ++r) {
          Eigen::Index argmax = 0;
          chunk(x.data(), r * kCols, kCols).maxCoeff(&argmax);
          ArrayMap d = chunk(dx.data(), r * kCols, kCols);
          d.setZero();
          d(argmax) = g[r];
        }
      });
  set_bytes(state, 3 * kPrimitiveFloats);  // fwd: read x; bwd: read x, write dx
}

void bm_max_unitscale(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kCols}, 1), g = random_tensor({kRows}, 2);
  Tensor y({kRows}), dx({kRows, kCols});
  run_fwd_bwd(
      state, [&] { max_forward(x, y, 1); }, [&] { max_backward(x, g, dx, 1); });
  set_bytes(state, 3 * kPrimitiveFloats);
}

// y = eˣ, dx = g·y (exp's kernels are reachable through its OpDef only).
void bm_exp_baseline(benchmark::State& state) {
  const std::int64_t n = kPrimitiveFloats;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 2);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(y.data(), i, c) = chunk(x.data(), i, c).exp();
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(dx.data(), i, c) = chunk(g.data(), i, c) * chunk(y.data(), i, c);
        });
      });
  set_bytes(state, 5 * n);  // fwd: read x, write y; bwd: read g, y, write dx
}

void bm_exp_unitscale(benchmark::State& state) {
  const std::int64_t n = kPrimitiveFloats;
  const Tensor x = random_tensor({n}, 1), g = random_tensor({n}, 2);
  Tensor y({n}), dx({n});
  run_fwd_bwd(
      state, [&] { call_kernel(kExpOp, {x}, {y}); },
      [&] { call_kernel(backward_of(kExpOp), {x, y, g}, {dx}); });
  set_bytes(state, 5 * n);
}

// y = cond ? a : b; da = cond ? g : 0, db = cond ? 0 : g.
void bm_where_baseline(benchmark::State& state) {
  const std::int64_t n = kPrimitiveFloats;
  const Tensor cond = random_mask({n}, 1), a = random_tensor({n}, 2), b = random_tensor({n}, 3),
               g = random_tensor({n}, 4);
  Tensor y({n}), da({n}), db({n});
  run_fwd_bwd(
      state,
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          chunk(y.data(), i, c) =
              (chunk(cond.data(), i, c) != 0.0f).select(chunk(a.data(), i, c), chunk(b.data(), i, c));
        });
      },
      [&] {
        parallel_ranges(n, [&](std::int64_t i, std::int64_t c) {
          const ConstArrayMap cc = chunk(cond.data(), i, c), gc = chunk(g.data(), i, c);
          chunk(da.data(), i, c) = (cc != 0.0f).select(gc, 0.0f);
          chunk(db.data(), i, c) = (cc != 0.0f).select(0.0f, gc);
        });
      });
  set_bytes(state, 8 * n);  // fwd: read cond, a, b, write y; bwd: read cond, g, write da, db
}

void bm_where_unitscale(benchmark::State& state) {
  const std::int64_t n = kPrimitiveFloats;
  const Tensor cond = random_mask({n}, 1), a = random_tensor({n}, 2), b = random_tensor({n}, 3),
               g = random_tensor({n}, 4);
  Tensor y({n}), da({n}), db({n});
  run_fwd_bwd(
      state, [&] { where_forward(cond, a, b, y); }, [&] { where_backward(cond, g, da, db); });
  set_bytes(state, 8 * n);
}

// ---------------------------------------------------------------------------------------------
// executor overhead: a chain of tiny nodes, so the time is almost all dispatch
// ---------------------------------------------------------------------------------------------

constexpr std::int64_t kChainNodes = 1000;

// Reference: the same 1000 tiny linear kernels called directly, without the executor.
void bm_executor_direct_kernel_calls(benchmark::State& state) {
  Tensor h[2] = {Tensor::filled({1, 1}, 1.0f), Tensor({1, 1})};
  const Tensor w = Tensor::filled({1, 1}, 1.0f);
  for (auto _ : state) {
    for (std::int64_t i = 0; i < kChainNodes; ++i) {
      linear_forward(h[i % 2], w, {}, h[(i + 1) % 2], 1.0f);
    }
    benchmark::DoNotOptimize(h[0].data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kChainNodes);
}

void bm_executor_per_node_overhead(benchmark::State& state) {
  Graph g;
  Value h = g.input("x", {1, 1});
  const Value w = g.parameter("w", {1, 1});
  for (std::int64_t i = 0; i < kChainNodes; ++i) h = linear(h, w);
  const Value outputs[] = {h};
  Executor exec(g, outputs);
  const Tensor x = Tensor::filled({1, 1}, 1.0f), wt = Tensor::filled({1, 1}, 1.0f);
  exec.bind(g.find("x"), x);
  exec.bind(w, wt);
  for (auto _ : state) exec.run();
  // items_per_second counts nodes: 1e9 / items_per_second is the cost of one node in ns.
  state.SetItemsProcessed(state.iterations() * kChainNodes);
}

// Planning a large graph (the executor's constructor: node order, liveness, preparation of every
// node's GEMMs, the memory plan) for a 10,000-node chain of small linear layers, a mix of the
// forward and backward nodes a deep model has. Goal: under 50 ms.
constexpr std::int64_t kPlannedNodes = 10000;

// Recording the graph bm_executor_plan_large_graph plans (5,000 linears, their backward, a sum):
// shape and attribute checks, the unit-scaling rules, autodiff.
void bm_graph_record_large_graph(benchmark::State& state) {
  for (auto _ : state) {
    Graph g;
    Value h = g.input("x", {8, 16});
    const Value w = g.parameter("w", {16, 16});
    for (std::int64_t i = 0; i < kPlannedNodes / 2; ++i) h = linear(h, w);
    const Value wrt[] = {w};
    benchmark::DoNotOptimize(autodiff(g, sum(h), wrt)[0]);
    state.counters["nodes"] = static_cast<double>(g.nodes().size());
  }
}

// A whole training graph: the u-μP decoder (vocab 256, heads of 32, SwiGLU ×2, batch 16 × 128),
// its backward and one AdamW update per parameter, as record_training_step builds it.
void bm_decoder_build(benchmark::State& state) {
  const auto width = state.range(0);
  const auto depth = static_cast<int>(state.range(1));
  const DecoderConfig config{.width = width, .depth = depth, .heads = width / 32};
  for (auto _ : state) {
    const Parametrization policy(Scheme::kUMuP, {.residual_blocks = depth});
    Graph g(policy.op_scaling());
    Model model(g, policy);
    const TransformerDecoder decoder(model, "", config);
    const Value ids = g.input("ids", {16, 128}, DType::kI32);
    const Value targets = g.input("targets", {16, 128}, DType::kI32);
    const OptimizerStep step = record_training_step(
        model, decoder.loss(ids, targets),
        {.kind = OptimizerKind::kAdamW, .lr = 1.0, .log = [](std::string_view) {}});
    benchmark::DoNotOptimize(step.updates.size());
    state.counters["nodes"] = static_cast<double>(g.nodes().size());
    state.counters["parameters"] = static_cast<double>(model.parameter_count());
  }
}

void bm_executor_plan_large_graph(benchmark::State& state) {
  Graph g;
  Value h = g.input("x", {8, 16});
  const Value w = g.parameter("w", {16, 16});
  for (std::int64_t i = 0; i < kPlannedNodes / 2; ++i) h = linear(h, w);
  const Value wrt[] = {w};
  const Value dw = autodiff(g, sum(h), wrt)[0];
  const Value outputs[] = {h, dw};
  state.counters["nodes"] = static_cast<double>(g.nodes().size());
  for (auto _ : state) {
    Executor exec(g, outputs);
    benchmark::DoNotOptimize(exec.peak_bytes());
  }
}

// ---------------------------------------------------------------------------------------------
// Registration: baseline then unitscale, so each pair sits together in the table.
// ---------------------------------------------------------------------------------------------

template <class Fn>
benchmark::internal::Benchmark* add(const std::string& name, Fn&& fn,
                                    benchmark::TimeUnit unit = benchmark::kMillisecond) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))
      ->UseRealTime()
      ->MinTime(kMinTime)
      ->Unit(unit);
}

// Registers <op>/eigen_baseline/<size> and <op>/unitscale/<size>.
void add_pair(const std::string& op, const std::string& size, void (*baseline)(benchmark::State&),
              void (*unitscale)(benchmark::State&)) {
  add(op + "/eigen_baseline/" + size, baseline);
  add(op + "/unitscale/" + size, unitscale);
}

void register_benchmarks() {
  const std::string flat = std::to_string(kElementwise);
  const std::string rows = std::to_string(kRows) + "x" + std::to_string(kCols);

  for (const std::int64_t n : {kElementwise, kDramSize}) {
    add("memory_bandwidth/copy/" + std::to_string(n),
        [n](benchmark::State& s) { bm_bandwidth_copy(s, n); });
    add("memory_bandwidth/triad/" + std::to_string(n),
        [n](benchmark::State& s) { bm_bandwidth_triad(s, n); });
  }

  for (const std::int64_t n : {std::int64_t{256}, std::int64_t{1024}}) {
    const std::string size = std::to_string(n);
    add("linear/eigen_baseline/" + size, [n](benchmark::State& s) { bm_linear_baseline(s, n); });
    add("linear/unitscale/" + size, [n](benchmark::State& s) { bm_linear_unitscale(s, n); });
  }
  add("matmul/eigen_baseline/1024x1024x1024", [](benchmark::State& s) { bm_matmul_baseline(s, 1, 1024); });
  add("matmul/unitscale/1024x1024x1024", [](benchmark::State& s) { bm_matmul_unitscale(s, 1, 1024); });
  add("matmul/eigen_baseline/16x256x256x256", [](benchmark::State& s) { bm_matmul_baseline(s, 16, 256); });
  add("matmul/unitscale/16x256x256x256", [](benchmark::State& s) { bm_matmul_unitscale(s, 16, 256); });

  add_pair("add", flat, bm_add_baseline, bm_add_unitscale);
  add_pair("add_bias", rows + "+" + std::to_string(kCols), bm_add_bias_baseline,
           bm_add_bias_unitscale);
  add_pair("mul", flat, bm_mul_baseline, bm_mul_unitscale);
  add_pair("scale", flat, bm_scale_baseline, bm_scale_unitscale);

  add_pair("relu", flat, bm_relu_baseline, bm_relu_unitscale);
  add_pair("gelu", flat, bm_gelu_baseline, bm_gelu_unitscale);
  add_pair("gelu_tanh", flat, bm_gelu_tanh_baseline, bm_gelu_tanh_unitscale);
  add_pair("silu", flat, bm_silu_baseline, bm_silu_unitscale);
  add_pair("silu_glu", flat, bm_silu_glu_baseline, bm_silu_glu_unitscale);
  add_pair("dropout", flat, bm_dropout_baseline, bm_dropout_unitscale);
  add_pair("residual_add", flat, bm_residual_add_baseline, bm_residual_add_unitscale);
  add_pair("residual_split", flat, bm_residual_split_baseline, bm_residual_split_unitscale);
  add_pair("mse_loss", flat, bm_mse_loss_baseline, bm_mse_loss_unitscale);

  add_pair("softmax", rows, bm_softmax_baseline, bm_softmax_unitscale);
  add_pair("layer_norm", rows, norm_baseline<true>, bm_layer_norm_unitscale);
  add_pair("rms_norm", rows, norm_baseline<false>, bm_rms_norm_unitscale);
  add_pair("cross_entropy", rows, bm_cross_entropy_baseline, bm_cross_entropy_unitscale);

  add_pair("attention",
           std::to_string(kAttnBatch) + "x" + std::to_string(kAttnHeads) + "x" +
               std::to_string(kAttnSeq) + "x" + std::to_string(kAttnDim),
           bm_attention_baseline, bm_attention_unitscale);
  add_pair("embedding",
           "V" + std::to_string(kVocab) + "_d" + std::to_string(kEmbedDim) + "_T" +
               std::to_string(kTokens),
           bm_embedding_baseline, bm_embedding_unitscale);
  add_pair("conv1d",
           std::to_string(kConvBatch) + "x" + std::to_string(kConvIn) + "x" +
               std::to_string(kConvLength) + "_k" + std::to_string(kConvKernel) + "_out" +
               std::to_string(kConvOut),
           bm_conv1d_baseline, bm_conv1d_unitscale);

  add_pair("transpose", rows, bm_transpose_baseline, bm_transpose_unitscale);
  add_pair("slice", rows, bm_slice_baseline, bm_slice_unitscale);
  add_pair("concat", rows, bm_concat_baseline, bm_concat_unitscale);
  add_pair("sum", rows, bm_sum_baseline, bm_sum_unitscale);
  add_pair("max", rows, bm_max_baseline, bm_max_unitscale);
  add_pair("exp", rows, bm_exp_baseline, bm_exp_unitscale);
  add_pair("where", rows, bm_where_baseline, bm_where_unitscale);

  const std::string chain = std::to_string(kChainNodes);
  add("executor/direct_kernel_calls/" + chain, bm_executor_direct_kernel_calls,
      benchmark::kMicrosecond);
  add("executor/per_node_overhead/" + chain, bm_executor_per_node_overhead,
      benchmark::kMicrosecond);
  add("executor/plan/" + std::to_string(kPlannedNodes), bm_executor_plan_large_graph,
      benchmark::kMillisecond);
  add("graph/record/" + std::to_string(kPlannedNodes), bm_graph_record_large_graph,
      benchmark::kMillisecond);
  add("model/decoder_build/1024x12", bm_decoder_build, benchmark::kMillisecond)->Args({1024, 12});
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  // Every row sets MinTime(kMinTime) itself.
  return unitscale::bench::run_benchmark_program(argc, argv,
                                                 {.add_rows = unitscale::register_benchmarks});
}

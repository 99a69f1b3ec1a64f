// Op benchmarks: forward + backward of each op beside a plain Eigen implementation of the same
// maths (the baseline rows), and the executor's per-node overhead.
//
// Goals (issue 3): unit-scaled linear/matmul forward+backward within 3% of three raw Eigen GEMMs
// at 1024x1024x1024; elementwise ops at >= 50% of memory bandwidth; graph overhead < 1 us/node.

#include <benchmark/benchmark.h>

#include <random>

#include "unitscale/graph/builders/linear.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/linear.hpp"

namespace unitscale {
namespace {

Tensor random_tensor(const Shape& shape, unsigned seed) {
  Tensor t(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (float& v : t.span()) v = normal(rng);
  return t;
}

// ---- linear: y = α x Wᵀ, dx = β_x g W, dW = β_W gᵀ x ----

void BM_linear_fwd_bwd_eigen_baseline(benchmark::State& state) {
  const auto n = state.range(0);
  const Tensor x = random_tensor({n, n}, 1), w = random_tensor({n, n}, 2), g = random_tensor({n, n}, 3);
  RowMajorMatrix y(n, n), dx(n, n), dw(n, n);
  for (auto _ : state) {
    y.noalias() = x.matrix() * w.matrix().transpose();
    dx.noalias() = g.matrix() * w.matrix();
    dw.noalias() = g.matrix().transpose() * x.matrix();
    benchmark::DoNotOptimize(dw.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(6.0 * static_cast<double>(n * n * n), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_linear_fwd_bwd_unit_scaled(benchmark::State& state) {
  const auto n = state.range(0);
  const Tensor x = random_tensor({n, n}, 1), w = random_tensor({n, n}, 2), g = random_tensor({n, n}, 3);
  Tensor y({n, n}), dx({n, n}), dw({n, n});
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (auto _ : state) {
    linear_forward(x, w, {}, y, scale);
    linear_backward(g, x, w, dx, dw, {}, scale, scale, scale);
    benchmark::DoNotOptimize(dw.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(6.0 * static_cast<double>(n * n * n), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

BENCHMARK(BM_linear_fwd_bwd_eigen_baseline)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_linear_fwd_bwd_unit_scaled)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- executor overhead: a chain of tiny nodes, so the time is almost all dispatch ----

void BM_executor_overhead_per_node(benchmark::State& state) {
  const auto nodes = state.range(0);
  Graph g;
  Value h = g.input("x", {1, 1});
  const Value w = g.parameter("w", {1, 1});
  for (std::int64_t i = 0; i < nodes; ++i) h = linear(h, w);
  const Value outputs[] = {h};
  Executor exec(g, outputs);
  const Tensor x = Tensor::filled({1, 1}, 1.0f), wt = Tensor::filled({1, 1}, 1.0f);
  exec.bind(g.find("x"), x);
  exec.bind(w, wt);
  for (auto _ : state) exec.run();
  // items_per_second counts nodes: 1e9 / items_per_second is the cost of one node in ns.
  state.SetItemsProcessed(state.iterations() * nodes);
}
BENCHMARK(BM_executor_overhead_per_node)->Arg(1000)->UseRealTime();

}  // namespace
}  // namespace unitscale

BENCHMARK_MAIN();

// GEMM throughput: unitscale's GEMM engine (ops/gemm.hpp) beside the libraries it is measured
// against, on the same shapes in one run, and a unit-scaled linear layer's forward + backward.
//
// Rows are named gemm/<variant>/M:<M>/N:<N>/K:<K>, for C[M, N] = A[M, K] · B[K, N] with every
// matrix row-major and packed, a fresh output (no bias, no accumulation) and alpha 1. The
// variants of one shape run next to each other:
//   onednn_f32           a raw oneDNN matmul primitive on FP32 operands (created outside the timed
//                        loop; the label names oneDNN's kernel): the yardstick for the FP32 rows
//   onednn_bf16          the same on BF16 operands with an FP32 output: the yardstick for the
//                        BF16 and FP8 rows (skipped where oneDNN has no BF16 matmul)
//   eigen_default        Eigen's `C.noalias() = A * B`, compiled with the library's default flags
//                        (no -march: SSE2 on x86-64 unless UNITSCALE_NATIVE=ON)
//   eigen_native         the same compiled with -march=native (support/eigen_native_gemm.cpp)
//   openblas             cblas_sgemm (left out when CMake finds no OpenBLAS; the context says so)
//   unitscale_f32, unitscale_bf16, unitscale_e4m3xe4m3, unitscale_e5m2xe4m3
//                        unitscale::gemm() with those types of A × B (BF16 as Eigen::bfloat16, FP8
//                        encoded by format/bulk.hpp), after gemm_prepare. The FP8 rows include the
//                        decode to BF16 (or FP32), which is inside gemm(). The label names the
//                        engine and the type the products are formed in (gemm_engine_for,
//                        gemm_compute_type).
// linear_fwd_bwd/<variant>/tokens:1024/in:1024/out:1024 is one forward plus one backward of a
// unit-scaled linear layer without bias, x [tokens, in], W [out, in]: y = α·x·Wᵀ, dx = β_x·g·W,
// dW = β_W·gᵀ·x with α = β_x = in^-½ and β_W = tokens^-½ (ops/linear.hpp), FP32:
//   onednn_f32           the three GEMMs as raw oneDNN primitives (scales as constant output
//                        scales): the baseline
//   unitscale_f32        linear_forward then linear_backward (grad_x and grad_weight)
//   unitscale_fp8        x and W encoded to E4M3 and g to E5M2 (counted), then the same three
//                        GEMMs on those codes: FP8 training's linear layer
// with counters fwd_ms and bwd_ms splitting the wall time per iteration. PyTorch's figure for the
// same layer comes from benchmarks/compare/linear_torch.py (benchmarks/compare/run.sh runs both).
//
// Counters. GFLOPS is 2·M·N·K per GEMM (three GEMMs for linear_fwd_bwd) per wall-clock second,
// in units of 10^9/s, so ratios read off directly; x_onednn divides it by the oneDNN yardstick row
// of the same shape and precision class (onednn_f32 for the FP32 rows, eigen and openblas,
// onednn_bf16 for the BF16 and FP8 rows), present when that row ran before it in this run.
//
// Shapes: 1024³ and 2048³, and the training shapes of a width-D transformer on 1024 tokens for
// D in {64, 256, 1024}: M = 1024 with (N, K) = (D, D), (4D, D) (FFN up) and (D, 4D) (FFN down);
// then the matrix-vector shapes (unitscale picks Eigen for FP32 at N = 1), tiny ones, and 64³.
// The context printed first names the CPU, the ISA oneDNN dispatches to, whether BF16 is native,
// the thread counts, OPENBLAS_CORETYPE, the SIMD sets of both Eigen builds, and per shape the
// engine unitscale picks for each operand type.
//
// Every library runs with omp_get_max_threads() threads (OMP_NUM_THREADS; OpenBLAS is told the
// same). Every row uses real time, runs its body once untimed first (first touch, JIT, thread
// start-up) and then for at least kMinTime = 0.2 s (the default of --benchmark_min_time, which
// overrides it: 0.05 for a smoke run); the whole program should take one to two minutes on two
// cores. Quicker looks:
//   bench_gemm --benchmark_filter='M:1024/N:1024/K:1024'   one shape, every variant
//   bench_gemm --benchmark_filter='onednn|unitscale'       unitscale against its yardstick only
//   bench_gemm --benchmark_filter=linear                   the linear layer rows only
//   bench_gemm --benchmark_filter='N:64/K:64/|N:1024/K:1024/|linear' --benchmark_min_time=0.05
//                                                         a "--quick" pass: 1024x64x64, 1024³
// The labels of the onednn rows name oneDNN's kernel (brg:... is brgemm, gemm:jit the older
// GEMM-based one); ONEDNN_VERBOSE=1 in the environment shows the kernels behind the unitscale rows
// too. OpenBLAS (Debian's pthread build) keeps its own thread pool beside OpenMP's; each spins
// briefly after its calls, which can slow the row that follows by a little.
// On a shared machine a busy core stalls every multi-threaded GEMM for up to a scheduler time
// slice; OMP_NUM_THREADS=1 then gives the steadier per-core comparison.

#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <Eigen/Core>
#include <oneapi/dnnl/dnnl.hpp>

#if UNITSCALE_BENCH_OPENBLAS
#include <cblas.h>
#endif

#include "support/bench_context.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/tensor/tensor.hpp"

// support/eigen_native_gemm.cpp, compiled with -march=native.
void eigen_native_gemm(const float* a, const float* b, float* c, long m, long n, long k);
const char* eigen_native_simd();

namespace unitscale {
namespace {

// Seconds per row: the default of --benchmark_min_time (see main).
constexpr double kMinTime = 0.2;

using Clock = std::chrono::steady_clock;
using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

// 64-byte aligned storage, as the library's tensors have, so that no variant is handicapped by
// its operands' alignment.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  explicit AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{64}); }
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) { return true; }
};
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) (Irwin-Hall: four 16-bit uniforms summed and rescaled), filled in
// parallel. No kernel's speed here depends on more than the rough distribution of its inputs.
void fill_random(std::span<float> x, std::uint64_t seed) {
  const std::uint64_t key = splitmix64(seed);
  const float scale = std::sqrt(3.0f) / 65536.0f;
  const auto n = static_cast<std::int64_t>(x.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint64_t bits = splitmix64(key ^ static_cast<std::uint64_t>(i));
    std::uint64_t sum = 0;
    for (int j = 0; j < 4; ++j) sum += (bits >> (16 * j)) & 0xFFFFu;
    x[static_cast<std::size_t>(i)] = static_cast<float>(static_cast<std::int64_t>(sum) - 131072) * scale;
  }
}

// A rows × cols matrix of random values in one of the GEMM types, converted by the format layer
// (FP8), Eigen (BF16) or not at all (FP32).
struct Operand {
  GemmType type = GemmType::kF32;
  AlignedVector<float> f32;
  AlignedVector<Eigen::bfloat16> bf16;
  AlignedVector<float8_e4m3fn> e4m3;
  AlignedVector<float8_e5m2> e5m2;

  Operand(GemmType t, std::int64_t rows, std::int64_t cols, std::uint64_t seed) : type(t) {
    const auto n = static_cast<std::size_t>(rows * cols);
    AlignedVector<float> x(n);
    fill_random(x, seed);
    switch (type) {
      case GemmType::kF32:
        f32 = std::move(x);
        break;
      case GemmType::kBF16:
        bf16.resize(n);
        for (std::size_t i = 0; i < n; ++i) bf16[i] = Eigen::bfloat16(x[i]);
        break;
      case GemmType::kE4M3:
        e4m3.resize(n);
        encode(std::span<const float>(x), std::span<float8_e4m3fn>(e4m3));
        break;
      case GemmType::kE5M2:
        e5m2.resize(n);
        encode(std::span<const float>(x), std::span<float8_e5m2>(e5m2));
        break;
      case GemmType::kF16:
        throw std::invalid_argument("bench_gemm: no f16 rows");
    }
  }

  const void* data() const {
    switch (type) {
      case GemmType::kF32: return f32.data();
      case GemmType::kBF16: return bf16.data();
      case GemmType::kE4M3: return e4m3.data();
      case GemmType::kE5M2: return e5m2.data();
      case GemmType::kF16: break;
    }
    return nullptr;
  }
  const float* floats() const { return f32.data(); }
};

double gemm_flops(std::int64_t m, std::int64_t n, std::int64_t k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

std::string shape_name(std::int64_t m, std::int64_t n, std::int64_t k) {
  return "M:" + std::to_string(m) + "/N:" + std::to_string(n) + "/K:" + std::to_string(k);
}

// ---------------------------------------------------------------------------------------------
// Timing, counters and the ratios to the oneDNN rows
// ---------------------------------------------------------------------------------------------

// What a row is to the x_onednn ratios: a yardstick that records its rate, or a row divided by
// the FP32 or the BF16 yardstick of its shape.
enum class Role { kYardstickF32, kYardstickBF16, kVsF32, kVsBF16 };

// FLOP/s of the yardstick rows that have run, keyed by shape and precision class.
std::map<std::string, double>& yardstick_rates() {
  static std::map<std::string, double> rates;
  return rates;
}

// Runs `body` once untimed and then once per iteration; sets GFLOPS and x_onednn.
template <class Body>
void timed_loop(benchmark::State& state, double flops_per_iteration, const std::string& shape,
                Role role, Body&& body) {
  body();
  const auto start = Clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> elapsed = Clock::now() - start;
  state.counters["GFLOPS"] = benchmark::Counter(flops_per_iteration * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  const double rate = flops_per_iteration * static_cast<double>(state.iterations()) / elapsed.count();
  auto& rates = yardstick_rates();
  switch (role) {
    case Role::kYardstickF32: rates[shape + "/f32"] = rate; return;
    case Role::kYardstickBF16: rates[shape + "/bf16"] = rate; return;
    case Role::kVsF32:
    case Role::kVsBF16: break;
  }
  const auto it = rates.find(shape + (role == Role::kVsF32 ? "/f32" : "/bf16"));
  if (it != rates.end()) state.counters["x_onednn"] = rate / it->second;
}

// Runs a row's set-up and loop, turning an exception (say, a primitive oneDNN cannot create on
// this CPU) into a skipped row with the reason.
template <class Row>
void guarded(benchmark::State& state, Row&& row) {
  try {
    row();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Raw oneDNN
// ---------------------------------------------------------------------------------------------

const dnnl::engine& dnnl_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// op(X), rows × cols as used in the product, stored packed row-major: as rows × cols, or with
// `transposed` as its transpose (cols × rows).
dnnl::memory::desc dnnl_desc(std::int64_t rows, std::int64_t cols, dnnl::memory::data_type type,
                             bool transposed = false) {
  const dnnl::memory::dims strides =
      transposed ? dnnl::memory::dims{1, rows} : dnnl::memory::dims{cols, 1};
  return {{rows, cols}, type, strides};
}

// One matmul primitive C[m, n] = scale · op(A)[m, k] · op(B)[k, n] bound to its buffers, created
// once; run() executes it and waits.
class DnnlMatmul {
 public:
  DnnlMatmul(std::int64_t m, std::int64_t n, std::int64_t k, dnnl::memory::data_type type,
             const void* a, bool a_transposed, const void* b, bool b_transposed, float* c,
             float scale = 1.0f) {
    const dnnl::engine& engine = dnnl_engine();
    const auto a_desc = dnnl_desc(m, k, type, a_transposed);
    const auto b_desc = dnnl_desc(k, n, type, b_transposed);
    const auto c_desc = dnnl_desc(m, n, dnnl::memory::data_type::f32);
    dnnl::primitive_attr attr;
    if (scale != 1.0f) attr.set_output_scales(0, {scale});
    descriptor_ = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_desc, b_desc, c_desc), attr,
                                               engine);
    primitive_ = dnnl::matmul(descriptor_);
    args_ = {{DNNL_ARG_SRC, dnnl::memory(a_desc, engine, const_cast<void*>(a))},
             {DNNL_ARG_WEIGHTS, dnnl::memory(b_desc, engine, const_cast<void*>(b))},
             {DNNL_ARG_DST, dnnl::memory(c_desc, engine, c)}};
  }

  void run() {
    primitive_.execute(stream_, args_);
    stream_.wait();
  }
  std::string implementation() const { return descriptor_.impl_info_str(); }

 private:
  dnnl::stream stream_{dnnl_engine()};
  dnnl::matmul::primitive_desc descriptor_;
  dnnl::matmul primitive_;
  std::unordered_map<int, dnnl::memory> args_;
};

// ---------------------------------------------------------------------------------------------
// GEMM rows
// ---------------------------------------------------------------------------------------------

struct GemmShape {
  std::int64_t m, n, k;
};

std::vector<GemmShape> gemm_shapes() {
  std::vector<GemmShape> shapes;
  auto add = [&shapes](std::int64_t m, std::int64_t n, std::int64_t k) {
    for (const GemmShape& s : shapes) {
      if (s.m == m && s.n == n && s.k == k) return;
    }
    shapes.push_back({m, n, k});
  };
  constexpr std::int64_t kTokens = 1024;
  for (const std::int64_t d : {64, 256, 1024}) {
    add(kTokens, d, d);
    add(kTokens, 4 * d, d);
    add(kTokens, d, 4 * d);
  }
  add(1024, 1024, 1024);
  add(2048, 2048, 2048);
  // Where gemm_engine_for picks Eigen for FP32 (vectors and tiny products), so that the choice can
  // be checked against both engines' rows; and one just above the tiny threshold.
  add(1, 1024, 1024);
  add(1024, 1, 1024);
  add(16, 16, 16);
  add(24, 32, 32);
  add(32, 32, 32);
  add(64, 64, 64);
  return shapes;
}

struct UnitscaleVariant {
  const char* name;
  GemmType a, b;
  Role role;
};
constexpr UnitscaleVariant kUnitscaleVariants[] = {
    {"unitscale_f32", GemmType::kF32, GemmType::kF32, Role::kVsF32},
    {"unitscale_bf16", GemmType::kBF16, GemmType::kBF16, Role::kVsBF16},
    {"unitscale_e4m3xe4m3", GemmType::kE4M3, GemmType::kE4M3, Role::kVsBF16},
    {"unitscale_e5m2xe4m3", GemmType::kE5M2, GemmType::kE4M3, Role::kVsBF16},
};

struct Dims {
  std::int64_t m, n, k;
  std::string shape;
  double flops;
};
Dims dims_of(const benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  return {m, n, k, shape_name(m, n, k), gemm_flops(m, n, k)};
}

void bm_onednn(benchmark::State& state, dnnl::memory::data_type type) {
  guarded(state, [&] {
    const Dims d = dims_of(state);
    const bool bf16 = type == dnnl::memory::data_type::bf16;
    const GemmType gemm_type = bf16 ? GemmType::kBF16 : GemmType::kF32;
    const Operand a(gemm_type, d.m, d.k, 1), b(gemm_type, d.k, d.n, 2);
    AlignedVector<float> c(static_cast<std::size_t>(d.m * d.n));
    DnnlMatmul matmul(d.m, d.n, d.k, type, a.data(), false, b.data(), false, c.data());
    state.SetLabel(matmul.implementation());
    timed_loop(state, d.flops, d.shape, bf16 ? Role::kYardstickBF16 : Role::kYardstickF32,
               [&] { matmul.run(); });
  });
}

void bm_eigen_default(benchmark::State& state) {
  const Dims d = dims_of(state);
  const Operand a(GemmType::kF32, d.m, d.k, 1), b(GemmType::kF32, d.k, d.n, 2);
  AlignedVector<float> c(static_cast<std::size_t>(d.m * d.n));
  const Eigen::Map<const RowMajorF> lhs(a.floats(), d.m, d.k), rhs(b.floats(), d.k, d.n);
  Eigen::Map<RowMajorF> out(c.data(), d.m, d.n);
  state.SetLabel("no -march");  // the context lists the SIMD sets of both Eigen builds
  timed_loop(state, d.flops, d.shape, Role::kVsF32, [&] { out.noalias() = lhs * rhs; });
}

void bm_eigen_native(benchmark::State& state) {
  const Dims d = dims_of(state);
  const Operand a(GemmType::kF32, d.m, d.k, 1), b(GemmType::kF32, d.k, d.n, 2);
  AlignedVector<float> c(static_cast<std::size_t>(d.m * d.n));
  state.SetLabel("-march=native");
  timed_loop(state, d.flops, d.shape, Role::kVsF32,
             [&] { eigen_native_gemm(a.floats(), b.floats(), c.data(), d.m, d.n, d.k); });
}

#if UNITSCALE_BENCH_OPENBLAS
void bm_openblas(benchmark::State& state) {
  const Dims d = dims_of(state);
  const Operand a(GemmType::kF32, d.m, d.k, 1), b(GemmType::kF32, d.k, d.n, 2);
  AlignedVector<float> c(static_cast<std::size_t>(d.m * d.n));
  const auto m = static_cast<blasint>(d.m), n = static_cast<blasint>(d.n),
             k = static_cast<blasint>(d.k);
  state.SetLabel(openblas_get_corename());
  timed_loop(state, d.flops, d.shape, Role::kVsF32, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.floats(), k,
                b.floats(), n, 0.0f, c.data(), n);
  });
}
#endif

struct UnitscaleGemm {
  GemmMatrix a, b;
  GemmOutput c;
};
UnitscaleGemm unitscale_gemm(const Dims& d, GemmType a_type, GemmType b_type, const void* a,
                             const void* b, float* c) {
  return {{.data = a, .type = a_type, .rows = d.m, .cols = d.k},
          {.data = b, .type = b_type, .rows = d.k, .cols = d.n},
          {.data = c, .rows = d.m, .cols = d.n}};
}

// "onednn/bf16": the engine unitscale picks and the type it forms the products in.
std::string engine_label(const UnitscaleGemm& g) {
  const GemmProblem problem = GemmProblem::of(g.a, g.b, g.c, {});
  return std::string(gemm_engine_name(gemm_engine_for(problem))) + "/" +
         std::string(gemm_type_name(gemm_compute_type(problem)));
}

void bm_unitscale(benchmark::State& state, UnitscaleVariant variant) {
  guarded(state, [&] {
    const Dims d = dims_of(state);
    const Operand a(variant.a, d.m, d.k, 1), b(variant.b, d.k, d.n, 2);
    AlignedVector<float> c(static_cast<std::size_t>(d.m * d.n));
    const UnitscaleGemm g = unitscale_gemm(d, variant.a, variant.b, a.data(), b.data(), c.data());
    gemm_prepare(g.a, g.b, g.c);
    state.SetLabel(engine_label(g));
    timed_loop(state, d.flops, d.shape, variant.role, [&] { gemm(g.a, g.b, g.c); });
  });
}

// ---------------------------------------------------------------------------------------------
// Linear layer forward + backward
// ---------------------------------------------------------------------------------------------

struct LinearData {
  std::int64_t tokens, in, out;
  Tensor x, w, g, y, dx, dw;
  float alpha, beta_x, beta_w;
  std::string shape;
  double flops;

  explicit LinearData(const benchmark::State& state)
      : tokens(state.range(0)),
        in(state.range(1)),
        out(state.range(2)),
        x({tokens, in}),
        w({out, in}),
        g({tokens, out}),
        y({tokens, out}),
        dx({tokens, in}),
        dw({out, in}),
        alpha(1.0f / std::sqrt(static_cast<float>(in))),
        beta_x(alpha),  // constrained to the output scale
        beta_w(1.0f / std::sqrt(static_cast<float>(tokens))),
        shape(shape_name(tokens, out, in)),
        flops(3 * gemm_flops(tokens, out, in)) {
    fill_random(x.span(), 1);
    fill_random(w.span(), 2);
    fill_random(g.span(), 3);
  }
};

// Runs fwd() then bwd() per iteration (once untimed first), with fwd_ms and bwd_ms.
template <class Forward, class Backward>
void linear_loop(benchmark::State& state, const LinearData& data, Role role, Forward&& fwd,
                 Backward&& bwd) {
  Clock::duration forward{}, backward{};
  bool warm = false;  // the untimed first run (it creates unitscale's primitives) is not counted
  timed_loop(state, data.flops, data.shape + "/linear", role, [&] {
    const auto t0 = Clock::now();
    fwd();
    const auto t1 = Clock::now();
    bwd();
    if (warm) {
      forward += t1 - t0;
      backward += Clock::now() - t1;
    }
    warm = true;
  });
  using Ms = std::chrono::duration<double, std::milli>;
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["fwd_ms"] = Ms(forward).count() / iterations;
  state.counters["bwd_ms"] = Ms(backward).count() / iterations;
}

void bm_linear_onednn(benchmark::State& state) {
  guarded(state, [&] {
    LinearData d(state);
    constexpr auto f32 = dnnl::memory::data_type::f32;
    // y = α·x·Wᵀ, dx = β_x·g·W, dW = β_W·gᵀ·x, transposes read in place through the strides.
    DnnlMatmul forward(d.tokens, d.out, d.in, f32, d.x.data(), false, d.w.data(), true,
                       d.y.data(), d.alpha);
    DnnlMatmul grad_x(d.tokens, d.in, d.out, f32, d.g.data(), false, d.w.data(), false,
                      d.dx.data(), d.beta_x);
    DnnlMatmul grad_w(d.out, d.in, d.tokens, f32, d.g.data(), true, d.x.data(), false,
                      d.dw.data(), d.beta_w);
    state.SetLabel(forward.implementation());
    linear_loop(
        state, d, Role::kYardstickF32, [&] { forward.run(); },
        [&] {
          grad_x.run();
          grad_w.run();
        });
  });
}

void bm_linear_unitscale(benchmark::State& state) {
  guarded(state, [&] {
    LinearData d(state);
    linear_loop(
        state, d, Role::kVsF32, [&] { linear_forward(d.x, d.w, {}, d.y, d.alpha); },
        [&] { linear_backward(d.g, d.x, d.w, d.dx, d.dw, {}, d.beta_x, d.beta_w, d.beta_w); });
  });
}

// FP8 training's linear layer: x and W quantised to E4M3 for the forward GEMM, the incoming
// gradient to E5M2 for both backward GEMMs (the quantisation counted in the times, as a training
// step pays it), all three on the BF16 units.
void bm_linear_unitscale_fp8(benchmark::State& state) {
  guarded(state, [&] {
    LinearData d(state);
    AlignedVector<float8_e4m3fn> x8(static_cast<std::size_t>(d.x.numel()));
    AlignedVector<float8_e4m3fn> w8(static_cast<std::size_t>(d.w.numel()));
    AlignedVector<float8_e5m2> g8(static_cast<std::size_t>(d.g.numel()));
    auto fp8 = [](const auto& codes, GemmType type, std::int64_t rows, std::int64_t cols,
                  bool transposed) {
      return GemmMatrix{.data = codes.data(), .type = type, .rows = rows, .cols = cols,
                        .transposed = transposed};
    };
    const GemmMatrix x = fp8(x8, GemmType::kE4M3, d.tokens, d.in, false);
    const GemmMatrix w = fp8(w8, GemmType::kE4M3, d.out, d.in, true);
    const GemmMatrix w_plain = fp8(w8, GemmType::kE4M3, d.out, d.in, false);
    const GemmMatrix g = fp8(g8, GemmType::kE5M2, d.tokens, d.out, false);
    const GemmMatrix g_transposed = fp8(g8, GemmType::kE5M2, d.tokens, d.out, true);
    linear_loop(
        state, d, Role::kVsF32,
        [&] {
          encode(std::span<const float>(d.x.span()), std::span(x8));
          encode(std::span<const float>(d.w.span()), std::span(w8));
          gemm(x, w, gemm_output(d.y), {.alpha = d.alpha});
        },
        [&] {
          encode(std::span<const float>(d.g.span()), std::span(g8));
          gemm(g, w_plain, gemm_output(d.dx), {.alpha = d.beta_x});
          gemm(g_transposed, x, gemm_output(d.dw), {.alpha = d.beta_w});
        });
  });
}

// ---------------------------------------------------------------------------------------------
// Context and registration
// ---------------------------------------------------------------------------------------------

void add_context(const std::vector<GemmShape>& shapes) {
  benchmark::AddCustomContext("eigen_default_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_native_simd", eigen_native_simd());
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("openblas_coretype_env", coretype != nullptr ? coretype : "(unset)");
#if UNITSCALE_BENCH_OPENBLAS
  benchmark::AddCustomContext("openblas", std::string(openblas_get_config()) + ", core " +
                                              openblas_get_corename() + ", " +
                                              std::to_string(openblas_get_num_threads()) +
                                              " threads");
#else
  benchmark::AddCustomContext("openblas",
                              "not found when bench_gemm was configured: no openblas rows");
#endif
  for (const GemmShape& s : shapes) {
    const Dims d{s.m, s.n, s.k, shape_name(s.m, s.n, s.k), 0.0};
    std::string engines;
    for (const UnitscaleVariant& variant : kUnitscaleVariants) {
      const UnitscaleGemm g = unitscale_gemm(d, variant.a, variant.b, nullptr, nullptr, nullptr);
      if (!engines.empty()) engines += ", ";
      engines += std::string(variant.name).substr(std::string("unitscale_").size()) + " " +
                 engine_label(g);
    }
    benchmark::AddCustomContext("unitscale_engine " + d.shape, engines);
  }
}

void register_benchmarks(const std::vector<GemmShape>& shapes) {
  auto add = [](const std::string& name, auto fn, std::int64_t a, std::int64_t b, std::int64_t c,
                std::vector<std::string> arg_names) {
    benchmark::RegisterBenchmark(name.c_str(), fn)
        ->Args({a, b, c})
        ->ArgNames(std::move(arg_names))
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  };
  const std::vector<std::string> mnk{"M", "N", "K"};
  for (const GemmShape& s : shapes) {
    add("gemm/onednn_f32", [](benchmark::State& st) { bm_onednn(st, dnnl::memory::data_type::f32); },
        s.m, s.n, s.k, mnk);
    add("gemm/onednn_bf16",
        [](benchmark::State& st) { bm_onednn(st, dnnl::memory::data_type::bf16); }, s.m, s.n, s.k,
        mnk);
    add("gemm/eigen_default", bm_eigen_default, s.m, s.n, s.k, mnk);
    add("gemm/eigen_native", bm_eigen_native, s.m, s.n, s.k, mnk);
#if UNITSCALE_BENCH_OPENBLAS
    add("gemm/openblas", bm_openblas, s.m, s.n, s.k, mnk);
#endif
    for (const UnitscaleVariant& variant : kUnitscaleVariants) {
      add(std::string("gemm/") + variant.name,
          [variant](benchmark::State& st) { bm_unitscale(st, variant); }, s.m, s.n, s.k, mnk);
    }
  }
  const std::vector<std::string> linear{"tokens", "in", "out"};
  add("linear_fwd_bwd/onednn_f32", bm_linear_onednn, 1024, 1024, 1024, linear);
  add("linear_fwd_bwd/unitscale_f32", bm_linear_unitscale, 1024, 1024, 1024, linear);
  add("linear_fwd_bwd/unitscale_fp8", bm_linear_unitscale_fp8, 1024, 1024, 1024, linear);
}

void add_rows() {
#if UNITSCALE_BENCH_OPENBLAS
  openblas_set_num_threads(omp_get_max_threads());
#endif
  const std::vector<GemmShape> shapes = gemm_shapes();
  add_context(shapes);
  register_benchmarks(shapes);
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  return unitscale::bench::run_benchmark_program(
      argc, argv, {.default_min_time = unitscale::kMinTime, .add_rows = unitscale::add_rows});
}

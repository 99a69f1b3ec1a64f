#include "unitscale/ops/gemm.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "gemm/eigen_gemm.hpp"
#include "gemm/onednn_matmul.hpp"
#include "gemm/widen.hpp"
#include "tensor/workspace.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/format_traits.hpp"

namespace unitscale {
namespace {

// Below this many multiply-adds (32³) oneDNN's per-call cost exceeds the work, and Eigen is faster.
constexpr std::int64_t kTinyGemm = std::int64_t{1} << 15;

bool fp8(GemmType t) { return t == GemmType::kE4M3 || t == GemmType::kE5M2; }
bool bf16_exact(GemmType t) { return t == GemmType::kBF16 || fp8(t); }

struct Forced {
  std::optional<GemmEngine> engine;
  bool allow_bf16 = true;
};
Forced& forced() {
  static Forced instance;
  return instance;
}

std::string matrix_string(const GemmMatrix& x) {
  return fmt::format("{}[{}x{}]{}", gemm_type_name(x.type), x.rows, x.cols,
                     x.transposed ? "ᵀ" : "");
}

struct ProblemHash {
  std::size_t operator()(const GemmProblem& p) const {
    std::size_t h = 0;
    auto mix = [&h](std::int64_t v) {
      h ^= std::hash<std::int64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    };
    for (const std::int64_t v : {p.batch, p.m, p.n, p.k, p.a_row_stride, p.b_row_stride,
                                 p.c_row_stride, p.a_batch_stride, p.b_batch_stride,
                                 p.c_batch_stride}) {
      mix(v);
    }
    mix(static_cast<std::int64_t>(p.a_type) | static_cast<std::int64_t>(p.b_type) << 8 |
        std::int64_t{p.a_transposed} << 16 | std::int64_t{p.b_transposed} << 17 |
        std::int64_t{p.bias} << 18 | std::int64_t{p.accumulate} << 19 |
        std::int64_t{p.bias_per_row} << 20);
    return h;
  }
};

GemmType preferred_compute_type(const GemmProblem& p) {
  const Forced& f = forced();
  const bool bf16 = bf16_exact(p.a_type) && bf16_exact(p.b_type) && f.allow_bf16 &&
                    detail::onednn_has_native_bf16() && f.engine != GemmEngine::kEigen;
  return bf16 ? GemmType::kBF16 : GemmType::kF32;
}

// The engine the shape asks for; PlanCache::get falls back to Eigen where oneDNN would only have
// its reference kernel.
GemmEngine preferred_engine(const GemmProblem& p) {
  if (forced().engine) return *forced().engine;
  if (preferred_compute_type(p) == GemmType::kBF16) return GemmEngine::kOneDnn;
  // Measured (docs/performance.md): oneDNN's FP32 products with one output column run at a third
  // of Eigen's speed (with one output row it is the faster), and tiny products are dominated by
  // oneDNN's per-call cost.
  return p.n == 1 || p.m * p.n * p.k < kTinyGemm ? GemmEngine::kEigen : GemmEngine::kOneDnn;
}

// An encoded result is computed detail::kGemmOutputPanelBytes of FP32 at a time: a panel of
// columns, in multiples of 64. The rows stay whole, so a panel of B is a block of B and A is
// read as it is.
std::int64_t panel_columns(const GemmProblem& p) {
  return detail::gemm_output_panel_columns(p.m, p.n);
}

// Matrix `index` of a batch, as a single matrix.
GemmMatrix batch_entry(const GemmMatrix& x, std::int64_t index) {
  GemmMatrix entry = x;
  entry.data =
      static_cast<const std::byte*>(x.data) + index * x.batch_stride * gemm_type_bytes(x.type);
  entry.batch_stride = 0;
  return entry;
}

// Columns [first, first + count) of op(B), in place.
GemmMatrix column_panel(const GemmMatrix& b, std::int64_t first, std::int64_t count) {
  GemmMatrix panel = b;
  panel.row_stride = b.row_stride == 0 ? b.cols : b.row_stride;
  const auto* data = static_cast<const std::byte*>(b.data);
  const int bytes = gemm_type_bytes(b.type);
  if (b.transposed) {  // op(B)'s columns are B's rows
    panel.data = data + first * panel.row_stride * bytes;
    panel.rows = count;
  } else {
    panel.data = data + first * bytes;
    panel.cols = count;
  }
  return panel;
}

// A as the panels read it: converted to the compute type and, where there are several panels,
// untransposed (oneDNN's BRGEMM kernels would copy a transposed A again for each panel; with one
// panel, transposing it first measured slower).
bool untransposes_a(const GemmProblem& p) { return p.a_transposed && p.n > panel_columns(p); }
GemmMatrix panel_a_layout(const GemmProblem& p, const GemmMatrix& a, GemmType compute) {
  return untransposes_a(p) ? detail::row_major_layout(a, compute)
                           : detail::widened_layout(a, compute);
}
GemmMatrix panel_a(const GemmProblem& p, const GemmMatrix& a, GemmType compute) {
  return untransposes_a(p) ? detail::row_major_copy(a, compute) : detail::widen(a, compute, 1);
}

// The panel of columns [first, first + count) of one matrix of the batch, as an FP32 GEMM into
// `buffer` (packed rows × count): operands, output and options. `a` and `b` are as the GEMM reads
// them: A as panel_a() made it and B's block of columns packed (or their layouts when planning).
struct Panel {
  GemmMatrix a, b;
  GemmOutput c;
  GemmOptions options;
};
Panel panel_of(const GemmProblem& p, const GemmMatrix& a, const GemmMatrix& b,
               const GemmOptions& options, std::int64_t first, std::int64_t count, float* buffer) {
  Panel panel{a, b, {.data = buffer, .rows = p.m, .cols = count}, options};
  panel.options.batch = 1;
  if (options.bias != nullptr && !options.bias_per_row) panel.options.bias = options.bias + first;
  return panel;
}

// How one problem runs: decided and, for oneDNN, created once.
struct Plan {
  GemmEngine engine = GemmEngine::kOneDnn;
  GemmType compute = GemmType::kF32;
  std::unique_ptr<detail::OneDnnMatmul> matmul;
  bool bias_in_gemm = false;  // oneDNN adds the bias (else gemm() does, after the product)
  std::atomic<std::uint64_t> calls{0};
};

class PlanCache {
 public:
  Plan& get(const GemmProblem& problem, const GemmMatrix& a, const GemmMatrix& b) {
    {
      std::shared_lock lock(mutex_);
      if (auto it = plans_.find(problem); it != plans_.end()) return *it->second;
    }
    auto plan = std::make_unique<Plan>();
    plan->engine = preferred_engine(problem);
    plan->compute = preferred_compute_type(problem);
    if (problem.c_type != GemmType::kF32) {
      // An encoded result runs as FP32 panels (gemm_encoded): their plans are made here, and this
      // one only reports how they run and counts the calls.
      const GemmMatrix wa = panel_a_layout(problem, batch_entry(a, 0), plan->compute);
      const float placeholder = 0.0f;
      const GemmOptions options{.bias = problem.bias ? &placeholder : nullptr,
                                .bias_per_row = problem.bias_per_row};
      const std::int64_t columns = panel_columns(problem);
      for (const std::int64_t count : {problem.n % columns, columns}) {  // the widest last
        if (count == 0) continue;
        const GemmMatrix block =
            detail::packed_layout(column_panel(batch_entry(b, 0), 0, count), plan->compute);
        const Panel panel = panel_of(problem, wa, block, options, 0, count, nullptr);
        const Plan& panel_plan =
            get(GemmProblem::of(panel.a, panel.b, panel.c, panel.options), panel.a, panel.b);
        plan->engine = panel_plan.engine;
        plan->compute = panel_plan.compute;
      }
    } else if (plan->engine == GemmEngine::kOneDnn) {
      // The primitive sees the operands as widened: one matrix, packed unless already of the
      // compute type.
      const GemmMatrix wa = detail::widened_layout(a, plan->compute);
      const GemmMatrix wb = detail::widened_layout(b, plan->compute);
      GemmProblem single = problem;
      single.batch = 1;
      single.a_type = single.b_type = plan->compute;
      single.a_row_stride = wa.row_stride == 0 ? wa.cols : wa.row_stride;
      single.b_row_stride = wb.row_stride == 0 ? wb.cols : wb.row_stride;
      single.a_batch_stride = single.b_batch_stride = single.c_batch_stride = 0;
      // The bias as a post-op where oneDNN has a fast kernel for it. oneDNN 2.6 runs only its
      // reference kernel (hundreds of times slower) with a per-row bias, or with a per-column one
      // when B is transposed (linear's weight), so there gemm() adds the bias itself.
      single.bias = problem.bias && !problem.bias_per_row;
      single.bias_per_row = false;
      plan->matmul = std::make_unique<detail::OneDnnMatmul>(single);  // outside the lock
      plan->bias_in_gemm = single.bias;
      if (single.bias && plan->matmul->is_reference()) {
        single.bias = false;
        plan->matmul = std::make_unique<detail::OneDnnMatmul>(single);
        plan->bias_in_gemm = false;
      }
      if (plan->matmul->is_reference()) {  // never the reference kernels: Eigen is far faster
        plan->matmul.reset();
        plan->engine = GemmEngine::kEigen;
        plan->compute = GemmType::kF32;
      }
    }
    std::unique_lock lock(mutex_);
    auto [it, inserted] = plans_.try_emplace(problem, std::move(plan));
    return *it->second;
  }

  std::vector<GemmProfileEntry> profile() const {
    std::shared_lock lock(mutex_);
    std::vector<GemmProfileEntry> entries;
    for (const auto& [problem, plan] : plans_) {
      entries.push_back({problem, plan->engine, plan->compute, plan->calls.load()});
    }
    std::sort(entries.begin(), entries.end(),
              [](const auto& x, const auto& y) { return x.calls > y.calls; });
    return entries;
  }

  void reset_counts() {
    std::shared_lock lock(mutex_);
    for (auto& entry : plans_) entry.second->calls = 0;
  }

  std::size_t primitive_count() const {
    std::shared_lock lock(mutex_);
    return static_cast<std::size_t>(std::count_if(
        plans_.begin(), plans_.end(), [](const auto& e) { return e.second->matmul != nullptr; }));
  }

  void clear() {
    std::unique_lock lock(mutex_);
    plans_.clear();
    ++generation_;
  }

  // Plans live until clear(), which bumps the generation: a plan pointer remembered with the
  // generation it was found in is valid while the generation is unchanged.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<GemmProblem, std::unique_ptr<Plan>, ProblemHash> plans_;
  std::atomic<std::uint64_t> generation_{0};
};

PlanCache& plan_cache() {
  static PlanCache cache;
  return cache;
}

// The plan of a problem given without its operands (their layout is in the problem).
Plan& plan_for(const GemmProblem& p) {
  auto operand = [](GemmType type, bool transposed, std::int64_t rows, std::int64_t cols,
                    std::int64_t row_stride, std::int64_t batch_stride) {
    return GemmMatrix{.type = type, .rows = transposed ? cols : rows,
                      .cols = transposed ? rows : cols, .row_stride = row_stride,
                      .batch_stride = batch_stride, .transposed = transposed};
  };
  return plan_cache().get(p, operand(p.a_type, p.a_transposed, p.m, p.k, p.a_row_stride, p.a_batch_stride),
                          operand(p.b_type, p.b_transposed, p.k, p.n, p.b_row_stride, p.b_batch_stride));
}

// The plan of `problem`, through a per-thread memory of the last few problems: kernels call the
// same few GEMMs over and over, and this skips the shared lock and the hash (about 200 ns, which
// showed on tiny GEMMs).
Plan& find_plan(const GemmProblem& problem, const GemmMatrix& a, const GemmMatrix& b) {
  struct Recent {
    GemmProblem problem;
    Plan* plan = nullptr;
    std::uint64_t generation = 0;
  };
  constexpr std::size_t kRecent = 4;
  thread_local std::array<Recent, kRecent> recent{};
  thread_local std::size_t next = 0;
  PlanCache& cache = plan_cache();
  const std::uint64_t generation = cache.generation();
  for (const Recent& r : recent) {
    if (r.plan != nullptr && r.generation == generation && r.problem == problem) return *r.plan;
  }
  Plan& plan = cache.get(problem, a, b);
  recent[next] = {problem, &plan, generation};
  next = (next + 1) % kRecent;
  return plan;
}

// C = alpha·bias (or 0), added to C when accumulating: the whole GEMM when k = 0.
void empty_sum(const GemmOutput& c, const GemmOptions& options, std::int64_t row_stride,
               std::int64_t batch_stride) {
  for (std::int64_t b = 0; b < options.batch; ++b) {
    for (std::int64_t i = 0; i < c.rows; ++i) {
      float* row = static_cast<float*>(c.data) + b * batch_stride + i * row_stride;
      for (std::int64_t j = 0; j < c.cols; ++j) {
        const float* bias = options.bias;
        const float value = bias == nullptr         ? 0.0f
                            : options.bias_per_row ? options.alpha * bias[i]
                                                   : options.alpha * bias[j];
        row[j] = options.accumulate ? row[j] + value : value;
      }
    }
  }
}

// C += scaled bias, per row or per column: where oneDNN cannot take the bias as a fast post-op.
void add_bias(float* c, const GemmProblem& p, const float* scaled_bias) {
  const bool parallel = p.m * p.n >= (std::int64_t{1} << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t r = 0; r < p.m; ++r) {
    float* row = c + r * p.c_row_stride;
    if (p.bias_per_row) {
      for (std::int64_t j = 0; j < p.n; ++j) row[j] += scaled_bias[r];
    } else {
      for (std::int64_t j = 0; j < p.n; ++j) row[j] += scaled_bias[j];
    }
  }
}

// An FP32 result: the plan's engine on the operands widened to its compute type (in the calling
// thread's workspace, which the caller's frame releases).
void gemm_f32(const GemmProblem& p, const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
              const GemmOptions& options, bool profiled = true) {
  if (p.k == 0) return empty_sum(c, options, p.c_row_stride, p.c_batch_stride);
  Plan& plan = find_plan(p, a, b);
  if (profiled) plan.calls.fetch_add(1, std::memory_order_relaxed);
  const GemmMatrix wa = detail::widen(a, plan.compute, p.batch);
  const GemmMatrix wb = detail::widen(b, plan.compute, p.batch);
  const float output_scale = options.alpha * a.scale * b.scale;
  const float* bias = nullptr;
  if (options.bias != nullptr) {
    const std::int64_t count = p.bias_per_row ? p.m : p.n;
    float* scaled = detail::Workspace::of_this_thread().take_floats(count);
    for (std::int64_t j = 0; j < count; ++j) scaled[j] = options.alpha * options.bias[j];
    bias = scaled;
  }
  const int a_bytes = gemm_type_bytes(wa.type), b_bytes = gemm_type_bytes(wb.type);
  for (std::int64_t i = 0; i < p.batch; ++i) {
    if (plan.engine == GemmEngine::kEigen) {
      detail::eigen_gemm(wa, wb, c, i, output_scale, bias, p.bias_per_row, p.accumulate);
      continue;
    }
    float* out = static_cast<float*>(c.data) + i * p.c_batch_stride;
    plan.matmul->run(static_cast<const std::byte*>(wa.data) + i * wa.batch_stride * a_bytes,
                     static_cast<const std::byte*>(wb.data) + i * wb.batch_stride * b_bytes, out,
                     plan.bias_in_gemm ? bias : nullptr, output_scale);
    if (bias != nullptr && !plan.bias_in_gemm) add_bias(out, p, bias);
  }
}

const FormatSpec& output_format(GemmType type) {
  switch (type) {
    case GemmType::kBF16:
      return FormatTraits<bfloat16>::kSpec;
    case GemmType::kF16:
      return FormatTraits<float16>::kSpec;
    case GemmType::kE4M3:
      return FormatTraits<float8_e4m3fn>::kSpec;
    case GemmType::kE5M2:
      return FormatTraits<float8_e5m2>::kSpec;
    case GemmType::kF32:
      break;
  }
  UNITSCALE_ASSERT(false && "an FP32 output is not encoded");
  return FormatTraits<float16>::kSpec;
}

// An encoded result: per matrix of the batch, A converted once (panel_a), then panel by panel B's
// block of columns packed, an FP32 GEMM into the workspace, and its encoding into C.
void gemm_encoded(const GemmProblem& p, const GemmMatrix& a, const GemmMatrix& b,
                  const GemmOutput& c, const GemmOptions& options) {
  detail::Workspace& workspace = detail::Workspace::of_this_thread();
  Plan& plan = find_plan(p, a, b);  // the profile's entry: the panels are not counted apart
  plan.calls.fetch_add(1, std::memory_order_relaxed);
  const GemmType compute = preferred_compute_type(p);
  const std::int64_t columns = panel_columns(p);
  float* buffer = workspace.take_floats(p.m * columns);
  const FormatSpec& format = output_format(c.type);
  const int code_bytes = gemm_type_bytes(c.type);
  const Quantization quantization{.overflow = c.overflow};
  for (std::int64_t i = 0; i < p.batch; ++i) {
    const detail::Workspace::Frame matrix_frame(workspace);
    const GemmMatrix a_rows = panel_a(p, batch_entry(a, i), compute);
    for (std::int64_t first = 0; first < p.n; first += columns) {
      const std::int64_t count = std::min(columns, p.n - first);
      {
        const detail::Workspace::Frame frame(workspace);
        const GemmMatrix block =
            detail::packed_copy(column_panel(batch_entry(b, i), first, count), compute);
        const Panel panel = panel_of(p, a_rows, block, options, first, count, buffer);
        gemm_f32(GemmProblem::of(panel.a, panel.b, panel.c, panel.options), panel.a, panel.b,
                 panel.c, panel.options, /*profiled=*/false);
      }
      auto* out = static_cast<std::byte*>(c.data) + (i * p.c_batch_stride + first) * code_bytes;
      if (count == p.c_row_stride) {  // whole rows: one span, which the encoder splits itself
        detail::encode_codes({buffer, static_cast<std::size_t>(p.m * count)}, out,
                             static_cast<std::size_t>(p.m * count), code_bytes, format,
                             quantization);
        continue;
      }
      const bool parallel = p.m * count >= (std::int64_t{1} << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
      for (std::int64_t r = 0; r < p.m; ++r) {
        detail::encode_codes({buffer + r * count, static_cast<std::size_t>(count)},
                             out + r * p.c_row_stride * code_bytes, static_cast<std::size_t>(count),
                             code_bytes, format, quantization);
      }
    }
  }
}

}  // namespace

std::string_view gemm_type_name(GemmType type) {
  switch (type) {
    case GemmType::kF32: return "f32";
    case GemmType::kBF16: return "bf16";
    case GemmType::kF16: return "f16";
    case GemmType::kE4M3: return "float8_e4m3fn";
    case GemmType::kE5M2: return "float8_e5m2";
  }
  return "?";
}

int gemm_type_bytes(GemmType type) {
  switch (type) {
    case GemmType::kF32: return 4;
    case GemmType::kBF16:
    case GemmType::kF16: return 2;
    case GemmType::kE4M3:
    case GemmType::kE5M2: return 1;
  }
  return 0;
}

std::string_view gemm_engine_name(GemmEngine engine) {
  return engine == GemmEngine::kOneDnn ? "onednn" : "eigen";
}

GemmProblem GemmProblem::of(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                            const GemmOptions& options, std::string_view op) {
  auto fail = [&](std::string_view what) {
    return Error(fmt::format("{}: {} · {} -> {}[{}x{}] (batch {}): {}", op, matrix_string(a),
                             matrix_string(b), gemm_type_name(c.type), c.rows, c.cols,
                             options.batch, what));
  };
  for (const std::int64_t d : {a.rows, a.cols, b.rows, b.cols, c.rows, c.cols, options.batch}) {
    if (d < 0) throw fail("negative dimension");
  }
  if (a.used_cols() != b.used_rows()) {
    throw fail(fmt::format("inner dimensions differ ({} vs {}): expected op(A) [M, K] and op(B) "
                           "[K, N]",
                           a.used_cols(), b.used_rows()));
  }
  if (c.rows != a.used_rows() || c.cols != b.used_cols()) {
    throw fail(fmt::format("expected the output [{}x{}]", a.used_rows(), b.used_cols()));
  }
  if ((a.row_stride != 0 && a.row_stride < a.cols) || (b.row_stride != 0 && b.row_stride < b.cols) ||
      (c.row_stride != 0 && c.row_stride < c.cols)) {
    throw fail("a row stride is smaller than the row");
  }
  if (options.batch > 1 && c.batch_stride != 0 &&
      c.batch_stride < c.rows * (c.row_stride == 0 ? c.cols : c.row_stride)) {
    throw fail("the output's batch stride makes its matrices overlap");
  }
  if (c.type != GemmType::kF32 && options.accumulate) {
    throw fail(
        fmt::format("cannot accumulate into a {} output (only into f32)", gemm_type_name(c.type)));
  }
  if (!std::isfinite(options.alpha) || !std::isfinite(a.scale) || !std::isfinite(b.scale)) {
    throw fail(fmt::format("alpha {} and the scales {} and {} must be finite", options.alpha,
                           a.scale, b.scale));
  }
  GemmProblem p;
  p.batch = options.batch;
  p.m = c.rows;
  p.n = c.cols;
  p.k = a.used_cols();
  p.a_type = a.type;
  p.b_type = b.type;
  p.c_type = c.type;
  p.a_transposed = a.transposed;
  p.b_transposed = b.transposed;
  // Packed strides are spelled out, so that equal layouts are equal problems.
  p.a_row_stride = a.row_stride == 0 ? a.cols : a.row_stride;
  p.b_row_stride = b.row_stride == 0 ? b.cols : b.row_stride;
  p.c_row_stride = c.row_stride == 0 ? c.cols : c.row_stride;
  if (p.batch > 1) {
    p.a_batch_stride = a.batch_stride;
    p.b_batch_stride = b.batch_stride;
    p.c_batch_stride = c.batch_stride == 0 ? c.rows * p.c_row_stride : c.batch_stride;
  }
  p.bias = options.bias != nullptr;
  p.bias_per_row = p.bias && options.bias_per_row;
  p.accumulate = options.accumulate;
  return p;
}

std::string GemmProblem::to_string() const {
  return fmt::format("{}{}[{}x{}]{} · {}[{}x{}]{} -> {}[{}x{}]{}{}",
                     batch > 1 ? fmt::format("{} x ", batch) : "", gemm_type_name(a_type), m, k,
                     a_transposed ? "ᵀ" : "", gemm_type_name(b_type), k, n, b_transposed ? "ᵀ" : "",
                     gemm_type_name(c_type), m, n,
                     bias ? (bias_per_row ? " +row bias" : " +bias") : "", accumulate ? " +=" : "");
}

GemmType gemm_compute_type(const GemmProblem& problem) {
  if (problem.batch == 0 || problem.m == 0 || problem.n == 0 || problem.k == 0) {
    return preferred_compute_type(problem);
  }
  return plan_for(problem).compute;
}

GemmEngine gemm_engine_for(const GemmProblem& problem) {
  if (problem.batch == 0 || problem.m == 0 || problem.n == 0 || problem.k == 0) {
    return preferred_engine(problem);
  }
  return plan_for(problem).engine;
}

void gemm(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
          const GemmOptions& options, std::string_view op) {
  const GemmProblem p = GemmProblem::of(a, b, c, options, op);
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  if (c.data == nullptr || (p.k > 0 && (a.data == nullptr || b.data == nullptr))) {
    throw Error(fmt::format("{}: {}: a null data pointer", op, p.to_string()));
  }
  const detail::Workspace::Frame frame(detail::Workspace::of_this_thread());
  if (c.type == GemmType::kF32) return gemm_f32(p, a, b, c, options);
  gemm_encoded(p, a, b, c, options);
}

void gemm_prepare(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                  const GemmOptions& options, std::string_view op) {
  const GemmProblem p = GemmProblem::of(a, b, c, options, op);
  if (p.batch == 0 || p.m == 0 || p.n == 0 || p.k == 0) return;
  plan_cache().get(p, a, b);
}

std::string gemm_isa() { return detail::onednn_isa(); }
bool gemm_has_native_bf16() { return detail::onednn_has_native_bf16(); }

std::vector<GemmProfileEntry> gemm_profile() { return plan_cache().profile(); }
void reset_gemm_profile() { plan_cache().reset_counts(); }

std::string gemm_profile_table() {
  std::string table = fmt::format("{:<60} {:<7} {:<5} {:>10}\n", "problem", "engine", "type", "calls");
  for (const GemmProfileEntry& e : gemm_profile()) {
    table += fmt::format("{:<60} {:<7} {:<5} {:>10}\n", e.problem.to_string(),
                         gemm_engine_name(e.engine), gemm_type_name(e.compute_type), e.calls);
  }
  return table;
}
std::size_t gemm_cached_primitive_count() { return plan_cache().primitive_count(); }

namespace detail {
void force_gemm_engine(std::optional<GemmEngine> engine, bool allow_bf16) {
  forced() = Forced{engine, allow_bf16};
  plan_cache().clear();  // plans made under the old setting would keep it
}
}  // namespace detail

}  // namespace unitscale

#pragma once
// The GEMM engine: every matmul-bearing kernel (matmul, linear, linear_readout, attention, conv1d)
// multiplies matrices through this one interface, and so can the passes that quantise matmul
// inputs (simulate_format) or store them scaled (Scalify).
//
//   C = alpha · (sa·op(A) · sb·op(B) + bias)        (+ C when accumulate)
//
// where op() optionally transposes, sa and sb are the operands' dequantisation scales, bias holds
// one value per column of C, and A and B may each be FP32, BF16, FP16, E4M3 or E5M2 codes. C is
// FP32 or encoded (see GemmOutput), and the products are always accumulated in FP32.
//
// Engines. oneDNN (with run-time dispatch to AVX2, AVX-512, AVX512-BF16 or AMX) runs almost every
// problem; Eigen runs the few shapes where oneDNN was measured to be slower (products with one
// output column, and tiny ones; see docs/performance.md). The engine is a pure function of the
// problem's shape and types (gemm_engine_for), never of timings, so results are reproducible.
//
// Low precision is exact, not simulated: every E4M3 and E5M2 value (subnormals included) is exactly
// a BF16 value, and a product of two BF16 values is exact in FP32, so FP8 and BF16 operands run on
// the CPU's BF16 units and the result equals the FP32 GEMM of the exactly dequantised inputs up to
// the order of summation. FP16 operands (not exact in BF16) are widened to FP32. On CPUs without
// BF16 instructions every operand is widened to FP32, with the same guarantee.
// One exception: the BF16 dot-product instructions flush values below FP32's normal range
// (|x| < 2^-126) to zero, in their inputs, products and sums. FP8 operands never get there (every
// nonzero product and partial sum of FP8 codes is at least 2^-32), but BF16 operands with such tiny
// values or products do: give them as FP32 if that matters.
// Scales are applied to the FP32 sum as one output scale alpha·sa·sb, exactly for powers of two;
// that product is formed in FP32, so extreme scales whose product under- or overflows FP32 give 0
// or ∞ even where the result would be representable.

// Determinism: the same problem on the same machine with the same thread count gives the same bits
// (the engine, the kernel and the split over threads are fixed by the shape). Results computed with
// a different thread count may differ in the last bits, as the summation order may change.
//
// Primitive creation costs oneDNN about a millisecond, so primitives are cached per shape, types,
// strides and options; gemm_prepare creates them ahead of time (the executor does so when it plans)
// and gemm() only looks them up.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/format/rounding.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

// What a GEMM operand's elements are.
enum class GemmType : std::uint8_t {
  kF32,
  kBF16,
  kF16,
  kE4M3,  // float8_e4m3fn (OCP)
  kE5M2,  // float8_e5m2 (OCP)
};

std::string_view gemm_type_name(GemmType type);
int gemm_type_bytes(GemmType type);

// One operand: a batch of row-major matrices of rows × cols each, as stored. `row_stride` counts
// elements between rows (0: packed, that is cols) and `batch_stride` elements between the
// matrices of a batch (0: the same matrix for every batch entry, i.e. broadcast). With
// `transposed` the GEMM uses the transpose of each stored matrix.
struct GemmMatrix {
  const void* data = nullptr;
  GemmType type = GemmType::kF32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;
  std::int64_t batch_stride = 0;
  bool transposed = false;
  float scale = 1.0f;  // dequantisation scale: the operand's value is decode(code) · scale

  // As used in the product: op(A) is used_rows × used_cols.
  std::int64_t used_rows() const { return transposed ? cols : rows; }
  std::int64_t used_cols() const { return transposed ? rows : cols; }
};

// The result: a batch of row-major rows × cols matrices, FP32, or encoded as BF16, FP16, E4M3 or
// E5M2 codes (rounded to nearest even, out-of-range values as `overflow` says). An encoded result
// is formed in FP32 a panel of columns at a time, each panel encoded before the next is computed,
// so no FP32 copy of the whole result is ever held; it cannot be accumulated into.
struct GemmOutput {
  void* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;    // 0: packed
  std::int64_t batch_stride = 0;  // 0: packed (rows · row_stride)
  GemmType type = GemmType::kF32;
  Overflow overflow = Overflow::kSaturate;
};

struct GemmOptions {
  float alpha = 1.0f;
  const float* bias = nullptr;  // FP32, one per column of C (per row with bias_per_row); added before alpha
  bool bias_per_row = false;
  bool accumulate = false;      // C += product instead of C = product
  std::int64_t batch = 1;       // number of matrices in A, B and C
};

enum class GemmEngine : std::uint8_t { kOneDnn, kEigen };
std::string_view gemm_engine_name(GemmEngine engine);

// Everything that decides how a GEMM runs (the cache key): shapes, types, layouts and options,
// without data pointers or scale values.
struct GemmProblem {
  std::int64_t batch = 1, m = 0, n = 0, k = 0;
  GemmType a_type = GemmType::kF32, b_type = GemmType::kF32, c_type = GemmType::kF32;
  bool a_transposed = false, b_transposed = false;
  std::int64_t a_row_stride = 0, b_row_stride = 0, c_row_stride = 0;
  std::int64_t a_batch_stride = 0, b_batch_stride = 0, c_batch_stride = 0;
  bool bias = false, bias_per_row = false, accumulate = false;

  // Checks the operands against each other and throws unitscale::Error naming `op`, the shapes
  // and what was expected.
  static GemmProblem of(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                        const GemmOptions& options, std::string_view op = "gemm");
  bool operator==(const GemmProblem&) const = default;
  std::string to_string() const;  // "f32[1024x512]ᵀ · bf16[...] -> [...]"
};

// C = alpha · (op(A) · op(B) + bias) as above. `op` names the calling op in error messages.
// Empty problems (m, n or batch 0) do nothing; k = 0 gives alpha · bias (or zeros).
void gemm(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
          const GemmOptions& options = {}, std::string_view op = "gemm");

// Creates (and caches) whatever gemm() would need for this problem, reading no data: the data
// pointers may be null, and options.bias only says whether there is a bias.
void gemm_prepare(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                  const GemmOptions& options = {}, std::string_view op = "gemm");

// gemm or gemm_prepare: ops describe their GEMMs once, in a function taking one of these, and call
// it from their kernel (gemm) and from their prepare hook (gemm_prepare).
using GemmFn = void (*)(const GemmMatrix&, const GemmMatrix&, const GemmOutput&,
                        const GemmOptions&, std::string_view);

// A packed FP32 rows × cols matrix at `data`, and tensors seen as matrices with the leading dims
// flattened into rows (as ConstTensorView::matrix()).
inline GemmMatrix gemm_matrix(const float* data, std::int64_t rows, std::int64_t cols,
                              bool transposed = false) {
  return {.data = data, .rows = rows, .cols = cols, .transposed = transposed};
}
inline GemmMatrix gemm_matrix(const ConstTensorView& t, bool transposed = false) {
  return gemm_matrix(t.data(), t.shape().outer(), t.shape().inner(), transposed);
}
inline GemmOutput gemm_output(float* data, std::int64_t rows, std::int64_t cols) {
  return {.data = data, .rows = rows, .cols = cols};
}
inline GemmOutput gemm_output(const TensorView& t) {
  return gemm_output(t.data(), t.shape().outer(), t.shape().inner());
}

// Which engine runs this problem, and in which type the products are formed (kF32 or kBF16): the
// plan gemm() uses, made now if it is not cached yet. Eigen also runs the layouts for which
// oneDNN would only have its reference kernel (for instance padded rows with a transposed B).
GemmEngine gemm_engine_for(const GemmProblem& problem);
GemmType gemm_compute_type(const GemmProblem& problem);

// The instruction set oneDNN dispatches to on this CPU ("avx512_core_bf16", "avx512_core_amx",
// ...), or "none" without oneDNN; and whether the BF16 path is native (else widened to FP32).
std::string gemm_isa();
bool gemm_has_native_bf16();

// What the engine has done since the last reset: per problem, which engine ran it and how often.
struct GemmProfileEntry {
  GemmProblem problem;
  GemmEngine engine;
  GemmType compute_type;
  std::uint64_t calls = 0;
};
std::vector<GemmProfileEntry> gemm_profile();  // most called first
// The profile as a table: one line per problem with its engine, compute type and calls.
std::string gemm_profile_table();
void reset_gemm_profile();
std::size_t gemm_cached_primitive_count();

namespace detail {
// The FP32 bytes an encoded result is computed in at a time: a panel of columns of at most this
// many bytes, unless 64 columns take more.
inline constexpr std::int64_t kGemmOutputPanelBytes = std::int64_t{4} << 20;
// The columns of each such panel of a rows × cols result (multiples of 64; all of them when they
// fit).
inline std::int64_t gemm_output_panel_columns(std::int64_t rows, std::int64_t cols) {
  const std::int64_t fit = kGemmOutputPanelBytes / (4 * std::max<std::int64_t>(rows, 1));
  return std::min(cols, std::max<std::int64_t>(64, fit / 64 * 64));
}
// For tests and benchmarks: run every following GEMM on `engine` (nullopt: the normal selection)
// and, with `allow_bf16` false, widen low precision to FP32 as on a CPU without BF16 units. Call
// it while no GEMM runs; force_gemm_engine(std::nullopt) restores the defaults.
void force_gemm_engine(std::optional<GemmEngine> engine, bool allow_bf16 = true);
}  // namespace detail

}  // namespace unitscale

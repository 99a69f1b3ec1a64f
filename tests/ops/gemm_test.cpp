#include "unitscale/ops/gemm.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gemm/widen.hpp"
#include "tensor/workspace.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace unitscale {
namespace {

using std::int64_t;

std::size_t idx(int64_t i) { return static_cast<std::size_t>(i); }

// ---------------------------------------------------------------------------------------------
// Engine paths
// ---------------------------------------------------------------------------------------------

// Each way a GEMM can run: Eigen, oneDNN widening to FP32 (as on a CPU without BF16 units),
// oneDNN with BF16 products where the CPU has them, and the normal selection.
struct Path {
  const char* name;
  std::optional<GemmEngine> engine;
  bool allow_bf16;
};
const Path kPaths[] = {
    {"eigen", GemmEngine::kEigen, true},
    {"onednn_f32", GemmEngine::kOneDnn, false},
    {"onednn_bf16", GemmEngine::kOneDnn, true},
    {"default", std::nullopt, true},
};

// Forcing an engine also empties the plan cache, so every scope starts from a clean cache; the
// destructor restores the normal selection even when an assertion returns early.
class ForcedPath {
 public:
  explicit ForcedPath(const Path& path) { detail::force_gemm_engine(path.engine, path.allow_bf16); }
  ForcedPath() { detail::force_gemm_engine(std::nullopt); }
  ~ForcedPath() { detail::force_gemm_engine(std::nullopt); }
  ForcedPath(const ForcedPath&) = delete;
  ForcedPath& operator=(const ForcedPath&) = delete;
};

bool bf16_exact(GemmType t) {
  return t == GemmType::kBF16 || t == GemmType::kE4M3 || t == GemmType::kE5M2;
}

// ---------------------------------------------------------------------------------------------
// Element codecs, through the format layer
// ---------------------------------------------------------------------------------------------

template <typename T>
void store_as(float x, std::byte* dst) {
  const auto bits =
      FormatTraits<T>::to_bits(convert<T>(x, Rounding::kNearestEven, Overflow::kSaturate));
  std::memcpy(dst, &bits, sizeof bits);
}

template <typename T>
float load_as(const std::byte* src) {
  typename FormatTraits<T>::Bits bits;
  std::memcpy(&bits, src, sizeof bits);
  return to_float(FormatTraits<T>::from_bits(bits));
}

// Rounds x to the nearest value of `type` (saturating) and stores its code.
void encode(GemmType type, float x, std::byte* dst) {
  switch (type) {
    case GemmType::kF32: std::memcpy(dst, &x, sizeof x); return;
    case GemmType::kBF16: return store_as<bfloat16>(x, dst);
    case GemmType::kF16: return store_as<float16>(x, dst);
    case GemmType::kE4M3: return store_as<float8_e4m3fn>(x, dst);
    case GemmType::kE5M2: return store_as<float8_e5m2>(x, dst);
  }
}

// The exact value of a stored code.
double decode(GemmType type, const std::byte* src) {
  switch (type) {
    case GemmType::kF32: {
      float x;
      std::memcpy(&x, src, sizeof x);
      return x;
    }
    case GemmType::kBF16: return load_as<bfloat16>(src);
    case GemmType::kF16: return load_as<float16>(src);
    case GemmType::kE4M3: return load_as<float8_e4m3fn>(src);
    case GemmType::kE5M2: return load_as<float8_e5m2>(src);
  }
  return 0;
}

const char* short_name(GemmType type) {
  switch (type) {
    case GemmType::kF32: return "f32";
    case GemmType::kBF16: return "bf16";
    case GemmType::kF16: return "f16";
    case GemmType::kE4M3: return "e4m3";
    case GemmType::kE5M2: return "e5m2";
  }
  return "?";
}

// Magnitudes that stress each format: its max normal, its smallest and largest subnormals, its
// smallest normal; FP32 and BF16 (whose range is too wide to use max without overflowing the sums)
// get large and small powers of two and a full mantissa instead.
std::vector<float> special_magnitudes(GemmType type) {
  switch (type) {
    case GemmType::kF32: return {0x1p40f, 0x1p-40f, 0x1.000002p0f, 0x1.fffffep-1f};
    case GemmType::kBF16: return {0x1p40f, 0x1p-40f, 0x1.fep0f};
    case GemmType::kF16: return {65504.0f, 0x1p-24f, 0x1.ff8p-15f, 0x1p-14f};
    case GemmType::kE4M3: return {448.0f, 0x1p-9f, 0x1.cp-7f, 0x1p-6f};
    case GemmType::kE5M2: return {57344.0f, 0x1p-16f, 0x1.8p-15f, 0x1p-14f};
  }
  return {};
}

// Mostly values of moderate size (so that the bound stays tight enough to see small errors), with
// one in eight drawn from the specials above or a zero of either sign.
float random_value(GemmType type, std::mt19937& rng) {
  const float sign = std::bernoulli_distribution(0.5)(rng) ? -1.0f : 1.0f;
  if (std::uniform_int_distribution<int>(0, 7)(rng) == 0) {
    const std::vector<float> specials = special_magnitudes(type);
    const auto pick = std::uniform_int_distribution<std::size_t>(0, specials.size())(rng);
    return pick == specials.size() ? sign * 0.0f : sign * specials[pick];
  }
  const float mantissa = std::uniform_real_distribution<float>(1.0f, 2.0f)(rng);
  return sign * std::ldexp(mantissa, std::uniform_int_distribution<int>(-4, 4)(rng));
}

// ---------------------------------------------------------------------------------------------
// Operands and outputs laid out as the cases ask
// ---------------------------------------------------------------------------------------------

enum class Batching : std::uint8_t {
  kPacked,     // matrices back to back (for operands an explicit stride, as 0 means broadcast)
  kGapped,     // an explicit stride leaving unused elements between matrices
  kBroadcast,  // operands only: batch_stride 0, one matrix for every batch entry
};
constexpr int64_t kBatchGap = 5;

// A stored operand: `matrices` rows × cols matrices in a buffer whose unused elements (row and
// batch padding) hold NaN, so that reading them would show in the result.
struct Operand {
  GemmType type = GemmType::kF32;
  int64_t rows = 0, cols = 0, row_stride = 0, batch_stride = 0;
  std::vector<std::byte> storage;

  Operand(GemmType t, int64_t r, int64_t c, int64_t pad, Batching batching, int64_t batch,
          std::mt19937& rng)
      : type(t), rows(r), cols(c), row_stride(pad == 0 ? 0 : c + pad) {
    const int64_t stride = row_stride == 0 ? cols : row_stride;
    const int64_t matrix = rows * stride;
    batch_stride = batching == Batching::kBroadcast ? 0
                   : batching == Batching::kGapped  ? matrix + kBatchGap
                                                    : matrix;
    const int64_t matrices = batching == Batching::kBroadcast ? 1 : batch;
    if (rows * cols == 0 || matrices == 0) return;  // empty: data() stays null, as callers may pass
    const int64_t elements = (matrices - 1) * batch_stride + matrix;
    storage.resize(idx(elements * gemm_type_bytes(type)));
    for (int64_t e = 0; e < elements; ++e) {
      encode(type, std::numeric_limits<float>::quiet_NaN(), element(e));
    }
    for (int64_t b = 0; b < matrices; ++b) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          encode(type, random_value(type, rng), element(b * batch_stride + i * stride + j));
        }
      }
    }
  }

  std::byte* element(int64_t e) { return storage.data() + e * gemm_type_bytes(type); }

  // Element (i, j) of op(X) in batch entry b, exactly.
  double used(int64_t b, int64_t i, int64_t j, bool transposed) const {
    if (transposed) std::swap(i, j);
    const int64_t stride = row_stride == 0 ? cols : row_stride;
    const int64_t e = b * batch_stride + i * stride + j;
    return decode(type, storage.data() + e * gemm_type_bytes(type));
  }

  GemmMatrix matrix(bool transposed, float scale) const {
    return {storage.empty() ? nullptr : storage.data(), type, rows, cols, row_stride, batch_stride,
            transposed, scale};
  }
};

// Written around the output and into its padding; must survive every GEMM bit for bit.
constexpr std::uint32_t kSentinelBits = 0x7fc0beef;
constexpr int64_t kGuard = 8;  // sentinel elements before and after the output

// The FP32 output: batch × m × n inside a buffer with guards and optional row and batch padding.
struct Output {
  int64_t batch, rows, cols, row_stride, batch_stride;  // strides as passed (0: packed)
  std::vector<float> buffer;

  Output(int64_t b, int64_t m, int64_t n, int64_t pad, Batching batching)
      : batch(b), rows(m), cols(n), row_stride(pad == 0 ? 0 : n + pad) {
    const int64_t matrix = m * stride();
    batch_stride = batching == Batching::kGapped ? matrix + kBatchGap : 0;
    buffer.assign(idx(2 * kGuard + batch * (batching == Batching::kGapped ? matrix + kBatchGap
                                                                         : matrix)),
                  std::bit_cast<float>(kSentinelBits));
  }

  int64_t stride() const { return row_stride == 0 ? cols : row_stride; }
  int64_t matrix_stride() const { return batch_stride == 0 ? rows * stride() : batch_stride; }
  int64_t offset(int64_t b, int64_t i, int64_t j) const {
    return kGuard + b * matrix_stride() + i * stride() + j;
  }
  float& at(int64_t b, int64_t i, int64_t j) { return buffer[idx(offset(b, i, j))]; }

  GemmOutput view() { return {buffer.data() + kGuard, rows, cols, row_stride, batch_stride}; }

  // Fills the used elements: NaN when the GEMM must overwrite them, known values when it adds.
  void fill(bool accumulate, std::mt19937& rng) {
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          at(b, i, j) = accumulate ? random_value(GemmType::kF32, rng)
                                   : std::numeric_limits<float>::quiet_NaN();
        }
      }
    }
  }

  // The used elements, batch by batch and row by row, times `factor`.
  std::vector<float> values(float factor = 1.0f) const {
    std::vector<float> out;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) out.push_back(factor * buffer[idx(offset(b, i, j))]);
      }
    }
    return out;
  }

  // Every element outside the output (guards, row and batch padding) still holds the sentinel.
  std::int64_t clobbered_padding() const {
    std::vector<bool> used(buffer.size(), false);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) used[idx(offset(b, i, j))] = true;
      }
    }
    std::int64_t clobbered = 0;
    for (std::size_t e = 0; e < buffer.size(); ++e) {
      clobbered += !used[e] && std::bit_cast<std::uint32_t>(buffer[e]) != kSentinelBits;
    }
    return clobbered;
  }
};

// ---------------------------------------------------------------------------------------------
// The case table: layouts × type pairs × paths, each against a double-precision reference
// ---------------------------------------------------------------------------------------------

struct Layout {
  const char* name;
  int64_t batch = 1, m = 1, k = 1, n = 1;
  bool a_transposed = false, b_transposed = false;
  int64_t a_pad = 0, b_pad = 0, c_pad = 0;  // elements after each row (0: packed)
  Batching a_batching = Batching::kPacked, b_batching = Batching::kPacked;
  Batching c_batching = Batching::kPacked;
  bool bias = false, bias_per_row = false, accumulate = false;
  float alpha = 1.0f, sa = 1.0f, sb = 1.0f;
};

// Shapes around the engines' blocking (16, 32, 64), both sides of the Eigen/oneDNN threshold, and
// every option; the last rows combine options on a problem large enough for oneDNN by default.
const Layout kLayouts[] = {
    {.name = "one", .m = 1, .k = 1, .n = 1},
    {.name = "k1", .m = 33, .k = 1, .n = 17},
    {.name = "m1_vector", .m = 1, .k = 300, .n = 65},
    {.name = "n1", .m = 63, .k = 127, .n = 1},
    {.name = "m63_k1_n127", .m = 63, .k = 1, .n = 127},
    {.name = "odd", .m = 17, .k = 33, .n = 65},
    {.name = "large", .m = 200, .k = 300, .n = 150},
    {.name = "a_transposed", .m = 31, .k = 47, .n = 29, .a_transposed = true},
    {.name = "b_transposed", .m = 31, .k = 47, .n = 29, .b_transposed = true},
    {.name = "both_transposed", .m = 31, .k = 47, .n = 29, .a_transposed = true,
     .b_transposed = true},
    {.name = "strided", .m = 19, .k = 23, .n = 21, .a_pad = 3, .b_pad = 7, .c_pad = 5},
    {.name = "strided_transposed", .m = 70, .k = 90, .n = 40, .a_transposed = true,
     .b_transposed = true, .a_pad = 1, .b_pad = 9, .c_pad = 2},
    {.name = "batch_broadcast_a", .batch = 3, .m = 9, .k = 13, .n = 11,
     .a_batching = Batching::kBroadcast},
    {.name = "batch_broadcast_b", .batch = 4, .m = 40, .k = 50, .n = 30, .a_transposed = true,
     .a_pad = 2, .c_pad = 3, .a_batching = Batching::kGapped, .b_batching = Batching::kBroadcast,
     .c_batching = Batching::kGapped},
    {.name = "bias", .m = 21, .k = 37, .n = 45, .bias = true},
    {.name = "row_bias", .m = 21, .k = 37, .n = 45, .bias = true, .bias_per_row = true},
    {.name = "accumulate", .m = 21, .k = 37, .n = 45, .accumulate = true},
    {.name = "scales_pow2", .m = 21, .k = 37, .n = 45, .alpha = 0.5f, .sa = 4.0f,
     .sb = 0x1p-3f},
    {.name = "scales_037", .m = 21, .k = 37, .n = 45, .bias = true, .accumulate = true,
     .alpha = 0.37f, .sa = 0.37f, .sb = 3.0f},
    {.name = "everything", .batch = 2, .m = 64, .k = 80, .n = 96, .b_transposed = true,
     .a_pad = 4, .b_pad = 3, .c_pad = 1, .a_batching = Batching::kGapped,
     .c_batching = Batching::kGapped, .bias = true, .accumulate = true, .alpha = 0.37f,
     .sa = 2.0f, .sb = 0.75f},
    {.name = "everything_broadcast", .batch = 3, .m = 48, .k = 64, .n = 80, .a_transposed = true,
     .a_batching = Batching::kBroadcast, .b_batching = Batching::kGapped, .bias = true,
     .bias_per_row = true, .accumulate = true, .alpha = 2.0f, .sa = 0.37f},
    {.name = "k0", .m = 5, .k = 0, .n = 7},
    {.name = "k0_bias", .batch = 2, .m = 5, .k = 0, .n = 7, .c_pad = 2, .bias = true,
     .alpha = 0.37f},
    {.name = "k0_bias_accumulate", .m = 5, .k = 0, .n = 7, .bias = true, .accumulate = true,
     .alpha = 3.0f},
    {.name = "k0_row_bias", .m = 5, .k = 0, .n = 7, .bias = true, .bias_per_row = true},
    {.name = "m0", .m = 0, .k = 5, .n = 7, .bias = true},
    {.name = "n0", .m = 5, .k = 7, .n = 0, .accumulate = true},
    {.name = "batch0", .batch = 0, .m = 5, .k = 6, .n = 7, .bias = true},
};

struct TypePair {
  GemmType a, b;
};
const TypePair kTypePairs[] = {
    {GemmType::kF32, GemmType::kF32},               {GemmType::kBF16, GemmType::kBF16},
    {GemmType::kF16, GemmType::kF16},               {GemmType::kE4M3, GemmType::kE4M3},
    {GemmType::kE5M2, GemmType::kE4M3}, {GemmType::kE4M3, GemmType::kE5M2},
    {GemmType::kF32, GemmType::kBF16},              {GemmType::kF16, GemmType::kE4M3},
    {GemmType::kBF16, GemmType::kE5M2},       {GemmType::kE5M2, GemmType::kF32},
};

// One problem's operands, bias and initial output, built once and run on every path.
struct Problem {
  Layout layout;
  Operand a, b;
  std::vector<float> bias;
  Output initial;

  Problem(const Layout& l, TypePair types, std::mt19937& rng)
      : layout(l),
        a(types.a, l.a_transposed ? l.k : l.m, l.a_transposed ? l.m : l.k, l.a_pad, l.a_batching,
          l.batch, rng),
        b(types.b, l.b_transposed ? l.n : l.k, l.b_transposed ? l.k : l.n, l.b_pad, l.b_batching,
          l.batch, rng),
        initial(l.batch, l.m, l.n, l.c_pad, l.c_batching) {
    if (l.bias) {
      for (int64_t j = 0; j < (l.bias_per_row ? l.m : l.n); ++j) {
        bias.push_back(random_value(GemmType::kF32, rng));
      }
    }
    initial.fill(l.accumulate, rng);
  }

  GemmMatrix a_matrix() const { return a.matrix(layout.a_transposed, layout.sa); }
  GemmMatrix b_matrix() const { return b.matrix(layout.b_transposed, layout.sb); }
  GemmOptions options() const {
    return {.alpha = layout.alpha,
            .bias = layout.bias ? bias.data() : nullptr,
            .bias_per_row = layout.bias_per_row,
            .accumulate = layout.accumulate,
            .batch = layout.batch};
  }

  Output run() const {
    Output c = initial;
    gemm(a_matrix(), b_matrix(), c.view(), options(), "gemm_test");
    return c;
  }
};

// The double-precision GEMM of the exactly decoded operands and, per output element, the
// documented bound: the FP32 summation error K·2^-23·Σ|a||b| scaled by |alpha·sa·sb|, plus two
// ulps of the terms that are rounded once more at the end (the scaled product, alpha·bias and
// the accumulated C). Both in the order of Output::values().
struct Reference {
  std::vector<double> value, bound;

  explicit Reference(const Problem& p) {
    const Layout& l = p.layout;
    const double scale = static_cast<double>(l.alpha) * l.sa * l.sb;
    for (int64_t b = 0; b < l.batch; ++b) {
      for (int64_t i = 0; i < l.m; ++i) {
        for (int64_t j = 0; j < l.n; ++j) {
          double dot = 0, magnitude = 0;
          for (int64_t kk = 0; kk < l.k; ++kk) {
            const double product =
                p.a.used(b, i, kk, l.a_transposed) * p.b.used(b, kk, j, l.b_transposed);
            dot += product;
            magnitude += std::abs(product);
          }
          const double bias =
              l.bias ? static_cast<double>(l.alpha) * p.bias[idx(l.bias_per_row ? i : j)] : 0.0;
          const double before =
              l.accumulate ? static_cast<double>(p.initial.buffer[idx(p.initial.offset(b, i, j))])
                           : 0.0;
          const double ref = scale * dot + bias + before;
          value.push_back(ref);
          bound.push_back(static_cast<double>(l.k) * 0x1p-23 * magnitude * std::abs(scale) +
                          0x1p-22 * (std::abs(ref) + std::abs(bias) + std::abs(before)));
        }
      }
    }
  }
};

// Reports the first few elements outside the bound, and any write outside the output.
void expect_within(const Reference& ref, const Output& got) {
  const std::vector<float> values = got.values();
  ASSERT_EQ(values.size(), ref.value.size());
  int failures = 0;
  for (std::size_t e = 0; e < values.size(); ++e) {
    if (!(std::abs(values[e] - ref.value[e]) <= ref.bound[e]) && ++failures <= 5) {
      const auto n = idx(got.cols), mn = n * idx(got.rows);
      ADD_FAILURE() << "C[" << e / mn << "][" << e % mn / n << "][" << e % n << "] = " << values[e]
                    << ", reference " << ref.value[e] << " ± " << ref.bound[e];
    }
  }
  EXPECT_EQ(failures, 0) << "elements outside the bound";
  EXPECT_EQ(got.clobbered_padding(), 0) << "elements outside the output were written";
}

// Failures name the parameters instead of dumping their bytes.
void PrintTo(const Layout& layout, std::ostream* os) { *os << layout.name; }
void PrintTo(const TypePair& types, std::ostream* os) {
  *os << short_name(types.a) << " x " << short_name(types.b);
}

class GemmCase : public ::testing::TestWithParam<std::tuple<Layout, TypePair>> {};

TEST_P(GemmCase, MatchesDoubleReferenceOnEveryPath) {
  const auto& [layout, types] = GetParam();
  std::mt19937 rng(1234);
  const Problem problem(layout, types, rng);
  const Reference reference(problem);
  for (const Path& path : kPaths) {
    SCOPED_TRACE(path.name);
    const ForcedPath forced(path);
    Output out = problem.initial;
    const GemmOutput view = out.view();
    reset_gemm_profile();
    gemm(problem.a_matrix(), problem.b_matrix(), view, problem.options(), "gemm_test");
    expect_within(reference, out);

    const GemmProblem key =
        GemmProblem::of(problem.a_matrix(), problem.b_matrix(), view, problem.options());
    const std::vector<GemmProfileEntry> profile = gemm_profile();
    const auto entry = std::find_if(profile.begin(), profile.end(),
                                    [&](const GemmProfileEntry& e) { return e.problem == key; });
    if (layout.batch == 0 || layout.m == 0 || layout.n == 0 || layout.k == 0) {
      EXPECT_TRUE(entry == profile.end() || entry->calls == 0) << "an empty problem ran a plan";
      continue;
    }
    ASSERT_NE(entry, profile.end()) << key.to_string();
    EXPECT_EQ(entry->calls, 1u);
    // The plan's engine is what gemm_engine_for reports; a forced oneDNN still falls back to
    // Eigen for layouts oneDNN would run only with its reference kernel.
    EXPECT_EQ(entry->engine, gemm_engine_for(key));
    if (path.engine) {
      EXPECT_TRUE(entry->engine == *path.engine || entry->engine == GemmEngine::kEigen);
    }
    const bool bf16 = path.allow_bf16 && gemm_has_native_bf16() &&
                      entry->engine == GemmEngine::kOneDnn && bf16_exact(types.a) &&
                      bf16_exact(types.b);
    EXPECT_EQ(entry->compute_type, bf16 ? GemmType::kBF16 : GemmType::kF32);
  }
}

std::string case_name(const ::testing::TestParamInfo<GemmCase::ParamType>& info) {
  const auto& [layout, types] = info.param;
  return std::string(layout.name) + "_" + short_name(types.a) + "_x_" + short_name(types.b);
}

INSTANTIATE_TEST_SUITE_P(Cases, GemmCase,
                         ::testing::Combine(::testing::ValuesIn(kLayouts),
                                            ::testing::ValuesIn(kTypePairs)),
                         case_name);

// ---------------------------------------------------------------------------------------------
// Encoded outputs: the same cases written as BF16, FP16, E4M3 or E5M2 codes
// ---------------------------------------------------------------------------------------------

const GemmType kEncodedTypes[] = {GemmType::kBF16, GemmType::kF16, GemmType::kE4M3,
                                  GemmType::kE5M2};
constexpr std::uint8_t kSentinelByte = 0xA5;

// An encoded output: batch × m × n codes inside a buffer with guards and optional padding.
struct EncodedOutput {
  GemmType type;
  int64_t batch, rows, cols, row_stride, batch_stride;  // strides as passed (0: packed)
  std::vector<std::byte> buffer;

  EncodedOutput(GemmType t, const Layout& l)
      : type(t),
        batch(l.batch),
        rows(l.m),
        cols(l.n),
        row_stride(l.c_pad == 0 ? 0 : l.n + l.c_pad) {
    const int64_t matrix = rows * stride();
    batch_stride = l.c_batching == Batching::kGapped ? matrix + kBatchGap : 0;
    buffer.assign(idx((2 * kGuard + batch * matrix_stride()) * gemm_type_bytes(type)),
                  std::byte{kSentinelByte});
  }
  int64_t stride() const { return row_stride == 0 ? cols : row_stride; }
  int64_t matrix_stride() const { return batch_stride == 0 ? rows * stride() : batch_stride; }
  std::byte* code(int64_t b, int64_t i, int64_t j) {
    return buffer.data() +
           (kGuard + b * matrix_stride() + i * stride() + j) * gemm_type_bytes(type);
  }
  GemmOutput view(Overflow overflow = Overflow::kSaturate) {
    return {.data = code(0, 0, 0),
            .rows = rows,
            .cols = cols,
            .row_stride = row_stride,
            .batch_stride = batch_stride,
            .type = type,
            .overflow = overflow};
  }
  // Bytes outside the codes that no longer hold the sentinel.
  int64_t clobbered_padding() {
    std::vector<bool> used(buffer.size(), false);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          const auto first = static_cast<std::size_t>(code(b, i, j) - buffer.data());
          for (int e = 0; e < gemm_type_bytes(type); ++e) used[first + idx(e)] = true;
        }
      }
    }
    int64_t clobbered = 0;
    for (std::size_t e = 0; e < buffer.size(); ++e) {
      clobbered += !used[e] && buffer[e] != std::byte{kSentinelByte};
    }
    return clobbered;
  }
};

// The value `x` rounds to in `type` (nearest even, saturating), exactly.
double rounded_in(GemmType type, float x) {
  std::byte code[4];
  encode(type, x, code);
  return decode(type, code);
}

// Layouts that span several panels of an encoded output (kPanelBytes of FP32 columns each, that
// is 128 columns at 8192 rows), so that panels of B, of the bias and of a padded C are exercised.
const Layout kPanelLayouts[] = {
    {.name = "panels", .m = 8192, .k = 16, .n = 140, .bias = true, .alpha = 0.5f},
    {.name = "panels_b_transposed_padded",
     .batch = 2,
     .m = 8192,
     .k = 12,
     .n = 132,
     .b_transposed = true,
     .b_pad = 3,
     .c_pad = 5,
     .c_batching = Batching::kGapped,
     .bias = true,
     .bias_per_row = true,
     .sa = 2.0f},
};

std::vector<Layout> encoded_layouts() {
  std::vector<Layout> layouts;
  for (const Layout& l : kLayouts) {
    if (!l.accumulate) layouts.push_back(l);
  }
  layouts.insert(layouts.end(), std::begin(kPanelLayouts), std::end(kPanelLayouts));
  return layouts;
}

const TypePair kEncodedTypePairs[] = {{GemmType::kF32, GemmType::kF32},
                                      {GemmType::kE4M3, GemmType::kE4M3},
                                      {GemmType::kE5M2, GemmType::kE4M3},
                                      {GemmType::kF16, GemmType::kBF16}};

class GemmEncodedCase : public ::testing::TestWithParam<std::tuple<Layout, TypePair>> {};

// Every code is the rounding of a value within the FP32 result's bound of the exact one, and
// nothing outside the output is written.
TEST_P(GemmEncodedCase, EachCodeRoundsAValueWithinTheBound) {
  const auto& [layout, types] = GetParam();
  std::mt19937 rng(4321);
  const Problem problem(layout, types, rng);
  const Reference reference(problem);
  for (const Path& path : kPaths) {
    const ForcedPath forced(path);
    for (const GemmType type : kEncodedTypes) {
      SCOPED_TRACE(std::string(path.name) + " -> " + short_name(type));
      EncodedOutput out(type, layout);
      gemm(problem.a_matrix(), problem.b_matrix(), out.view(), problem.options(), "gemm_test");
      int failures = 0;
      std::size_t e = 0;
      for (int64_t b = 0; b < layout.batch; ++b) {
        for (int64_t i = 0; i < layout.m; ++i) {
          for (int64_t j = 0; j < layout.n; ++j, ++e) {
            const double ref = reference.value[e], bound = reference.bound[e];
            const double lo =
                rounded_in(type, std::nextafter(static_cast<float>(ref - bound), -INFINITY));
            const double hi =
                rounded_in(type, std::nextafter(static_cast<float>(ref + bound), INFINITY));
            const double got = decode(type, out.code(b, i, j));
            if (!(lo <= got && got <= hi) && ++failures <= 5) {
              ADD_FAILURE() << "C[" << b << "][" << i << "][" << j << "] = " << got
                            << ", reference " << ref << " ± " << bound << " rounds to [" << lo
                            << ", " << hi << "]";
            }
          }
        }
      }
      EXPECT_EQ(failures, 0);
      EXPECT_EQ(out.clobbered_padding(), 0) << "bytes outside the output were written";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GemmEncodedCase,
                         ::testing::Combine(::testing::ValuesIn(encoded_layouts()),
                                            ::testing::ValuesIn(kEncodedTypePairs)),
                         case_name);

// Values beyond the format's range follow the output's overflow policy, as the format layer's
// conversions do: the largest value when saturating, ±Inf (E5M2, FP16) or NaN (E4M3) otherwise.
TEST(GemmEncodedOutput, OverflowFollowsThePolicy) {
  const std::vector<float> a = {1e5f, -1e6f, 1.5f}, b = {1.0f};  // 3 x 1 times 1 x 1
  for (const GemmType type : {GemmType::kE4M3, GemmType::kE5M2, GemmType::kF16}) {
    for (const Overflow overflow : {Overflow::kSaturate, Overflow::kNonFinite}) {
      SCOPED_TRACE(std::string(short_name(type)) + " " + std::string(overflow_name(overflow)));
      std::vector<std::byte> codes(3 * idx(gemm_type_bytes(type)));
      gemm(gemm_matrix(a.data(), 3, 1), gemm_matrix(b.data(), 1, 1),
           {.data = codes.data(), .rows = 3, .cols = 1, .type = type, .overflow = overflow});
      const double max = rounded_in(type, INFINITY);
      const int w = gemm_type_bytes(type);
      const double big = decode(type, codes.data()), neg = decode(type, codes.data() + w);
      if (overflow == Overflow::kSaturate) {
        EXPECT_EQ(big, max);
        EXPECT_EQ(neg, -max);
      } else if (type == GemmType::kE4M3) {
        EXPECT_TRUE(std::isnan(big));
        EXPECT_TRUE(std::isnan(neg));
      } else {
        EXPECT_EQ(big, INFINITY);
        EXPECT_EQ(neg, -INFINITY);
      }
      EXPECT_EQ(decode(type, codes.data() + 2 * w), 1.5);
    }
  }
}

TEST(GemmEncodedOutput, CannotBeAccumulatedInto) {
  const std::vector<float> a(4, 1.0f);
  std::vector<std::byte> codes(4);
  try {
    gemm(gemm_matrix(a.data(), 2, 2), gemm_matrix(a.data(), 2, 2),
         {.data = codes.data(), .rows = 2, .cols = 2, .type = GemmType::kE4M3},
         {.accumulate = true}, "my_op");
    FAIL() << "accumulating into E4M3 codes was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("my_op"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot accumulate into a float8_e4m3fn output"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Exactness
// ---------------------------------------------------------------------------------------------

TEST(GemmSpecials, AreExactInTheirFormat) {
  std::byte code[4];
  for (const TypePair& pair : kTypePairs) {
    for (const GemmType type : {pair.a, pair.b}) {
      for (const float x : special_magnitudes(type)) {
        encode(type, -x, code);
        EXPECT_EQ(decode(type, code), -static_cast<double>(x)) << short_name(type);
      }
    }
  }
}

// The claim behind the low-precision paths: every FP8 product is exact in FP32. One GEMM with
// K = 1 forms all 256 × 256 products of two formats' codes at once.
TEST(GemmFloat8, EveryProductOfCodesIsExact) {
  auto all_codes = [](GemmType type) {
    std::vector<std::byte> codes(256);
    for (unsigned c = 0; c < 256; ++c) {
      codes[c] = static_cast<std::byte>(c);
      if (!std::isfinite(decode(type, &codes[c]))) codes[c] = std::byte{0};
    }
    return codes;
  };
  const GemmType kFp8[] = {GemmType::kE4M3, GemmType::kE5M2};
  for (const Path& path : kPaths) {
    const ForcedPath forced(path);
    for (const GemmType ta : kFp8) {
      for (const GemmType tb : kFp8) {
        SCOPED_TRACE(std::string(path.name) + " " + short_name(ta) + " x " + short_name(tb));
        const std::vector<std::byte> a = all_codes(ta), b = all_codes(tb);
        std::vector<float> c(256 * 256);
        gemm({a.data(), ta, 256, 1}, {b.data(), tb, 1, 256}, {c.data(), 256, 256});
        int failures = 0;
        for (std::size_t i = 0; i < 256; ++i) {
          for (std::size_t j = 0; j < 256; ++j) {
            const double product = decode(ta, &a[i]) * decode(tb, &b[j]);
            ASSERT_EQ(static_cast<double>(static_cast<float>(product)), product);
            if (c[i * 256 + j] != static_cast<float>(product) && ++failures <= 5) {
              ADD_FAILURE() << "code " << i << " x code " << j << ": " << c[i * 256 + j]
                            << ", expected " << product;
            }
          }
        }
        EXPECT_EQ(failures, 0);
      }
    }
  }
}

// A block of columns of a wider matrix is copied packed even when no widening is needed (oneDNN
// runs strided blocks on slower kernels); a packed matrix of the right type is used in place.
TEST(GemmWiden, PackedCopyPacksStridedBlocksOnly) {
  detail::Workspace& workspace = detail::Workspace::of_this_thread();
  const detail::Workspace::Frame frame(workspace);
  std::vector<std::byte> bf16(6 * 10 * 2);
  for (std::size_t i = 0; i < 60; ++i) encode(GemmType::kBF16, float(i), &bf16[2 * i]);
  const GemmMatrix whole{bf16.data(), GemmType::kBF16, 6, 10};
  EXPECT_EQ(detail::packed_copy(whole, GemmType::kBF16).data, bf16.data());
  for (const GemmType to : {GemmType::kBF16, GemmType::kF32}) {
    GemmMatrix block = whole;  // columns 3..6 of every row
    block.data = bf16.data() + 3 * 2;
    block.cols = 4;
    block.row_stride = 10;
    const GemmMatrix packed = detail::packed_copy(block, to);
    EXPECT_NE(packed.data, block.data);
    EXPECT_EQ(packed.type, to);
    EXPECT_EQ(packed.rows, 6);
    EXPECT_EQ(packed.cols, 4);
    EXPECT_EQ(packed.row_stride, 4);
    const GemmMatrix layout = detail::packed_layout(block, to);
    EXPECT_EQ(layout.row_stride, 4);
    EXPECT_EQ(layout.type, to);
    for (int r = 0; r < 6; ++r) {
      for (int c = 0; c < 4; ++c) {
        const auto at = static_cast<std::size_t>((4 * r + c) * gemm_type_bytes(to));
        EXPECT_EQ(decode(to, static_cast<const std::byte*>(packed.data) + at), 10 * r + 3 + c)
            << "row " << r << ", column " << c;
      }
    }
  }
}

// A transposed operand is transposed as it is converted: op(A) comes out packed and untransposed,
// across partial tiles and on several threads.
TEST(GemmWiden, RowMajorCopyUntransposes) {
  detail::Workspace& workspace = detail::Workspace::of_this_thread();
  const detail::Workspace::Frame frame(workspace);
  constexpr int64_t kRows = 300, kCols = 260, kStride = 270;  // as stored, with padded rows
  for (const auto& [from, to] :
       {std::pair{GemmType::kE4M3, GemmType::kBF16}, std::pair{GemmType::kBF16, GemmType::kBF16},
        std::pair{GemmType::kF16, GemmType::kF32}}) {
    const int bytes = gemm_type_bytes(from);
    std::vector<std::byte> stored(static_cast<std::size_t>(kRows * kStride * bytes));
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < kCols; ++c) {
        encode(from, float((r * 7 + c * 3) % 64 - 32), &stored[idx((r * kStride + c) * bytes)]);
      }
    }
    const GemmMatrix matrix{.data = stored.data(),
                            .type = from,
                            .rows = kRows,
                            .cols = kCols,
                            .row_stride = kStride,
                            .transposed = true,
                            .scale = 0.5f};
    const GemmMatrix copy = detail::row_major_copy(matrix, to);
    const GemmMatrix layout = detail::row_major_layout(matrix, to);
    for (const GemmMatrix& m : {copy, layout}) {
      EXPECT_FALSE(m.transposed);
      EXPECT_EQ(m.type, to);
      EXPECT_EQ(m.rows, kCols);
      EXPECT_EQ(m.cols, kRows);
      EXPECT_EQ(m.row_stride, kRows);
      EXPECT_EQ(m.scale, 0.5f);
    }
    const auto* out = static_cast<const std::byte*>(copy.data);
    int64_t wrong = 0;
    for (int64_t r = 0; r < kCols; ++r) {
      for (int64_t c = 0; c < kRows; ++c) {
        wrong += decode(to, out + (r * kRows + c) * gemm_type_bytes(to)) !=
                 decode(from, &stored[idx((c * kStride + r) * bytes)]);
      }
    }
    EXPECT_EQ(wrong, 0) << gemm_type_name(from) << " to " << gemm_type_name(to);
  }
}

// Every code, NaN and infinity included, widens to its value at every SIMD level of the decoding
// kernels: the codes times one, a GEMM with K = 1 whose outputs are the decoded codes.
TEST(GemmFloat8, EveryCodeWidensToItsValueAtEverySimdLevel) {
  std::vector<std::byte> codes(256);
  for (unsigned c = 0; c < 256; ++c) codes[c] = static_cast<std::byte>(c);
  std::byte one[2];
  encode(GemmType::kBF16, 1.0f, one);
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    detail::force_simd_level(level);
    for (const Path& path : kPaths) {
      const ForcedPath forced(path);
      for (const GemmType type : {GemmType::kE4M3, GemmType::kE5M2}) {
        SCOPED_TRACE(std::string(detail::simd_level_name(level)) + " " + path.name + " " +
                     short_name(type));
        std::vector<float> c(256);
        gemm({codes.data(), type, 256, 1}, {one, GemmType::kBF16, 1, 1}, {c.data(), 256, 1});
        for (std::size_t i = 0; i < 256; ++i) {
          const double expected = decode(type, &codes[i]);
          if (std::isnan(expected)) {
            EXPECT_TRUE(std::isnan(c[i])) << "code " << i;
          } else {
            EXPECT_EQ(c[i], expected) << "code " << i;
          }
        }
      }
    }
  }
  detail::force_simd_level(detail::best_simd_level());
}

// Values in FP32's subnormal range: a BF16 subnormal input, a product below 2^-126 and a sum that
// cancels into the subnormal range. They survive exactly wherever the products are formed in FP32;
// the BF16 units (AVX512-BF16 VDPBF16PS, AMX) flush them to zero, as gemm.hpp documents, and
// nothing else.
TEST(GemmBf16, SubnormalResultsAreExactInFp32AndFlushedOnlyByTheBf16Units) {
  struct Tiny {
    const char* name;
    std::vector<float> a, b;  // 1 × K and K × 1
    float expected;
  };
  const Tiny cases[] = {
      {"subnormal input", {0x1p-130f}, {1.0f}, 0x1p-130f},
      {"subnormal product", {0x1p-70f}, {0x1p-70f}, 0x1p-140f},
      {"cancelling sum", {-0x1.02p-126f, 0x1p-126f}, {1.0f, 1.0f}, -0x1p-133f},
  };
  for (const Path& path : kPaths) {
    const ForcedPath forced(path);
    for (const Tiny& t : cases) {
      SCOPED_TRACE(std::string(path.name) + " " + t.name);
      const auto k = static_cast<int64_t>(t.a.size());
      std::vector<std::byte> a(2 * t.a.size()), b(2 * t.b.size());
      for (std::size_t i = 0; i < t.a.size(); ++i) {
        encode(GemmType::kBF16, t.a[i], &a[2 * i]);
        encode(GemmType::kBF16, t.b[i], &b[2 * i]);
      }
      float c = 1.0f;
      const GemmMatrix am{a.data(), GemmType::kBF16, 1, k}, bm{b.data(), GemmType::kBF16, k, 1};
      const GemmOutput cm{&c, 1, 1};
      gemm(am, bm, cm);
      const GemmProblem problem = GemmProblem::of(am, bm, cm, {});
      if (gemm_compute_type(problem) == GemmType::kBF16) {
        EXPECT_TRUE(c == t.expected || c == 0.0f) << c;
      } else {
        EXPECT_EQ(c, t.expected);
      }
    }
  }
}

// Power-of-two scales commute with rounding, so they must be applied without changing any bit
// beyond the exponent: C(alpha, sa, sb) = alpha·sa·sb · C(1, 1, 1), and with a bias
// C(alpha) = alpha · C(1).
TEST(GemmScales, PowersOfTwoScaleTheResultExactly) {
  const Layout base{.name = "base", .m = 37, .k = 70, .n = 45, .b_transposed = true, .c_pad = 3};
  for (const TypePair types : {kTypePairs[0], kTypePairs[1], kTypePairs[4], kTypePairs[7]}) {
    std::mt19937 rng(7);
    Layout unit = base, scaled = base, unit_bias = base, scaled_bias = base;
    scaled.alpha = 16.0f, scaled.sa = 0.125f, scaled.sb = 32.0f;  // 2^4 · 2^-3 · 2^5 = 2^6
    unit_bias.bias = scaled_bias.bias = true;
    scaled_bias.alpha = 8.0f;
    Problem p(unit, types, rng);
    p.bias.resize(idx(base.n));
    std::generate(p.bias.begin(), p.bias.end(), [&] { return random_value(GemmType::kF32, rng); });
    for (const Path& path : kPaths) {
      SCOPED_TRACE(std::string(path.name) + " " + short_name(types.a) + " x " +
                   short_name(types.b));
      const ForcedPath forced(path);
      auto run = [&](const Layout& l, float factor) {
        p.layout = l;
        return p.run().values(factor);
      };
      EXPECT_EQ(run(scaled, 1.0f), run(unit, 64.0f));
      EXPECT_EQ(run(scaled_bias, 1.0f), run(unit_bias, 8.0f));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

struct Call {
  GemmMatrix a, b;
  GemmOutput c;
  GemmOptions options;
};

struct BadCall {
  const char* name;
  std::function<void(Call&)> spoil;
  std::vector<std::string> expected;  // substrings of the message besides the op's name
};

TEST(GemmErrors, NameTheOpAndTheShapes) {
  std::vector<float> a(3 * 4, 1.0f), b(6 * 5, 1.0f), c(3 * 6, 0.0f);
  const Call good{{a.data(), GemmType::kF32, 3, 4}, {b.data(), GemmType::kF32, 4, 5},
                  {c.data(), 3, 5}, {}};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const BadCall bad[] = {
      {"inner dimensions", [](Call& x) { x.b.rows = 6; }, {"f32[3x4]", "f32[6x5]"}},
      {"inner dimensions transposed", [](Call& x) { x.a.transposed = true; },
       {"f32[3x4]ᵀ", "f32[4x5]"}},
      {"output shape", [](Call& x) { x.c.cols = 6; }, {"f32[3x4]", "f32[4x5]", "[3x6]", "[3x5]"}},
      {"a row stride", [](Call& x) { x.a.row_stride = 3; }, {"f32[3x4]", "f32[4x5]"}},
      {"c row stride", [](Call& x) { x.c.row_stride = 4; }, {"f32[3x4]", "[3x5]"}},
      {"negative dimension", [](Call& x) { x.a.rows = -3; x.c.rows = -3; }, {"f32[-3x4]"}},
      {"alpha nan", [nan](Call& x) { x.options.alpha = nan; }, {"f32[3x4]", "f32[4x5]", "nan"}},
      {"alpha inf", [inf](Call& x) { x.options.alpha = inf; }, {"f32[3x4]", "f32[4x5]", "inf"}},
      {"scale inf", [inf](Call& x) { x.b.scale = -inf; }, {"f32[3x4]", "f32[4x5]", "inf"}},
      {"null a", [](Call& x) { x.a.data = nullptr; }, {"f32[3x4]", "f32[4x5]", "null"}},
      {"null b", [](Call& x) { x.b.data = nullptr; }, {"f32[3x4]", "f32[4x5]", "null"}},
      {"null c", [](Call& x) { x.c.data = nullptr; }, {"f32[3x4]", "f32[4x5]", "null"}},
  };
  for (const BadCall& bad_call : bad) {
    SCOPED_TRACE(bad_call.name);
    Call call = good;
    bad_call.spoil(call);
    try {
      gemm(call.a, call.b, call.c, call.options, "my_matmul");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("my_matmul"), std::string::npos) << message;
      for (const std::string& part : bad_call.expected) {
        EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
      }
    }
  }
  EXPECT_EQ(c, std::vector<float>(3 * 6, 0.0f)) << "a failed call wrote its output";
}

// gemm_prepare reads no data, so null pointers are fine; shape errors are still reported.
TEST(GemmErrors, PrepareChecksShapesButNotData) {
  const ForcedPath forced;
  EXPECT_NO_THROW(gemm_prepare({nullptr, GemmType::kBF16, 64, 64},
                               {nullptr, GemmType::kF32, 64, 32}, {nullptr, 64, 32}));
  EXPECT_THROW(gemm_prepare({nullptr, GemmType::kBF16, 64, 64}, {nullptr, GemmType::kF32, 63, 32},
                            {nullptr, 64, 32}, {}, "my_prepare"),
               Error);
}

// ---------------------------------------------------------------------------------------------
// Determinism, caching, engine selection
// ---------------------------------------------------------------------------------------------

std::string fmt_shape(GemmType type, int64_t m, int64_t k, int64_t n) {
  return std::string(short_name(type)) + "_" + std::to_string(m) + "x" + std::to_string(k) + "x" +
         std::to_string(n);
}

// A packed M×K · K×N problem with random operands of one type, run into a fresh output.
struct PackedProblem {
  Problem problem;
  PackedProblem(GemmType type, int64_t m, int64_t k, int64_t n, std::mt19937& rng)
      : problem(Layout{.name = "packed", .m = m, .k = k, .n = n, .bias = true}, {type, type},
                rng) {}
  std::vector<float> run() const { return problem.run().values(); }
};

TEST(GemmDeterminism, SameProblemGivesSameBits) {
  std::mt19937 rng(11);
  for (const GemmType type : {GemmType::kF32, GemmType::kBF16, GemmType::kE4M3}) {
    const PackedProblem p(type, 96, 300, 80, rng);
    for (const Path& path : kPaths) {
      SCOPED_TRACE(std::string(path.name) + " " + short_name(type));
      const ForcedPath forced(path);
      const std::vector<float> first = p.run();
      EXPECT_EQ(std::memcmp(first.data(), p.run().data(), first.size() * sizeof(float)), 0);
    }
  }
}

// The contract allows different bits for different thread counts; this records what happens on
// this machine (see the test output) rather than asserting it. The second shape has a long K and
// a small output, which a kernel is more likely to split over the threads along K.
TEST(GemmDeterminism, ReportsWhetherThreadCountChangesBits) {
  struct Shape {
    int64_t m, k, n;
  };
  std::mt19937 rng(12);
  const int saved = omp_get_max_threads();
  for (const GemmType type : {GemmType::kF32, GemmType::kBF16}) {
    for (const Shape shape : {Shape{256, 1024, 256}, Shape{16, 8192, 16}}) {
      const PackedProblem p(type, shape.m, shape.k, shape.n, rng);
      auto run_with = [&](int threads) {
        omp_set_num_threads(threads);
        const ForcedPath forced;  // plans are made afresh with this thread count
        return p.run();
      };
      const std::vector<float> one = run_with(1), two = run_with(2);
      omp_set_num_threads(saved);
      std::size_t differing = 0;
      for (std::size_t e = 0; e < one.size(); ++e) {
        differing += std::bit_cast<std::uint32_t>(one[e]) != std::bit_cast<std::uint32_t>(two[e]);
      }
      const std::string what = fmt_shape(type, shape.m, shape.k, shape.n);
      std::printf("[ report   ] %s on %s: 1 vs 2 threads, %zu of %zu outputs differ\n",
                  what.c_str(), gemm_isa().c_str(), differing, one.size());
      RecordProperty(what + "_differing", static_cast<int>(differing));
    }
  }
}

GemmProblem f32_problem(int64_t m, int64_t k, int64_t n) {
  return GemmProblem::of({nullptr, GemmType::kF32, m, k}, {nullptr, GemmType::kF32, k, n},
                         {nullptr, m, n}, {});
}

TEST(GemmEngineSelection, EigenForVectorsOneDnnForMatrices) {
  const ForcedPath forced;
  EXPECT_EQ(gemm_engine_for(f32_problem(1024, 1024, 1)), GemmEngine::kEigen);   // one column
  EXPECT_EQ(gemm_engine_for(f32_problem(1, 1024, 1024)), GemmEngine::kOneDnn);  // one row
  EXPECT_EQ(gemm_engine_for(f32_problem(16, 16, 16)), GemmEngine::kEigen);      // tiny
  EXPECT_EQ(gemm_engine_for(f32_problem(256, 256, 256)), GemmEngine::kOneDnn);
  EXPECT_EQ(gemm_compute_type(f32_problem(256, 256, 256)), GemmType::kF32);
}

TEST(GemmCache, PrepareCreatesAPrimitiveOnce) {
  const ForcedPath forced;
  const GemmMatrix a{nullptr, GemmType::kF32, 64, 64}, b{nullptr, GemmType::kF32, 64, 64};
  const GemmOutput c{nullptr, 64, 64};
  const std::size_t before = gemm_cached_primitive_count();
  gemm_prepare(a, b, c);
  EXPECT_EQ(gemm_cached_primitive_count(), before + 1);
  gemm_prepare(a, b, c);
  EXPECT_EQ(gemm_cached_primitive_count(), before + 1);
  // Asking for the engine looks the plan up (it is what gemm() will use), creating nothing new.
  EXPECT_EQ(gemm_engine_for(GemmProblem::of(a, b, c, {})), GemmEngine::kOneDnn);
  EXPECT_EQ(gemm_cached_primitive_count(), before + 1);
}

TEST(GemmCache, ProfileCountsCallsPerProblem) {
  const ForcedPath forced;
  std::mt19937 rng(13);
  for (const int64_t m : {int64_t{1}, int64_t{64}}) {  // one problem per engine
    const PackedProblem p(GemmType::kF32, m, 64, 64, rng);
    reset_gemm_profile();
    for (int i = 0; i < 3; ++i) p.run();
    const GemmProblem key =
        GemmProblem::of(p.problem.a_matrix(), p.problem.b_matrix(), {nullptr, m, 64},
                        p.problem.options());
    const std::vector<GemmProfileEntry> profile = gemm_profile();
    const auto entry = std::find_if(profile.begin(), profile.end(),
                                    [&](const GemmProfileEntry& e) { return e.problem == key; });
    ASSERT_NE(entry, profile.end()) << key.to_string();
    EXPECT_EQ(entry->calls, 3u);
    EXPECT_EQ(entry->engine, gemm_engine_for(key));
    EXPECT_EQ(entry->engine, m == 1 ? GemmEngine::kEigen : GemmEngine::kOneDnn);
    EXPECT_EQ(entry->compute_type, GemmType::kF32);
  }
}

}  // namespace
}  // namespace unitscale

// graph_fuzzer: a libFuzzer target that decodes its input into a random op graph and runs it.
//
// Each input is read (FuzzedDataProvider) as:
//   1. a graph, unit-scaled or unscaled, and a seed for the tensor data;
//   2. a random sequence of ops: every op of forward_ops(), recorded through its builder with random
//      options (axes, mult, constraints, p, causal, eps, tau, ...) on earlier values or on fresh
//      inputs, parameters, constants or states of compatible small shapes (rank 0 and zero-sized
//      dims included), or through Graph::apply with random attributes, as a config that names ops
//      (op_by_name) would;
//   3. sometimes autodiff from a scalar reduction of some value, the dead-code pass and set_scale
//      with a random name and value;
//   4. an Executor over random outputs, its inputs bound to random data (finite, sometimes
//      ±inf/NaN, integer-valued for ids, labels and masks), run once or twice.
//
// Every unitscale::Error is an accepted outcome (the op or the step is skipped). Findings are any
// other exception, a crash, a sanitizer report, or a failed check, which prints the graph and
// aborts. The checks (see Checker):
//   - each node's output shapes in the executor are the graph's;
//   - a requested output read after the run equals what its node wrote (the memory plan);
//   - a second run on the same data gives bit-identical outputs (graphs without dropout);
//   - reshape, transpose and concat move elements exactly; softmax rows of finite inputs sum to α;
//   - every forward node agrees with the double-precision reference implementations
//     (tests/support/reference_ops.hpp) within the tolerance stated in check_against_reference.
//
// Known library bugs that are not fixed yet are not generated (see KNOWN BUGS below), so that a
// run goes on finding new ones; UNITSCALE_FUZZ_KNOWN_BUGS=<name,...|all> generates them again.
//
// Reproduce a finding:  build/fuzz/fuzz/graph_fuzzer <file>   (runs the file once; add
// UNITSCALE_FUZZ_VERBOSE=1 to print every step and the graph). UNITSCALE_FUZZ_STATS=1 prints, at
// exit, how often each op was tried and recorded and how many nodes were checked. Sanitizer
// reports end with the graph being built or run.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/graph.hpp"
#include "unitscale/ops.hpp"
#include "unitscale/tensor.hpp"

#if UNITSCALE_FUZZ_REFERENCE
#include "support/reference_ops.hpp"
#endif

namespace {

namespace us = unitscale;

const bool kVerbose = std::getenv("UNITSCALE_FUZZ_VERBOSE") != nullptr;

// Graphs with a larger value are built but not run (shapes such as a padding of 2^40 ask for
// them); constants that large are not made.
constexpr std::int64_t kMaxRunElements = std::int64_t{1} << 22;

void note(const std::string& text) {
  if (kVerbose) std::fprintf(stderr, "graph_fuzzer: %s\n", text.c_str());
}

// ------------------------------------------------------------------------------------------------
// Statistics (UNITSCALE_FUZZ_STATS=1): what the fuzzer reached, printed at exit.

enum Action {
  kMatmul, kLinear, kLinearReadout, kConv1d, kAdd, kAddScalar, kMul, kScale, kRelu, kGelu, kSilu,
  kSiluGlu, kSoftmax, kDropout, kLayerNorm, kRmsNorm, kResidualSplit, kResidualAdd, kEmbedding,
  kAttention, kCrossEntropy, kMseLoss, kReshape, kTranspose, kSlice, kConcat, kSum, kMean, kMax,
  kExp, kLog, kSqrt, kWhere, kCast, kApplyRandom, kApplyMutated, kActionCount
};

constexpr std::array<const char*, kActionCount> kActionNames = {
    "matmul", "linear", "linear_readout", "conv1d", "add", "add(scalar)", "mul", "scale", "relu",
    "gelu", "silu", "silu_glu", "softmax", "dropout", "layer_norm", "rms_norm", "residual_split",
    "residual_add", "embedding", "attention", "cross_entropy", "mse_loss", "reshape", "transpose",
    "slice", "concat", "sum", "mean", "max", "exp", "log", "sqrt", "where", "cast",
    "apply(random)", "apply(mutated)"};

struct Stats {
  std::array<std::uint64_t, kActionCount> tried{}, recorded{};
  std::uint64_t cases = 0, autodiffs = 0, executors = 0, runs = 0, nodes_run = 0;
  std::uint64_t reference_checked = 0, reference_skipped = 0, reference_declined = 0;
  std::map<std::string, std::uint64_t, std::less<>> checked_by_op;

  ~Stats() {
    if (std::getenv("UNITSCALE_FUZZ_STATS") == nullptr) return;
    std::fprintf(stderr, "graph_fuzzer stats: %llu cases, %llu autodiffs, %llu executors, %llu runs, "
                         "%llu nodes run\n",
                 static_cast<unsigned long long>(cases), static_cast<unsigned long long>(autodiffs),
                 static_cast<unsigned long long>(executors), static_cast<unsigned long long>(runs),
                 static_cast<unsigned long long>(nodes_run));
    for (std::size_t a = 0; a < kActionCount; ++a) {
      std::fprintf(stderr, "  %-16s tried %8llu  recorded %8llu\n", kActionNames[a],
                   static_cast<unsigned long long>(tried[a]),
                   static_cast<unsigned long long>(recorded[a]));
    }
    std::fprintf(stderr, "  reference: %llu nodes compared, %llu skipped (inputs not tame), %llu "
                         "declined by the reference\n",
                 static_cast<unsigned long long>(reference_checked),
                 static_cast<unsigned long long>(reference_skipped),
                 static_cast<unsigned long long>(reference_declined));
    for (const auto& [op, n] : checked_by_op) {
      std::fprintf(stderr, "    %-30s %8llu\n", op.c_str(), static_cast<unsigned long long>(n));
    }
  }
};
Stats stats;

// ------------------------------------------------------------------------------------------------
// Tensor data: a splitmix64 stream seeded from the input, so one input byte string gives one data
// set without spending fuzz bytes on every element.

struct Rng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }  // [0, 1)
};

// How a leaf's elements are drawn.
enum class Fill {
  kNormal,    // uniform in [-3, 3]
  kWide,      // ±10^[0, 4): still "tame" for the reference comparison
  kPositive,  // (0, 4], for log and sqrt
  kIntegers,  // integers in [lo, hi]: ids, labels, masks; `extra` (if set) for a quarter of them
  kSpecials,  // kNormal with ±inf, NaN, ±0, huge, tiny and denormal values mixed in
  kConstant,  // one value everywhere (±inf, NaN, ±0, 1, ...): constant rows, all-(-inf) rows
};

struct FillSpec {
  Fill fill = Fill::kNormal;
  std::int64_t lo = 0, hi = 0;
  std::optional<float> extra = std::nullopt;
  us::DType dtype = us::DType::kF32;
};

float draw(Rng& rng, const FillSpec& spec) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  static constexpr std::array<float, 12> kSpecial = {
      kInf, -kInf, std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f, 1e30f, -1e30f, 1e-30f,
      1e-40f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(), 2.5f};
  switch (spec.fill) {
    case Fill::kNormal:
      return static_cast<float>(rng.uniform() * 6 - 3);
    case Fill::kWide:
      return static_cast<float>((rng.uniform() * 2 - 1) * std::pow(10.0, rng.uniform() * 4));
    case Fill::kPositive:
      return static_cast<float>(rng.uniform() * 4 + 1e-3);
    case Fill::kIntegers: {
      if (spec.extra && rng.next() % 4 == 0) return *spec.extra;
      const auto span = static_cast<std::uint64_t>(spec.hi - spec.lo) + 1;
      return static_cast<float>(spec.lo + static_cast<std::int64_t>(rng.next() % span));
    }
    case Fill::kSpecials:
      if (rng.next() % 3 != 0) return static_cast<float>(rng.uniform() * 6 - 3);
      return kSpecial[rng.next() % kSpecial.size()];
    case Fill::kConstant:
      break;  // make_tensor draws the one value
  }
  return 0.0f;
}

us::Tensor make_tensor(Rng& rng, const us::Shape& shape, const FillSpec& spec) {
  const auto n = static_cast<std::size_t>(shape.numel());
  if (spec.fill == Fill::kConstant && spec.dtype == us::DType::kF32) {
    static constexpr std::array<float, 8> kValues = {
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f, 1.0f, -3.0f, 1e30f};
    const std::vector<float> values(n, kValues[rng.next() % kValues.size()]);
    return us::Tensor(shape, std::span<const float>(values));
  }
  if (spec.dtype == us::DType::kF32) {
    std::vector<float> values(n);
    for (float& v : values) v = draw(rng, spec);
    return us::Tensor(shape, std::span<const float>(values));
  }
  if (spec.dtype == us::DType::kI32) {
    static constexpr std::array<std::int32_t, 5> kOdd = {std::numeric_limits<std::int32_t>::min(),
                                                         std::numeric_limits<std::int32_t>::max(),
                                                         -1, (1 << 24) + 1, -100};
    std::vector<std::int32_t> values(n);
    for (std::int32_t& v : values) {
      if (spec.fill == Fill::kIntegers) {
        const double x = draw(rng, spec);
        v = x >= -2147483648.0 && x < 2147483648.0 ? static_cast<std::int32_t>(x) : kOdd[0];
      } else {
        v = rng.next() % 4 == 0 ? kOdd[rng.next() % kOdd.size()] : static_cast<std::int32_t>(rng.next() % 16) - 3;
      }
    }
    return us::Tensor(shape, std::span<const std::int32_t>(values));
  }
  // The low-precision dtypes: random codes (NaN and infinity encodings included).
  us::Tensor t(shape, spec.dtype);
  std::byte* bytes = t.bytes();
  for (std::size_t i = 0; i < t.byte_size(); ++i) bytes[i] = static_cast<std::byte>(rng.next());
  return t;
}

// ------------------------------------------------------------------------------------------------
// KNOWN BUGS. Inputs that trigger a reported library bug that is not fixed yet are not generated,
// so that the fuzzer (and CI's 60-second run) goes on looking for new ones. Each has an input in
// fuzz/regressions/ whose test is disabled until the fix lands. UNITSCALE_FUZZ_KNOWN_BUGS, a
// comma-separated list of the names below or "all", lets the fuzzer generate those inputs all the
// same (each regression test names its own bug). When a bug is fixed, delete its entry here and
// enable its regression test in fuzz/CMakeLists.txt.

// Whether inputs that hit the known bug `name` are avoided. Unused while no bug is known.
[[maybe_unused]] bool avoid(std::string_view name) {
  static const std::string enabled = [] {
    const char* env = std::getenv("UNITSCALE_FUZZ_KNOWN_BUGS");
    return "," + std::string(env != nullptr ? env : "") + ",";
  }();
  return enabled != ",all," && enabled.find("," + std::string(name) + ",") == std::string::npos;
}

bool product_overflows(std::span<const std::int64_t> dims) {
  std::int64_t product = 1;
  for (const std::int64_t d : dims) {
    if (d >= 0 && __builtin_mul_overflow(product, d, &product)) return true;
  }
  return false;
}

// Whether recording `op` with `attrs` would hit a known bug (checked before recording). None at
// present: reshape-overflow, shape-numel-overflow and conv1d-overflow are fixed (the op or Shape
// refuses the dims with an Error, which is an accepted outcome).
bool known_bug_when_recorded(std::string_view /*op*/, const us::Attributes& /*attrs*/) {
  return false;
}

// Whether running `node` would hit a known bug (checked before the executor is made: the graph
// is built, differentiated and so on, but not run). None at present: float-attributes is fixed
// (Graph::apply refuses real attributes beyond float range).
bool known_bug_when_run(const us::Node& /*node*/) { return false; }

// ------------------------------------------------------------------------------------------------
// Findings: print what failed and the graph, then abort (libFuzzer saves the input).

// The graph being built or run and what is being done to it, for the sanitizer reports below.
const us::Graph* current_graph = nullptr;
std::string current_stage;

void print_current_graph() {
  static bool printing = false;  // a report while printing must not recurse
  if (current_graph == nullptr || printing) return;
  printing = true;
  try {
    std::fprintf(stderr, "---- graph_fuzzer was %s; the graph so far:\n%s----\n",
                 current_stage.c_str(), current_graph->to_string().c_str());
  } catch (...) {
    std::fprintf(stderr, "---- graph_fuzzer was %s (the graph cannot be printed)\n",
                 current_stage.c_str());
  }
  printing = false;
}

[[noreturn]] void finding(const us::Graph& graph, const std::string& what) {
  current_graph = nullptr;
  std::fprintf(stderr, "\n==== graph_fuzzer finding: %s\n---- graph:\n%s----\n", what.c_str(),
               graph.to_string().c_str());
  std::abort();
}

std::string fmt_double(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", v);
  return text;
}

bool same_bits(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Every element of a tensor of `dtype` as a double: exact for f32 and i32, the format layer's
// exact widening for the others.
std::vector<double> decode(us::DType dtype, const std::byte* bytes, std::size_t n) {
  std::vector<double> out(n);
  const auto as = [&]<class T>(std::type_identity<T>) {
    for (std::size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, bytes + i * sizeof(T), sizeof(T));
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, std::int32_t>) {
        out[i] = static_cast<double>(v);
      } else {
        out[i] = static_cast<double>(us::to_float(v));
      }
    }
  };
  switch (dtype) {
    case us::DType::kF32: as(std::type_identity<float>{}); break;
    case us::DType::kI32: as(std::type_identity<std::int32_t>{}); break;
    case us::DType::kF16: as(std::type_identity<us::float16>{}); break;
    case us::DType::kBF16: as(std::type_identity<us::bfloat16>{}); break;
    case us::DType::kE4M3FN: as(std::type_identity<us::float8_e4m3fn>{}); break;
    case us::DType::kE5M2: as(std::type_identity<us::float8_e5m2>{}); break;
    case us::DType::kE4M3FNUZ: as(std::type_identity<us::float8_e4m3fnuz>{}); break;
    case us::DType::kE5M2FNUZ: as(std::type_identity<us::float8_e5m2fnuz>{}); break;
    case us::DType::kE8M0FNU: as(std::type_identity<us::float8_e8m0fnu>{}); break;
  }
  return out;
}

// The values a node read and wrote, as the checks see them.
struct Stored {
  us::Shape shape;
  us::DType dtype = us::DType::kF32;
  std::vector<std::byte> bytes;  // as the executor had them
  std::vector<double> data;      // every element, decoded
};

// ------------------------------------------------------------------------------------------------
// The comparison with the double-precision references.
//
// THE HOOK: check_against_reference() is called for every forward node the executor runs, with
// the node's inputs and outputs. When tests/support/reference_ops.{hpp,cpp} exist (CMake then
// defines UNITSCALE_FUZZ_REFERENCE=1 and compiles reference_ops.cpp in), it compares each output
// with reference_forward() on the same inputs and attributes (resolved unit scales included).
//
// It compares only "tame" nodes: every input finite with |x| <= 1e4, and |mult| <= 16 (the
// references compute in double from the FP32 inputs the kernel saw, so the only differences are
// the kernels' FP32 rounding); the ops that only select or move elements (max, reshape,
// transpose, slice, concat, where) whatever their inputs. Tolerance per element, with r the
// reference and k the kernel:
//
//   |k − r| <= 1e-4·|r| + 1e-5·M·c
//
// where M is the scale of the output: max(1, max |r|) over the output, or for sums of products
// (matmul, linear, linear_readout, conv1d, add, residual_add, sum, mean, mse_loss,
// cross_entropy, attention) the reference on |inputs| at that element (the classic bound for
// cancellation), and c an op's condition factor: 1, except for layer_norm and rms_norm (the row's
// max |x| over its std, since x − mean loses precision when the std is small next to the mean),
// softmax, cross_entropy and attention (1 + the largest |logit|, since exp turns an absolute
// rounding error of a logit into a relative one of the output). NaN and ±inf must match the
// reference's, except that a finite reference beyond FP32's range may come out as inf. Nodes the
// references decline (std::invalid_argument: inputs or attributes their formulas do not cover)
// are skipped.

#if UNITSCALE_FUZZ_REFERENCE
namespace ref = unitscale::testing;

bool is_tame(const Stored& s) {
  return std::all_of(s.data.begin(), s.data.end(),
                     [](double x) { return std::isfinite(x) && std::fabs(x) <= 1e4; });
}

double max_abs(std::span<const double> v) {
  double m = 0;
  for (const double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Reads a double attribute (`fallback` when absent or of another type).
double attr_or(const us::Attributes& attrs, std::string_view name, double fallback) {
  try {
    return attrs.has(name) ? attrs.get_double("graph_fuzzer", name) : fallback;
  } catch (const us::Error&) {
    return fallback;
  }
}
#endif

void check_against_reference(const us::Graph& graph, const us::Node& node,
                             std::span<const Stored* const> inputs,
                             std::span<const Stored* const> outputs, std::uint64_t step) {
#if UNITSCALE_FUZZ_REFERENCE
  const std::string_view op = node.op->name;
  if (!ref::has_reference(op)) return;
  const double mult = attr_or(node.attrs, "mult", 1.0);
  bool tame = std::isfinite(mult) && std::fabs(mult) <= 16;
  ref::RefInputs ref_inputs, abs_inputs;
  double max_input = 0;
  for (const Stored* in : inputs) {
    if (in == nullptr) {
      ref_inputs.emplace_back(std::nullopt);
      abs_inputs.emplace_back(std::nullopt);
      continue;
    }
    tame = tame && is_tame(*in);
    std::vector<double> v(in->data.begin(), in->data.end()), a(v.size());
    std::transform(v.begin(), v.end(), a.begin(), [](double x) { return std::fabs(x); });
    max_input = std::max(max_input, max_abs(in->data));
    ref_inputs.emplace_back(ref::RefTensor(in->shape, std::move(v)));
    abs_inputs.emplace_back(ref::RefTensor(in->shape, std::move(a)));
  }
  // Ops that only select or move elements are compared whatever their inputs (NaN and ±inf
  // included): their results are exact.
  static constexpr std::array<std::string_view, 6> kExact = {"max", "reshape", "transpose", "slice",
                                                             "concat", "where"};
  const bool exact = std::find(kExact.begin(), kExact.end(), op) != kExact.end();
  if (!tame && !exact) {
    ++stats.reference_skipped;
    return;
  }
  ref::RefContext context;
  context.keeps = [step](std::uint64_t seed, std::int64_t index, double p) {
    return us::dropout_keeps(us::dropout_seed_at_step(seed, step), index, p);
  };
  std::vector<ref::RefTensor> expected;
  try {
    expected = ref::reference_forward(op, ref_inputs, node.attrs, context);
  } catch (const std::invalid_argument&) {
    // Inputs or attributes the references do not cover (they say which in the message).
    ++stats.reference_declined;
    return;
  } catch (const us::Error&) {
    ++stats.reference_declined;
    return;
  }
  if (expected.size() != outputs.size()) {
    finding(graph, std::string(op) + ": the reference gives " + std::to_string(expected.size()) +
                       " outputs, the op " + std::to_string(outputs.size()));
  }

  // Sums of products: the reference on |inputs| bounds the cancellation. (Attention's output is a
  // convex combination of v's rows, so |v| bounds it too.)
  static constexpr std::array<std::string_view, 11> kSums = {
      "matmul", "linear", "linear_readout", "conv1d", "add", "residual_add", "sum", "mean",
      "mse_loss", "cross_entropy", "scaled_dot_product_attention"};
  std::vector<ref::RefTensor> magnitude;
  if (std::find(kSums.begin(), kSums.end(), op) != kSums.end()) {
    try {
      magnitude = ref::reference_forward(op, abs_inputs, node.attrs, context);
    } catch (const std::exception&) {
      magnitude.clear();
    }
  }
  // layer_norm adds its bias to x̂·w, and the two may cancel: |x̂| ≤ √n (n the normalised
  // length) times |w|, plus |b|, all times |α|, bounds the terms.
  if (op == "layer_norm" && inputs.size() >= 3 && inputs[1] != nullptr && inputs[2] != nullptr &&
      !expected.empty()) {
    const std::vector<double>& w = inputs[1]->data;
    const std::vector<double>& b = inputs[2]->data;
    const auto n = static_cast<double>(w.size());
    const double alpha = std::fabs(attr_or(node.attrs, "alpha", 1.0));
    ref::RefTensor bound(expected[0].shape);
    for (std::size_t i = 0; i < bound.v.size(); ++i) {
      bound.v[i] = alpha * (std::sqrt(n) * std::fabs(w[i % w.size()]) + std::fabs(b[i % b.size()]));
    }
    magnitude = {std::move(bound)};
  }
  // Condition factor.
  double condition = 1;
  if (op == "softmax" || op == "cross_entropy") {
    condition = 1 + std::fabs(mult) * max_input;
  } else if (op == "scaled_dot_product_attention" && inputs.size() >= 2 && inputs[0] && inputs[1]) {
    // |logit| <= (m/d)·d·max|q|·max|k|.
    condition = 1 + std::fabs(mult) * max_abs(inputs[0]->data) * max_abs(inputs[1]->data);
  } else if ((op == "layer_norm" || op == "rms_norm") && !inputs.empty() && inputs[0]) {
    const Stored& x = *inputs[0];
    const std::int64_t n = x.shape.rank() > 0 ? x.shape.dim(-1) : 1;
    const double eps = attr_or(node.attrs, "eps", 1e-5);
    for (std::int64_t row = 0; n > 0 && row * n < static_cast<std::int64_t>(x.data.size()); ++row) {
      double mean = 0, sq = 0, peak = 0;
      for (std::int64_t j = 0; j < n; ++j) {
        const double v = x.data[static_cast<std::size_t>(row * n + j)];
        mean += v / static_cast<double>(n);
        peak = std::max(peak, std::fabs(v));
      }
      for (std::int64_t j = 0; j < n; ++j) {
        const double v = x.data[static_cast<std::size_t>(row * n + j)] - (op == "rms_norm" ? 0 : mean);
        sq += v * v / static_cast<double>(n);
      }
      const double denom = std::sqrt(std::max(sq + eps, 0.0));
      condition = std::max(condition, denom > 0 ? 1 + peak / denom : 1e30);
    }
  }

  for (std::size_t k = 0; k < outputs.size(); ++k) {
    if (outputs[k] == nullptr) continue;
    const Stored& got = *outputs[k];
    const ref::RefTensor& want = expected[k];
    if (!(got.shape == want.shape) || static_cast<std::int64_t>(got.data.size()) != want.numel()) {
      finding(graph, std::string(op) + ": output " + std::to_string(k) + " has shape " +
                         got.shape.to_string() + ", the reference " + want.shape.to_string());
    }
    double scale = 1;
    for (const double r : want.v) {
      if (std::isfinite(r)) scale = std::max(scale, std::fabs(r));
    }
    const bool per_element = k < magnitude.size() && magnitude[k].numel() == want.numel();
    for (std::size_t i = 0; i < got.data.size(); ++i) {
      const double g = got.data[i], r = want.v[i];
      bool ok;
      if (std::isnan(r)) {
        ok = std::isnan(g);
      } else if (std::isinf(r)) {
        ok = g == r;
      } else if (std::fabs(r) > 3e38) {
        ok = std::isinf(g) ? std::signbit(g) == std::signbit(r) : std::fabs(g - r) <= 1e-4 * std::fabs(r);
      } else {
        double m = per_element && std::isfinite(magnitude[k].v[i]) ? std::max(1.0, std::fabs(magnitude[k].v[i])) : scale;
        if (per_element && !std::isfinite(magnitude[k].v[i])) m = 1e30;
        ok = std::fabs(g - r) <= 1e-4 * std::fabs(r) + 1e-5 * m * condition;
      }
      if (!ok) {
        // The inputs: shapes, and the first elements of each.
        std::string list;
        for (const Stored* in : inputs) {
          list += list.empty() ? "" : "; ";
          if (in == nullptr) {
            list += "absent";
            continue;
          }
          list += in->shape.to_string() + " {";
          for (std::size_t e = 0; e < std::min<std::size_t>(in->data.size(), 8); ++e) {
            list += (e == 0 ? "" : ", ") + fmt_double(in->data[e]);
          }
          list += in->data.size() > 8 ? ", ...}" : "}";
        }
        char text[256];
        std::snprintf(text, sizeof text,
                      "%.*s: output %zu element %zu is %.9g, the double-precision reference %.9g "
                      "(condition factor %.3g); attributes ",
                      static_cast<int>(op.size()), op.data(), k, i, g, r, condition);
        finding(graph, text + node.attrs.to_string() + "; inputs " + list);
      }
    }
  }
  ++stats.reference_checked;
  ++stats.checked_by_op[std::string(op)];
#else
  // No reference implementations in this build (tests/support/reference_ops.cpp is missing).
  (void)graph, (void)node, (void)inputs, (void)outputs, (void)step;
#endif
}

// ------------------------------------------------------------------------------------------------
// Checker: observes every node of a run, keeps a copy of every value, and checks what is cheap.

class Checker {
 public:
  explicit Checker(const us::Graph& graph) : graph_(graph) {}

  // Starts a run: the leaves' data (bound inputs and parameters, constants) and the step.
  void begin_run(const std::map<int, const us::Tensor*>& bound, std::uint64_t step) {
    values_.clear();
    step_ = step;
    for (const auto& [id, tensor] : bound) store(id, tensor->view());
    for (int id = 0; id < graph_.value_count(); ++id) {
      if (graph_.info(id).kind == us::ValueKind::kConstant) store(id, graph_.constant_value(id).view());
    }
  }

  const Stored* value(int id) const {
    const auto it = values_.find(id);
    return it == values_.end() ? nullptr : &it->second;
  }

  void on_node(const us::NodeEvent& event) {
    ++stats.nodes_run;
    const us::Node& node = event.node;
    if (event.outputs.size() != node.outputs.size()) {
      finding(graph_, std::string(node.op->name) + ": the executor gave " +
                          std::to_string(event.outputs.size()) + " outputs for " +
                          std::to_string(node.outputs.size()));
    }
    std::vector<const Stored*> outputs;
    for (std::size_t o = 0; o < node.outputs.size(); ++o) {
      const int id = node.outputs[o];
      const us::TensorView& view = event.outputs[o];
      if (id < 0) {
        outputs.push_back(nullptr);
        continue;
      }
      if (!us::present(view) || !(view.shape() == graph_.info(id).shape)) {
        finding(graph_, std::string(node.op->name) + ": output %" + std::to_string(id) + " has shape " +
                            (us::present(view) ? view.shape().to_string() : "(absent)") +
                            " in the executor, " + graph_.info(id).shape.to_string() + " in the graph");
      }
      outputs.push_back(store(id, view));
    }
    std::vector<const Stored*> inputs;
    for (const int id : node.inputs) {
      if (id < 0) {
        inputs.push_back(nullptr);
        continue;
      }
      const Stored* v = value(id);
      if (v == nullptr) return;  // a state, or a value of another dtype: not checked
      inputs.push_back(v);
    }
    if (node.differentiates >= 0) return;  // backward and accumulate_grad nodes
    check_invariants(node, inputs, outputs);
    check_against_reference(graph_, node, inputs, outputs, step_);
  }

 private:
  const Stored* store(int id, us::ConstTensorView view) {
    if (!us::present(view)) {
      values_.erase(id);
      return nullptr;
    }
    Stored& s = values_[id];
    s.shape = view.shape();
    s.dtype = view.dtype();
    s.bytes.assign(view.bytes(), view.bytes() + view.byte_size());
    s.data = decode(view.dtype(), view.bytes(), static_cast<std::size_t>(view.numel()));
    return &s;
  }

  std::int64_t int_attr(const us::Node& node, std::string_view name, std::int64_t fallback) const {
    return node.attrs.get_int(node.op->name, name, fallback);
  }

  void check_invariants(const us::Node& node, std::span<const Stored* const> in,
                        std::span<const Stored* const> out) const {
    const std::string_view op = node.op->name;
    if (out.empty() || out[0] == nullptr) return;
    const Stored& y = *out[0];
    if (op == "reshape") {
      if (!same_bits(in[0]->bytes, y.bytes)) finding(graph_, "reshape changed the elements");
    } else if (op == "transpose") {
      const Stored& x = *in[0];
      const int rank = x.shape.rank();
      if (rank == 0) return;
      int d0 = static_cast<int>(int_attr(node, "dim0", 0)), d1 = static_cast<int>(int_attr(node, "dim1", 0));
      d0 = d0 < 0 ? d0 + rank : d0;
      d1 = d1 < 0 ? d1 + rank : d1;
      std::vector<std::int64_t> dims(x.shape.dims().begin(), x.shape.dims().end());
      const std::size_t size = us::dtype_size(x.dtype);
      std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
      for (std::size_t flat = 0; flat < x.data.size(); ++flat) {
        // index: the multi-index of `flat` in x; the output has dims d0 and d1 swapped.
        std::vector<std::int64_t> out_index = index;
        std::swap(out_index[static_cast<std::size_t>(d0)], out_index[static_cast<std::size_t>(d1)]);
        std::vector<std::int64_t> out_dims = dims;
        std::swap(out_dims[static_cast<std::size_t>(d0)], out_dims[static_cast<std::size_t>(d1)]);
        std::int64_t out_flat = 0;
        for (int a = 0; a < rank; ++a) {
          out_flat = out_flat * out_dims[static_cast<std::size_t>(a)] + out_index[static_cast<std::size_t>(a)];
        }
        if (!same_bits(std::span(x.bytes).subspan(flat * size, size),
                       std::span(y.bytes).subspan(static_cast<std::size_t>(out_flat) * size, size))) {
          finding(graph_, "transpose put element " + std::to_string(flat) + " of x in the wrong place");
        }
        for (int a = rank - 1; a >= 0; --a) {
          if (++index[static_cast<std::size_t>(a)] < dims[static_cast<std::size_t>(a)]) break;
          index[static_cast<std::size_t>(a)] = 0;
        }
      }
    } else if (op == "concat") {
      const Stored& a = *in[0];
      const Stored& b = *in[1];
      const int rank = a.shape.rank();
      if (rank == 0) return;
      int axis = static_cast<int>(int_attr(node, "axis", 0));
      axis = axis < 0 ? axis + rank : axis;
      std::int64_t inner = 1;
      for (int d = axis + 1; d < rank; ++d) inner *= a.shape.dim(d);
      const auto size = static_cast<std::int64_t>(us::dtype_size(a.dtype));
      const std::int64_t run_a = a.shape.dim(axis) * inner * size, run_b = b.shape.dim(axis) * inner * size;
      const std::int64_t outer = run_a + run_b == 0 ? 0 : static_cast<std::int64_t>(y.bytes.size()) / (run_a + run_b);
      std::vector<std::byte> expected;
      for (std::int64_t o = 0; o < outer; ++o) {
        expected.insert(expected.end(), a.bytes.begin() + o * run_a, a.bytes.begin() + (o + 1) * run_a);
        expected.insert(expected.end(), b.bytes.begin() + o * run_b, b.bytes.begin() + (o + 1) * run_b);
      }
      if (!same_bits(expected, y.bytes)) finding(graph_, "concat did not lay out its inputs' elements");
    } else if (op == "softmax" && in[0]->dtype == us::DType::kF32 && y.dtype == us::DType::kF32) {
      const Stored& x = *in[0];
      const std::int64_t n = x.shape.rank() > 0 ? x.shape.dim(-1) : 1;
      const double alpha = node.attrs.get_double(op, "alpha", 1.0);
      const double mult = node.attrs.get_double(op, "mult", 1.0);
      if (n == 0 || !(mult > 0) || !std::isfinite(mult) || !std::isfinite(alpha)) return;
      for (std::size_t row = 0; row * static_cast<std::size_t>(n) < x.data.size(); ++row) {
        const auto first = x.data.begin() + static_cast<std::ptrdiff_t>(row * static_cast<std::size_t>(n));
        if (!std::all_of(first, first + n, [](double v) { return std::isfinite(v); })) continue;
        double sum = 0;
        for (std::int64_t j = 0; j < n; ++j) sum += y.data[row * static_cast<std::size_t>(n) + static_cast<std::size_t>(j)];
        // α is applied in float: compare with float(α), leaving room for subnormal outputs.
        const double alpha_f = static_cast<float>(alpha);
        if (!(std::fabs(sum - alpha_f) <= (1e-4 * std::fabs(alpha_f) + 1e-37) * static_cast<double>(n))) {
          finding(graph_, "softmax row " + std::to_string(row) + " of finite inputs sums to " +
                              fmt_double(sum) + ", not alpha = " + fmt_double(alpha));
        }
      }
    }
  }

  const us::Graph& graph_;
  std::map<int, Stored> values_;
  std::uint64_t step_ = 0;
};

// ------------------------------------------------------------------------------------------------
// One fuzz case.

class Case {
 public:
  Case(const std::uint8_t* data, std::size_t size) : in_(data, size) {}

  void run() {
    ++stats.cases;
    rng_.state = in_.ConsumeIntegral<std::uint64_t>();
    us::Graph graph(chance(4) ? us::Scaling::kUnscaled : us::Scaling::kUnit);
    graph_ = &graph;
    current_graph = &graph;
    try {
      build_and_run();
    } catch (const us::Error& e) {
      note(std::string("error: ") + e.what());
    } catch (const std::exception& e) {
      finding(graph, "while " + current_stage + ": an exception other than unitscale::Error: " + e.what());
    } catch (...) {
      finding(graph, "while " + current_stage + ": an exception that is not a std::exception");
    }
    current_graph = nullptr;
  }

 private:
  void stage(std::string what) {
    current_stage = std::move(what);
    note(current_stage);
  }

  void build_and_run() {
    stage("making the leaves");
    const std::size_t leaf_count = 1 + pick(4);
    for (std::size_t i = 0; i < leaf_count; ++i) new_leaf(random_shape(), random_fill());
    const std::size_t op_count = 1 + pick(12);
    for (std::size_t i = 0; i < op_count && in_.remaining_bytes() > 0; ++i) record_op();

    std::vector<us::Value> outputs;
    if (chance(2)) differentiate(outputs);
    const std::size_t extra = outputs.empty() ? 1 + pick(4) : pick(3);
    for (std::size_t i = 0; i < extra; ++i) outputs.push_back(any());
    if (chance(3)) eliminate_dead_code(outputs);
    if (chance(3)) set_scales();
    if (kVerbose || chance(4)) note("graph:\n" + graph_->to_string());
    execute(outputs);
  }

  // ---- reading the input ----
  std::size_t pick(std::size_t n) { return n <= 1 ? 0 : in_.ConsumeIntegralInRange<std::size_t>(0, n - 1); }
  // True one time in `one_in`; false once the input is used up.
  bool chance(std::size_t one_in) { return pick(one_in) == one_in - 1; }
  template <class T, std::size_t N>
  T one_of(const std::array<T, N>& options) {
    return options[pick(N)];
  }

  std::int64_t dim() {
    static constexpr std::array<std::int64_t, 16> kDims = {2, 3, 1, 4, 2, 5, 3, 0, 1, 8, 4, 6, 2, 7, 3, 16};
    return one_of(kDims);
  }
  us::Shape random_shape() {
    static constexpr std::array<std::size_t, 8> kRanks = {2, 1, 3, 0, 4, 2, 1, 3};
    std::vector<std::int64_t> dims(one_of(kRanks));
    for (auto& d : dims) d = dim();
    return us::Shape(std::move(dims));
  }
  // Mostly `d`; sometimes a wrong size, to reach the shape checks.
  std::int64_t maybe_wrong(std::int64_t d) {
    const std::int64_t wrong = d < std::numeric_limits<std::int64_t>::max() ? d + 1 : d - 1;
    return chance(24) ? (chance(2) ? wrong : 0) : d;
  }
  // An axis argument for a tensor of `rank` dims: any valid one, or one just out of range.
  int axis(int rank) { return static_cast<int>(pick(static_cast<std::size_t>(2 * rank + 3))) - rank - 1; }
  // Extreme integers for attributes that the builders pass through unchecked.
  std::int64_t extreme() {
    static constexpr std::array<std::int64_t, 6> kExtremes = {
        std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min(),
        std::int64_t{1} << 40, -(std::int64_t{1} << 40), -1, std::int64_t{1} << 31};
    return one_of(kExtremes);
  }
  // A real number for a scale, mult, tau or eps: mostly ordinary, sometimes not.
  double real(std::span<const double> ordinary) {
    static constexpr std::array<double, 9> kOdd = {
        0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        1e-30, 1e30, -0.5, 1e300, 5e-324};
    if (chance(12)) return one_of(kOdd);
    return ordinary[pick(ordinary.size())];
  }
  double mult() {
    static constexpr std::array<double, 8> k = {1.0, 0.25, 2.0, 0.5, 4.0, 1.0 / 3, 8.0, 1.0};
    return real(k);
  }
  us::Constraint constraint() {
    static constexpr std::array<us::Constraint, 10> k = {
        us::Constraint::kToOutputScale, us::Constraint::kNone, us::Constraint::kGMean,
        us::Constraint::kHMean, us::Constraint::kAMean, us::Constraint::kToGradInputScale,
        us::Constraint::kToLeftGradScale, us::Constraint::kToRightGradScale,
        us::Constraint::kToOutputScale, us::Constraint::kToOutputScale};
    return one_of(k);
  }
  us::ScalePowers powers(us::ScalePowers defaults) {
    if (!chance(4)) return defaults;
    static constexpr std::array<double, 5> k = {0.5, 1.0, 0.0, 0.25, 2.0};
    return {.alpha = real(k), .beta_x = real(k), .beta_weight = real(k)};
  }
  Fill random_fill() {
    static constexpr std::array<Fill, 8> k = {Fill::kNormal, Fill::kNormal, Fill::kWide, Fill::kNormal,
                                              Fill::kPositive, Fill::kSpecials, Fill::kConstant,
                                              Fill::kIntegers};
    return one_of(k);
  }

  // ---- values ----
  us::Value new_leaf(us::Shape shape, FillSpec spec) {
    if (spec.fill == Fill::kIntegers && spec.hi < spec.lo) spec.hi = spec.lo;
    if (spec.fill == Fill::kIntegers && spec.lo == 0 && spec.hi == 0 && !spec.extra) spec.hi = 3;
    if (chance(24)) {
      // Another dtype: most ops take f32 only and must say so.
      const auto dtypes = us::all_dtypes();
      spec.dtype = dtypes[pick(dtypes.size())];
    }
    const std::string name = "v" + std::to_string(leaf_count_++);
    us::Value v;
    std::size_t kind = pick(8);
    if (spec.dtype != us::DType::kF32 && (kind == 4 || kind == 5)) kind = 0;  // parameters are f32
    if (kind == 6 && (product_overflows(shape.dims()) || shape.numel() > kMaxRunElements)) kind = 0;
    switch (kind) {
      case 0: case 1: case 2: case 3:
        v = graph_->input(name, std::move(shape), spec.dtype);
        break;
      case 4: case 5:
        v = graph_->parameter(name, std::move(shape));
        break;
      case 6: {
        us::Tensor t = make_tensor(rng_, shape, spec);
        v = graph_->constant(std::move(t), chance(2) ? name : std::string());
        break;
      }
      default:
        if (spec.dtype == us::DType::kF32 && chance(2)) {
          // A parameter with (possibly inconsistent) metadata.
          us::ParameterInfo info;
          info.role = static_cast<us::ParameterRole>(pick(6));
          info.fan_in = static_cast<std::int64_t>(pick(9)) - 1;
          info.fan_out = static_cast<std::int64_t>(pick(9)) - 1;
          for (std::size_t i = pick(3); i > 0; --i) info.width_dims.push_back(static_cast<int>(pick(6)) - 1);
          if (chance(2)) info.depth = static_cast<int>(pick(4)) - 1;
          try {
            v = graph_->parameter(name, shape, std::move(info));
          } catch (const us::Error& e) {
            note(std::string("parameter info rejected: ") + e.what());
            v = graph_->parameter(name, std::move(shape));
          }
        } else {
          v = graph_->state(name, std::move(shape), std::nullopt, spec.dtype);
        }
    }
    leaves_.emplace_back(v, spec);
    pool_.push_back(v);
    if (kVerbose) {
      note("leaf %" + std::to_string(v.id()) + " " + v.shape().to_string() + " " +
           std::string(us::dtype_name(spec.dtype)) + ", fill " + std::to_string(static_cast<int>(spec.fill)));
    }
    return v;
  }
  us::Value new_leaf(us::Shape shape, Fill fill) { return new_leaf(std::move(shape), FillSpec{fill}); }

  us::Value any() { return pool_[pick(pool_.size())]; }
  us::Value any_of_rank_at_least(int rank) {
    std::vector<us::Value> fit;
    for (const us::Value& v : pool_) {
      if (v.shape().rank() >= rank) fit.push_back(v);
    }
    if (fit.empty() || chance(8)) return any();
    return fit[pick(fit.size())];
  }
  // A value of shape `shape`: mostly an existing one if there is any, else a fresh leaf; rarely
  // any value at all (a shape error).
  us::Value with_shape(const us::Shape& shape, FillSpec spec = {}) {
    if (chance(32)) return any();
    if (!chance(3)) {
      std::vector<us::Value> fit;
      for (const us::Value& v : pool_) {
        if (v.shape() == shape) fit.push_back(v);
      }
      if (!fit.empty()) return fit[pick(fit.size())];
    }
    if (spec.fill == Fill::kNormal && chance(4)) spec.fill = random_fill();
    return new_leaf(shape, spec);
  }
  // A shape that broadcasts against `shape`: some dims 1, some leading dims dropped.
  us::Shape broadcastable(const us::Shape& shape) {
    std::vector<std::int64_t> dims(shape.dims().begin(), shape.dims().end());
    if (chance(3)) return shape;
    for (auto& d : dims) {
      if (chance(3)) d = 1;
    }
    const std::size_t drop = pick(dims.size() + 1);
    dims.erase(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(drop));
    return us::Shape(std::move(dims));
  }
  static std::vector<std::int64_t> dims_of(const us::Shape& s) { return {s.dims().begin(), s.dims().end()}; }

  // ---- recording ops ----
  void record_op() {
    const auto action = static_cast<Action>(pick(kActionCount));
    ++stats.tried[action];
    stage(std::string("recording ") + kActionNames[action]);
    std::vector<us::Value> made;
    try {
      made = record(action);
    } catch (const us::Error& e) {
      note(std::string(kActionNames[action]) + ": " + e.what());
      return;
    }
    ++stats.recorded[action];
    for (const us::Value& v : made) {
      if (v.present()) pool_.push_back(v);
    }
  }

  std::vector<us::Value> record(Action action) {
    switch (action) {
      case kMatmul: {
        const us::Value a = any();
        us::Value b;
        if (a.shape().rank() == 0 || chance(8)) {
          b = any();
        } else {
          std::vector<std::int64_t> dims = dims_of(a.shape());
          const std::int64_t k = maybe_wrong(dims.back());
          dims.pop_back();
          if (!dims.empty()) dims.pop_back();  // a's rows
          for (auto& d : dims) {
            if (chance(4)) d = 1;  // a broadcast batch dim
          }
          if (!dims.empty() && chance(4)) dims.erase(dims.begin());
          dims.push_back(k);
          if (a.shape().rank() == 1 || !chance(6)) dims.push_back(dim());
          b = with_shape(us::Shape(std::move(dims)));
        }
        if (chance(2) && a.shape().rank() >= 1 && b.shape().rank() >= 2) return {us::matmul(b, a, {.constraint = constraint()})};
        return {us::matmul(a, b, {.constraint = constraint()})};
      }
      case kLinear:
      case kLinearReadout: {
        const us::Value x = any();
        const std::int64_t in = x.shape().rank() > 0 ? x.shape().dim(-1) : 1;
        const std::int64_t out = dim();
        const us::Value w = with_shape(us::Shape{out, maybe_wrong(in)});
        const us::Value bias = chance(2) ? with_shape(us::Shape{maybe_wrong(out)}) : us::Value{};
        if (action == kLinear) {
          return {us::linear(x, w, {.bias = bias, .constraint = constraint(), .scale_power = powers({})})};
        }
        return {us::linear_readout(
            x, w, {.bias = bias, .constraint = chance(2) ? us::Constraint::kNone : constraint(),
                   .scale_power = powers({.alpha = 1.0})})};
      }
      case kConv1d: {
        us::Value x = any_of_rank_at_least(2);
        std::int64_t groups = 1;
        std::int64_t c_in = x.shape().rank() >= 2 ? x.shape().dim(-2) : 1;
        if (chance(3)) {
          static constexpr std::array<std::int64_t, 4> kGroups = {2, 3, 4, 1};
          groups = one_of(kGroups);
          if (!chance(8)) {
            // A fresh x whose channels split into the groups.
            c_in = groups * std::max<std::int64_t>(1, dim());
            std::vector<std::int64_t> dims;
            for (std::size_t b = pick(3); b > 0; --b) dims.push_back(dim());
            dims.push_back(c_in);
            dims.push_back(dim());
            x = new_leaf(us::Shape(std::move(dims)), random_fill());
          }
        }
        static constexpr std::array<std::int64_t, 5> kKernel = {3, 1, 2, 5, 4};
        const std::int64_t kernel = one_of(kKernel);
        const std::int64_t c_out = groups * std::max<std::int64_t>(1, dim());
        const us::Value w = with_shape(us::Shape{maybe_wrong(c_out), groups > 0 ? c_in / groups : c_in, kernel});
        us::Conv1dOptions options{.bias = chance(2) ? with_shape(us::Shape{c_out}) : us::Value{},
                                  .stride = static_cast<std::int64_t>(1 + pick(3)),
                                  .padding = static_cast<std::int64_t>(pick(4)),
                                  .dilation = static_cast<std::int64_t>(1 + pick(3)),
                                  .groups = groups,
                                  .constraint = constraint(),
                                  .scale_power = powers({})};
        if (chance(16)) {
          switch (pick(4)) {
            case 0: options.stride = chance(2) ? 0 : extreme(); break;
            case 1: options.padding = extreme(); break;
            case 2: options.dilation = chance(2) ? 0 : extreme(); break;
            default: options.groups = chance(2) ? 0 : extreme(); break;
          }
        }
        if (known_bug_when_recorded("conv1d", us::Attributes{{"padding", options.padding},
                                                             {"dilation", options.dilation},
                                                             {"stride", options.stride}})) {
          return {};
        }
        return {us::conv1d(x, w, options)};
      }
      case kAdd:
      case kMul: {
        us::Value a = any();
        us::Value b = with_shape(broadcastable(a.shape()));
        if (chance(2)) std::swap(a, b);
        if (action == kMul) return {us::mul(a, b)};
        return {us::add(a, b, {.constraint = constraint()})};
      }
      case kAddScalar: {
        static constexpr std::array<double, 4> k = {1.0, -2.5, 0.0, 3.0};
        return {us::add(any(), static_cast<float>(real(k)))};
      }
      case kScale: {
        static constexpr std::array<double, 5> k = {1.0, 0.5, 2.0, 0.125, 3.0};
        const us::Value x = any();
        switch (pick(3)) {
          case 0: return {us::scale_fwd(x, real(k))};
          case 1: return {us::scale_bwd(x, real(k))};
          default: return {us::scale(x, real(k), real(k))};
        }
      }
      case kRelu:
        return {us::relu(any())};
      case kGelu:
        return {us::gelu(any(), {.mult = mult(),
                                 .approximate = chance(2) ? us::GeluApproximation::kTanh
                                                          : us::GeluApproximation::kNone,
                                 .constraint = constraint()})};
      case kSilu:
        return {us::silu(any(), {.mult = mult(), .constraint = constraint()})};
      case kSiluGlu: {
        const us::Value x = any();
        return {us::silu_glu(x, with_shape(x.shape()), {.mult = mult()})};
      }
      case kSoftmax:
        return {us::softmax(any(), {.mult = mult(), .constraint = constraint()})};
      case kDropout: {
        static constexpr std::array<double, 6> kP = {0.0, 0.1, 0.5, 0.9, 0.25, 0.999};
        us::DropoutOptions options{.p = chance(16) ? 1.0 : real(kP),
                                   .mode = chance(3) ? us::DropoutMode::kEval : us::DropoutMode::kTraining};
        if (chance(2)) options.seed = chance(4) ? extreme() : static_cast<std::int64_t>(pick(1000));
        return {us::dropout(any(), options)};
      }
      case kLayerNorm:
      case kRmsNorm: {
        const us::Value x = any();
        const std::int64_t d = x.shape().rank() > 0 ? x.shape().dim(-1) : 1;
        static constexpr std::array<double, 5> kEps = {1e-5, 1e-6, 1e-5, 1e-2, 1.0};
        const double eps = real(kEps);
        const us::Value weight = chance(2) ? with_shape(us::Shape{maybe_wrong(d)}) : us::Value{};
        if (action == kRmsNorm) return {us::rms_norm(x, {.weight = weight, .eps = eps})};
        const us::Value bias = chance(2) ? with_shape(us::Shape{maybe_wrong(d)}) : us::Value{};
        return {us::layer_norm(x, {.weight = weight, .bias = bias, .eps = eps})};
      }
      case kResidualSplit: {
        static constexpr std::array<double, 5> kTau = {0.5, 1.0, 0.25, 2.0, 0.1};
        const us::ResidualSplit split = us::residual_split(any(), real(kTau));
        return {split.branch, split.skip};
      }
      case kResidualAdd: {
        static constexpr std::array<double, 5> kTau = {0.5, 1.0, 0.25, 2.0, 0.1};
        const us::Value r = any();
        return {us::residual_add(r, with_shape(r.shape()), real(kTau))};
      }
      case kEmbedding: {
        const std::int64_t vocab = dim(), d = dim();
        us::Value ids;
        if (chance(4)) {
          ids = any();
        } else {
          FillSpec spec{Fill::kIntegers, 0, vocab - 1};
          if (chance(8)) spec.extra = chance(2) ? static_cast<float>(vocab) : -1.0f;  // out of range
          if (chance(16)) spec.fill = Fill::kSpecials;
          if (vocab == 0) spec = FillSpec{Fill::kIntegers, 0, 0};
          spec.dtype = chance(4) ? us::DType::kF32 : us::DType::kI32;  // ids are i32 (f32 before)
          ids = new_leaf(random_shape(), spec);
        }
        return {us::embedding(ids, with_shape(us::Shape{vocab, d}))};
      }
      case kAttention: {
        us::Value q = any_of_rank_at_least(2);
        std::vector<std::int64_t> lead = dims_of(q.shape());
        const std::int64_t d = lead.empty() ? 1 : lead.back();
        if (!lead.empty()) lead.pop_back();
        if (!lead.empty()) lead.pop_back();
        std::vector<std::int64_t> k_dims = lead, v_dims = lead;
        const std::int64_t s_k = chance(3) && q.shape().rank() >= 2 ? q.shape().dim(-2) : dim();
        k_dims.insert(k_dims.end(), {maybe_wrong(s_k), maybe_wrong(d)});
        v_dims.insert(v_dims.end(), {s_k, chance(2) ? d : dim()});
        static constexpr std::array<double, 5> kDropout = {0.0, 0.0, 0.1, 0.5, 0.0};
        us::AttentionOptions options{.mult = mult(),
                                     .mask = chance(2) ? us::AttentionMask::kCausal : us::AttentionMask::kNone,
                                     .dropout = real(kDropout)};
        if (chance(2)) options.seed = static_cast<std::int64_t>(pick(1000));
        const us::Value k = with_shape(us::Shape(k_dims));
        const us::Value v = with_shape(us::Shape(v_dims));
        return {us::scaled_dot_product_attention(q, k, v, options)};
      }
      case kCrossEntropy: {
        us::Value logits;
        if (chance(3)) {
          logits = any();
        } else {
          logits = new_leaf(chance(4) ? us::Shape{dim()} : us::Shape{dim(), dim()}, random_fill());
        }
        const us::Shape& ls = logits.shape();
        const std::int64_t vocab = ls.rank() > 0 ? ls.dim(-1) : 1;
        us::CrossEntropyOptions options{.mult = mult(),
                                        .reduction = chance(3) ? us::Reduction::kSum : us::Reduction::kMean};
        if (chance(6)) options.ignore_index = chance(2) ? extreme() : static_cast<std::int64_t>(pick(3));
        FillSpec spec{Fill::kIntegers, 0, std::max<std::int64_t>(vocab - 1, 0)};
        if (chance(3)) spec.extra = static_cast<float>(options.ignore_index);
        if (chance(12)) spec.extra = chance(2) ? static_cast<float>(vocab) : 0.5f;  // invalid labels
        spec.dtype = chance(4) ? us::DType::kF32 : us::DType::kI32;  // labels are i32 (f32 before)
        us::Shape label_shape = ls.rank() >= 2 ? us::Shape{ls.dim(0)} : us::Shape{};
        if (chance(16)) label_shape = random_shape();
        const us::Value labels = chance(8) ? any() : new_leaf(label_shape, spec);
        return {us::cross_entropy(logits, labels, options)};
      }
      case kMseLoss: {
        const us::Value a = any();
        return {us::mse_loss(a, with_shape(a.shape()),
                             {.reduction = chance(3) ? us::Reduction::kSum : us::Reduction::kMean})};
      }
      case kReshape: {
        const us::Value x = any();
        std::vector<std::int64_t> target = reshape_target(x.shape());
        if (known_bug_when_recorded("reshape", us::Attributes{{"shape", target}})) return {};
        return {us::reshape(x, std::move(target))};
      }
      case kTranspose: {
        const us::Value x = any();
        const int r = x.shape().rank();
        return {us::transpose(x, axis(r), axis(r))};
      }
      case kSlice: {
        const us::Value x = any();
        const int r = x.shape().rank();
        const int a = axis(r);
        const std::int64_t n = a >= -r && a < r ? x.shape().dim(a) : 3;
        std::int64_t start = static_cast<std::int64_t>(pick(static_cast<std::size_t>(2 * n + 5))) - n - 2;
        std::int64_t end = static_cast<std::int64_t>(pick(static_cast<std::size_t>(2 * n + 5))) - n - 2;
        if (chance(16)) start = extreme();
        if (chance(16)) end = extreme();
        return {us::slice(x, a, start, end)};
      }
      case kConcat: {
        const us::Value first = any();
        const int r = first.shape().rank();
        const int a = axis(r);
        std::vector<us::Value> values = {first};
        for (std::size_t i = pick(3); i > 0; --i) {
          std::vector<std::int64_t> dims = dims_of(first.shape());
          if (a >= -r && a < r) dims[static_cast<std::size_t>(a < 0 ? a + r : a)] = dim();
          values.push_back(with_shape(us::Shape(std::move(dims))));
        }
        return {us::concat(std::span<const us::Value>(values), a)};
      }
      case kSum:
      case kMean: {
        const us::Value x = any();
        const int r = x.shape().rank();
        std::vector<int> axes(pick(static_cast<std::size_t>(r) + 2));
        for (int& a : axes) a = axis(r);
        const us::ReduceOptions options{.keepdims = chance(2) ? us::KeepDims::kYes : us::KeepDims::kNo};
        return {action == kSum ? us::sum(x, axes, options) : us::mean(x, axes, options)};
      }
      case kMax: {
        const us::Value x = any();
        return {us::max(x, axis(x.shape().rank()),
                        {.keepdims = chance(2) ? us::KeepDims::kYes : us::KeepDims::kNo})};
      }
      case kExp:
        return {us::exp(any())};
      case kLog:
        return {us::log(any())};
      case kSqrt:
        return {us::sqrt(any())};
      case kWhere: {
        const us::Value a = any();
        const us::Value cond = chance(2) ? new_leaf(a.shape(), FillSpec{Fill::kIntegers, 0, 1})
                                         : with_shape(a.shape());
        return {us::where(cond, a, with_shape(a.shape()))};
      }
      case kCast: {
        // Through the registry, with the builder's attributes (the op is recent).
        const us::OpDef& op = us::op_by_name("cast");
        const auto dtypes = us::all_dtypes();
        static constexpr std::array<std::string_view, 7> kRounding = {
            "nearest_even", "nearest_away", "toward_zero", "up", "down", "stochastic", "nearest_even"};
        static constexpr std::array<double, 5> kScale = {1.0, 0.25, 4.0, 1.0, 3.0};
        us::Attributes attrs{{"dtype", std::string(us::dtype_name(dtypes[pick(dtypes.size())]))},
                             {"rounding", std::string(one_of(kRounding))},
                             {"overflow", std::string(chance(3) ? "non_finite" : "saturate")}};
        if (chance(2)) attrs.set("scale", real(kScale));
        if (chance(3)) attrs.set("seed", static_cast<std::int64_t>(pick(100)));
        const us::Value inputs[] = {any()};
        return graph_->apply(op, inputs, std::move(attrs));
      }
      case kApplyRandom:
        return apply_random();
      case kApplyMutated:
        return apply_mutated();
      case kActionCount:
        break;
    }
    return {};
  }

  // A target for reshape: a factorisation of numel (maybe with a -1), or sometimes anything.
  std::vector<std::int64_t> reshape_target(const us::Shape& shape) {
    std::vector<std::int64_t> dims;
    if (chance(8)) {
      for (std::size_t i = pick(4); i > 0; --i) dims.push_back(chance(4) ? extreme() : static_cast<std::int64_t>(pick(6)) - 1);
      return dims;
    }
    std::int64_t left = shape.numel();
    for (std::size_t i = pick(4); i > 0; --i) {
      static constexpr std::array<std::int64_t, 6> kFactors = {1, 2, 3, 4, 5, 0};
      const std::int64_t f = one_of(kFactors);
      if (f == 0 ? left != 0 : left % f != 0) continue;
      dims.push_back(f);
      left = f == 0 ? 0 : left / f;
    }
    dims.push_back(left);
    if (chance(3)) dims[pick(dims.size())] = -1;
    if (chance(8)) std::reverse(dims.begin(), dims.end());
    return dims;
  }

  // Graph::apply on a random forward op with random inputs and attributes (a config's view).
  std::vector<us::Value> apply_random() {
    const auto ops = us::forward_ops();
    const us::OpDef& op = *ops[pick(ops.size())];
    std::vector<us::Value> inputs;
    std::size_t count = op.inputs.size();
    if (chance(16)) count = chance(2) ? count + 1 : count - 1;
    for (std::size_t i = 0; i < count; ++i) {
      const bool optional = i < op.inputs.size() && op.input_is_optional(i);
      inputs.push_back(optional && chance(2) ? us::Value{} : (chance(16) ? us::Value{} : any()));
    }
    us::Attributes attrs;
    for (std::size_t i = pick(6); i > 0; --i) set_random_attribute(attrs);
    if (known_bug_when_recorded(op.name, attrs)) return {};
    return graph_->apply(op, inputs, std::move(attrs));
  }

  // Graph::apply on the op and inputs of an existing forward node with one attribute changed.
  std::vector<us::Value> apply_mutated() {
    std::vector<int> forward;
    const auto nodes = graph_->nodes();
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      if (nodes[n].differentiates < 0 && nodes[n].op->infer_shapes != nullptr) forward.push_back(static_cast<int>(n));
    }
    if (forward.empty()) return apply_random();
    const us::Node& node = nodes[static_cast<std::size_t>(forward[pick(forward.size())])];
    const us::OpDef& op = *node.op;
    std::vector<us::Value> inputs;
    for (const int id : node.inputs) inputs.push_back(id >= 0 ? graph_->value(id) : us::Value{});
    us::Attributes attrs;
    const auto entries = node.attrs.entries();
    const std::size_t removed = chance(4) && !entries.empty() ? pick(entries.size()) : entries.size();
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i != removed) attrs.set(entries[i].first, entries[i].second);
    }
    if (removed == entries.size()) set_random_attribute(attrs);
    if (known_bug_when_recorded(op.name, attrs)) return {};
    return graph_->apply(op, inputs, std::move(attrs));
  }

  void set_random_attribute(us::Attributes& attrs) {
    static constexpr std::array<std::string_view, 37> kNames = {
        "mult", "axis", "axes", "keepdim", "shape", "dim0", "dim1", "start", "end", "p", "seed",
        "mode", "tau", "eps", "mask", "dropout", "reduction", "ignore_index", "approximate",
        "constraint", "stride", "padding", "dilation", "groups", "power_alpha", "power_beta_x",
        "power_beta_weight", "gradient", "alpha", "beta_x", "alpha_residual", "beta_table", "beta_a",
        "dtype", "rounding", "overflow", "scale"};
    static constexpr std::array<std::string_view, 26> kStrings = {
        "none", "tanh", "causal", "training", "eval", "mean", "sum", "to_output_scale", "gmean",
        "hmean", "amean", "to_grad_input_scale", "to_left_grad_scale", "to_right_grad_scale",
        "unit", "true", "", "f32", "i32", "bf16", "e4m3fn", "e8m0fnu", "stochastic", "toward_zero",
        "saturate", "non_finite"};
    static constexpr std::array<double, 6> kReals = {1.0, 0.5, 2.0, 0.0, 1e-5, 0.25};
    const std::string_view name = one_of(kNames);
    switch (pick(4)) {
      case 0:
        attrs.set(name, chance(4) ? extreme() : static_cast<std::int64_t>(pick(8)) - 2);
        break;
      case 1:
        attrs.set(name, real(kReals));
        break;
      case 2:
        attrs.set(name, std::string(one_of(kStrings)));
        break;
      default: {
        std::vector<std::int64_t> list(pick(5));
        for (auto& v : list) v = chance(8) ? extreme() : static_cast<std::int64_t>(pick(7)) - 2;
        attrs.set(name, std::move(list));
      }
    }
  }

  // ---- passes ----
  void differentiate(std::vector<us::Value>& outputs) {
    stage("differentiating");
    try {
      const us::Value v = any();
      us::Value loss = v;
      if (v.shape().numel() != 1 || chance(4)) loss = chance(2) ? us::sum(v) : us::mean(v);
      std::vector<us::Value> wrt;
      for (const auto& [leaf, spec] : leaves_) {
        if (chance(2)) wrt.push_back(leaf);
      }
      if (chance(4)) wrt.push_back(any());
      us::AutodiffOptions options;
      if (chance(4)) {
        static constexpr std::array<double, 5> kLossScale = {2.0, 0.5, 1024.0, 3.0, 1.0};
        options.loss_scale = real(kLossScale);
      }
      if (chance(6)) options.seed = with_shape(loss.shape());
      ++stats.autodiffs;
      const std::vector<us::Value> grads = us::autodiff(*graph_, loss, wrt, options);
      if (grads.size() != wrt.size()) finding(*graph_, "autodiff returned the wrong number of gradients");
      for (std::size_t i = 0; i < grads.size(); ++i) {
        if (!grads[i].present()) continue;
        if (!(grads[i].shape() == wrt[i].shape())) {
          finding(*graph_, "autodiff: the gradient of %" + std::to_string(wrt[i].id()) + " has shape " +
                               grads[i].shape().to_string() + ", the value " + wrt[i].shape().to_string());
        }
        if (!(graph_->grad_of(wrt[i]) == grads[i])) {
          finding(*graph_, "autodiff: grad_of(%" + std::to_string(wrt[i].id()) + ") is not the gradient returned");
        }
        if (chance(2)) outputs.push_back(grads[i]);
        pool_.push_back(grads[i]);
      }
      outputs.push_back(loss);
      pool_.push_back(loss);
    } catch (const us::Error& e) {
      note(std::string("autodiff: ") + e.what());
    }
  }

  void eliminate_dead_code(std::vector<us::Value>& outputs) {
    stage("eliminating dead code");
    std::vector<us::Value> keep = outputs;
    if (!keep.empty() && chance(6)) keep.erase(keep.begin());  // a requested value may then be dead
    try {
      const int removed = us::eliminate_dead_code(*graph_, keep);
      note("dead code: removed " + std::to_string(removed) + " nodes");
      if (chance(4) && us::eliminate_dead_code(*graph_, keep) != 0) {
        finding(*graph_, "eliminate_dead_code removed more nodes the second time");
      }
    } catch (const us::Error& e) {
      note(std::string("dead code: ") + e.what());
    }
  }

  void set_scales() {
    stage("setting scales");
    static constexpr std::array<std::string_view, 12> kNames = {
        "alpha", "beta_x", "beta_a", "beta_b", "beta_weight", "beta_left", "beta_right",
        "beta_table", "alpha_residual", "beta_branch", "mult", "nonsense"};
    static constexpr std::array<double, 6> kValues = {0.5, 2.0, 1.0, 1e-3, 1e3, 0.125};
    for (std::size_t i = 1 + pick(3); i > 0; --i) {
      const us::Value v = any();
      std::string name(one_of(kNames));
      try {
        const us::ValueInfo& info = graph_->info(v.id());
        if (info.node >= 0 && !chance(4)) {
          const auto& scales = graph_->nodes()[static_cast<std::size_t>(info.node)].op->scales;
          if (!scales.empty()) name = std::string(scales[pick(scales.size())]);
        }
        graph_->set_scale(v, name, real(kValues));
      } catch (const us::Error& e) {
        note(std::string("set_scale: ") + e.what());
      }
    }
  }

  // ---- running ----
  void execute(const std::vector<us::Value>& outputs) {
    // Not a bug: shapes the input asked for (a padding of 2^40) can be too large to allocate.
    for (int id = 0; id < graph_->value_count(); ++id) {
      const us::Shape& shape = graph_->info(id).shape;
      if (product_overflows(shape.dims())) {
        // Shape refuses dims whose element count overflows int64 (shape-numel-overflow, fixed).
        finding(*graph_, "value %" + std::to_string(id) + " has shape " + shape.to_string() +
                             ", whose element count overflows int64");
      }
      if (shape.numel() > kMaxRunElements) {
        note("not run: value %" + std::to_string(id) + " is too large");
        return;
      }
    }
    for (const us::Node& node : graph_->nodes()) {
      if (known_bug_when_run(node)) {
        note(std::string("not run: a known bug of ") + std::string(node.op->name));
        return;
      }
    }
    stage("planning an executor");
    us::Executor exec(*graph_, outputs);
    ++stats.executors;
    Checker checker(*graph_);
    exec.add_observer([&checker](const us::NodeEvent& event) { checker.on_node(event); });
    // Every tensor ever bound lives until the executor is gone (a failed or skipped bind leaves
    // the previous binding in place); `bound` is what the executor currently reads.
    std::list<us::Tensor> storage;
    std::map<int, const us::Tensor*> bound;
    auto bind_all = [&] {
      for (const auto& [leaf, spec] : leaves_) {
        if (product_overflows(leaf.shape().dims())) continue;  // cannot be allocated
        const us::ValueKind kind = graph_->info(leaf.id()).kind;
        if (kind == us::ValueKind::kState) {
          try {
            exec.set_state(leaf, make_tensor(rng_, leaf.shape(), spec));
          } catch (const us::Error& e) {
            note(std::string("set_state: ") + e.what());
          }
          continue;
        }
        if (kind != us::ValueKind::kInput && kind != us::ValueKind::kParameter) continue;
        if (chance(48)) continue;  // left unbound: run() must say so
        const us::Shape shape = chance(48) ? random_shape() : leaf.shape();
        const us::Tensor& t = storage.emplace_back(make_tensor(rng_, shape, spec));
        try {
          exec.bind(leaf, t);
          bound[leaf.id()] = &t;
        } catch (const us::Error& e) {
          note(std::string("bind: ") + e.what());
        }
      }
    };
    bind_all();
    if (chance(8)) exec.set_profiling(true);
    if (chance(16)) set_scales();  // the graph changes under the executor: run() must refuse

    const bool deterministic = !has_stochastic_nodes();
    std::vector<std::vector<std::byte>> first;
    const int runs = chance(2) ? 2 : 1;
    for (int r = 0; r < runs; ++r) {
      if (r == 1 && chance(3)) {
        bind_all();  // new data for the second run
        first.clear();
      }
      checker.begin_run(bound, exec.step());
      stage("running the executor (run " + std::to_string(r + 1) + ")");
      ++stats.runs;
      exec.run();
      std::vector<std::vector<std::byte>> results;
      for (const us::Value& v : outputs) {
        const us::ConstTensorView view = exec.get(v);
        const std::span<const std::byte> data(view.bytes(), view.byte_size());
        results.emplace_back(data.begin(), data.end());
        const Stored* seen = checker.value(v.id());
        if (seen != nullptr && !same_bits(seen->bytes, data)) {
          finding(*graph_, "requested value %" + std::to_string(v.id()) +
                               " changed between its node and the end of the run (memory plan)");
        }
      }
      if (r == 1 && deterministic && !first.empty()) {
        for (std::size_t i = 0; i < results.size(); ++i) {
          if (!same_bits(first[i], results[i])) {
            finding(*graph_, "a second run on the same data changed %" + std::to_string(outputs[i].id()));
          }
        }
      }
      first = std::move(results);
    }
    if (chance(4)) note(exec.profile_table());
  }

  bool has_stochastic_nodes() const {
    for (const us::Node& node : graph_->nodes()) {
      const std::string_view name = node.op->name;
      if (name.find("dropout") != std::string_view::npos || name.find("attention") != std::string_view::npos) {
        return true;
      }
      // Stochastic rounding (cast) draws from the step, like dropout.
      for (const auto& [attr, value] : node.attrs.entries()) {
        const std::string* text = std::get_if<std::string>(&value);
        if (text != nullptr && *text == "stochastic") return true;
        // (Graph::apply turns enum attributes given by name into enum values.)
        const us::EnumValue* e = std::get_if<us::EnumValue>(&value);
        if (e != nullptr && e->type != nullptr && e->name() == "stochastic") return true;
      }
    }
    return false;
  }

  FuzzedDataProvider in_;
  Rng rng_{0};
  us::Graph* graph_ = nullptr;
  std::vector<us::Value> pool_;
  std::vector<std::pair<us::Value, FillSpec>> leaves_;
  int leaf_count_ = 0;
};

}  // namespace

// Every sanitizer (ASan, UBSan, LSan) calls this to print its one-line SUMMARY before the process
// dies; defining it (it is a weak symbol of the runtimes) adds the graph to each report.
extern "C" void __sanitizer_report_error_summary(const char* summary) {
  std::fprintf(stderr, "%s\n", summary);
  print_current_graph();
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Case(data, size).run();
  return 0;
}

// A tour of the number formats
// ============================
//
// Training in low precision means storing tensors in formats far smaller than FP32. unitscale
// knows ten of them:
//
//   * FP8, the formats of FP8 matmuls: OCP E4M3 (float8_e4m3fn: 3 mantissa bits, max 448) for
//     activations and weights, OCP E5M2 (float8_e5m2: 2 mantissa bits, max 57344) for gradients,
//     and their FNUZ cousins (float8_e4m3fnuz, float8_e5m2fnuz) used by AMD MI300 and Graphcore,
//     whose bias is one larger: one more binade at the bottom, a single NaN, no -0 and no Inf.
//   * The OCP Microscaling (MX) family: E8M0 (float8_e8m0fnu), a pure power of two that scales a
//     block of 32 elements, and the element formats FP6 (float6_e2m3fn, float6_e3m2fn) and FP4
//     (float4_e2m1fn, whose non-negative values are just 0, 0.5, 1, 1.5, 2, 3, 4 and 6).
//   * FP16 and BF16, for everything that needs more than 8 bits (optimizer state, master copies).
//
// How to read the first table: "max" is the largest finite value, "min normal" the smallest value
// with full precision, "min subnormal" the smallest non-zero value at all (below min normal,
// precision drops one bit per binade). "eps" is the gap between 1 and the next value, i.e. the
// relative precision. The last three columns give the codes of +Inf, of the canonical NaN and of
// -0, or "none" where the format has no such thing. E4M3 spans under 18 binades from min
// subnormal to max (FP32 spans 277), so where a tensor sits in that range matters a lot: values
// above max overflow, values below min subnormal vanish.
//
// Why FP8 training needs saturation: every conversion has an overflow policy. With
// Overflow::kNonFinite (the OCP default, and the default of convert<T>()), a value past the top
// of E4M3 becomes NaN, and one NaN in a gradient poisons the whole training step. With
// Overflow::kSaturate it becomes +-448 instead: a small error on a rare outlier. Every FP8 training
// recipe saturates, and so do unitscale's bulk quantisers. The second part of this tour converts
// a handful of tricky values under every rounding mode, showing both policies, so you can see ties
// (4.25 -> 4), the tie at the top of the range (464 -> 448 but 465 -> NaN), underflow to zero,
// and how E8M0 and the NaN-less FP4 handle zero, negatives, Inf and NaN.
//
// Stochastic rounding rounds up or down at random, with the probability of rounding away from
// zero equal to the discarded fraction, so its average is exact. Its random bits come from the
// caller (here an std::mt19937 with a fixed seed, 8 bits per conversion), so runs are
// reproducible. The third part checks the average.
//
// Finally, the bulk API: a random N(0, 1) tensor, and copies of it shifted far down (like a
// gradient) and far up, are encoded to E4M3 with and without a per-tensor power-of-two scale
// computed from amax. The table reports the RMS relative error and the fractions of elements that
// underflow (land below min normal, losing precision or vanishing) or saturate. A unit-variance
// tensor fits E4M3 well even unscaled; that observation is the premise of unit scaling.
//
//   01_formats [--smoke] [--format NAME] [--help]
//
// The format table and the conversion rules are documented in docs/formats.md.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/format/numeric_limits.hpp"

namespace us = unitscale;

namespace {

constexpr std::string_view kUsage = R"(usage: 01_formats [--smoke] [--format NAME] [--help]

A tour of unitscale's number formats: their limits, how values round and overflow under every
rounding mode and overflow policy, stochastic rounding, and bulk FP8 encoding with a scale.

  --format NAME  show the conversion section for this format only
                 (e.g. e4m3fn, float8_e5m2, e2m1fn, bfloat16)
  --smoke        a reduced, quick run (what the CTest example test runs)
  --help         print this text
)";

// ---------------------------------------------------------------------------------------------
// Printing helpers
// ---------------------------------------------------------------------------------------------

void section(std::string_view title) {
  const std::string line = fmt::format("== {} ", title);
  fmt::print("\n{}{}\n\n", line, std::string(line.size() < 96 ? 96 - line.size() : 0, '='));
}

// A value as a reader wants to see it: exact powers of two far from 1 as 2^k, everything else
// with six significant digits; -0 and the sign of NaN are kept, since both matter here.
std::string pretty(float v) {
  if (std::isnan(v)) return std::signbit(v) ? "-nan" : "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  if (v == 0) return std::signbit(v) ? "-0" : "0";
  int exponent = 0;
  const float mantissa = std::frexp(std::fabs(v), &exponent);  // |v| = mantissa * 2^exponent
  if (mantissa == 0.5f && (exponent - 1 <= -5 || exponent - 1 >= 16)) {
    return fmt::format("{}2^{}", v < 0 ? "-" : "", exponent - 1);
  }
  return fmt::format("{:.6g}", v);
}

// "448 (0x7e)": the value and its code, with as many hex digits as the format needs.
template <class T>
std::string value_and_code(T x) {
  constexpr int kDigits = (us::FormatTraits<T>::kSpec.total_bits() + 3) / 4;
  return fmt::format("{} (0x{:0{}x})", pretty(us::to_float(x)), us::FormatTraits<T>::to_bits(x),
                     kDigits);
}

std::string code_or_none(bool present, std::uint32_t code, int bits) {
  return present ? fmt::format("0x{:0{}x}", code, (bits + 3) / 4) : "none";
}

// A left-aligned text table with a header rule; the first column is the row label.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::string_view indent = "  ") const {
    std::vector<std::size_t> width;
    for (const auto& row : rows_) {
      for (std::size_t c = 0; c < row.size(); ++c) {
        if (width.size() <= c) width.push_back(0);
        width[c] = std::max(width[c], row[c].size());
      }
    }
    for (std::size_t r = 0; r < rows_.size(); ++r) {
      std::string line(indent);
      for (std::size_t c = 0; c < rows_[r].size(); ++c) {
        line += fmt::format("{:<{}}", rows_[r][c], c + 1 < rows_[r].size() ? width[c] + 2 : 0);
      }
      fmt::print("{}\n", line);
      if (r == 0) {
        std::size_t total = 0;
        for (std::size_t w : width) total += w + 2;
        fmt::print("{}{}\n", indent, std::string(total - 2, '-'));
      }
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Calls f(std::type_identity<T>{}) for every catalogue format, in the order of named_formats().
template <class F>
void for_each_format(F&& f) {
  f(std::type_identity<us::float8_e4m3fn>{});
  f(std::type_identity<us::float8_e5m2>{});
  f(std::type_identity<us::float8_e4m3fnuz>{});
  f(std::type_identity<us::float8_e5m2fnuz>{});
  f(std::type_identity<us::float8_e8m0fnu>{});
  f(std::type_identity<us::float6_e2m3fn>{});
  f(std::type_identity<us::float6_e3m2fn>{});
  f(std::type_identity<us::float4_e2m1fn>{});
  f(std::type_identity<us::float16>{});
  f(std::type_identity<us::bfloat16>{});
}

// ---------------------------------------------------------------------------------------------
// 1. The catalogue
// ---------------------------------------------------------------------------------------------

void print_catalogue() {
  section("1. The formats");
  TextTable table({"format", "bits", "E/M", "bias", "max", "min normal", "min subnormal", "eps",
                   "+Inf", "NaN", "-0"});
  for_each_format([&table]<class T>(std::type_identity<T>) {
    using L = std::numeric_limits<T>;
    constexpr us::FormatSpec f = us::FormatTraits<T>::kSpec;
    const int bits = f.total_bits();
    const bool has_subnormals = us::to_float(L::denorm_min()) < us::to_float(L::min());
    table.add({us::format_name(f), std::to_string(bits),
               fmt::format("{}/{}", f.exponent_bits, f.mantissa_bits), std::to_string(f.bias),
               pretty(us::to_float(L::max())), pretty(us::to_float(L::min())),
               has_subnormals ? pretty(us::to_float(L::denorm_min())) : "-",
               pretty(us::to_float(L::epsilon())),
               code_or_none(f.has_infinity(), f.infinity_code(), bits),
               code_or_none(f.has_nan(), f.nan_code(), bits),
               code_or_none(f.has_negative_zero(), f.sign_mask(), bits)});
  });
  table.print();
  fmt::print(
      "\n  e8m0fnu is unsigned, with no zero and no subnormals: its smallest value 2^-127 is code "
      "0x00.\n  FNUZ formats have a single zero; their 0x80 is the NaN. MX FP6/FP4 have neither "
      "Inf nor NaN.\n");
}

// ---------------------------------------------------------------------------------------------
// 2. Rounding and overflow
// ---------------------------------------------------------------------------------------------

struct Input {
  const char* label;
  float value;
};

const std::vector<Input>& inputs() {
  static const std::vector<Input> kInputs = {
      {"1.1875", 1.1875f},
      {"3", 3.0f},
      {"4.25", 4.25f},
      {"464", 464.0f},
      {"465", 465.0f},
      {"-465", -465.0f},
      {"1e-3", 1e-3f},
      {"2^-10", std::ldexp(1.0f, -10)},
      {"3e10", 3e10f},
      {"-0", -0.0f},
      {"inf", std::numeric_limits<float>::infinity()},
      {"-inf", -std::numeric_limits<float>::infinity()},
      {"nan", std::numeric_limits<float>::quiet_NaN()},
  };
  return kInputs;
}

struct Mode {
  const char* name;
  us::Rounding rounding;
};

constexpr Mode kModes[] = {
    {"nearest-even", us::Rounding::kNearestEven}, {"nearest-away", us::Rounding::kNearestAway},
    {"toward-zero", us::Rounding::kTowardZero},   {"up", us::Rounding::kUp},
    {"down", us::Rounding::kDown},                {"stochastic", us::Rounding::kStochastic},
};

constexpr int kRandomBits = 8;
constexpr std::uint32_t kSeed = 8;

template <class T>
void print_conversions() {
  const std::string name = us::format_name(us::FormatTraits<T>::kSpec);
  fmt::print("\n  {}, Overflow::kNonFinite (the default of convert<T>):\n\n", name);

  // One random word per input, the same for both policies, so that only the policy differs.
  std::mt19937 rng(kSeed);
  std::vector<std::uint32_t> words;
  for (std::size_t i = 0; i < inputs().size(); ++i) words.push_back(static_cast<std::uint32_t>(rng()));

  auto convert = [&](std::size_t i, us::Rounding rounding, us::Overflow overflow) {
    return value_and_code(us::convert<T>(inputs()[i].value, rounding, overflow,
                                         us::RandomBits{words[i], kRandomBits}));
  };

  std::vector<std::string> header = {"x"};
  for (const auto& mode : kModes) header.emplace_back(mode.name);
  TextTable table(std::move(header));
  // For every input, what Overflow::kSaturate gives instead, and under which modes.
  TextTable saturate_notes({"x", "result", "modes"});
  bool saturate_changes = false;
  for (std::size_t i = 0; i < inputs().size(); ++i) {
    std::vector<std::string> row = {inputs()[i].label};
    std::map<std::string, std::string> changed;  // saturated result -> modes
    for (const auto& mode : kModes) {
      const std::string non_finite = convert(i, mode.rounding, us::Overflow::kNonFinite);
      const std::string saturate = convert(i, mode.rounding, us::Overflow::kSaturate);
      row.push_back(non_finite);
      if (saturate != non_finite) {
        std::string& modes = changed[saturate];
        modes += modes.empty() ? mode.name : std::string(", ") + mode.name;
      }
    }
    table.add(std::move(row));
    for (const auto& [result, modes] : changed) {
      saturate_notes.add({inputs()[i].label, result, modes});
      saturate_changes = true;
    }
  }
  table.print("    ");
  if (!saturate_changes) {
    fmt::print("\n    Overflow::kSaturate gives the same results for these inputs.\n");
  } else {
    fmt::print("\n    What Overflow::kSaturate gives instead, where it differs:\n\n");
    saturate_notes.print("    ");
  }
}

// The formats the conversion section shows by default.
bool shown_by_default(const us::FormatSpec& f, bool smoke) {
  if (smoke) return f == us::kFloat8E4M3FN;
  return f == us::kFloat8E4M3FN || f == us::kFloat8E5M2 || f == us::kFloat8E4M3FNUZ ||
         f == us::kFloat4E2M1FN || f == us::kFloat8E8M0FNU;
}

void print_conversion_section(const us::FormatSpec* only, bool smoke) {
  section("2. Rounding and overflow");
  fmt::print(
      "  Each cell is the converted value and its code. Stochastic rounding uses {} random bits "
      "per\n  conversion from std::mt19937 seeded with {}. Directed modes (toward-zero, up, down) "
      "follow IEEE 754:\n  rounding toward max gives max, even under kNonFinite.\n",
      kRandomBits, kSeed);
  for_each_format([&]<class T>(std::type_identity<T>) {
    constexpr us::FormatSpec f = us::FormatTraits<T>::kSpec;
    if (only != nullptr ? f == *only : shown_by_default(f, smoke)) print_conversions<T>();
  });
}

// ---------------------------------------------------------------------------------------------
// 3. Stochastic rounding, on average
// ---------------------------------------------------------------------------------------------

template <class T>
std::vector<std::string> stochastic_row(const char* label, float x, int draws, std::mt19937& rng) {
  double sum = 0;
  for (int k = 0; k < draws; ++k) {
    const auto q = us::convert<T>(x, us::Rounding::kStochastic, us::Overflow::kSaturate,
                                  us::RandomBits{static_cast<std::uint32_t>(rng()), kRandomBits});
    sum += static_cast<double>(us::to_float(q));
  }
  const float lo = us::to_float(us::convert<T>(x, us::Rounding::kTowardZero));
  const float hi = us::to_float(us::convert<T>(x, x < 0 ? us::Rounding::kDown : us::Rounding::kUp));
  const double p_away = (static_cast<double>(x) - lo) / (static_cast<double>(hi) - lo);
  return {label, us::format_name(us::FormatTraits<T>::kSpec), pretty(lo), pretty(hi),
          fmt::format("{:.3f}", p_away), pretty(us::to_float(us::convert<T>(x))),
          fmt::format("{:.6g}", sum / draws)};
}

void print_stochastic_section(bool smoke) {
  section("3. Stochastic rounding, on average");
  const int draws = smoke ? 1000 : 100000;
  std::mt19937 rng(kSeed);
  TextTable table({"x", "format", "toward 0", "away", "P(away)", "nearest-even",
                   fmt::format("mean of {} SR draws", draws)});
  table.add(stochastic_row<us::float8_e4m3fn>("1.1875", 1.1875f, draws, rng));
  table.add(stochastic_row<us::float4_e2m1fn>("-1.35", -1.35f, draws, rng));
  table.add(stochastic_row<us::float8_e4m3fn>("1e-3", 1e-3f, draws, rng));
  table.add(stochastic_row<us::float8_e5m2>("1000", 1000.0f, draws, rng));
  table.print();
  fmt::print(
      "\n  Nearest-even is biased for each value; the stochastic mean matches x to within "
      "sampling noise\n  (and the 2^-{} granularity of {} random bits).\n",
      kRandomBits, kRandomBits);
}

// ---------------------------------------------------------------------------------------------
// 4. Bulk encoding with a per-tensor scale
// ---------------------------------------------------------------------------------------------

// N(0, 1) samples by Box-Muller from std::mt19937, whose output the C++ standard fixes, so every
// platform sees the same tensor.
std::vector<float> normal_samples(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  auto uniform = [&rng] {  // in (0, 1)
    return (static_cast<double>(rng() >> 8) + 0.5) / static_cast<double>(1u << 24);
  };
  std::vector<float> x(n);
  constexpr double kTwoPi = 6.283185307179586;
  for (std::size_t i = 0; i < n; i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(uniform()));
    const double angle = kTwoPi * uniform();
    x[i] = static_cast<float>(radius * std::cos(angle));
    if (i + 1 < n) x[i + 1] = static_cast<float>(radius * std::sin(angle));
  }
  return x;
}

// The smallest power of two s with amax / s <= max: quantising with it never saturates, and
// x / s and q * s are exact.
float power_of_two_scale(float amax, float max) {
  if (!(amax > 0) || !std::isfinite(amax)) return 1.0f;  // TransformerEngine's fallback
  return std::exp2(std::ceil(std::log2(amax / max)));
}

struct Encoded {
  float amax;
  double rms_relative_error;
  double underflow;  // fraction of non-zero inputs with |x / s| below min normal
  double saturated;  // fraction of inputs with |x / s| above max
};

Encoded encode_e4m3(std::span<const float> x, float scale) {
  using T = us::float8_e4m3fn;
  std::vector<T> q(x.size());
  std::vector<float> y(x.size());
  const float amax = us::encode(x, std::span<T>(q), {.scale = scale});  // RNE, saturating
  us::decode(std::span<const T>(q), std::span<float>(y), scale);

  const float max = us::to_float(std::numeric_limits<T>::max());
  const float min_normal = us::to_float(std::numeric_limits<T>::min());
  double error = 0, energy = 0;
  std::size_t underflow = 0, saturated = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(y[i]) - static_cast<double>(x[i]);
    error += d * d;
    energy += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    const float scaled = std::fabs(x[i] / scale);
    if (scaled > 0 && scaled < min_normal) ++underflow;
    if (scaled > max) ++saturated;
  }
  const auto n = static_cast<double>(x.size());
  return {amax, std::sqrt(error / energy), static_cast<double>(underflow) / n,
          static_cast<double>(saturated) / n};
}

// The largest finite value of a descriptor chosen at run time (for formats with a zero).
float max_value(const us::FormatSpec& f) {
  const std::uint32_t code = f.max_magnitude_code();
  const auto mantissa = static_cast<float>((std::uint32_t{1} << f.mantissa_bits) | (code & f.mantissa_mask()));
  return std::ldexp(mantissa, static_cast<int>(code >> f.mantissa_bits) - f.bias - f.mantissa_bits);
}

void print_bulk_section(bool smoke) {
  section("4. Bulk encoding to float8_e4m3fn with a per-tensor scale");
  const std::size_t n = smoke ? 1024 : 4096;
  const std::vector<float> base = normal_samples(n, kSeed);
  const float e4m3_max = us::to_float(std::numeric_limits<us::float8_e4m3fn>::max());

  fmt::print(
      "  x ~ N(0, 1), {} elements. encode() stores cast(x / s) with round-to-nearest-even and\n"
      "  saturation, and returns amax from the same pass; s = 2^ceil(log2(amax / 448)) is the "
      "smallest\n  power of two that avoids saturation.\n\n",
      n);
  TextTable table({"tensor", "scale s", "amax", "RMS rel. error", "underflow", "saturated"});
  auto percent = [](double f) { return fmt::format("{:.2f}%", 100 * f); };
  for (const int shift : {0, -12, 12}) {
    std::vector<float> x = base;
    for (float& v : x) v = std::ldexp(v, shift);
    const std::string label = shift == 0 ? "x" : fmt::format("x * 2^{}", shift);
    const float amax = us::amax(std::span<const float>(x));
    for (const float scale : {1.0f, power_of_two_scale(amax, e4m3_max)}) {
      const Encoded e = encode_e4m3(x, scale);
      table.add({label, pretty(scale), fmt::format("{:.4g}", e.amax),
                 fmt::format("{:.4f}", e.rms_relative_error), percent(e.underflow),
                 percent(e.saturated)});
    }
  }
  table.print();
  fmt::print(
      "\n  Unscaled, the small tensor underflows and the large one saturates; the amax scale "
      "brings both\n  back to the accuracy of the unit-variance tensor.\n");

  // The same tensor in other formats, simulated in place with fake_quantize, which takes any
  // FormatSpec chosen at run time (here also the custom "e3m4").
  fmt::print(
      "\n  The same x in other formats, simulated in place by fake_quantize with a power-of-two "
      "amax scale\n  (e3m4 is a custom format from parse_format(\"e3m4\")):\n\n");
  TextTable formats({"format", "max", "scale s", "RMS rel. error"});
  for (const char* name : {"e4m3fn", "e5m2", "e3m4", "e2m3fn", "e2m1fn", "bfloat16", "float16"}) {
    const us::FormatSpec f = us::parse_format(name);
    std::vector<float> x = base;
    // bfloat16 has FP32's exponent range and needs no scale.
    const float scale = f.exponent_bits >= 8
                            ? 1.0f
                            : power_of_two_scale(us::amax(std::span<const float>(x)), max_value(f));
    us::fake_quantize(std::span<float>(x), f, {.scale = scale});
    double error = 0, energy = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - static_cast<double>(base[i]);
      error += d * d;
      energy += static_cast<double>(base[i]) * static_cast<double>(base[i]);
    }
    formats.add({us::format_name(f), pretty(max_value(f)), pretty(scale),
                 fmt::format("{:.2e}", std::sqrt(error / energy))});
  }
  formats.print();
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::string only_name;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fmt::print("{}", kUsage);
      return 0;
    } else if (arg == "--smoke") {
      smoke = true;
    } else if (arg == "--format" && i + 1 < argc) {
      only_name = argv[++i];
    } else if (arg.starts_with("--format=")) {
      only_name = std::string(arg.substr(9));
    } else {
      fmt::print(stderr, "01_formats: unexpected argument '{}'\n\n{}", arg, kUsage);
      return 2;
    }
  }

  const us::FormatSpec* only = nullptr;
  if (!only_name.empty()) {
    try {
      only = &us::format_from_name(only_name);
    } catch (const us::Error& e) {
      fmt::print(stderr, "01_formats: {}\n", e.what());
      return 2;
    }
  }

  fmt::print("A tour of the number formats{}\n", smoke ? " (smoke run)" : "");
  print_catalogue();
  print_conversion_section(only, smoke);
  print_stochastic_section(smoke);
  print_bulk_section(smoke);
  return 0;
}

// Scalar conversion semantics (docs/formats.md).
//
// Two kinds of expectation, neither computed by the library:
//  - explicit rows written out from the truth table (§4.1), the threshold table (§4.2), the
//    underflow rules (§4.3) and the E8M0 rules (§4.4);
//  - a reference model (RefTable below) that lists every finite value of a format with its own
//    decoder (spec §3) and rounds an exact double to the neighbouring values by comparison with
//    their midpoint. It is used for the interpolants of §9 and the double-rounding cases.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "unitscale/format/convert.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace us = unitscale;
using us::Overflow;
using us::Rounding;

namespace {

constexpr Overflow kN = Overflow::kNonFinite;
constexpr Overflow kS = Overflow::kSaturate;
constexpr Rounding kRne = Rounding::kNearestEven;
constexpr Rounding kAllModes[] = {Rounding::kNearestEven, Rounding::kNearestAway,
                                  Rounding::kTowardZero, Rounding::kUp, Rounding::kDown};

const char* mode_name(Rounding r) {
  switch (r) {
    case Rounding::kNearestEven: return "NearestEven";
    case Rounding::kNearestAway: return "NearestAway";
    case Rounding::kTowardZero: return "TowardZero";
    case Rounding::kUp: return "Up";
    case Rounding::kDown: return "Down";
    case Rounding::kStochastic: return "Stochastic";
  }
  return "?";
}
const char* policy_name(Overflow o) { return o == kN ? "NonFinite" : "Saturate"; }

float p2f(int e) { return std::ldexp(1.0f, e); }
double p2(int e) { return std::ldexp(1.0, e); }
float fbits(std::uint32_t b) { return std::bit_cast<float>(b); }
double dbits(std::uint64_t b) { return std::bit_cast<double>(b); }
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kFltMax = std::numeric_limits<float>::max();

template <class T>
std::uint32_t bits_of(T v) {
  return us::FormatTraits<T>::to_bits(v);
}
template <class T>
std::uint32_t conv(float x, Rounding r = kRne, Overflow o = kN) {
  return bits_of(us::convert<T>(x, r, o));
}
template <class T>
std::uint32_t convd(double x, Rounding r = kRne, Overflow o = kN) {
  return bits_of(us::convert<T>(x, r, o));
}

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%X", v);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Reference model.
// ---------------------------------------------------------------------------------------------

enum class Scheme { kIeee, kFn, kFnuz, kE8m0, kMx };

struct RefFormat {
  int bits, E, M, bias;
  Scheme scheme;
  bool is_signed() const { return scheme != Scheme::kE8m0; }
  std::uint32_t sign_bit() const { return is_signed() ? 1u << (bits - 1) : 0u; }
  std::uint32_t magnitude_mask() const { return (1u << (E + M)) - 1; }
};

// Spec §3, written independently of the library's codec. NaN for NaN codes, ±inf for Inf codes.
double ref_decode(const RefFormat& f, std::uint32_t c) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (f.scheme == Scheme::kE8m0) return c == 0xFF ? nan : p2(static_cast<int>(c) - 127);
  const bool negative = (c & f.sign_bit()) != 0;
  const std::uint32_t mag = c & f.magnitude_mask();
  const int e = static_cast<int>(mag >> f.M);
  const int m = static_cast<int>(mag & ((1u << f.M) - 1));
  const double signed_nan = negative ? -nan : nan;
  switch (f.scheme) {
    case Scheme::kIeee:
      if (e == (1 << f.E) - 1) return m != 0 ? signed_nan : (negative ? -1.0 : 1.0) * HUGE_VAL;
      break;
    case Scheme::kFn:
      if (mag == f.magnitude_mask()) return signed_nan;
      break;
    case Scheme::kFnuz:
      if (c == f.sign_bit()) return nan;
      break;
    default:
      break;
  }
  const double v = e == 0 ? std::ldexp(m, 1 - f.bias - f.M)
                          : std::ldexp((1 << f.M) + m, e - f.bias - f.M);
  return negative ? -v : v;
}

struct RefTable {
  RefFormat f;
  std::vector<double> values;  // non-negative finite values; values[i] has magnitude code i
  double next_after_max;       // the first value past max if the exponent range were unbounded

  explicit RefTable(RefFormat fmt) : f(fmt) {
    const std::uint32_t positive_codes = f.is_signed() ? 1u << (f.bits - 1) : 1u << f.bits;
    for (std::uint32_t c = 0; c < positive_codes; ++c) {
      const double v = ref_decode(f, c);
      if (!std::isfinite(v)) break;  // specials only sit at the top of the positive codes
      values.push_back(v);
    }
    const double max = values.back();
    next_after_max = max + p2(std::ilogb(max) - f.M);
  }
  std::uint32_t max_code() const { return static_cast<std::uint32_t>(values.size() - 1); }
  double max() const { return values.back(); }

  std::uint32_t nan_result(bool negative) const {
    switch (f.scheme) {
      case Scheme::kIeee:
        return (negative ? f.sign_bit() : 0u) | ((1u << f.E) - 1) << f.M | 1u << (f.M - 1);
      case Scheme::kFn: return (negative ? f.sign_bit() : 0u) | f.magnitude_mask();
      case Scheme::kFnuz: return f.sign_bit();
      case Scheme::kE8m0: return 0xFF;
      case Scheme::kMx: return f.sign_bit();  // the -0 code, whatever the NaN's sign
    }
    return 0;
  }
  std::uint32_t overflow_result(bool negative, Overflow o) const {
    const std::uint32_t sign = negative ? f.sign_bit() : 0u;
    if (o == kS) return sign | max_code();
    switch (f.scheme) {
      case Scheme::kIeee: return sign | ((1u << f.E) - 1) << f.M;
      case Scheme::kFn: return sign | f.magnitude_mask();
      case Scheme::kFnuz: return f.sign_bit();
      case Scheme::kE8m0: return 0xFF;
      case Scheme::kMx: return sign | max_code();
    }
    return 0;
  }

  // The correctly rounded code of the exact value x.
  std::uint32_t encode(double x, Rounding mode, Overflow o) const {
    const bool negative = std::signbit(x);
    if (std::isnan(x)) return nan_result(negative);
    if (f.scheme == Scheme::kE8m0 && (negative || x == 0)) return o == kN ? 0xFFu : 0x00u;
    if (std::isinf(x)) return o == kS ? (negative ? f.sign_bit() : 0u) | max_code()
                                      : overflow_result(negative, o);
    const double a = std::fabs(x);
    // Does this mode round the magnitude away from zero when inexact?
    const bool up = mode == Rounding::kUp ? !negative : mode == Rounding::kDown ? negative : false;
    const bool directed = mode == Rounding::kTowardZero || mode == Rounding::kUp ||
                          mode == Rounding::kDown;
    std::uint32_t mag;
    if (a > max()) {
      bool overflows;
      if (directed) {
        overflows = up;
      } else {
        const double threshold = (max() + next_after_max) / 2;
        overflows = a > threshold ||
                    (a == threshold && (mode == Rounding::kNearestAway || (max_code() & 1) != 0));
      }
      if (overflows) return overflow_result(negative, o);
      mag = max_code();
    } else if (a < values.front()) {
      mag = 0;  // E8M0 below 2^-127: there is nothing smaller, every mode gives the lowest code
    } else {
      const auto it = std::upper_bound(values.begin(), values.end(), a);
      const std::uint32_t lo = static_cast<std::uint32_t>(it - values.begin() - 1);
      if (values[lo] == a) {
        mag = lo;
      } else if (directed) {
        mag = up ? lo + 1 : lo;
      } else {
        const double mid = (values[lo] + values[lo + 1]) / 2;
        if (a < mid) {
          mag = lo;
        } else if (a > mid) {
          mag = lo + 1;
        } else {
          mag = mode == Rounding::kNearestAway ? lo + 1 : ((lo & 1) == 0 ? lo : lo + 1);
        }
      }
    }
    if (mag == 0 && f.scheme == Scheme::kFnuz) return 0;
    return (negative ? f.sign_bit() : 0u) | mag;
  }
};

template <class T>
const RefTable& ref();
#define UNITSCALE_REF(Type, ...)              \
  template <>                                 \
  const RefTable& ref<Type>() {               \
    static const RefTable table{RefFormat{__VA_ARGS__}}; \
    return table;                             \
  }
UNITSCALE_REF(us::float8_e4m3fn, 8, 4, 3, 7, Scheme::kFn)
UNITSCALE_REF(us::float8_e5m2, 8, 5, 2, 15, Scheme::kIeee)
UNITSCALE_REF(us::float8_e4m3fnuz, 8, 4, 3, 8, Scheme::kFnuz)
UNITSCALE_REF(us::float8_e5m2fnuz, 8, 5, 2, 16, Scheme::kFnuz)
UNITSCALE_REF(us::float8_e8m0fnu, 8, 8, 0, 127, Scheme::kE8m0)
UNITSCALE_REF(us::float6_e2m3fn, 6, 2, 3, 1, Scheme::kMx)
UNITSCALE_REF(us::float6_e3m2fn, 6, 3, 2, 3, Scheme::kMx)
UNITSCALE_REF(us::float4_e2m1fn, 4, 2, 1, 1, Scheme::kMx)
UNITSCALE_REF(us::float16, 16, 5, 10, 15, Scheme::kIeee)
UNITSCALE_REF(us::bfloat16, 16, 8, 7, 127, Scheme::kIeee)
#undef UNITSCALE_REF

// The reference model itself is pinned to the spec tables, so that a mistake in it cannot
// silently agree with a mistake in the library.
TEST(ReferenceModel, MatchesSpecTables) {
  EXPECT_EQ(ref<us::float8_e4m3fn>().max(), 448.0);
  EXPECT_EQ(ref<us::float8_e4m3fn>().max_code(), 0x7Eu);
  EXPECT_EQ(ref<us::float8_e4m3fn>().next_after_max, 480.0);
  EXPECT_EQ(ref<us::float8_e5m2>().max(), 57344.0);
  EXPECT_EQ(ref<us::float8_e4m3fnuz>().max(), 240.0);
  EXPECT_EQ(ref<us::float8_e4m3fnuz>().values[1], p2(-10));
  EXPECT_EQ(ref<us::float8_e5m2fnuz>().max(), 57344.0);
  EXPECT_EQ(ref<us::float8_e5m2fnuz>().values[1], p2(-17));
  EXPECT_EQ(ref<us::float8_e8m0fnu>().max(), p2(127));
  EXPECT_EQ(ref<us::float8_e8m0fnu>().values.front(), p2(-127));
  EXPECT_EQ(ref<us::float8_e8m0fnu>().next_after_max, p2(128));
  EXPECT_EQ(ref<us::float6_e2m3fn>().max(), 7.5);
  EXPECT_EQ(ref<us::float6_e3m2fn>().max(), 28.0);
  EXPECT_EQ(ref<us::float4_e2m1fn>().values,
            (std::vector<double>{0, 0.5, 1, 1.5, 2, 3, 4, 6}));
  EXPECT_EQ(ref<us::float16>().max(), 65504.0);
  EXPECT_EQ(ref<us::bfloat16>().max(), (2 - p2(-7)) * p2(127));
  EXPECT_EQ(ref<us::float8_e4m3fn>().encode(464, kRne, kN), 0x7Eu);
  EXPECT_EQ(ref<us::float8_e4m3fn>().encode(465, kRne, kN), 0x7Fu);
  EXPECT_EQ(ref<us::float8_e8m0fnu>().encode(3, kRne, kN), 0x80u);
}

// ---------------------------------------------------------------------------------------------
// Truth table of §4.1 and thresholds of §4.2, explicit per format.
// ---------------------------------------------------------------------------------------------

struct FormatRows {
  std::uint32_t one, max, neg_max;
  float max_value;
  float threshold;          // T = max + ulp(max)/2
  bool tie_at_t_overflows;  // max's significand is odd
  std::uint32_t over_n_pos, over_n_neg;  // finite overflow / Inf under NonFinite
  std::uint32_t nan_pos, nan_neg;        // NaN input
  std::uint32_t zero_pos, zero_neg;
  std::uint32_t min_sub;
  float min_sub_value;
};

template <class T>
FormatRows rows();
template <>
FormatRows rows<us::float8_e4m3fn>() {
  return {0x38, 0x7E, 0xFE, 448.0f, 464.0f, false, 0x7F, 0xFF, 0x7F, 0xFF, 0x00, 0x80, 0x01,
          p2f(-9)};
}
template <>
FormatRows rows<us::float8_e5m2>() {
  return {0x3C, 0x7B, 0xFB, 57344.0f, 61440.0f, true, 0x7C, 0xFC, 0x7E, 0xFE, 0x00, 0x80, 0x01,
          p2f(-16)};
}
template <>
FormatRows rows<us::float8_e4m3fnuz>() {
  return {0x40, 0x7F, 0xFF, 240.0f, 248.0f, true, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x01,
          p2f(-10)};
}
template <>
FormatRows rows<us::float8_e5m2fnuz>() {
  return {0x40, 0x7F, 0xFF, 57344.0f, 61440.0f, true, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x01,
          p2f(-17)};
}
template <>
FormatRows rows<us::float6_e2m3fn>() {
  return {0x08, 0x1F, 0x3F, 7.5f, 7.75f, true, 0x1F, 0x3F, 0x20, 0x20, 0x00, 0x20, 0x01, 0.125f};
}
template <>
FormatRows rows<us::float6_e3m2fn>() {
  return {0x0C, 0x1F, 0x3F, 28.0f, 30.0f, true, 0x1F, 0x3F, 0x20, 0x20, 0x00, 0x20, 0x01, 0.0625f};
}
template <>
FormatRows rows<us::float4_e2m1fn>() {
  return {0x2, 0x7, 0xF, 6.0f, 7.0f, true, 0x7, 0xF, 0x8, 0x8, 0x0, 0x8, 0x1, 0.5f};
}
template <>
FormatRows rows<us::float16>() {
  return {0x3C00, 0x7BFF, 0xFBFF, 65504.0f, 65520.0f, true, 0x7C00, 0xFC00, 0x7E00, 0xFE00,
          0x0000, 0x8000, 0x0001, p2f(-24)};
}
template <>
FormatRows rows<us::bfloat16>() {
  return {0x3F80, 0x7F7F, 0xFF7F, fbits(0x7F7F0000), fbits(0x7F7F8000), true, 0x7F80, 0xFF80,
          0x7FC0, 0xFFC0, 0x0000, 0x8000, 0x0001, p2f(-133)};
}

template <class T>
class TruthTable : public ::testing::Test {};
using SignedTypes =
    ::testing::Types<us::float8_e4m3fn, us::float8_e5m2, us::float8_e4m3fnuz, us::float8_e5m2fnuz,
                     us::float6_e2m3fn, us::float6_e3m2fn, us::float4_e2m1fn, us::float16,
                     us::bfloat16>;
TYPED_TEST_SUITE(TruthTable, SignedTypes);

// Checks one input under both policies, through the float and the double overloads.
template <class T>
void expect_row(const char* what, float x, std::uint32_t expect_n, std::uint32_t expect_s,
                Rounding mode = kRne) {
  SCOPED_TRACE(std::string(what) + " x=" + std::to_string(x) + " mode=" + mode_name(mode));
  EXPECT_EQ(hex(conv<T>(x, mode, kN)), hex(expect_n)) << "float input, NonFinite";
  EXPECT_EQ(hex(conv<T>(x, mode, kS)), hex(expect_s)) << "float input, Saturate";
  EXPECT_EQ(hex(convd<T>(static_cast<double>(x), mode, kN)), hex(expect_n)) << "double, NonFinite";
  EXPECT_EQ(hex(convd<T>(static_cast<double>(x), mode, kS)), hex(expect_s)) << "double, Saturate";
}

TYPED_TEST(TruthTable, FiniteInRange) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  const std::uint32_t sign = r.neg_max & ~r.max;
  expect_row<T>("+1", 1.0f, r.one, r.one);
  expect_row<T>("-1", -1.0f, sign | r.one, sign | r.one);
  expect_row<T>("+max", r.max_value, r.max, r.max);
  expect_row<T>("-max", -r.max_value, r.neg_max, r.neg_max);
  expect_row<T>("min subnormal", r.min_sub_value, r.min_sub, r.min_sub);
  expect_row<T>("-min subnormal", -r.min_sub_value, sign | r.min_sub, sign | r.min_sub);
}

TYPED_TEST(TruthTable, ThresholdAndOverflow) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  const float below = std::nextafter(r.threshold, 0.0f);
  const float above = std::nextafter(r.threshold, kInf);
  expect_row<T>("just below T", below, r.max, r.max);
  expect_row<T>("-just below T", -below, r.neg_max, r.neg_max);
  if (r.tie_at_t_overflows) {
    expect_row<T>("T (odd max: overflow)", r.threshold, r.over_n_pos, r.max);
    expect_row<T>("-T", -r.threshold, r.over_n_neg, r.neg_max);
  } else {
    expect_row<T>("T (even max: ties down)", r.threshold, r.max, r.max);
    expect_row<T>("-T", -r.threshold, r.neg_max, r.neg_max);
  }
  expect_row<T>("just above T", above, r.over_n_pos, r.max);
  expect_row<T>("-just above T", -above, r.over_n_neg, r.neg_max);
  expect_row<T>("2T", 2 * r.threshold, r.over_n_pos, r.max);
  expect_row<T>("FLT_MAX", kFltMax, r.over_n_pos, r.max);
  expect_row<T>("-FLT_MAX", -kFltMax, r.over_n_neg, r.neg_max);
  // Beyond float's range only the double overload can go.
  EXPECT_EQ(hex(convd<T>(1e300, kRne, kN)), hex(r.over_n_pos));
  EXPECT_EQ(hex(convd<T>(-1e300, kRne, kS)), hex(r.neg_max));
}

TYPED_TEST(TruthTable, InfinityNanAndZero) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  expect_row<T>("+Inf", kInf, r.over_n_pos, r.max);
  expect_row<T>("-Inf", -kInf, r.over_n_neg, r.neg_max);
  for (std::uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FA5A5A5u, 0x7FFFFFFFu, 0x7FC00001u}) {
    expect_row<T>("+NaN", fbits(nan), r.nan_pos, r.nan_pos);
    expect_row<T>("-NaN", fbits(nan | 0x80000000u), r.nan_neg, r.nan_neg);
  }
  for (std::uint64_t nan : {0x7FF8000000000000ull, 0x7FF0000000000001ull, 0x7FF00000DEADBEEFull}) {
    EXPECT_EQ(hex(convd<T>(dbits(nan), kRne, kN)), hex(r.nan_pos));
    EXPECT_EQ(hex(convd<T>(dbits(nan | (1ull << 63)), kRne, kS)), hex(r.nan_neg));
  }
  expect_row<T>("+0", 0.0f, r.zero_pos, r.zero_pos);
  expect_row<T>("-0", -0.0f, r.zero_neg, r.zero_neg);
}

TYPED_TEST(TruthTable, NegativeValuesRoundingToZero) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  const std::uint32_t sign = r.neg_max & ~r.max;
  expect_row<T>("-min_sub/4", -r.min_sub_value / 4, r.zero_neg, r.zero_neg);
  expect_row<T>("-min_sub/2 (tie to even 0)", -r.min_sub_value / 2, r.zero_neg, r.zero_neg);
  expect_row<T>("+min_sub/2 (tie to even 0)", r.min_sub_value / 2, r.zero_pos, r.zero_pos);
  expect_row<T>("-smallest float", -fbits(1), r.zero_neg, r.zero_neg);
  expect_row<T>("-0.75 min_sub", -0.75f * r.min_sub_value, sign | r.min_sub, sign | r.min_sub);
  expect_row<T>("0.51 min_sub", 0.51f * r.min_sub_value, r.min_sub, r.min_sub);
}

// Directed modes change only the finite-overflow row (IEEE 754 rules).
TYPED_TEST(TruthTable, DirectedModeOverflow) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  for (float x : {std::nextafter(r.max_value, kInf), std::nextafter(r.threshold, kInf), kFltMax}) {
    expect_row<T>("+overflow", x, r.max, r.max, Rounding::kTowardZero);
    expect_row<T>("-overflow", -x, r.neg_max, r.neg_max, Rounding::kTowardZero);
    expect_row<T>("+overflow", x, r.over_n_pos, r.max, Rounding::kUp);
    expect_row<T>("-overflow", -x, r.neg_max, r.neg_max, Rounding::kUp);
    expect_row<T>("+overflow", x, r.max, r.max, Rounding::kDown);
    expect_row<T>("-overflow", -x, r.over_n_neg, r.neg_max, Rounding::kDown);
  }
  // Exactly max never overflows.
  for (Rounding m : kAllModes) expect_row<T>("max", r.max_value, r.max, r.max, m);
  // The Inf, NaN and zero rows are the same in every mode.
  for (Rounding m : {Rounding::kNearestAway, Rounding::kTowardZero, Rounding::kUp, Rounding::kDown,
                     Rounding::kStochastic}) {
    expect_row<T>("+Inf", kInf, r.over_n_pos, r.max, m);
    expect_row<T>("-Inf", -kInf, r.over_n_neg, r.neg_max, m);
    expect_row<T>("+NaN", fbits(0x7FC00000u), r.nan_pos, r.nan_pos, m);
    expect_row<T>("-NaN", fbits(0xFF800001u), r.nan_neg, r.nan_neg, m);
    expect_row<T>("+0", 0.0f, r.zero_pos, r.zero_pos, m);
    expect_row<T>("-0", -0.0f, r.zero_neg, r.zero_neg, m);
  }
}

// §4.3: no flush to zero; TowardZero gives ±0 for |x| < min_sub, Up gives +min_sub for positive
// tiny values and Down mirrors it.
TYPED_TEST(TruthTable, DirectedModeUnderflow) {
  using T = TypeParam;
  const FormatRows r = rows<T>();
  const std::uint32_t sign = r.neg_max & ~r.max;
  for (float tiny : {fbits(1), r.min_sub_value / 1024, 0.99f * r.min_sub_value}) {
    expect_row<T>("tiny", tiny, r.zero_pos, r.zero_pos, Rounding::kTowardZero);
    expect_row<T>("-tiny", -tiny, r.zero_neg, r.zero_neg, Rounding::kTowardZero);
    expect_row<T>("tiny", tiny, r.min_sub, r.min_sub, Rounding::kUp);
    expect_row<T>("-tiny", -tiny, r.zero_neg, r.zero_neg, Rounding::kUp);
    expect_row<T>("tiny", tiny, r.zero_pos, r.zero_pos, Rounding::kDown);
    expect_row<T>("-tiny", -tiny, sign | r.min_sub, sign | r.min_sub, Rounding::kDown);
  }
}

TEST(TruthTable, CanonicalThresholdExample) {
  using T = us::float8_e4m3fn;
  EXPECT_EQ(conv<T>(464.0f, kRne, kN), 0x7Eu);
  EXPECT_EQ(conv<T>(465.0f, kRne, kN), 0x7Fu);
  EXPECT_EQ(conv<T>(465.0f, kRne, kS), 0x7Eu);
  EXPECT_EQ(conv<T>(3e10f, kRne, kN), 0x7Fu);  // ml_dtypes #260
  EXPECT_EQ(conv<T>(3e10f, kRne, kS), 0x7Eu);
  // ml_dtypes' truncation maps 500 onto the NaN pattern; IEEE TowardZero gives 448.
  EXPECT_EQ(conv<T>(500.0f, Rounding::kTowardZero, kN), 0x7Eu);
  // The scalar constructor is RNE + NonFinite.
  EXPECT_EQ(T(465.0f).bits(), 0x7F);
  EXPECT_EQ(T(464.0).bits(), 0x7E);
}

TEST(TruthTable, NearestAway) {
  using E4 = us::float8_e4m3fn;
  constexpr Rounding kAway = Rounding::kNearestAway;
  EXPECT_EQ(hex(conv<E4>(4.25f, kAway)), "0x49");  // RNE gives 4 (0x48)
  EXPECT_EQ(hex(conv<E4>(-4.25f, kAway)), "0xC9");
  EXPECT_EQ(hex(conv<E4>(1.0625f, kAway)), "0x39");  // RNE gives 1.0
  EXPECT_EQ(hex(conv<E4>(1.1875f, kAway)), "0x3A");  // RNE agrees
  EXPECT_EQ(hex(conv<E4>(p2f(-10), kAway)), "0x1");  // RNE gives 0
  EXPECT_EQ(hex(conv<E4>(4.2f, kAway)), "0x48");     // not a tie: nearest
  EXPECT_EQ(hex(conv<E4>(464.0f, kAway, kN)), "0x7F");  // the tie at T goes up: overflow
  EXPECT_EQ(hex(conv<E4>(464.0f, kAway, kS)), "0x7E");
  using E8 = us::float8_e8m0fnu;
  EXPECT_EQ(hex(conv<E8>(3.0f, kAway)), "0x81");  // 4; RNE gives 2
  EXPECT_EQ(hex(conv<E8>(6.0f, kAway)), "0x82");
  EXPECT_EQ(hex(conv<E8>(0.75f, kAway)), "0x7F");  // 1; RNE gives 0.5
  EXPECT_EQ(hex(conv<E8>(1.5f * p2f(127), kAway, kN)), "0xFF");
  EXPECT_EQ(hex(conv<E8>(1.5f * p2f(127), kAway, kS)), "0xFE");
  using F4 = us::float4_e2m1fn;
  EXPECT_EQ(hex(conv<F4>(2.5f, kAway)), "0x5");  // 3; RNE gives 2
  EXPECT_EQ(hex(conv<F4>(2.5f, kRne)), "0x4");
  EXPECT_EQ(hex(conv<F4>(5.0f, kAway)), "0x7");  // 6; RNE gives 4
  EXPECT_EQ(hex(conv<F4>(5.0f, kRne)), "0x6");
  EXPECT_EQ(hex(conv<F4>(-0.25f, kAway)), "0x9");
  EXPECT_EQ(hex(conv<F4>(-0.25f, kRne)), "0x8");
  EXPECT_EQ(hex(conv<us::float8_e5m2>(61440.0f, kAway, kN)), "0x7C");
}

TEST(Underflow, E4m3fnExamples) {
  using T = us::float8_e4m3fn;
  EXPECT_EQ(hex(conv<T>(p2f(-10))), "0x0");          // ½ min_sub: tie to even 0
  EXPECT_EQ(hex(conv<T>(-p2f(-10))), "0x80");
  EXPECT_EQ(hex(conv<T>(1.5f * p2f(-10))), "0x1");   // → 2^-9
  EXPECT_EQ(hex(conv<T>(std::nextafter(p2f(-10), 1.0f))), "0x1");
  EXPECT_EQ(hex(conv<T>(std::nextafter(p2f(-10), 0.0f))), "0x0");
  EXPECT_EQ(hex(conv<T>(3 * p2f(-10))), "0x2");      // tie between codes 1 and 2
  EXPECT_EQ(hex(conv<T>(5 * p2f(-10))), "0x2");      // tie between codes 2 and 3
  EXPECT_EQ(hex(conv<T>(7 * p2f(-10))), "0x4");      // tie between codes 3 and 4
  EXPECT_EQ(hex(conv<T>(15 * p2f(-10))), "0x8");     // tie between 0x07 and min normal 0x08
  EXPECT_EQ(hex(conv<T>(0.99f * p2f(-9), Rounding::kTowardZero)), "0x0");
  EXPECT_EQ(hex(conv<T>(-0.99f * p2f(-9), Rounding::kTowardZero)), "0x80");
  EXPECT_EQ(hex(conv<T>(fbits(1), Rounding::kUp)), "0x1");
  EXPECT_EQ(hex(conv<T>(-fbits(1), Rounding::kDown)), "0x81");
  EXPECT_EQ(hex(convd<T>(1e-300, Rounding::kUp)), "0x1");
  EXPECT_EQ(hex(convd<T>(1e-300)), "0x0");
  EXPECT_EQ(hex(convd<us::bfloat16>(-1e-300, Rounding::kDown)), "0x8001");
  EXPECT_EQ(hex(convd<us::bfloat16>(-1e-300)), "0x8000");
}

TEST(Underflow, FnuzNeverProducesNegativeZero) {
  for (Rounding m : kAllModes) {
    EXPECT_EQ(conv<us::float8_e4m3fnuz>(-p2f(-12), m), m == Rounding::kDown ? 0x81u : 0x00u)
        << mode_name(m);
    EXPECT_EQ(conv<us::float8_e5m2fnuz>(-p2f(-19), m), m == Rounding::kDown ? 0x81u : 0x00u)
        << mode_name(m);
    EXPECT_EQ(conv<us::float8_e4m3fnuz>(-0.0f, m), 0x00u) << mode_name(m);
  }
}

// ---------------------------------------------------------------------------------------------
// E8M0 (§4.1 last column, §4.4).
// ---------------------------------------------------------------------------------------------

TEST(E8m0, TruthTableRows) {
  using T = us::float8_e8m0fnu;
  auto both = [](float x, std::uint32_t n, std::uint32_t s, Rounding m = kRne) {
    SCOPED_TRACE(std::to_string(x) + " " + mode_name(m));
    EXPECT_EQ(hex(conv<T>(x, m, kN)), hex(n));
    EXPECT_EQ(hex(conv<T>(x, m, kS)), hex(s));
    EXPECT_EQ(hex(convd<T>(static_cast<double>(x), m, kN)), hex(n));
    EXPECT_EQ(hex(convd<T>(static_cast<double>(x), m, kS)), hex(s));
  };
  both(1.0f, 0x7F, 0x7F);
  both(p2f(127), 0xFE, 0xFE);
  both(p2f(-127), 0x00, 0x00);
  both(p2f(-126), 0x01, 0x01);
  // Top: T = 1.5·2^127 ties to the even code 0xFE; above T overflows.
  both(1.5f * p2f(127), 0xFE, 0xFE);
  both(std::nextafter(1.5f * p2f(127), 0.0f), 0xFE, 0xFE);
  both(std::nextafter(1.5f * p2f(127), kInf), 0xFF, 0xFE);
  both(kFltMax, 0xFF, 0xFE);
  both(kInf, 0xFF, 0xFE);
  both(-kInf, 0xFF, 0x00);
  for (std::uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFFFFFFFFu}) {
    both(fbits(nan), 0xFF, 0xFF);
  }
  both(0.0f, 0xFF, 0x00);
  both(-0.0f, 0xFF, 0x00);
  for (float neg : {-1.0f, -p2f(-140), -p2f(127), -kFltMax}) both(neg, 0xFF, 0x00);
  // Positive values below 2^-127 give the lowest code in every mode.
  for (float tiny : {p2f(-128), fbits(1), 0.75f * p2f(-127), std::nextafter(p2f(-127), 0.0f)}) {
    for (Rounding m : kAllModes) both(tiny, 0x00, 0x00, m);
    EXPECT_EQ(us::convert<T>(tiny, Rounding::kStochastic, kN, us::RandomBits{0xFFFFFFFFu, 32}).bits(),
              0x00);
  }
  // Directed overflow.
  const float over = std::nextafter(p2f(127) * 1.5f, kInf);
  both(over, 0xFE, 0xFE, Rounding::kTowardZero);
  both(over, 0xFF, 0xFE, Rounding::kUp);
  both(over, 0xFE, 0xFE, Rounding::kDown);
  both(std::nextafter(p2f(127), kInf), 0xFF, 0xFE, Rounding::kUp);
  both(std::nextafter(p2f(127), kInf), 0xFE, 0xFE, Rounding::kTowardZero);
}

TEST(E8m0, TiesGoToEvenCode) {
  using T = us::float8_e8m0fnu;
  EXPECT_EQ(hex(conv<T>(1.5f)), "0x80");   // 2
  EXPECT_EQ(hex(conv<T>(3.0f)), "0x80");   // 2, not 4
  EXPECT_EQ(hex(conv<T>(6.0f)), "0x82");   // 8
  EXPECT_EQ(hex(conv<T>(12.0f)), "0x82");  // 8 (code 130 even, 16 is code 131)
  EXPECT_EQ(hex(conv<T>(24.0f)), "0x84");  // 32
  EXPECT_EQ(hex(conv<T>(0.75f)), "0x7E");  // 0.5 (code 126)
  EXPECT_EQ(hex(conv<T>(1.4f)), "0x7F");
  EXPECT_EQ(hex(conv<T>(1.6f)), "0x80");
  EXPECT_EQ(hex(conv<T>(std::nextafter(3.0f, kInf))), "0x81");
  EXPECT_EQ(hex(conv<T>(std::nextafter(1.5f, 0.0f))), "0x7F");
  // Bottom: ties between 2^-127 (0x00) and 2^-126 (0x01) go to 0x00; 2^-126/2^-125 to 0x02.
  EXPECT_EQ(hex(conv<T>(1.5f * p2f(-127))), "0x0");
  EXPECT_EQ(hex(conv<T>(1.75f * p2f(-127))), "0x1");
  EXPECT_EQ(hex(conv<T>(1.5f * p2f(-126))), "0x2");
  EXPECT_EQ(hex(conv<T>(1.25f * p2f(-127), Rounding::kUp)), "0x1");
  EXPECT_EQ(hex(conv<T>(1.75f * p2f(-127), Rounding::kTowardZero)), "0x0");
  // Directed modes on ordinary values.
  EXPECT_EQ(hex(conv<T>(3.0f, Rounding::kUp)), "0x81");
  EXPECT_EQ(hex(conv<T>(3.9f, Rounding::kDown)), "0x80");
  EXPECT_EQ(hex(conv<T>(3.9f, Rounding::kTowardZero)), "0x80");
}

// ---------------------------------------------------------------------------------------------
// §9 interpolants: for neighbours v0 < v1, v0 + a·(v1 - v0), and the integers 0..288, under every
// deterministic mode and both policies, through the float and the double overloads.
// ---------------------------------------------------------------------------------------------

template <class T>
class Interpolants : public ::testing::Test {};
using AllTypes =
    ::testing::Types<us::float8_e4m3fn, us::float8_e5m2, us::float8_e4m3fnuz, us::float8_e5m2fnuz,
                     us::float8_e8m0fnu, us::float6_e2m3fn, us::float6_e3m2fn, us::float4_e2m1fn,
                     us::float16, us::bfloat16>;
TYPED_TEST_SUITE(Interpolants, AllTypes);

template <class T>
int check_input(double x, Rounding mode, Overflow o) {
  const RefTable& t = ref<T>();
  int failures = 0;
  const std::uint32_t want = t.encode(x, mode, o);
  const std::uint32_t got_d = convd<T>(x, mode, o);
  if (got_d != want) {
    ++failures;
    ADD_FAILURE() << "double " << x << " (" << std::hexfloat << x << std::defaultfloat << ") "
                  << mode_name(mode) << "/" << policy_name(o) << ": want " << hex(want)
                  << " got " << hex(got_d);
  }
  const float xf = static_cast<float>(x);
  if (std::isfinite(xf)) {
    const std::uint32_t want_f = t.encode(static_cast<double>(xf), mode, o);
    const std::uint32_t got_f = conv<T>(xf, mode, o);
    if (got_f != want_f) {
      ++failures;
      ADD_FAILURE() << "float " << xf << " (" << std::hexfloat << xf << std::defaultfloat << ") "
                    << mode_name(mode) << "/" << policy_name(o) << ": want " << hex(want_f)
                    << " got " << hex(got_f);
    }
  }
  return failures;
}

TYPED_TEST(Interpolants, NeighbouringCodes) {
  using T = TypeParam;
  const RefTable& t = ref<T>();
  std::vector<double> points = t.values;
  points.push_back(t.next_after_max);  // the top pair (§4.2)
  int failures = 0;
  for (std::size_t i = 0; i + 1 < points.size() && failures < 20; ++i) {
    const double v0 = points[i], v1 = points[i + 1];
    for (double a : {0.0, 0.3, 0.5, 0.6, 0.9, 1.25}) {
      const double x = v0 + a * (v1 - v0);
      for (double signed_x : {x, -x}) {
        for (Rounding m : kAllModes) {
          for (Overflow o : {kN, kS}) failures += check_input<T>(signed_x, m, o);
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TYPED_TEST(Interpolants, IntegersUpTo288) {
  using T = TypeParam;
  int failures = 0;
  for (int n = 0; n <= 288; ++n) {
    for (double x : {static_cast<double>(n), -static_cast<double>(n)}) {
      for (Rounding m : kAllModes) {
        for (Overflow o : {kN, kS}) failures += check_input<T>(x, m, o);
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

// Sanity of the interpolant expectations: the a = 0.5 points are exact ties and the a = 0.6
// points round up, so the test above really exercises tie-breaking.
TEST(Interpolants, ReferenceTieBreaking) {
  const RefTable& t = ref<us::float8_e4m3fn>();
  EXPECT_EQ(t.encode(1.0625, kRne, kN), 0x38u);
  EXPECT_EQ(t.encode(1.1875, kRne, kN), 0x3Au);
  EXPECT_EQ(t.encode(1.0 + 0.6 * 0.125, kRne, kN), 0x39u);
  EXPECT_EQ(t.encode(-1.0625, Rounding::kNearestAway, kN), 0xB9u);
}

// ---------------------------------------------------------------------------------------------
// Double rounding (§5): conversions round once, from the exact input.
// ---------------------------------------------------------------------------------------------

// For every tie t between neighbours, t ± t·2^-40 is a double that float rounds to t exactly, so
// FP64 -> FP32 -> target would resolve the tie by evenness, while the correct answer depends on
// the side of the tie.
TYPED_TEST(Interpolants, DoubleInputsRoundOnce) {
  using T = TypeParam;
  const RefTable& t = ref<T>();
  std::vector<double> points = t.values;
  points.push_back(t.next_after_max);
  int failures = 0;
  for (std::size_t i = 0; i + 1 < points.size() && failures < 20; ++i) {
    const double tie = (points[i] + points[i + 1]) / 2;
    if (!std::isfinite(static_cast<float>(tie))) continue;
    ASSERT_EQ(static_cast<double>(static_cast<float>(tie)), tie);
    for (double sign : {1.0, -1.0}) {
      const double above = sign * (tie + std::ldexp(tie, -40));
      const double below = sign * (tie - std::ldexp(tie, -40));
      ASSERT_EQ(static_cast<double>(static_cast<float>(above)), sign * tie);
      ASSERT_EQ(static_cast<double>(static_cast<float>(below)), sign * tie);
      for (Overflow o : {kN, kS}) {
        for (double x : {above, below}) {
          const std::uint32_t want = t.encode(x, kRne, o);
          const std::uint32_t got = convd<T>(x, kRne, o);
          if (got != want) {
            ++failures;
            ADD_FAILURE() << std::hexfloat << x << ": want " << hex(want) << " got " << hex(got);
          }
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(DoubleRounding, ExplicitCases) {
  using T = us::float8_e4m3fn;
  const double up = 1.0625 + p2(-40);   // just above the tie between 1.0 and 1.125
  const double down = 1.1875 - p2(-40);  // just below the tie between 1.125 and 1.25
  EXPECT_EQ(hex(convd<T>(up)), "0x39");
  EXPECT_EQ(hex(convd<T>(down)), "0x39");
  // What FP64 -> FP32 -> FP8 would give instead:
  EXPECT_EQ(hex(conv<T>(static_cast<float>(up))), "0x38");
  EXPECT_EQ(hex(conv<T>(static_cast<float>(down))), "0x3A");
  EXPECT_EQ(T(up).bits(), 0x39);  // the double constructor too
  // bfloat16 from double.
  const double bf_tie = 1.0 + p2(-8);  // between 1.0 (0x3F80) and 1 + 2^-7 (0x3F81)
  EXPECT_EQ(hex(convd<us::bfloat16>(bf_tie + p2(-45))), "0x3F81");
  EXPECT_EQ(hex(convd<us::bfloat16>(bf_tie)), "0x3F80");
  // E8M0 from double: 3 + ε must give 4, 1.5 - ε must give 1.
  EXPECT_EQ(hex(convd<us::float8_e8m0fnu>(3.0 + p2(-40))), "0x81");
  EXPECT_EQ(hex(convd<us::float8_e8m0fnu>(1.5 - p2(-40))), "0x7F");
  // Overflow threshold from double: just above 464 must overflow even though float(x) == 464.
  EXPECT_EQ(hex(convd<T>(464.0 + p2(-30), kRne, kN)), "0x7F");
  EXPECT_EQ(hex(convd<T>(464.0 + p2(-30), kRne, kS)), "0x7E");
  EXPECT_EQ(hex(convd<T>(464.0 - p2(-30), kRne, kN)), "0x7E");
}

TEST(DoubleRounding, LowPrecisionToLowPrecisionRoundsOnce) {
  using E4 = us::float8_e4m3fn;
  using F4 = us::float4_e2m1fn;
  // e4m3fn 0.28125 lies above the FP4 tie 0.25 (between 0 and 0.5), so it must become 0.5.
  // Via e3m2fn it would first round to the tie 0.25 (ties to even) and then to 0.
  const E4 x = E4::from_bits(0x29);
  ASSERT_EQ(static_cast<float>(x), 0.28125f);
  EXPECT_EQ(hex(bits_of(us::convert<F4>(x))), "0x1");
  EXPECT_EQ(hex(bits_of(us::convert<F4>(us::convert<us::float6_e3m2fn>(x)))), "0x0");
  // bf16 2.515625 is above the FP4 tie 2.5: direct gives 3, via e4m3fn (2.5) it would give 2.
  const us::bfloat16 b = us::convert<us::bfloat16>(2.515625f);
  ASSERT_EQ(bits_of(b), 0x4021u);
  EXPECT_EQ(hex(bits_of(us::convert<F4>(b))), "0x5");
  EXPECT_EQ(hex(bits_of(us::convert<F4>(us::convert<E4>(b)))), "0x4");
  // Negative side and e5m2 source: e5m2 -0.3125 (between FP4 -0 and -0.5, above the tie 0.25).
  const us::float8_e5m2 y = us::float8_e5m2(-0.3125f);
  ASSERT_EQ(static_cast<float>(y), -0.3125f);
  EXPECT_EQ(hex(bits_of(us::convert<F4>(y))), "0x9");
}

// Every FP8 code converted to FP4 directly equals the exact reference, and equals the result via
// bf16 (which holds every FP8 value exactly, so that path involves no second rounding).
template <class From>
void check_fp8_to_fp4_exhaustive() {
  using F4 = us::float4_e2m1fn;
  const RefTable& t = ref<F4>();
  for (std::uint32_t c = 0; c < 256; ++c) {
    const From x = From::from_bits(static_cast<std::uint8_t>(c));
    const double exact = ref_decode(ref<From>().f, c);
    for (Overflow o : {kN, kS}) {
      const std::uint32_t direct = bits_of(us::convert<F4>(x, kRne, o));
      EXPECT_EQ(hex(direct), hex(t.encode(exact, kRne, o))) << "code " << hex(c);
      const us::bfloat16 via = us::convert<us::bfloat16>(x);
      EXPECT_EQ(hex(bits_of(us::convert<F4>(via, kRne, o))), hex(direct)) << "code " << hex(c);
    }
  }
}

TEST(DoubleRounding, Fp8ToFp4Exhaustive) {
  check_fp8_to_fp4_exhaustive<us::float8_e4m3fn>();
  check_fp8_to_fp4_exhaustive<us::float8_e5m2>();
  check_fp8_to_fp4_exhaustive<us::float8_e4m3fnuz>();
}

// ---------------------------------------------------------------------------------------------
// Pitfalls.
// ---------------------------------------------------------------------------------------------

TEST(Pitfalls, TieRoundingExamples) {
  using T = us::float8_e4m3fn;
  EXPECT_EQ(static_cast<float>(us::convert<T>(4.25f)), 4.0f);  // not 4.5 (ml_dtypes #221)
  EXPECT_EQ(conv<T>(4.25f), 0x48u);
  EXPECT_EQ(static_cast<float>(us::convert<T>(1.1875f)), 1.25f);  // not 1.125 (ties toward zero)
  EXPECT_EQ(conv<T>(1.1875f), 0x3Au);
  EXPECT_EQ(static_cast<float>(us::convert<T>(-4.25f)), -4.0f);
  EXPECT_EQ(static_cast<float>(us::convert<T>(4.75f)), 5.0f);  // tie between 4.5 and 5: even
}

// Pitfall 6: bf16/fp16 inputs are upcast exactly, never bit-reinterpreted.
TEST(Pitfalls, SixteenBitInputsUpcastExactly) {
  using E4 = us::float8_e4m3fn;
  const us::bfloat16 a = us::convert<us::bfloat16>(1.1f);
  const us::bfloat16 b = us::convert<us::bfloat16>(2.3f);
  ASSERT_EQ(us::to_float(a), 1.1015625f);
  ASSERT_EQ(us::to_float(b), 2.296875f);
  EXPECT_EQ(static_cast<float>(us::convert<E4>(a)), 1.125f);
  EXPECT_EQ(static_cast<float>(us::convert<E4>(b)), 2.25f);
  const us::float16 h = us::convert<us::float16>(1.1f);
  ASSERT_EQ(bits_of(h), 0x3C66u);
  EXPECT_EQ(hex(bits_of(us::convert<us::float8_e5m2>(h))), "0x3C");  // 1.0996 -> 1.0

  // Exhaustively: every bf16/fp16 code decodes to the value of spec §3, and converting the 16-bit
  // value equals converting that exact value.
  const RefTable& e4 = ref<E4>();
  const RefTable& e5 = ref<us::float8_e5m2>();
  for (std::uint32_t c = 0; c < 65536; ++c) {
    const auto code = static_cast<std::uint16_t>(c);
    const us::bfloat16 bv = us::FormatTraits<us::bfloat16>::from_bits(code);
    const us::float16 hv = us::FormatTraits<us::float16>::from_bits(code);
    const double bx = ref_decode(ref<us::bfloat16>().f, c);
    const double hx = ref_decode(ref<us::float16>().f, c);
    if (std::isnan(bx)) {
      ASSERT_TRUE(std::isnan(us::to_float(bv))) << hex(c);
    } else {
      ASSERT_EQ(static_cast<double>(us::to_float(bv)), bx) << hex(c);
    }
    if (std::isnan(hx)) {
      ASSERT_TRUE(std::isnan(us::to_float(hv))) << hex(c);
    } else {
      ASSERT_EQ(static_cast<double>(us::to_float(hv)), hx) << hex(c);
    }
    for (Overflow o : {kN, kS}) {
      ASSERT_EQ(hex(bits_of(us::convert<E4>(bv, kRne, o))), hex(e4.encode(bx, kRne, o))) << hex(c);
      ASSERT_EQ(hex(bits_of(us::convert<us::float8_e5m2>(hv, kRne, o))), hex(e5.encode(hx, kRne, o)))
          << hex(c);
    }
  }
}

}  // namespace

// Exhaustive decoding test (docs/formats.md): every code of every catalogue format is
// decoded by the library - the scalar codec, the storage types' conversions to float and the bulk
// API - and compared with an independent rational decoder written here from §3's formulas, with
// values n·2^k held exactly in long double. The special codes, the limits found by scanning all
// codes, the "useful codes" table and the MX value sets are checked against the spec's tables,
// copied into this file as the independent expectation. Every finite code must also re-encode to
// itself under round-to-nearest-even with both overflow policies.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <span>
#include <vector>

#include "unitscale/format/bulk.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/format/numeric_limits.hpp"

namespace unitscale {
namespace {

// The bulk kernels (src/format/bulk*.cpp) are checked here too. While they were being written the
// scalar codec stood in for them; flipping this back to false restores that.
constexpr bool kUseBulk = true;

// ---------------------------------------------------------------------------------------------
// The spec's tables (§1), copied by hand.
// ---------------------------------------------------------------------------------------------

enum class Scheme { kFn, kIeee, kFnuz, kE8m0, kMx };

constexpr std::uint32_t kNone = 0xFFFFFFFFu;

struct SpecRow {
  const char* name;
  int bits;
  int e;
  int m;
  int bias;
  Scheme scheme;
  // First table: limits as values.
  long double max;
  long double min_normal;
  long double min_subnormal;  // 0: none
  // Special codes, from the table's Inf / NaN / -0 columns.
  bool (*is_nan)(std::uint32_t);
  bool (*is_inf)(std::uint32_t);
  int nan_count;
  std::uint32_t negative_zero;  // kNone: no -0
  // Second table ("useful codes").
  std::uint32_t one;
  std::uint32_t max_code;
  std::uint32_t min_normal_code;
  std::uint32_t min_subnormal_code;  // kNone: "—"
  std::uint32_t qnan;                // kNone: "—"
  int finite_count;                  // finite values, ±0 counted once
};

bool never(std::uint32_t) { return false; }

// float16 / bfloat16 have "—" in the finite-count column; the numbers here are derived from the
// NaN/Inf columns: 2^16 codes minus the 2·2^M codes of the all-ones exponent, minus one for -0.
// clang-format off
//                        name               bits E  M  bias scheme
//                        max  min normal  min subnormal
//                        NaN codes  Inf codes  #NaN  -0 code
//                        +1.0  max  min normal  min subnormal  qNaN  finite values
const SpecRow kRowE4M3FN{"float8_e4m3fn",    8, 4, 3, 7,   Scheme::kFn,
                         448.0L, 0x1p-6L, 0x1p-9L,
                         [](std::uint32_t c) { return c == 0x7F || c == 0xFF; }, never, 2, 0x80,
                         0x38, 0x7E, 0x08, 0x01, 0x7F, 253};
const SpecRow kRowE5M2{"float8_e5m2",        8, 5, 2, 15,  Scheme::kIeee,
                       57344.0L, 0x1p-14L, 0x1p-16L,
                       [](std::uint32_t c) { return (c & 0x7F) >= 0x7D; },  // S.11111.{01,10,11}
                       [](std::uint32_t c) { return c == 0x7C || c == 0xFC; }, 6, 0x80,
                       0x3C, 0x7B, 0x04, 0x01, 0x7E, 247};
const SpecRow kRowE4M3FNUZ{"float8_e4m3fnuz",8, 4, 3, 8,   Scheme::kFnuz,
                           240.0L, 0x1p-7L, 0x1p-10L,
                           [](std::uint32_t c) { return c == 0x80; }, never, 1, kNone,
                           0x40, 0x7F, 0x08, 0x01, 0x80, 255};
const SpecRow kRowE5M2FNUZ{"float8_e5m2fnuz",8, 5, 2, 16,  Scheme::kFnuz,
                           57344.0L, 0x1p-15L, 0x1p-17L,
                           [](std::uint32_t c) { return c == 0x80; }, never, 1, kNone,
                           0x40, 0x7F, 0x04, 0x01, 0x80, 255};
const SpecRow kRowE8M0FNU{"float8_e8m0fnu",  8, 8, 0, 127, Scheme::kE8m0,
                          0x1p127L, 0x1p-127L, 0.0L,
                          [](std::uint32_t c) { return c == 0xFF; }, never, 1, kNone,
                          0x7F, 0xFE, 0x00, kNone, 0xFF, 255};
const SpecRow kRowE2M3FN{"float6_e2m3fn",    6, 2, 3, 1,   Scheme::kMx,
                         7.5L, 1.0L, 0.125L,
                         never, never, 0, 0x20,
                         0x08, 0x1F, 0x08, 0x01, kNone, 63};
const SpecRow kRowE3M2FN{"float6_e3m2fn",    6, 3, 2, 3,   Scheme::kMx,
                         28.0L, 0.25L, 0.0625L,
                         never, never, 0, 0x20,
                         0x0C, 0x1F, 0x04, 0x01, kNone, 63};
const SpecRow kRowE2M1FN{"float4_e2m1fn",    4, 2, 1, 1,   Scheme::kMx,
                         6.0L, 1.0L, 0.5L,
                         never, never, 0, 0x8,
                         0x2, 0x7, 0x2, 0x1, kNone, 15};
const SpecRow kRowF16{"float16",             16, 5, 10, 15, Scheme::kIeee,
                      65504.0L, 0x1p-14L, 0x1p-24L,
                      [](std::uint32_t c) { return (c & 0x7C00) == 0x7C00 && (c & 0x3FF) != 0; },
                      [](std::uint32_t c) { return c == 0x7C00 || c == 0xFC00; }, 2046, 0x8000,
                      0x3C00, 0x7BFF, 0x0400, 0x0001, 0x7E00, 63487};
const SpecRow kRowBF16{"bfloat16",           16, 8, 7, 127, Scheme::kIeee,
                       (2.0L - 0x1p-7L) * 0x1p127L, 0x1p-126L, 0x1p-133L,
                       [](std::uint32_t c) { return (c & 0x7F80) == 0x7F80 && (c & 0x7F) != 0; },
                       [](std::uint32_t c) { return c == 0x7F80 || c == 0xFF80; }, 254, 0x8000,
                       0x3F80, 0x7F7F, 0x0080, 0x0001, 0x7FC0, 65279};
// clang-format on

template <class T>
const SpecRow& row();
template <>
const SpecRow& row<float8_e4m3fn>() {
  return kRowE4M3FN;
}
template <>
const SpecRow& row<float8_e5m2>() {
  return kRowE5M2;
}
template <>
const SpecRow& row<float8_e4m3fnuz>() {
  return kRowE4M3FNUZ;
}
template <>
const SpecRow& row<float8_e5m2fnuz>() {
  return kRowE5M2FNUZ;
}
template <>
const SpecRow& row<float8_e8m0fnu>() {
  return kRowE8M0FNU;
}
template <>
const SpecRow& row<float6_e2m3fn>() {
  return kRowE2M3FN;
}
template <>
const SpecRow& row<float6_e3m2fn>() {
  return kRowE3M2FN;
}
template <>
const SpecRow& row<float4_e2m1fn>() {
  return kRowE2M1FN;
}
template <>
const SpecRow& row<float16>() {
  return kRowF16;
}
template <>
const SpecRow& row<bfloat16>() {
  return kRowBF16;
}

// ---------------------------------------------------------------------------------------------
// The rational decoder of spec §3: v = (-1)^s · n · 2^k with integers, exact in long double.
// ---------------------------------------------------------------------------------------------

enum class Kind { kFinite, kInf, kNaN };

struct Decoded {
  Kind kind;
  bool negative;
  long double value;  // signed, for kFinite
};

Decoded decode_rational(const SpecRow& r, std::uint32_t code) {
  const bool is_signed = r.scheme != Scheme::kE8m0;
  const bool negative = is_signed && ((code >> (r.bits - 1)) & 1u) != 0;
  const std::uint32_t e = (code >> r.m) & ((1u << r.e) - 1);
  const std::uint32_t f = code & ((1u << r.m) - 1);
  const std::uint32_t e_all_ones = (1u << r.e) - 1;
  const long double sign = negative ? -1.0L : 1.0L;
  switch (r.scheme) {
    case Scheme::kIeee:
      if (e == e_all_ones) return {f == 0 ? Kind::kInf : Kind::kNaN, negative, 0.0L};
      break;
    case Scheme::kFn:
      if (e == e_all_ones && f == (1u << r.m) - 1) return {Kind::kNaN, negative, 0.0L};
      break;
    case Scheme::kFnuz:
      if (code == 1u << (r.bits - 1)) return {Kind::kNaN, false, 0.0L};
      break;
    case Scheme::kE8m0:
      if (code == 0xFF) return {Kind::kNaN, false, 0.0L};
      return {Kind::kFinite, false, std::ldexp(1.0L, static_cast<int>(code) - 127)};
    case Scheme::kMx:
      break;
  }
  if (e == 0) {
    return {Kind::kFinite, negative,
            sign * std::ldexp(static_cast<long double>(f), 1 - r.bias - r.m)};
  }
  return {Kind::kFinite, negative,
          sign * std::ldexp(static_cast<long double>((1u << r.m) + f),
                            static_cast<int>(e) - r.bias - r.m)};
}

template <class T>
using BitsOf = typename FormatTraits<T>::Bits;

template <class T>
T from_code(std::uint32_t code) {
  return FormatTraits<T>::from_bits(static_cast<BitsOf<T>>(code));
}

template <class T>
std::uint32_t code_of(T x) {
  return FormatTraits<T>::to_bits(x);
}

template <class T>
std::vector<T> all_codes() {
  std::vector<T> codes;
  for (std::uint32_t c = 0; c < FormatTraits<T>::kSpec.code_count(); ++c)
    codes.push_back(from_code<T>(c));
  return codes;
}

template <class T>
std::vector<float> library_decode(std::span<const T> codes) {
  std::vector<float> out(codes.size());
  if constexpr (kUseBulk) {
    decode<T>(codes, out, 1.0f);
  } else {
    for (std::size_t i = 0; i < codes.size(); ++i) {
      out[i] = detail::decode_bits(code_of(codes[i]), FormatTraits<T>::kSpec);
    }
  }
  return out;
}

template <class T>
std::vector<T> library_encode(std::span<const float> in, Overflow overflow) {
  std::vector<T> out(in.size());
  if constexpr (kUseBulk) {
    encode<T>(
        in, std::span<T>(out),
        Quantization{.scale = 1.0f, .rounding = Rounding::kNearestEven, .overflow = overflow});
  } else {
    for (std::size_t i = 0; i < in.size(); ++i) {
      out[i] = from_code<T>(
          detail::encode_bits(in[i], FormatTraits<T>::kSpec, Rounding::kNearestEven, overflow));
    }
  }
  return out;
}

// `got` is the library's decoding of `code`, `want` the rational one.
::testing::AssertionResult same(const char* path, std::uint32_t code, float got,
                                const Decoded& want) {
  const auto fail = [&] {
    auto failure = ::testing::AssertionFailure()
                   << path << ": code 0x" << std::hex << code << std::dec << " decodes to " << got
                   << ", expected ";
    switch (want.kind) {
      case Kind::kNaN:
        return failure << "NaN";
      case Kind::kInf:
        return failure << (want.negative ? "-Inf" : "+Inf");
      case Kind::kFinite:
        break;
    }
    return failure << static_cast<double>(want.value);
  };
  switch (want.kind) {
    case Kind::kNaN:
      if (!std::isnan(got)) return fail();
      break;
    case Kind::kInf:
      if (!std::isinf(got) || std::signbit(got) != want.negative) return fail();
      break;
    case Kind::kFinite:
      // Exact comparison; the sign bit distinguishes -0.
      if (static_cast<long double>(got) != want.value || std::signbit(got) != want.negative)
        return fail();
      break;
  }
  return ::testing::AssertionSuccess();
}

// Reports the first few failures of a check over many codes and then only counts, so that a
// broken decoder gives a readable report instead of 2^16 failures.
class CappedFailures {
 public:
  explicit CappedFailures(const char* what) : what_(what) {}
  CappedFailures(const CappedFailures&) = delete;
  CappedFailures& operator=(const CappedFailures&) = delete;
  ~CappedFailures() {
    if (count_ > kCap)
      ADD_FAILURE() << what_ << ": " << count_ << " failures, the first " << kCap << " shown";
  }
  void check(const ::testing::AssertionResult& result) {
    if (result) return;
    if (++count_ <= kCap) ADD_FAILURE() << what_ << ": " << result.message();
  }

 private:
  static constexpr int kCap = 8;
  const char* what_;
  int count_ = 0;
};

::testing::AssertionResult code_equal(std::uint32_t got, std::uint32_t want, const char* path,
                                      float input) {
  if (got == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << path << ": " << input << " encodes to 0x" << std::hex << got << ", expected 0x" << want;
}

template <class T>
class DecodeExhaustive : public ::testing::Test {};

using AllFormats =
    ::testing::Types<float8_e4m3fn, float8_e5m2, float8_e4m3fnuz, float8_e5m2fnuz, float8_e8m0fnu,
                     float6_e2m3fn, float6_e3m2fn, float4_e2m1fn, float16, bfloat16>;
class FormatNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return row<T>().name;
  }
};
TYPED_TEST_SUITE(DecodeExhaustive, AllFormats, FormatNames);

TYPED_TEST(DecodeExhaustive, DescriptorMatchesSpecTable) {
  const SpecRow& r = row<TypeParam>();
  constexpr FormatSpec spec = FormatTraits<TypeParam>::kSpec;
  EXPECT_EQ(spec.total_bits(), r.bits);
  EXPECT_EQ(spec.exponent_bits, r.e);
  EXPECT_EQ(spec.mantissa_bits, r.m);
  EXPECT_EQ(spec.bias, r.bias);
  EXPECT_EQ(spec.is_signed, r.scheme != Scheme::kE8m0);
  EXPECT_EQ(spec.has_infinity(), r.scheme == Scheme::kIeee);
  EXPECT_EQ(spec.has_nan(), r.nan_count > 0);
  EXPECT_EQ(spec.has_negative_zero(), r.negative_zero != kNone);
  EXPECT_EQ(spec.has_subnormals(), r.min_subnormal > 0);
}

// Every code, through every decoding path of the library.
TYPED_TEST(DecodeExhaustive, EveryCodeMatchesRationalDecoder) {
  using T = TypeParam;
  const SpecRow& r = row<T>();
  constexpr FormatSpec spec = FormatTraits<T>::kSpec;
  const std::vector<T> codes = all_codes<T>();
  const std::vector<float> bulk = library_decode<T>(codes);
  CappedFailures failures(r.name);
  for (std::uint32_t c = 0; c < spec.code_count(); ++c) {
    const Decoded want = decode_rational(r, c);
    failures.check(same("detail::decode_bits", c, detail::decode_bits(c, spec), want));
    failures.check(same("to_float", c, to_float(codes[c]), want));
    failures.check(same("static_cast<float>", c, static_cast<float>(codes[c]), want));
    failures.check(same("bulk decode", c, bulk[c], want));
  }
}

TYPED_TEST(DecodeExhaustive, SpecialCodesMatchSpecTable) {
  using T = TypeParam;
  const SpecRow& r = row<T>();
  constexpr FormatSpec spec = FormatTraits<T>::kSpec;
  int nan_count = 0, inf_count = 0, negative_zero_count = 0;
  CappedFailures failures(r.name);
  const auto agree = [](bool a, bool b, const char* what, std::uint32_t c) {
    if (a == b) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << what << " disagrees with the spec table for code 0x" << std::hex << c;
  };
  for (std::uint32_t c = 0; c < spec.code_count(); ++c) {
    const Decoded d = decode_rational(r, c);
    const float x = detail::decode_bits(c, spec);
    failures.check(agree(d.kind == Kind::kNaN, r.is_nan(c), "rational decoder NaN", c));
    failures.check(agree(d.kind == Kind::kInf, r.is_inf(c), "rational decoder Inf", c));
    failures.check(agree(std::isnan(x), r.is_nan(c), "decode_bits NaN", c));
    failures.check(agree(std::isinf(x), r.is_inf(c), "decode_bits Inf", c));
    nan_count += r.is_nan(c) ? 1 : 0;
    inf_count += r.is_inf(c) ? 1 : 0;
    if (x == 0.0f && std::signbit(x)) {
      ++negative_zero_count;
      EXPECT_EQ(c, r.negative_zero);
    }
    if (x == 0.0f && !std::signbit(x)) {
      EXPECT_EQ(c, 0u) << "+0 is code 0";
    }
  }
  EXPECT_EQ(nan_count, r.nan_count);
  EXPECT_EQ(inf_count, r.scheme == Scheme::kIeee ? 2 : 0);
  EXPECT_EQ(negative_zero_count, r.negative_zero == kNone ? 0 : 1);
  // E8M0 has no zero at all.
  if (r.scheme == Scheme::kE8m0) {
    for (std::uint32_t c = 0; c < 0xFF; ++c) EXPECT_GT(detail::decode_bits(c, spec), 0.0f);
  }
}

TYPED_TEST(DecodeExhaustive, LimitsByScanningAllCodes) {
  using T = TypeParam;
  const SpecRow& r = row<T>();
  constexpr FormatSpec spec = FormatTraits<T>::kSpec;
  long double max = 0, min_positive = 0, min_normal = 0;
  std::uint32_t max_code = kNone, min_positive_code = kNone, min_normal_code = kNone,
                one_code = kNone;
  int finite = 0, zeros = 0;
  for (std::uint32_t c = 0; c < spec.code_count(); ++c) {
    const float x = to_float(from_code<T>(c));
    if (!std::isfinite(x)) continue;
    ++finite;
    if (x == 0.0f) ++zeros;
    const long double v = x;
    if (x == 1.0f) {
      EXPECT_EQ(one_code, kNone) << "two codes decode to 1";
      one_code = c;
    }
    if (v <= 0) continue;
    if (max_code == kNone || v > max) {
      max = v;
      max_code = c;
    }
    if (min_positive_code == kNone || v < min_positive) {
      min_positive = v;
      min_positive_code = c;
    }
    // A normal value has a non-zero exponent field; E8M0 has only normal values.
    const bool normal = r.scheme == Scheme::kE8m0 || ((c >> r.m) & ((1u << r.e) - 1)) != 0;
    if (normal && (min_normal_code == kNone || v < min_normal)) {
      min_normal = v;
      min_normal_code = c;
    }
  }
  // The spec's first table.
  EXPECT_EQ(max, r.max);
  EXPECT_EQ(min_normal, r.min_normal);
  EXPECT_EQ(min_positive, r.min_subnormal > 0 ? r.min_subnormal : r.min_normal);
  // The "useful codes" table.
  EXPECT_EQ(one_code, r.one);
  EXPECT_EQ(max_code, r.max_code);
  EXPECT_EQ(min_normal_code, r.min_normal_code);
  EXPECT_EQ(min_positive_code,
            r.min_subnormal_code != kNone ? r.min_subnormal_code : r.min_normal_code);
  EXPECT_EQ(finite - (zeros == 2 ? 1 : 0), r.finite_count);
  if (r.qnan != kNone) {
    EXPECT_EQ(spec.nan_code(), r.qnan);
    EXPECT_TRUE(std::isnan(to_float(from_code<T>(r.qnan))));
    EXPECT_EQ(detail::encode_bits(std::numeric_limits<float>::quiet_NaN(), spec,
                                  Rounding::kNearestEven, Overflow::kNonFinite),
              r.qnan);
  }
  if (r.scheme == Scheme::kIeee) {
    EXPECT_TRUE(r.is_inf(spec.infinity_code())) << std::hex << spec.infinity_code();
    EXPECT_EQ(to_float(from_code<T>(spec.infinity_code())), std::numeric_limits<float>::infinity());
  }
  // The FormatSpec-derived limits.
  EXPECT_EQ(spec.max_magnitude_code(), r.max_code);
  EXPECT_EQ(spec.min_normal_code(), r.min_normal_code);
  EXPECT_EQ(spec.min_subnormal_code(),
            r.min_subnormal_code != kNone ? r.min_subnormal_code : r.min_normal_code);
  EXPECT_EQ(static_cast<long double>(detail::decode_bits(spec.max_magnitude_code(), spec)), max);
  EXPECT_EQ(static_cast<long double>(detail::decode_bits(spec.min_normal_code(), spec)),
            min_normal);
  EXPECT_EQ(static_cast<long double>(detail::decode_bits(spec.min_subnormal_code(), spec)),
            min_positive);
  EXPECT_EQ(std::ldexp(1.0L, spec.max_exponent()), std::ldexp(1.0L, std::ilogb(max)));
  EXPECT_EQ(std::ldexp(1.0L, spec.min_normal_exponent()), min_normal);
  // std::numeric_limits (ours for MiniFloat, Eigen's for half / bfloat16).
  using Limits = std::numeric_limits<T>;
  EXPECT_EQ(code_of(Limits::max()), r.max_code);
  EXPECT_EQ(code_of(Limits::min()), r.min_normal_code);
  EXPECT_EQ(code_of(Limits::lowest()),
            r.scheme == Scheme::kE8m0 ? r.min_normal_code : (spec.sign_mask() | r.max_code));
  if (r.min_subnormal_code != kNone) {
    EXPECT_EQ(code_of(Limits::denorm_min()), r.min_subnormal_code);
  }
  // Copies: Eigen declares these static members without defining them, so they cannot be bound
  // to EXPECT_EQ's reference parameters.
  const bool is_specialized = Limits::is_specialized, has_infinity = Limits::has_infinity,
             has_quiet_nan = Limits::has_quiet_NaN;
  const int digits = Limits::digits;
  EXPECT_TRUE(is_specialized);
  EXPECT_EQ(has_infinity, r.scheme == Scheme::kIeee);
  EXPECT_EQ(has_quiet_nan, r.nan_count > 0);
  EXPECT_EQ(digits, r.m + 1);
  if (r.nan_count > 0) {
    EXPECT_TRUE(std::isnan(to_float(Limits::quiet_NaN())));
  }
  if (r.scheme == Scheme::kIeee) {
    EXPECT_EQ(to_float(Limits::infinity()), std::numeric_limits<float>::infinity());
  }
}

// Every finite code decodes and re-encodes to itself with RNE under both policies, through the
// scalar codec, convert<>, the storage type's constructor and the bulk API.
TYPED_TEST(DecodeExhaustive, FiniteCodesRoundTrip) {
  using T = TypeParam;
  const SpecRow& r = row<T>();
  constexpr FormatSpec spec = FormatTraits<T>::kSpec;
  std::vector<float> values;
  std::vector<std::uint32_t> finite_codes;
  for (std::uint32_t c = 0; c < spec.code_count(); ++c) {
    if (decode_rational(r, c).kind != Kind::kFinite) continue;
    values.push_back(detail::decode_bits(c, spec));
    finite_codes.push_back(c);
  }
  CappedFailures failures(r.name);
  for (const Overflow overflow : {Overflow::kSaturate, Overflow::kNonFinite}) {
    const std::vector<T> bulk = library_encode<T>(values, overflow);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint32_t c = finite_codes[i];
      const float x = values[i];
      failures.check(code_equal(detail::encode_bits(x, spec, Rounding::kNearestEven, overflow), c,
                                "encode_bits(float)", x));
      failures.check(code_equal(
          detail::encode_bits(static_cast<double>(x), spec, Rounding::kNearestEven, overflow), c,
          "encode_bits(double)", x));
      failures.check(
          code_equal(code_of(convert<T>(x, Rounding::kNearestEven, overflow)), c, "convert", x));
      failures.check(code_equal(code_of(bulk[i]), c, "bulk encode", x));
    }
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    failures.check(code_equal(code_of(T(values[i])), finite_codes[i], "constructor", values[i]));
  }
  // -0 has no code in FNUZ: it encodes to +0 (spec §4.3), never to the NaN code 0x80.
  if (r.scheme == Scheme::kFnuz) {
    for (const Overflow overflow : {Overflow::kSaturate, Overflow::kNonFinite}) {
      EXPECT_EQ(detail::encode_bits(-0.0f, spec, Rounding::kNearestEven, overflow), 0u);
      EXPECT_EQ(code_of(library_encode<T>(std::vector<float>{-0.0f}, overflow)[0]), 0u);
    }
    EXPECT_EQ(code_of(T(-0.0f)), 0u);
  }
}

// Spec §1, "Value sets of the MX element types (non-negative half)", built from the text.
template <class T>
void expect_value_set(const std::set<long double>& expected) {
  std::set<long double> non_negative;
  std::multiset<long double> positives, negatives;
  for (std::uint32_t c = 0; c < FormatTraits<T>::kSpec.code_count(); ++c) {
    const long double v = to_float(from_code<T>(c));
    if (v >= 0) non_negative.insert(v);
    if (v > 0) positives.insert(v);
    if (v < 0) negatives.insert(-v);
  }
  EXPECT_EQ(non_negative, expected) << row<T>().name;
  EXPECT_EQ(positives, negatives) << row<T>().name << ": the negative half mirrors the positive";
  EXPECT_EQ(positives.size() + 1, expected.size()) << row<T>().name << ": every value once";
}

TEST(DecodeExhaustiveMx, ValueSets) {
  expect_value_set<float4_e2m1fn>({0, 0.5L, 1, 1.5L, 2, 3, 4, 6});

  std::set<long double> e2m3;  // steps of 0.125 up to 2, then 0.25 up to 4, then 0.5 up to 7.5
  for (long double v = 0; v <= 2; v += 0.125L) e2m3.insert(v);
  for (long double v = 2; v <= 4; v += 0.25L) e2m3.insert(v);
  for (long double v = 4; v <= 7.5L; v += 0.5L) e2m3.insert(v);
  EXPECT_EQ(e2m3.size(), 32u);
  expect_value_set<float6_e2m3fn>(e2m3);

  std::set<long double> e3m2;  // 0.0625 steps up to 0.5, then 4 values per binade up to 28
  for (long double v = 0; v <= 0.5L; v += 0.0625L) e3m2.insert(v);
  for (long double binade = 0.5L; binade <= 16; binade *= 2) {
    for (const long double step : {1.0L, 1.25L, 1.5L, 1.75L}) e3m2.insert(binade * step);
  }
  EXPECT_EQ(*e3m2.rbegin(), 28.0L);
  EXPECT_EQ(e3m2.size(), 32u);
  expect_value_set<float6_e3m2fn>(e3m2);
}

}  // namespace
}  // namespace unitscale

// FormatSpec descriptors, the limits derived from them, and format names.
//
// Every expected number below is written out from the tables of docs/formats.md (not computed
// from the descriptors), so a wrong descriptor or a wrong derivation shows up here.

#include "unitscale/format/format_spec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/format/numeric_limits.hpp"

namespace us = unitscale;

namespace {

float p2(int e) { return std::ldexp(1.0f, e); }

// One row of the spec §1 tables, in the conventions of std::numeric_limits:
// min_exponent = e_min + 1 where 2^e_min is the smallest normal; max_exponent = e_max + 1 where
// 2^e_max <= max < 2^(e_max+1); digits = M + 1; epsilon = 2^-M.
struct LimitsRow {
  float max, min, lowest, denorm_min, epsilon;
  int digits, min_exponent, max_exponent;
  int digits10, max_digits10, min_exponent10, max_exponent10;
  bool has_infinity, has_quiet_nan;
  std::float_denorm_style has_denorm;
  bool is_signed;
  // Useful codes (second table of §1).
  std::uint32_t one_code, max_code, min_normal_code, min_subnormal_code, nan_code;
  int finite_values;  // distinct finite values, counting ±0 once
};

template <class T>
LimitsRow expected_row();

template <>
LimitsRow expected_row<us::float8_e4m3fn>() {
  return {448.0f, p2(-6), -448.0f, p2(-9), 0.125f, 4, -5, 9, 0, 3, -1, 2, false, true,
          std::denorm_present, true, 0x38, 0x7E, 0x08, 0x01, 0x7F, 253};
}
template <>
LimitsRow expected_row<us::float8_e5m2>() {
  return {57344.0f, p2(-14), -57344.0f, p2(-16), 0.25f, 3, -13, 16, 0, 2, -4, 4, true, true,
          std::denorm_present, true, 0x3C, 0x7B, 0x04, 0x01, 0x7E, 247};
}
template <>
LimitsRow expected_row<us::float8_e4m3fnuz>() {
  return {240.0f, p2(-7), -240.0f, p2(-10), 0.125f, 4, -6, 8, 0, 3, -2, 2, false, true,
          std::denorm_present, true, 0x40, 0x7F, 0x08, 0x01, 0x80, 255};
}
template <>
LimitsRow expected_row<us::float8_e5m2fnuz>() {
  return {57344.0f, p2(-15), -57344.0f, p2(-17), 0.25f, 3, -14, 16, 0, 2, -4, 4, false, true,
          std::denorm_present, true, 0x40, 0x7F, 0x04, 0x01, 0x80, 255};
}
template <>
LimitsRow expected_row<us::float8_e8m0fnu>() {
  // No subnormals: denorm_min() is min(); unsigned: lowest() is the smallest value 2^-127.
  // epsilon: the value after 1 is 2, so 1.
  return {p2(127), p2(-127), p2(-127), p2(-127), 1.0f, 1, -126, 128, 0, 2, -38, 38, false, true,
          std::denorm_absent, false, 0x7F, 0xFE, 0x00, 0x00, 0xFF, 255};
}
template <>
LimitsRow expected_row<us::float6_e2m3fn>() {
  return {7.5f, 1.0f, -7.5f, 0.125f, 0.125f, 4, 1, 3, 0, 3, 0, 0, false, false,
          std::denorm_present, true, 0x08, 0x1F, 0x08, 0x01, 0, 63};
}
template <>
LimitsRow expected_row<us::float6_e3m2fn>() {
  return {28.0f, 0.25f, -28.0f, 0.0625f, 0.25f, 3, -1, 5, 0, 2, 0, 1, false, false,
          std::denorm_present, true, 0x0C, 0x1F, 0x04, 0x01, 0, 63};
}
template <>
LimitsRow expected_row<us::float4_e2m1fn>() {
  return {6.0f, 1.0f, -6.0f, 0.5f, 0.5f, 2, 1, 3, 0, 2, 0, 0, false, false,
          std::denorm_present, true, 0x2, 0x7, 0x2, 0x1, 0, 15};
}

template <class T>
class MiniFloatLimits : public ::testing::Test {};
using MiniFloatTypes =
    ::testing::Types<us::float8_e4m3fn, us::float8_e5m2, us::float8_e4m3fnuz, us::float8_e5m2fnuz,
                     us::float8_e8m0fnu, us::float6_e2m3fn, us::float6_e3m2fn, us::float4_e2m1fn>;
TYPED_TEST_SUITE(MiniFloatLimits, MiniFloatTypes);

TYPED_TEST(MiniFloatLimits, NumericLimitsMatchSpecTable) {
  using T = TypeParam;
  using L = std::numeric_limits<T>;
  const LimitsRow e = expected_row<T>();
  EXPECT_TRUE(L::is_specialized);
  EXPECT_EQ(static_cast<float>(L::max()), e.max);
  EXPECT_EQ(static_cast<float>(L::min()), e.min);
  EXPECT_EQ(static_cast<float>(L::lowest()), e.lowest);
  EXPECT_EQ(static_cast<float>(L::denorm_min()), e.denorm_min);
  EXPECT_EQ(static_cast<float>(L::epsilon()), e.epsilon);
  EXPECT_EQ(L::digits, e.digits);
  EXPECT_EQ(L::min_exponent, e.min_exponent);
  EXPECT_EQ(L::max_exponent, e.max_exponent);
  EXPECT_EQ(L::digits10, e.digits10);
  EXPECT_EQ(L::max_digits10, e.max_digits10);
  EXPECT_EQ(L::min_exponent10, e.min_exponent10);
  EXPECT_EQ(L::max_exponent10, e.max_exponent10);
  EXPECT_EQ(L::has_infinity, e.has_infinity);
  EXPECT_EQ(L::has_quiet_NaN, e.has_quiet_nan);
  EXPECT_FALSE(L::has_signaling_NaN);
  EXPECT_EQ(L::has_denorm, e.has_denorm);
  EXPECT_EQ(L::is_signed, e.is_signed);
  EXPECT_FALSE(L::is_integer);
  EXPECT_FALSE(L::is_exact);
  EXPECT_FALSE(L::is_iec559);
  EXPECT_TRUE(L::is_bounded);
  EXPECT_EQ(L::radix, 2);
  // The std convention ties min/max_exponent to the values: 2^(min_exponent-1) is min(), and
  // 2^(max_exponent-1) <= max() < 2^max_exponent.
  EXPECT_EQ(std::ldexp(1.0f, L::min_exponent - 1), e.min);
  EXPECT_LE(std::ldexp(1.0, L::max_exponent - 1), static_cast<double>(e.max));
  EXPECT_LT(static_cast<double>(e.max), std::ldexp(1.0, L::max_exponent));

  // Codes.
  EXPECT_EQ(L::max().bits(), e.max_code);
  EXPECT_EQ(L::min().bits(), e.min_normal_code);
  EXPECT_EQ(L::denorm_min().bits(), e.min_subnormal_code);
  EXPECT_EQ(T(1.0f).bits(), e.one_code);
  if (e.has_quiet_nan) {
    EXPECT_EQ(L::quiet_NaN().bits(), e.nan_code);
    EXPECT_TRUE(std::isnan(static_cast<float>(L::quiet_NaN())));
  }
  if (e.has_infinity) {
    EXPECT_EQ(static_cast<float>(L::infinity()), std::numeric_limits<float>::infinity());
  } else {
    // No Inf: whatever infinity() returns must not pass for a value larger than max().
    const float inf = static_cast<float>(L::infinity());
    EXPECT_TRUE(std::isnan(inf) || inf == e.max) << inf;
  }
}

TYPED_TEST(MiniFloatLimits, DescriptorDerivedCodesMatchSpecTable) {
  using T = TypeParam;
  constexpr us::FormatSpec s = T::kSpec;
  const LimitsRow e = expected_row<T>();
  EXPECT_TRUE(s.is_valid());
  EXPECT_EQ(s.max_magnitude_code(), e.max_code);
  EXPECT_EQ(s.min_normal_code(), e.min_normal_code);
  EXPECT_EQ(s.min_subnormal_code(), e.min_subnormal_code);
  if (e.has_quiet_nan) {
    EXPECT_EQ(s.nan_code(), e.nan_code);
  }
  EXPECT_EQ(s.has_infinity(), e.has_infinity);
  EXPECT_EQ(s.has_nan(), e.has_quiet_nan);
  EXPECT_EQ(s.is_signed, e.is_signed);
  // Count distinct finite values by decoding every code (±0 once).
  std::vector<float> finite;
  for (std::uint32_t c = 0; c < s.code_count(); ++c) {
    const float v = us::detail::decode_bits(c, s);
    if (std::isfinite(v)) finite.push_back(v == 0.0f ? 0.0f : v);
  }
  std::sort(finite.begin(), finite.end());
  finite.erase(std::unique(finite.begin(), finite.end()), finite.end());
  EXPECT_EQ(static_cast<int>(finite.size()), e.finite_values);
  EXPECT_EQ(finite.back(), e.max);
  EXPECT_EQ(finite.front(), e.lowest);
}

TEST(FormatSpecTable, DescriptorFieldsMatchSpecTable) {
  struct Row {
    const us::FormatSpec* spec;
    int k, e, m, bias;
    bool is_signed, has_inf, has_nan, has_neg_zero;
  };
  const Row rows[] = {
      {&us::kFloat8E4M3FN, 8, 4, 3, 7, true, false, true, true},
      {&us::kFloat8E5M2, 8, 5, 2, 15, true, true, true, true},
      {&us::kFloat8E4M3FNUZ, 8, 4, 3, 8, true, false, true, false},
      {&us::kFloat8E5M2FNUZ, 8, 5, 2, 16, true, false, true, false},
      {&us::kFloat8E8M0FNU, 8, 8, 0, 127, false, false, true, false},
      {&us::kFloat6E2M3FN, 6, 2, 3, 1, true, false, false, true},
      {&us::kFloat6E3M2FN, 6, 3, 2, 3, true, false, false, true},
      {&us::kFloat4E2M1FN, 4, 2, 1, 1, true, false, false, true},
      {&us::kFloat16, 16, 5, 10, 15, true, true, true, true},
      {&us::kBFloat16, 16, 8, 7, 127, true, true, true, true},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(us::format_name(*r.spec));
    EXPECT_EQ(r.spec->total_bits(), r.k);
    EXPECT_EQ(r.spec->exponent_bits, r.e);
    EXPECT_EQ(r.spec->mantissa_bits, r.m);
    EXPECT_EQ(r.spec->bias, r.bias);
    EXPECT_EQ(r.spec->is_signed, r.is_signed);
    EXPECT_EQ(r.spec->has_infinity(), r.has_inf);
    EXPECT_EQ(r.spec->has_nan(), r.has_nan);
    EXPECT_EQ(r.spec->has_negative_zero(), r.has_neg_zero);
    EXPECT_TRUE(r.spec->is_valid());
  }
  EXPECT_FALSE(us::kFloat8E8M0FNU.has_subnormals());
}

// float16 and bfloat16 have no MiniFloat type; their limits come from the same descriptor.
TEST(FormatSpecTable, SixteenBitLimitsMatchSpecTable) {
  struct Row {
    const us::FormatSpec* spec;
    std::uint32_t one, max, min_normal, min_sub, qnan, inf;
    float max_value, min_normal_value, min_sub_value;
    int max_exponent, min_normal_exponent;
  };
  const Row rows[] = {
      {&us::kFloat16, 0x3C00, 0x7BFF, 0x0400, 0x0001, 0x7E00, 0x7C00, 65504.0f, p2(-14), p2(-24),
       15, -14},
      {&us::kBFloat16, 0x3F80, 0x7F7F, 0x0080, 0x0001, 0x7FC0, 0x7F80,
       (2.0f - p2(-7)) * p2(127), p2(-126), p2(-133), 127, -126},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(us::format_name(*r.spec));
    const us::FormatSpec& s = *r.spec;
    EXPECT_EQ(s.max_magnitude_code(), r.max);
    EXPECT_EQ(s.min_normal_code(), r.min_normal);
    EXPECT_EQ(s.min_subnormal_code(), r.min_sub);
    EXPECT_EQ(s.nan_code(), r.qnan);
    EXPECT_EQ(s.infinity_code(), r.inf);
    EXPECT_EQ(s.max_exponent(), r.max_exponent);
    EXPECT_EQ(s.min_normal_exponent(), r.min_normal_exponent);
    EXPECT_EQ(us::detail::decode_bits(r.one, s), 1.0f);
    EXPECT_EQ(us::detail::decode_bits(r.max, s), r.max_value);
    EXPECT_EQ(us::detail::decode_bits(r.max | 0x8000u, s), -r.max_value);
    EXPECT_EQ(us::detail::decode_bits(r.min_normal, s), r.min_normal_value);
    EXPECT_EQ(us::detail::decode_bits(r.min_sub, s), r.min_sub_value);
    EXPECT_TRUE(std::isnan(us::detail::decode_bits(r.qnan, s)));
    EXPECT_EQ(us::detail::decode_bits(r.inf, s), std::numeric_limits<float>::infinity());
  }
  // Eigen's own limits agree with the descriptors.
  using HalfTraits = us::FormatTraits<Eigen::half>;
  using BfTraits = us::FormatTraits<Eigen::bfloat16>;
  EXPECT_EQ(HalfTraits::to_bits(std::numeric_limits<Eigen::half>::max()), 0x7BFF);
  EXPECT_EQ(HalfTraits::to_bits(std::numeric_limits<Eigen::half>::denorm_min()), 0x0001);
  EXPECT_EQ(BfTraits::to_bits(std::numeric_limits<Eigen::bfloat16>::max()), 0x7F7F);
  EXPECT_EQ(BfTraits::to_bits(std::numeric_limits<Eigen::bfloat16>::min()), 0x0080);
  EXPECT_EQ(HalfTraits::kSpec, us::kFloat16);
  EXPECT_EQ(BfTraits::kSpec, us::kBFloat16);
}

// ---- names ----

struct NameRow {
  const char* full;
  const char* short_name;
  const us::FormatSpec* spec;
};
const NameRow kNames[] = {
    {"float8_e4m3fn", "e4m3fn", &us::kFloat8E4M3FN},
    {"float8_e5m2", "e5m2", &us::kFloat8E5M2},
    {"float8_e4m3fnuz", "e4m3fnuz", &us::kFloat8E4M3FNUZ},
    {"float8_e5m2fnuz", "e5m2fnuz", &us::kFloat8E5M2FNUZ},
    {"float8_e8m0fnu", "e8m0fnu", &us::kFloat8E8M0FNU},
    {"float6_e2m3fn", "e2m3fn", &us::kFloat6E2M3FN},
    {"float6_e3m2fn", "e3m2fn", &us::kFloat6E3M2FN},
    {"float4_e2m1fn", "e2m1fn", &us::kFloat4E2M1FN},
    {"float16", "float16", &us::kFloat16},
    {"bfloat16", "bfloat16", &us::kBFloat16},
};

TEST(FormatNames, CatalogueListsEveryFormatOnceInSpecOrder) {
  const auto named = us::named_formats();
  ASSERT_EQ(named.size(), std::size(kNames));
  for (std::size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(named[i].name, kNames[i].full);
    EXPECT_EQ(named[i].spec, *kNames[i].spec);
  }
}

TEST(FormatNames, FromNameAcceptsFullAndShortNames) {
  for (const NameRow& r : kNames) {
    EXPECT_EQ(us::format_from_name(r.full), *r.spec) << r.full;
    EXPECT_EQ(us::format_from_name(r.short_name), *r.spec) << r.short_name;
    EXPECT_EQ(us::parse_format(r.full), *r.spec) << r.full;
    EXPECT_EQ(us::parse_format(r.short_name), *r.spec) << r.short_name;
  }
}

TEST(FormatNames, FormatNameRoundTrips) {
  for (const NameRow& r : kNames) {
    EXPECT_EQ(us::format_name(*r.spec), r.full);
    EXPECT_EQ(us::format_from_name(us::format_name(*r.spec)), *r.spec);
  }
  const us::FormatSpec custom = us::parse_format("e4m3b11");
  EXPECT_EQ(us::format_name(custom), "custom(E4M3, bias 11)");
}

TEST(FormatNames, ParseCustomDescriptors) {
  // e5m10 is IEEE binary16 exactly.
  EXPECT_EQ(us::parse_format("e5m10"), us::kFloat16);
  EXPECT_EQ(us::parse_format("e8m7"), us::kBFloat16);
  const us::FormatSpec e4m3b11 = us::parse_format("e4m3b11");
  EXPECT_EQ(e4m3b11.exponent_bits, 4);
  EXPECT_EQ(e4m3b11.mantissa_bits, 3);
  EXPECT_EQ(e4m3b11.bias, 11);
  EXPECT_TRUE(e4m3b11.is_signed);
  EXPECT_EQ(e4m3b11.non_finite, us::NonFiniteEncoding::kIeee);
  EXPECT_EQ(e4m3b11.zero, us::ZeroEncoding::kSigned);
  // IEEE-like e4m3 with the default bias 7: max (2 - 2^-3)·2^7 = 240, unlike OCP e4m3fn's 448.
  const us::FormatSpec e4m3 = us::parse_format("e4m3");
  EXPECT_EQ(e4m3.bias, 7);
  EXPECT_NE(e4m3, us::kFloat8E4M3FN);
  EXPECT_EQ(us::detail::decode_bits(e4m3.max_magnitude_code(), e4m3), 240.0f);
  const us::FormatSpec e3m4 = us::parse_format("e3m4");
  EXPECT_EQ(e3m4.bias, 3);
  EXPECT_EQ(us::detail::decode_bits(e3m4.max_magnitude_code(), e3m4), 15.5f);
}

void expect_error_listing_names(const std::string& input, bool via_parse) {
  try {
    if (via_parse) {
      (void)us::parse_format(input);
    } else {
      (void)us::format_from_name(input);
    }
    ADD_FAILURE() << "no error for '" << input << "'";
  } catch (const us::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'" + input + "'"), std::string::npos) << msg;
    for (const NameRow& r : kNames) EXPECT_NE(msg.find(r.full), std::string::npos) << msg;
  }
}

TEST(FormatNames, ParseRejectsGarbageWithListOfValidNames) {
  for (const char* bad : {"e9m30", "", "fp8", "e4m3x", "e4m", "m3", "e4m3b", "e4m3b11x", "e0m3",
                          "e5m-1", "e5m30", "E4M3FN", " e4m3fn", "float8_e4m3"}) {
    SCOPED_TRACE(bad);
    expect_error_listing_names(bad, true);
  }
}

TEST(FormatNames, FromNameRejectsUnknownAndCustomNames) {
  // format_from_name is for catalogue names only; custom descriptors need parse_format.
  for (const char* bad : {"", "fp8", "e5m10", "float8", "e4m3", "float8_e4m3fn "}) {
    SCOPED_TRACE(bad);
    expect_error_listing_names(bad, false);
  }
}

}  // namespace

// MiniFloat<Spec>: exhaustive arithmetic and comparisons, negation and abs, classification,
// Eigen integration, fmt formatting and constexpr use.
//
// Operand values come from an independent decoder (spec §3) written in this file. The arithmetic
// reference is "compute in FP64, round back once with RNE and the non-saturating policy", which is
// correctly rounded for every 8-bit format. Each result is also checked against the FP32 route of
// spec §5, which agrees everywhere except where an E8M0 product or quotient leaves FP32's range.

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <Eigen/Core>
#include <fmt/format.h>

#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/eigen.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/fmt.hpp"
#include "unitscale/format/numeric_limits.hpp"

namespace us = unitscale;

namespace {

enum class Scheme { kIeee, kFn, kFnuz, kE8m0, kMx };
struct RefFormat {
  int bits, E, M, bias;
  Scheme scheme;
};
template <class T> RefFormat ref_format();
template <> RefFormat ref_format<us::float8_e4m3fn>() { return {8, 4, 3, 7, Scheme::kFn}; }
template <> RefFormat ref_format<us::float8_e5m2>() { return {8, 5, 2, 15, Scheme::kIeee}; }
template <> RefFormat ref_format<us::float8_e4m3fnuz>() { return {8, 4, 3, 8, Scheme::kFnuz}; }
template <> RefFormat ref_format<us::float8_e5m2fnuz>() { return {8, 5, 2, 16, Scheme::kFnuz}; }
template <> RefFormat ref_format<us::float8_e8m0fnu>() { return {8, 8, 0, 127, Scheme::kE8m0}; }
template <> RefFormat ref_format<us::float6_e2m3fn>() { return {6, 2, 3, 1, Scheme::kMx}; }
template <> RefFormat ref_format<us::float6_e3m2fn>() { return {6, 3, 2, 3, Scheme::kMx}; }
template <> RefFormat ref_format<us::float4_e2m1fn>() { return {4, 2, 1, 1, Scheme::kMx}; }

// Spec §3. NaN codes give a NaN (sign irrelevant here), Inf codes ±inf.
double ref_decode(const RefFormat& f, std::uint32_t c) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (f.scheme == Scheme::kE8m0) return c == 0xFF ? nan : std::ldexp(1.0, static_cast<int>(c) - 127);
  const std::uint32_t sign_bit = 1u << (f.bits - 1);
  const std::uint32_t mag_mask = sign_bit - 1;
  const bool negative = (c & sign_bit) != 0;
  const std::uint32_t mag = c & mag_mask;
  const int e = static_cast<int>(mag >> f.M);
  const int m = static_cast<int>(mag & ((1u << f.M) - 1));
  if (f.scheme == Scheme::kIeee && e == (1 << f.E) - 1) {
    return m != 0 ? nan : (negative ? -HUGE_VAL : HUGE_VAL);
  }
  if (f.scheme == Scheme::kFn && mag == mag_mask) return nan;
  if (f.scheme == Scheme::kFnuz && c == sign_bit) return nan;
  const double v = e == 0 ? std::ldexp(m, 1 - f.bias - f.M) : std::ldexp((1 << f.M) + m, e - f.bias - f.M);
  return negative ? -v : v;
}

template <class T>
class MiniFloatTest : public ::testing::Test {};
using MiniFloatTypes =
    ::testing::Types<us::float8_e4m3fn, us::float8_e5m2, us::float8_e4m3fnuz, us::float8_e5m2fnuz,
                     us::float8_e8m0fnu, us::float6_e2m3fn, us::float6_e3m2fn, us::float4_e2m1fn>;
TYPED_TEST_SUITE(MiniFloatTest, MiniFloatTypes);

template <class T>
constexpr std::uint32_t kCodes = std::uint32_t{1} << T::kSpec.total_bits();

template <class T>
T code(std::uint32_t c) {
  return T::from_bits(static_cast<std::uint8_t>(c));
}

TYPED_TEST(MiniFloatTest, DecodeMatchesReference) {
  using T = TypeParam;
  const RefFormat f = ref_format<T>();
  for (std::uint32_t c = 0; c < kCodes<T>; ++c) {
    const double want = ref_decode(f, c);
    const float got = static_cast<float>(code<T>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << c;
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << c;
      EXPECT_EQ(static_cast<double>(code<T>(c)), want);
    }
  }
  // from_bits ignores bits above the format's width.
  if constexpr (T::kSpec.total_bits() < 8) {
    EXPECT_EQ(T::from_bits(0xFF).bits(), kCodes<T> - 1);
  }
}

enum class Op { kAdd, kSub, kMul, kDiv };

template <class F>
F apply(Op op, F a, F b) {
  switch (op) {
    case Op::kAdd: return a + b;
    case Op::kSub: return a - b;
    case Op::kMul: return a * b;
    case Op::kDiv: return a / b;
  }
  return a;
}

TYPED_TEST(MiniFloatTest, ExhaustiveArithmeticIsCorrectlyRounded) {
  using T = TypeParam;
  const RefFormat f = ref_format<T>();
  int failures = 0;
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    for (std::uint32_t i = 0; i < kCodes<T> && failures < 20; ++i) {
      for (std::uint32_t j = 0; j < kCodes<T>; ++j) {
        const double a = ref_decode(f, i), b = ref_decode(f, j);
        const float ref32 = apply(op, static_cast<float>(a), static_cast<float>(b));
        const double ref64 = apply(op, a, b);
        const std::uint32_t want32 =
            us::detail::encode_bits(ref32, T::kSpec, us::Rounding::kNearestEven, us::Overflow::kNonFinite);
        const std::uint32_t want64 =
            us::detail::encode_bits(ref64, T::kSpec, us::Rounding::kNearestEven, us::Overflow::kNonFinite);
        const T x = code<T>(i), y = code<T>(j);
        const T got = apply(op, x, y);
        T compound = x;
        switch (op) {
          case Op::kAdd: compound += y; break;
          case Op::kSub: compound -= y; break;
          case Op::kMul: compound *= y; break;
          case Op::kDiv: compound /= y; break;
        }
        const bool want_nan = std::isnan(ref_decode(f, want64));
        const bool ok = want_nan ? std::isnan(static_cast<float>(got)) && std::isnan(static_cast<float>(compound))
                                 : got.bits() == want64 && compound.bits() == want64;
        // FP32 has the precision to be correctly rounded too (spec §5), but not the range for
        // E8M0: 2^-127·2^-127 is 0 in FP32, which E8M0 turns into NaN, while the exact 2^-254
        // rounds to 0x00. Everywhere else the two routes agree.
        const bool fp32_out_of_range = (ref32 == 0.0f && ref64 != 0.0) || (std::isinf(ref32) && !std::isinf(ref64));
        const bool skip32 = f.scheme == Scheme::kE8m0 && fp32_out_of_range;
        const bool ok32 =
            skip32 || (want_nan ? std::isnan(ref_decode(f, want32)) : want32 == want64);
        if (!ok || !ok32) {
          ++failures;
          ADD_FAILURE() << "op " << static_cast<int>(op) << " codes " << i << ", " << j << " ("
                        << a << ", " << b << "): want " << want32 << " (fp64 " << want64
                        << ") got " << static_cast<int>(got.bits());
        }
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TYPED_TEST(MiniFloatTest, ExhaustiveComparisons) {
  using T = TypeParam;
  const RefFormat f = ref_format<T>();
  int failures = 0;
  for (std::uint32_t i = 0; i < kCodes<T> && failures < 20; ++i) {
    for (std::uint32_t j = 0; j < kCodes<T>; ++j) {
      const double a = ref_decode(f, i), b = ref_decode(f, j);
      const T x = code<T>(i), y = code<T>(j);
      const bool ok = (x == y) == (a == b) && (x != y) == (a != b) && (x < y) == (a < b) &&
                      (x <= y) == (a <= b) && (x > y) == (a > b) && (x >= y) == (a >= b);
      if (!ok) {
        ++failures;
        ADD_FAILURE() << "codes " << i << ", " << j << " (" << a << ", " << b << ")";
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TYPED_TEST(MiniFloatTest, NegationAbsAndClassification) {
  using T = TypeParam;
  const RefFormat f = ref_format<T>();
  const std::uint32_t sign_bit = f.scheme == Scheme::kE8m0 ? 0 : 1u << (f.bits - 1);
  for (std::uint32_t c = 0; c < kCodes<T>; ++c) {
    SCOPED_TRACE("code " + std::to_string(c));
    const T x = code<T>(c);
    const double v = ref_decode(f, c);
    std::uint32_t want_neg, want_abs;
    switch (f.scheme) {
      case Scheme::kFnuz:  // 0x00 and the NaN 0x80 are their own negation
        want_neg = (c & (sign_bit - 1)) == 0 ? c : c ^ sign_bit;
        want_abs = c == sign_bit ? c : c & ~sign_bit;
        break;
      case Scheme::kE8m0:  // no negative values: negation is NaN, abs the identity
        want_neg = 0xFF;
        want_abs = c;
        break;
      default:
        want_neg = c ^ sign_bit;
        want_abs = c & ~sign_bit;
        break;
    }
    EXPECT_EQ((-x).bits(), want_neg);
    EXPECT_EQ(us::abs(x).bits(), want_abs);
    EXPECT_EQ((+x).bits(), c);
    if (!std::isnan(v) && f.scheme != Scheme::kE8m0) {
      EXPECT_EQ(static_cast<double>(static_cast<float>(-x)), v == 0 && f.scheme == Scheme::kFnuz ? 0.0 : -v);
      EXPECT_EQ(static_cast<double>(static_cast<float>(us::abs(x))), std::fabs(v));
    }
    EXPECT_EQ(us::isnan(x), std::isnan(v));
    EXPECT_EQ(us::isinf(x), std::isinf(v));
    EXPECT_EQ(us::isfinite(x), std::isfinite(v));
  }
}

TEST(MiniFloatExplicit, ArithmeticExamples) {
  using E4 = us::float8_e4m3fn;
  EXPECT_EQ((E4(448.0f) + E4(32.0f)).bits(), 0x7F);  // 480 > T = 464: NaN (non-saturating)
  EXPECT_EQ((E4(448.0f) + E4(16.0f)).bits(), 0x7E);  // 464 = T ties down to 448
  EXPECT_EQ((E4(1.0f) + E4(0.0625f)).bits(), 0x38);  // 1.0625 ties to even 1.0
  EXPECT_EQ((E4(1.125f) + E4(0.0625f)).bits(), 0x3A);  // 1.1875 ties to even 1.25
  EXPECT_EQ((E4(1.0f) - E4(1.0f)).bits(), 0x00);     // +0
  EXPECT_EQ((E4(-1.0f) - E4(-1.0f)).bits(), 0x00);
  EXPECT_EQ((E4(-0.0f) + E4(-0.0f)).bits(), 0x80);
  EXPECT_EQ((E4(1.0f) / E4(0.0f)).bits(), 0x7F);     // Inf -> NaN in e4m3fn
  EXPECT_EQ((E4(1.0f) / E4(3.0f)).bits(), 0x2B);     // 1/3 -> 0.34375 = 1.011·2^-2
  using E5 = us::float8_e5m2;
  EXPECT_EQ((E5(1.0f) / E5(0.0f)).bits(), 0x7C);
  EXPECT_EQ((E5(-1.0f) / E5(0.0f)).bits(), 0xFC);
  EXPECT_EQ((E5(57344.0f) * E5(2.0f)).bits(), 0x7C);
  using Z = us::float8_e4m3fnuz;
  EXPECT_EQ((Z(-1.0f) * Z(0.0f)).bits(), 0x00);       // -0 becomes +0
  EXPECT_EQ((Z(240.0f) * Z(2.0f)).bits(), 0x80);
  using F4 = us::float4_e2m1fn;
  EXPECT_EQ((F4(6.0f) + F4(6.0f)).bits(), 0x7);       // saturates: no specials
  EXPECT_EQ((F4(1.5f) * F4(1.5f)).bits(), 0x4);       // 2.25 -> 2
  EXPECT_EQ((F4(0.0f) / F4(0.0f)).bits(), 0x8);       // NaN -> the -0 code
  using E8 = us::float8_e8m0fnu;
  EXPECT_EQ((E8(2.0f) * E8(4.0f)).bits(), 0x82);
  EXPECT_EQ((E8(2.0f) - E8(2.0f)).bits(), 0xFF);      // 0 does not exist: NaN
  EXPECT_EQ((E8(2.0f) + E8(4.0f)).bits(), 0x82);      // 6 ties to the even code: 8
  EXPECT_EQ((E8::from_bits(0x00) * E8::from_bits(0x00)).bits(), 0x00);  // 2^-254: below range
  EXPECT_EQ((E8::from_bits(0xFE) * E8::from_bits(0xFE)).bits(), 0xFF);  // 2^254: overflow, NaN
  EXPECT_TRUE(E4(-0.0f) == E4(0.0f));
  EXPECT_FALSE(E4::from_bits(0x7F) == E4::from_bits(0x7F));
  EXPECT_TRUE(E4::from_bits(0x7F) != E4::from_bits(0x7F));
}

// ---- Eigen ----

TEST(MiniFloatEigen, MatrixCasts) {
  using E4 = us::float8_e4m3fn;
  Eigen::Matrix<E4, Eigen::Dynamic, Eigen::Dynamic> m(2, 3);
  const std::uint8_t codes[2][3] = {{0x38, 0x7E, 0x01}, {0xB0, 0x80, 0x7F}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) m(i, j) = E4::from_bits(codes[i][j]);
  }
  const Eigen::MatrixXf f = m.cast<float>();
  EXPECT_EQ(f(0, 0), 1.0f);
  EXPECT_EQ(f(0, 1), 448.0f);
  EXPECT_EQ(f(0, 2), std::ldexp(1.0f, -9));
  EXPECT_EQ(f(1, 0), -0.5f);
  EXPECT_EQ(f(1, 1), 0.0f);
  EXPECT_TRUE(std::signbit(f(1, 1)));
  EXPECT_TRUE(std::isnan(f(1, 2)));

  Eigen::MatrixXf g(2, 3);
  g << 1.0f, 4.25f, 465.0f, -0.0f, 1e-4f, std::numeric_limits<float>::quiet_NaN();
  const Eigen::Matrix<E4, Eigen::Dynamic, Eigen::Dynamic> q = g.cast<E4>();
  // RNE, non-saturating: 4.25 -> 4, 465 -> NaN, 1e-4 -> 0.
  const std::uint8_t want[2][3] = {{0x38, 0x48, 0x7F}, {0x80, 0x00, 0x7F}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(q(i, j).bits(), want[i][j]) << i << "," << j;
  }

  // Element-wise arithmetic goes through MiniFloat's operators.
  Eigen::Matrix<E4, 2, 2> a, b;
  a << E4(1.0f), E4(2.0f), E4(448.0f), E4(-3.0f);
  b << E4(0.0625f), E4(0.25f), E4(32.0f), E4(0.5f);
  const Eigen::Matrix<E4, 2, 2> s = a + b;
  EXPECT_EQ(s(0, 0).bits(), 0x38);  // 1.0625 -> 1
  EXPECT_EQ(s(0, 1).bits(), E4(2.25f).bits());
  EXPECT_EQ(s(1, 0).bits(), 0x7F);  // 480 -> NaN
  EXPECT_EQ(s(1, 1).bits(), E4(-2.5f).bits());
  const Eigen::Matrix<E4, 2, 2> p = a.cwiseProduct(b);
  EXPECT_EQ(static_cast<float>(p(1, 1)), -1.5f);
  EXPECT_EQ(static_cast<float>(Eigen::NumTraits<E4>::highest()), 448.0f);
  EXPECT_EQ(static_cast<float>(Eigen::NumTraits<E4>::lowest()), -448.0f);
  EXPECT_EQ(static_cast<float>(Eigen::NumTraits<E4>::epsilon()), 0.125f);
}

// ---- fmt ----

TEST(MiniFloatFmt, ValueAndCode) {
  using E4 = us::float8_e4m3fn;
  EXPECT_EQ(fmt::format("{}", E4(1.25f)), "1.25 (0x3a)");
  EXPECT_EQ(fmt::format("{:.3f}", E4(1.25f)), "1.250 (0x3a)");
  EXPECT_EQ(fmt::format("{:.1f}", E4(448.0f)), "448.0 (0x7e)");
  EXPECT_EQ(fmt::format("{}", E4(-0.5f)), "-0.5 (0xb0)");
  EXPECT_EQ(fmt::format("{}", E4(-0.0f)), "-0 (0x80)");
  EXPECT_EQ(fmt::format("{}", E4::from_bits(0x7F)), "nan (0x7f)");
  EXPECT_EQ(fmt::format("{:>6}", E4(2.0f)), "     2 (0x40)");
  EXPECT_EQ(fmt::format("{}", us::float8_e5m2::from_bits(0xFC)), "-inf (0xfc)");
  EXPECT_EQ(fmt::format("{}", us::float4_e2m1fn(1.5f)), "1.5 (0x03)");
  EXPECT_EQ(fmt::format("{}", us::float6_e3m2fn(-28.0f)), "-28 (0x3f)");
  EXPECT_EQ(fmt::format("{}", us::float8_e8m0fnu(0.5f)), "0.5 (0x7e)");
  EXPECT_EQ(fmt::format("{:e}", us::float8_e4m3fnuz(240.0f)), "2.400000e+02 (0x7f)");
}

// ---- constexpr ----

using us::float8_e4m3fn;
static_assert(float8_e4m3fn(1.0f).bits() == 0x38);
static_assert(float8_e4m3fn(464.0f).bits() == 0x7E);
static_assert(float8_e4m3fn(465.0f).bits() == 0x7F);
static_assert(float8_e4m3fn(4.25).bits() == 0x48);
static_assert(static_cast<float>(float8_e4m3fn::from_bits(0x7E)) == 448.0f);
static_assert(static_cast<float>(float8_e4m3fn::from_bits(0x01)) == 0.001953125f);
static_assert((float8_e4m3fn(1.0f) + float8_e4m3fn(0.125f)).bits() == 0x39);
static_assert((-float8_e4m3fn(1.0f)).bits() == 0xB8);
static_assert(float8_e4m3fn(1.0f) < float8_e4m3fn(2.0f));
static_assert(us::float8_e8m0fnu(3.0f).bits() == 0x80);
static_assert(us::float4_e2m1fn(5.0f).bits() == 0x6);
static_assert(us::float8_e4m3fnuz(-0.0f).bits() == 0x00);
static_assert(std::numeric_limits<float8_e4m3fn>::max().bits() == 0x7E);
static_assert(static_cast<float>(std::numeric_limits<us::float8_e5m2>::infinity()) ==
              std::numeric_limits<float>::infinity());
static_assert(us::isnan(us::float8_e5m2fnuz::from_bits(0x80)));

TEST(MiniFloatConstexpr, UsableInConstantExpressions) {
  constexpr float8_e4m3fn x(0.3f);
  constexpr std::uint8_t b = x.bits();
  std::array<int, b> sized{};  // a code used as a template argument
  EXPECT_EQ(sized.size(), 0x2Au);  // 0.3 -> 0.3125 = 1.010·2^-2
  constexpr float back = static_cast<float>(x);
  EXPECT_EQ(back, 0.3125f);
}

}  // namespace

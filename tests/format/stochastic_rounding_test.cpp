// Stochastic rounding (docs/formats.md).
//
// The rule under test: with r discarded bits t and R random bits rho (R defaults to min(r, 32)),
//   t_R = t · 2^(R - r)                    if R >= r
//   t_R = RNE(t / 2^(r - R))  in [0, 2^R]   if R <  r   (pre-rounding, ties to even)
// and the magnitude rounds away from zero iff t_R + rho >= 2^R.
//
// The reference below derives r, t and the neighbours of an input from the format's parameters
// (written out here, not taken from the library) with exact integer arithmetic. The statistical
// tests draw from std::mt19937 with fixed seeds, so they are deterministic; their bounds are stated
// where they are used.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "unitscale/format/convert.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace us = unitscale;
using us::Overflow;
using us::RandomBits;
using us::Rounding;

namespace {

constexpr Rounding kSr = Rounding::kStochastic;
constexpr Overflow kN = Overflow::kNonFinite;
constexpr Overflow kS = Overflow::kSaturate;

template <class T>
std::uint32_t bits_of(T v) {
  return us::FormatTraits<T>::to_bits(v);
}
template <class T, class X>
float sr(X x, std::uint32_t word, int count, Overflow o = kS) {
  return us::to_float(us::convert<T>(x, kSr, o, RandomBits{word, count}));
}
template <class T, class X>
std::uint32_t sr_code(X x, std::uint32_t word, int count, Overflow o = kS) {
  return bits_of(us::convert<T>(x, kSr, o, RandomBits{word, count}));
}

// Exponent/mantissa parameters (spec §1), independent of the library's descriptors.
struct Params {
  int M;
  int min_exponent;  // exponent of the smallest normal binade
};
template <class T> Params params();
template <> Params params<us::float8_e4m3fn>() { return {3, -6}; }
template <> Params params<us::float8_e5m2>() { return {2, -14}; }
template <> Params params<us::float8_e4m3fnuz>() { return {3, -7}; }
template <> Params params<us::float8_e5m2fnuz>() { return {2, -15}; }
template <> Params params<us::float8_e8m0fnu>() { return {0, -127}; }
template <> Params params<us::float6_e2m3fn>() { return {3, 0}; }
template <> Params params<us::float6_e3m2fn>() { return {2, -2}; }
template <> Params params<us::float4_e2m1fn>() { return {1, 0}; }
template <> Params params<us::float16>() { return {10, -14}; }
template <> Params params<us::bfloat16>() { return {7, -126}; }

// Where x sits between its two neighbours, in the terms of §6.
struct Position {
  double lo, hi;     // neighbouring magnitudes, lo <= |x| < hi (hi may be past max)
  int r;             // discarded bits
  std::uint64_t t;   // discarded bits as an integer, in [0, 2^r)
  double frac() const { return std::ldexp(static_cast<double>(t), -r); }
  // t_R / 2^R: the probability of rounding away with R random bits (0: the default).
  double probability(int R) const {
    const int bits = R == 0 ? std::min(r, 32) : R;
    if (bits >= r) return frac();
    const int drop = r - bits;
    std::uint64_t q = t >> drop;
    const std::uint64_t rem = t & ((std::uint64_t{1} << drop) - 1);
    const std::uint64_t half = std::uint64_t{1} << (drop - 1);
    if (rem > half || (rem == half && (q & 1) != 0)) ++q;
    return std::ldexp(static_cast<double>(q), -bits);
  }
};

template <class T, class X>
Position position(X x) {
  const Params p = params<T>();
  const double a = std::fabs(static_cast<double>(x));
  const int source_mantissa = std::numeric_limits<X>::digits - 1;
  const int ex = std::ilogb(a);
  const int ulp_exp = std::max(ex, p.min_exponent) - p.M;
  const int source_ulp_exp = ex - source_mantissa;
  const double ulp = std::ldexp(1.0, ulp_exp);
  Position pos;
  pos.lo = std::floor(a / ulp) * ulp;
  pos.hi = pos.lo + ulp;
  pos.r = ulp_exp - source_ulp_exp;
  pos.t = static_cast<std::uint64_t>(std::ldexp(a - pos.lo, -source_ulp_exp));
  return pos;
}

// ---- the hand-computed example of spec §9 and the reference itself ----

TEST(StochasticReference, SpecExample) {
  const Position p = position<us::float4_e2m1fn>(-1.35f);
  EXPECT_EQ(p.lo, 1.0);
  EXPECT_EQ(p.hi, 1.5);
  EXPECT_EQ(p.r, 22);
  EXPECT_NEAR(p.frac(), 0.7, 1e-6);
  EXPECT_NEAR(p.probability(3), 0.75, 1e-12);  // 5.6 -> 6 of 8
  EXPECT_NEAR(p.probability(0), p.frac(), 0.0);
  const Position q = position<us::float8_e4m3fn>(450.0f);
  EXPECT_EQ(q.lo, 448.0);
  EXPECT_EQ(q.hi, 480.0);
  EXPECT_EQ(q.r, 20);
  EXPECT_EQ(q.t, std::uint64_t{1} << 16);
}

// ---- exact, deterministic checks of the rule with chosen random words ----

TEST(StochasticExact, PreRoundingTiesToEven) {
  using T = us::float4_e2m1fn;
  // 1.15625 = 1 + 0.5·(2.5/8): with R = 3, t/2^(r-R) = 2.5, which rounds to 2 (even). So it rounds
  // away iff 2 + rho >= 8, i.e. rho >= 6. (Ties away would give 3 and rho >= 5.)
  const float x = 1.15625f;
  ASSERT_NEAR(position<T>(x).frac(), 2.5 / 8, 0.0);
  EXPECT_EQ(sr<T>(x, 5, 3), 1.0f);
  EXPECT_EQ(sr<T>(x, 6, 3), 1.5f);
  EXPECT_EQ(sr<T>(-x, 5, 3), -1.0f);
  EXPECT_EQ(sr<T>(-x, 6, 3), -1.5f);
  // 1.21875 = 1 + 0.5·(3.5/8): 3.5 rounds to 4 (even), so rho >= 4 rounds away.
  // (The biased "fastest" variant, floor(3.5) = 3, would need rho >= 5.)
  const float y = 1.21875f;
  EXPECT_EQ(sr<T>(y, 3, 3), 1.0f);
  EXPECT_EQ(sr<T>(y, 4, 3), 1.5f);
  // Only the low R bits of the word are used.
  EXPECT_EQ(sr<T>(y, 0xFFFFFFF8u | 3u, 3), 1.0f);
  EXPECT_EQ(sr<T>(y, 0xFFFFFFF8u | 4u, 3), 1.5f);
  // Pre-rounding can reach 2^R: 1.4999 has t/2^(r-3) ≈ 7.998 -> 8, so even rho = 0 rounds away;
  // 1.0001 has t_R = 0, so even rho = 7 stays.
  EXPECT_EQ(sr<T>(1.4999f, 0, 3), 1.5f);
  EXPECT_EQ(sr<T>(1.0001f, 7, 3), 1.0f);
  // R = 8 on e4m3fn: 1.3 = 1.25 + 0.4·0.125; t/2^(20-8) = 0.4·256 = 102.4 -> 102:
  // away iff rho >= 154.
  using E4 = us::float8_e4m3fn;
  const Position p = position<E4>(1.3f);
  ASSERT_EQ(p.r, 20);
  ASSERT_NEAR(p.probability(8), 102.0 / 256, 0.0);
  EXPECT_EQ(sr<E4>(1.3f, 153, 8), 1.25f);
  EXPECT_EQ(sr<E4>(1.3f, 154, 8), 1.375f);
}

TEST(StochasticExact, FullWidthBoundaries) {
  using T = us::float4_e2m1fn;
  // 1.15625: frac = 0.3125 exactly.
  // R = 32 > r = 22: t_R = 0.3125·2^32, away iff rho >= 0.6875·2^32 = 0xB0000000.
  EXPECT_EQ(sr<T>(1.15625f, 0xAFFFFFFFu, 32), 1.0f);
  EXPECT_EQ(sr<T>(1.15625f, 0xB0000000u, 32), 1.5f);
  // Default R = r = 22: away iff rho >= 0.6875·2^22 = 0x2C0000; bits above 22 are ignored.
  EXPECT_EQ(sr<T>(1.15625f, 0x2BFFFFu, 0), 1.0f);
  EXPECT_EQ(sr<T>(1.15625f, 0x2C0000u, 0), 1.5f);
  EXPECT_EQ(sr<T>(1.15625f, 0xFFC00000u | 0x2BFFFFu, 0), 1.0f);
  // R = 16 < r = 22: 0.3125·2^16 = 20480 exactly, away iff rho >= 45056.
  EXPECT_EQ(sr<T>(1.15625f, 45055, 16), 1.0f);
  EXPECT_EQ(sr<T>(1.15625f, 45056, 16), 1.5f);
  // E8M0, r = 23: 3 = 2 + 0.5·2, away iff rho >= 2^22 (default R = 23).
  using E8 = us::float8_e8m0fnu;
  EXPECT_EQ(sr<E8>(3.0f, (1u << 22) - 1, 0), 2.0f);
  EXPECT_EQ(sr<E8>(3.0f, 1u << 22, 0), 4.0f);
  // A subnormal target binade: e4m3fn 1.5·2^-9 is halfway between 2^-9 and 2^-8, and three more
  // bits are discarded than in the normal range (r = 23).
  using E4 = us::float8_e4m3fn;
  const float s = 1.5f * std::ldexp(1.0f, -9);
  const Position ps = position<E4>(s);
  ASSERT_EQ(ps.lo, std::ldexp(1.0, -9));
  ASSERT_EQ(ps.frac(), 0.5);
  ASSERT_EQ(ps.r, 23);
  EXPECT_EQ(sr<E4>(s, (1u << (ps.r - 1)) - 1, 0), std::ldexp(1.0f, -9));
  EXPECT_EQ(sr<E4>(s, 1u << (ps.r - 1), 0), std::ldexp(1.0f, -8));
  // Double input: r = 52 - 1 = 51 > 32, so the default R is 32 with pre-rounding.
  const Position pd = position<T>(1.15625);
  ASSERT_EQ(pd.r, 51);
  EXPECT_EQ(sr<T>(1.15625, 0xAFFFFFFFu, 0), 1.0f);
  EXPECT_EQ(sr<T>(1.15625, 0xB0000000u, 0), 1.5f);
}

// Enumerating every rho in [0, 2^R) counts exactly t_R round-ups: the whole rule, with no
// statistics.
template <class T, class X>
void expect_exact_count(X x, int R) {
  const Position p = position<T>(x);
  const int bits = R == 0 ? std::min(p.r, 32) : R;
  ASSERT_LE(bits, 16) << "enumeration too large";
  const std::uint32_t n = 1u << bits;
  std::uint32_t away = 0;
  for (std::uint32_t rho = 0; rho < n; ++rho) {
    // NonFinite, so that rounding past max (to Inf or NaN) is told apart from staying at max.
    const double v = std::fabs(static_cast<double>(sr<T>(x, rho, R, kN)));
    if (v != p.lo) {
      ++away;
      ASSERT_TRUE(v == p.hi || !std::isfinite(v)) << "x=" << x << " rho=" << rho << " got " << v;
    }
  }
  EXPECT_EQ(away, static_cast<std::uint32_t>(std::llround(p.probability(R) * n)))
      << "x=" << x << " R=" << R << " r=" << p.r;
}

TEST(StochasticExact, EnumeratedRandomWordsCountExactlyTR) {
  for (int R : {1, 3, 8, 9, 16}) {
    SCOPED_TRACE("R=" + std::to_string(R));
    for (float x : {-1.35f, 1.15625f, 1.21875f, 1.4999f, 1.0001f, 2.7f, 0.3f, 5.1f}) {
      expect_exact_count<us::float4_e2m1fn>(x, R);
    }
    for (float x : {1.3f, -300.0f, 0.003f, 450.0f}) expect_exact_count<us::float8_e4m3fn>(x, R);
    for (float x : {3.3f, 1e-5f}) expect_exact_count<us::float8_e5m2>(x, R);
    for (float x : {3.0f, 5.0f, 0.3f}) expect_exact_count<us::float8_e8m0fnu>(x, R);
    expect_exact_count<us::float6_e2m3fn>(3.1f, R);
    expect_exact_count<us::float6_e3m2fn>(0.1f, R);
    expect_exact_count<us::bfloat16>(1.001f, R);
    expect_exact_count<us::float16>(1.0001f, R);
  }
  // Formats whose r is small enough to enumerate the default R.
  expect_exact_count<us::float16>(1.0001f, 0);  // r = 13
  expect_exact_count<us::bfloat16>(1.001f, 0);  // r = 16
}

// ---- statistics ----

template <class T, class X>
void check_frequency(X x, int R, std::uint32_t seed) {
  constexpr int kDraws = 10000;
  const Position p = position<T>(x);
  std::mt19937 gen(seed);
  int away = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double v = std::fabs(static_cast<double>(sr<T>(x, static_cast<std::uint32_t>(gen()), R)));
    if (v == p.hi) {
      ++away;
    } else {
      ASSERT_EQ(v, p.lo) << x;
    }
  }
  const int bits = R == 0 ? std::min(p.r, 32) : R;
  // Against the exact probability t_R / 2^R: within 5 binomial standard deviations (+1 for the
  // integer count). With fixed seeds the outcome is deterministic; 5 sigma keeps the bound honest
  // without being fragile to the choice of seed.
  const double pr = p.probability(R);
  const double sd = std::sqrt(kDraws * pr * (1 - pr));
  EXPECT_LE(std::fabs(away - kDraws * pr), 5 * sd + 1)
      << "x=" << x << " R=" << R << " p=" << pr << " away=" << away;
  // Against the fractional position, the §9 form: the pre-rounding moves the probability by at
  // most half a unit of 2^-R, so n·2^(-1-R) + 4σ (σ at the fractional position), when R < r.
  const double f = p.frac();
  const double sd_f = std::sqrt(kDraws * f * (1 - f));
  const double bias_bound = bits >= p.r ? 0.0 : kDraws * std::ldexp(1.0, -1 - bits);
  EXPECT_LE(std::fabs(away - kDraws * f), bias_bound + 4 * sd_f + 1)
      << "x=" << x << " R=" << R << " frac=" << f << " away=" << away;
}

TEST(StochasticStatistics, RoundUpFrequencyMatchesFractionalPosition) {
  std::uint32_t seed = 20240601;
  for (int R : {0, 3, 8, 9, 16, 32}) {
    SCOPED_TRACE("R=" + std::to_string(R));
    check_frequency<us::float4_e2m1fn>(-1.35f, R, ++seed);  // P(-1.5) = 0.7
    check_frequency<us::float4_e2m1fn>(2.7f, R, ++seed);
    check_frequency<us::float4_e2m1fn>(0.3f, R, ++seed);    // subnormal: 0 or 0.5
    check_frequency<us::float4_e2m1fn>(-1.35, R, ++seed);   // double input
    check_frequency<us::float8_e4m3fn>(1.3f, R, ++seed);
    check_frequency<us::float8_e4m3fn>(-300.0f, R, ++seed);
    check_frequency<us::float8_e4m3fn>(0.003f, R, ++seed);  // subnormal
    check_frequency<us::float8_e5m2>(3.3f, R, ++seed);
    check_frequency<us::float8_e5m2>(-1e-5f, R, ++seed);    // below min_sub
    check_frequency<us::float8_e4m3fnuz>(100.7f, R, ++seed);
    check_frequency<us::float8_e5m2fnuz>(-0.1f, R, ++seed);
    check_frequency<us::float8_e8m0fnu>(3.0f, R, ++seed);
    check_frequency<us::float8_e8m0fnu>(5.0f, R, ++seed);
    check_frequency<us::float6_e2m3fn>(3.1f, R, ++seed);
    check_frequency<us::float6_e3m2fn>(-0.1f, R, ++seed);
    check_frequency<us::float16>(1.0001f, R, ++seed);
    check_frequency<us::bfloat16>(-1.001f, R, ++seed);
  }
}

// E[SR(x)] = x when R >= r. The sample mean of n roundings has standard error
// ulp·sqrt(p(1-p)/n); we require |mean - x| <= 5 standard errors.
template <class T>
void check_unbiased(float x, int R, std::uint32_t seed) {
  constexpr int kDraws = 100000;
  const Position p = position<T>(x);
  std::mt19937 gen(seed);
  double sum = 0;
  for (int i = 0; i < kDraws; ++i) sum += sr<T>(x, static_cast<std::uint32_t>(gen()), R);
  const double mean = sum / kDraws;
  const double f = p.frac();
  const double se = (p.hi - p.lo) * std::sqrt(f * (1 - f) / kDraws);
  EXPECT_LE(std::fabs(mean - static_cast<double>(x)), 5 * se)
      << "x=" << x << " R=" << R << " mean=" << mean;
}

TEST(StochasticStatistics, MeanEqualsInput) {
  std::uint32_t seed = 777;
  for (int R : {0, 32}) {
    check_unbiased<us::float4_e2m1fn>(-1.35f, R, ++seed);
    check_unbiased<us::float4_e2m1fn>(4.7f, R, ++seed);
    check_unbiased<us::float8_e4m3fn>(0.1f, R, ++seed);
    check_unbiased<us::float8_e4m3fn>(0.0031f, R, ++seed);
    check_unbiased<us::float8_e5m2>(-777.7f, R, ++seed);
    check_unbiased<us::float8_e8m0fnu>(0.3f, R, ++seed);
    check_unbiased<us::float6_e3m2fn>(11.0f, R, ++seed);
    check_unbiased<us::bfloat16>(3.14159f, R, ++seed);
  }
}

// ---- invariants ----

template <class T>
void check_representable_never_move() {
  constexpr std::uint32_t kCodes = 1u << us::FormatTraits<T>::kSpec.total_bits();
  const std::uint32_t words[] = {0u, 1u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0x12345678u};
  for (std::uint32_t c = 0; c < kCodes; ++c) {
    const T v = us::FormatTraits<T>::from_bits(static_cast<typename us::FormatTraits<T>::Bits>(c));
    const float x = us::to_float(v);
    if (!std::isfinite(x)) continue;
    for (std::uint32_t w : words) {
      for (int R : {0, 1, 3, 8, 32}) {
        for (Overflow o : {kN, kS}) {
          ASSERT_EQ(sr_code<T>(x, w, R, o), c) << "code " << c << " word " << w << " R " << R;
        }
      }
    }
  }
}

TEST(StochasticInvariants, RepresentableInputsNeverMove) {
  check_representable_never_move<us::float8_e4m3fn>();
  check_representable_never_move<us::float8_e5m2>();
  check_representable_never_move<us::float8_e4m3fnuz>();
  check_representable_never_move<us::float8_e5m2fnuz>();
  check_representable_never_move<us::float8_e8m0fnu>();
  check_representable_never_move<us::float6_e2m3fn>();
  check_representable_never_move<us::float6_e3m2fn>();
  check_representable_never_move<us::float4_e2m1fn>();
  check_representable_never_move<us::float16>();
  check_representable_never_move<us::bfloat16>();
}

TEST(StochasticInvariants, RoundingPastMaxObeysOverflowPolicy) {
  constexpr std::uint32_t kAway = 0xFFFFFFFFu, kStay = 0u;
  // e4m3fn: 450 lies between 448 and the non-existent 480.
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(450.0f, kAway, 0, kN), 0x7Fu);
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(450.0f, kAway, 0, kS), 0x7Eu);
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(450.0f, kStay, 0, kN), 0x7Eu);
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(-450.0f, kAway, 0, kN), 0xFFu);
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(-450.0f, kAway, 0, kS), 0xFEu);
  // Threshold of the boundary word: t = 2^16 of 2^20, so rho >= 2^20 - 2^16 overflows.
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(450.0f, (1u << 20) - (1u << 16), 0, kN), 0x7Fu);
  EXPECT_EQ(sr_code<us::float8_e4m3fn>(450.0f, (1u << 20) - (1u << 16) - 1, 0, kN), 0x7Eu);
  // e5m2: Inf under NonFinite.
  EXPECT_EQ(sr_code<us::float8_e5m2>(58000.0f, kAway, 0, kN), 0x7Cu);
  EXPECT_EQ(sr_code<us::float8_e5m2>(-58000.0f, kAway, 0, kN), 0xFCu);
  EXPECT_EQ(sr_code<us::float8_e5m2>(58000.0f, kAway, 0, kS), 0x7Bu);
  // fnuz: the single NaN.
  EXPECT_EQ(sr_code<us::float8_e4m3fnuz>(241.0f, kAway, 0, kN), 0x80u);
  EXPECT_EQ(sr_code<us::float8_e4m3fnuz>(-241.0f, kAway, 0, kS), 0xFFu);
  EXPECT_EQ(sr_code<us::float8_e5m2fnuz>(60000.0f, kAway, 0, kN), 0x80u);
  // MX element types saturate in both policies.
  EXPECT_EQ(sr_code<us::float4_e2m1fn>(6.5f, kAway, 0, kN), 0x7u);
  EXPECT_EQ(sr_code<us::float4_e2m1fn>(-6.5f, kAway, 0, kN), 0xFu);
  EXPECT_EQ(sr_code<us::float6_e2m3fn>(7.6f, kAway, 0, kN), 0x1Fu);
  EXPECT_EQ(sr_code<us::float6_e3m2fn>(29.0f, kAway, 0, kN), 0x1Fu);
  // E8M0: NaN under NonFinite, 2^127 when saturating.
  const float big = 1.25f * std::ldexp(1.0f, 127);
  EXPECT_EQ(sr_code<us::float8_e8m0fnu>(big, kAway, 0, kN), 0xFFu);
  EXPECT_EQ(sr_code<us::float8_e8m0fnu>(big, kAway, 0, kS), 0xFEu);
  EXPECT_EQ(sr_code<us::float8_e8m0fnu>(big, kStay, 0, kN), 0xFEu);
  // float16 / bfloat16: Inf.
  EXPECT_EQ(sr_code<us::float16>(65505.0f, kAway, 0, kN), 0x7C00u);
  EXPECT_EQ(sr_code<us::float16>(65505.0f, kAway, 0, kS), 0x7BFFu);
  EXPECT_EQ(sr_code<us::bfloat16>(std::numeric_limits<float>::max(), kAway, 0, kN), 0x7F80u);

  // Statistically, under NonFinite about 1/16 of the roundings of 450 give NaN (5 sigma).
  std::mt19937 gen(4242);
  int nan_count = 0;
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    const std::uint32_t c = sr_code<us::float8_e4m3fn>(450.0f, static_cast<std::uint32_t>(gen()), 0, kN);
    if (c == 0x7F) {
      ++nan_count;
    } else {
      ASSERT_EQ(c, 0x7Eu);
    }
  }
  const double p = 1.0 / 16, sd = std::sqrt(kDraws * p * (1 - p));
  EXPECT_LE(std::fabs(nan_count - kDraws * p), 5 * sd);
}

TEST(StochasticInvariants, SpecialInputsIgnoreRandomBits) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::uint32_t w : {0u, 0xFFFFFFFFu}) {
    EXPECT_EQ(sr_code<us::float8_e4m3fn>(inf, w, 0, kS), 0x7Eu);
    EXPECT_EQ(sr_code<us::float8_e4m3fn>(inf, w, 0, kN), 0x7Fu);
    EXPECT_EQ(sr_code<us::float8_e5m2>(-inf, w, 0, kN), 0xFCu);
    EXPECT_EQ(sr_code<us::float8_e5m2>(nan, w, 0, kN), 0x7Eu);
    EXPECT_EQ(sr_code<us::float8_e4m3fn>(-0.0f, w, 0, kN), 0x80u);
    EXPECT_EQ(sr_code<us::float8_e4m3fnuz>(-0.0f, w, 0, kN), 0x00u);
    // A negative value that may round to 0 in an FNUZ format gives +0, never NaN.
    EXPECT_EQ(sr_code<us::float8_e4m3fnuz>(-std::ldexp(1.0f, -12), 0u, 0, kN), 0x00u);
  }
}

}  // namespace

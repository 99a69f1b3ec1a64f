#include "unitscale/tensor/scale.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

TEST(Scale, PowersOfTwoAreRecognisedAndExact) {
  EXPECT_EQ(Scale(), Scale::power_of_two(0));
  for (const int e : {-1074, -149, -126, -6, 0, 1, 15, 127, 1023}) {
    const Scale s = Scale::power_of_two(e);
    EXPECT_TRUE(s.is_power_of_two());
    EXPECT_EQ(s.exponent(), e);
    EXPECT_EQ(s.value(), std::ldexp(1.0, e));
    EXPECT_EQ(Scale::of(std::ldexp(1.0, e)), s) << e;  // of() recognises it
  }
  const Scale general = Scale::of(0.37);
  EXPECT_FALSE(general.is_power_of_two());
  EXPECT_EQ(general.value(), 0.37);
  EXPECT_FALSE(Scale::of(3.0).is_power_of_two());
  EXPECT_FALSE(Scale::of(std::nextafter(0.5, 1.0)).is_power_of_two());
}

// Exponents add and subtract without rounding, even where the value itself would not fit a
// float; general scales multiply in double.
TEST(Scale, ProductsOfPowersOfTwoStayExact) {
  const Scale a = Scale::power_of_two(-100), b = Scale::power_of_two(-90);
  EXPECT_EQ((a * b).exponent(), -190);
  EXPECT_EQ((a / b).exponent(), -10);
  EXPECT_EQ((Scale::power_of_two(3) * Scale::of(0.375)), Scale::power_of_two(0) * Scale::of(3.0));
  EXPECT_DOUBLE_EQ((Scale::of(0.37) * Scale::of(3.0)).value(), 0.37 * 3.0);
  EXPECT_EQ(Scale::of(0.75) * Scale::of(4.0 / 3.0), Scale::of(0.75 * (4.0 / 3.0)));
}

TEST(Scale, NearestPowerOfTwoRoundsInLog2) {
  EXPECT_EQ(Scale::nearest_power_of_two(0.3).exponent(), -2);   // log2 0.3 = -1.74
  EXPECT_EQ(Scale::nearest_power_of_two(0.35).exponent(), -2);  // -1.51
  EXPECT_EQ(Scale::nearest_power_of_two(0.36).exponent(), -1);  // -1.47
  EXPECT_EQ(Scale::nearest_power_of_two(1.0).exponent(), 0);
  EXPECT_EQ(Scale::nearest_power_of_two(1000.0).exponent(), 10);
}

// Scalify's p2 rounding: the quickstart's L2 add gives 4·√1.25 = 4.47, which rounds down to 4
// and up to 8; powers of two stay as they are under both (the reference library's round-up
// doubles them).
TEST(Scale, RoundedToPowersOfTwoDownUpOrNotAtAll) {
  const double s = 4.0 * std::sqrt(1.25);
  EXPECT_EQ(Scale::rounded(s, Pow2Rounding::kDown), Scale::power_of_two(2));
  EXPECT_EQ(Scale::rounded(s, Pow2Rounding::kUp), Scale::power_of_two(3));
  EXPECT_EQ(Scale::rounded(s, Pow2Rounding::kNone).value(), s);
  for (const int e : {-149, -10, 0, 7, 127}) {
    for (const Pow2Rounding mode : {Pow2Rounding::kDown, Pow2Rounding::kUp, Pow2Rounding::kNone}) {
      EXPECT_EQ(Scale::rounded(std::ldexp(1.0, e), mode), Scale::power_of_two(e))
          << e << " " << pow2_rounding_name(mode);
    }
  }
  // Just above and just below a power of two.
  EXPECT_EQ(Scale::rounded(std::nextafter(8.0, 9.0), Pow2Rounding::kDown).exponent(), 3);
  EXPECT_EQ(Scale::rounded(std::nextafter(8.0, 9.0), Pow2Rounding::kUp).exponent(), 4);
  EXPECT_EQ(Scale::rounded(std::nextafter(8.0, 7.0), Pow2Rounding::kDown).exponent(), 2);
  EXPECT_EQ(Scale::rounded(std::nextafter(8.0, 7.0), Pow2Rounding::kUp).exponent(), 3);
}

TEST(Scale, ZeroIsTheStaticZero) {
  const Scale zero = Scale::zero();
  EXPECT_TRUE(zero.is_zero());
  EXPECT_FALSE(zero.is_power_of_two());
  EXPECT_FALSE(Scale().is_zero());
  EXPECT_EQ(zero.value(), 0.0);
  EXPECT_EQ(zero * Scale::power_of_two(5), zero);
  EXPECT_EQ(Scale::of(0.37) * zero, zero);
  EXPECT_EQ(zero / Scale::of(3.0), zero);
  EXPECT_EQ(zero.to_string(), "0");
  EXPECT_THAT([&] { Scale::power_of_two(1) / zero; },
              ThrowsMessage<Error>(HasSubstr("2^1 divided by the zero scale")));
}

// Every float, subnormals included, splits exactly into a mantissa in [1, 2) (sign kept) and an
// integer exponent: checked on every exponent with random mantissas, against ldexp.
TEST(Pow2Decompose, IsExactForEveryFloatIncludingSubnormals) {
  std::uint32_t state = 12345;
  for (std::uint32_t field = 0; field < 255; ++field) {
    for (int trial = 0; trial < 64; ++trial) {
      state = state * 1664525u + 1013904223u;
      const std::uint32_t bits = (state & 0x807FFFFFu) | (field << 23);
      const float x = std::bit_cast<float>(bits);
      const Pow2Parts p = pow2_decompose(x);
      if (x == 0.0f) {
        EXPECT_EQ(p.exponent, 0);
        EXPECT_EQ(std::bit_cast<std::uint32_t>(p.mantissa), bits);  // -0 stays -0
        continue;
      }
      EXPECT_GE(std::abs(p.mantissa), 1.0f) << std::hex << bits;
      EXPECT_LT(std::abs(p.mantissa), 2.0f) << std::hex << bits;
      EXPECT_EQ(std::ldexp(static_cast<double>(p.mantissa), p.exponent), static_cast<double>(x))
          << std::hex << bits;
    }
  }
  EXPECT_EQ(pow2_decompose(std::numeric_limits<float>::denorm_min()).exponent, -149);
  EXPECT_EQ(pow2_decompose(std::numeric_limits<float>::min()).exponent, -126);
  EXPECT_EQ(pow2_decompose(-6.0f).mantissa, -1.5f);
  EXPECT_EQ(pow2_decompose(-6.0f).exponent, 2);
  // FP16's smallest subnormal, 2^-24, and BF16's, 2^-133 (a float subnormal), through their exact
  // conversion to float.
  EXPECT_EQ(pow2_decompose(std::ldexp(1.0f, -24)).exponent, -24);
  EXPECT_EQ(pow2_decompose(std::ldexp(1.0f, -133)).exponent, -133);
  EXPECT_EQ(pow2_decompose(std::ldexp(1.0f, -133)).mantissa, 1.0f);
  for (const float special :
       {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(pow2_decompose(special).mantissa, special);
    EXPECT_EQ(pow2_decompose(special).exponent, 0);
  }
  EXPECT_TRUE(std::isnan(pow2_decompose(std::numeric_limits<float>::quiet_NaN()).mantissa));
}

TEST(MakeScaledScalar, MantissaInOneToTwoAndAPowerOfTwoScale) {
  for (const double v : {1.0, 0.1, -3.0, 1e-30, 6e4, 1.9999999999}) {
    const ScaledScalar s = make_scaled_scalar(v);
    EXPECT_GE(std::abs(s.mantissa), 1.0f) << v;
    EXPECT_LT(std::abs(s.mantissa), 2.0f) << v;
    EXPECT_TRUE(s.scale.is_power_of_two());
    EXPECT_NEAR(s.mantissa * s.scale.value(), v, std::abs(v) * 1e-7) << v;
  }
  EXPECT_EQ(make_scaled_scalar(0.1).scale, Scale::power_of_two(-4));  // 0.1 = 1.6 · 2^-4
  EXPECT_EQ(make_scaled_scalar(-3.0).mantissa, -1.5f);
  EXPECT_EQ(make_scaled_scalar(1.9999999999).mantissa, 1.0f);  // rounds to 2 = 1 · 2^1 in float
  EXPECT_EQ(make_scaled_scalar(1.9999999999).scale, Scale::power_of_two(1));
  EXPECT_EQ(make_scaled_scalar(0.0).mantissa, 0.0f);
  EXPECT_TRUE(make_scaled_scalar(0.0).scale.is_zero());
  EXPECT_THAT([] { make_scaled_scalar(std::numeric_limits<double>::infinity()); },
              ThrowsMessage<Error>(HasSubstr("is not finite")));
}

TEST(Scale, InvalidValuesAreErrors) {
  for (const double bad : {0.0, -1.0, std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THAT([&] { Scale::of(bad); }, ThrowsMessage<Error>(HasSubstr("finite and positive")));
    EXPECT_THAT([&] { Scale::nearest_power_of_two(bad); },
                ThrowsMessage<Error>(HasSubstr("finite and positive")));
  }
  EXPECT_THAT([] { Scale::of(0.37).exponent(); },
              ThrowsMessage<Error>(HasSubstr("not a power of two")));
  EXPECT_EQ(Scale::power_of_two(-6).to_string(), "2^-6");
  EXPECT_EQ(Scale::of(0.37).to_string(), "0.37");
}

}  // namespace
}  // namespace unitscale

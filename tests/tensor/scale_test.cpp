#include "unitscale/tensor/scale.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
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

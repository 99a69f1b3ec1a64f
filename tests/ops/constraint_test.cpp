#include "unitscale/ops/constraint.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// The reference library's constraint test vector (12.75, 55, 0.001).
const std::vector<double> kSpecScales = {12.75, 55.0, 0.001};

TEST(ConstraintValue, GeometricMeanMatchesSpecVector) {
  EXPECT_NEAR(constraint_value(Constraint::kGMean, kSpecScales), 0.8884322, 5e-8);
  // (12.75 · 55 · 0.001)^(1/3) = 0.70125^(1/3), to double precision.
  EXPECT_NEAR(constraint_value(Constraint::kGMean, kSpecScales), std::cbrt(0.70125), 1e-15);
}

TEST(ConstraintValue, HarmonicMeanComputedByHand) {
  // 3 / (1/12.75 + 1/55 + 1/0.001) = 3 / 1000.0966131907... = 0.00299971018842743
  EXPECT_NEAR(constraint_value(Constraint::kHMean, kSpecScales), 0.0029997101884274, 1e-16);
}

TEST(ConstraintValue, ArithmeticMeanComputedByHand) {
  // (12.75 + 55 + 0.001) / 3 = 67.751 / 3
  EXPECT_NEAR(constraint_value(Constraint::kAMean, kSpecScales), 22.583666666666667, 1e-13);
}

TEST(ConstraintValue, MeansOfEqualScalesAreThatScale) {
  for (const Constraint c : {Constraint::kGMean, Constraint::kHMean, Constraint::kAMean}) {
    EXPECT_NEAR(constraint_value(c, {0.3, 0.3, 0.3, 0.3}), 0.3, 1e-15) << constraint_name(c);
    EXPECT_NEAR(constraint_value(c, {7.0}), 7.0, 1e-15) << constraint_name(c);
  }
}

TEST(ConstraintValue, SelectorsPickTheirScale) {
  EXPECT_EQ(constraint_value(Constraint::kToOutputScale, {2.0}), 2.0);
  EXPECT_EQ(constraint_value(Constraint::kToOutputScale, kSpecScales), 12.75);  // any arity
  EXPECT_EQ(constraint_value(Constraint::kToGradInputScale, {2.0, 3.0}), 3.0);
  EXPECT_EQ(constraint_value(Constraint::kToLeftGradScale, kSpecScales), 55.0);
  EXPECT_EQ(constraint_value(Constraint::kToRightGradScale, kSpecScales), 0.001);
}

TEST(ApplyConstraint, SetsEveryScaleToTheValue) {
  const std::vector<double> gmean = apply_constraint(Constraint::kGMean, kSpecScales);
  ASSERT_EQ(gmean.size(), 3u);
  for (const double s : gmean) EXPECT_NEAR(s, 0.8884322, 5e-8);
  EXPECT_EQ(apply_constraint(Constraint::kToGradInputScale, {2.0, 3.0}),
            (std::vector<double>{3.0, 3.0}));
  EXPECT_EQ(apply_constraint(Constraint::kToOutputScale, {2.0, 3.0, 4.0}),
            (std::vector<double>{2.0, 2.0, 2.0}));
}

TEST(ApplyConstraint, NoneLeavesScalesIndependent) {
  EXPECT_EQ(apply_constraint(Constraint::kNone, kSpecScales), kSpecScales);
}

TEST(ConstraintArity, ToGradInputScaleNeedsExactlyTwo) {
  for (const std::vector<double>& scales : {std::vector<double>{1.0}, kSpecScales}) {
    EXPECT_THAT([&] { constraint_value(Constraint::kToGradInputScale, scales); },
                ThrowsMessage<Error>(AllOf(HasSubstr("to_grad_input_scale"), HasSubstr("exactly 2"),
                                           HasSubstr("got " + std::to_string(scales.size())))));
    EXPECT_THROW(apply_constraint(Constraint::kToGradInputScale, scales), Error);
  }
}

TEST(ConstraintArity, LeftAndRightGradScaleNeedExactlyThree) {
  for (const Constraint c : {Constraint::kToLeftGradScale, Constraint::kToRightGradScale}) {
    EXPECT_THAT(
        [&] {
          constraint_value(c, {1.0, 2.0});
        },
        ThrowsMessage<Error>(AllOf(HasSubstr(std::string(constraint_name(c))),
                                   HasSubstr("exactly 3"), HasSubstr("got 2"))));
    EXPECT_THROW(constraint_value(c, {1.0, 2.0, 3.0, 4.0}), Error);
    EXPECT_THROW(apply_constraint(c, {1.0, 2.0}), Error);
  }
}

TEST(ConstraintArity, EmptyScalesAndNoneValueThrow) {
  EXPECT_THAT([] { constraint_value(Constraint::kGMean, {}); },
              ThrowsMessage<Error>(HasSubstr("gmean")));
  EXPECT_THAT(
      [] {
        constraint_value(Constraint::kNone, {1.0, 2.0});
      },
      ThrowsMessage<Error>(HasSubstr("none")));
}

TEST(ConstraintNames, RoundTripEveryConstraint) {
  for (const Constraint c :
       {Constraint::kNone, Constraint::kToOutputScale, Constraint::kToGradInputScale,
        Constraint::kToLeftGradScale, Constraint::kToRightGradScale, Constraint::kGMean,
        Constraint::kHMean, Constraint::kAMean}) {
    EXPECT_EQ(constraint_from_name(constraint_name(c)), c) << constraint_name(c);
  }
  EXPECT_EQ(constraint_from_name("to_output_scale"), Constraint::kToOutputScale);
  EXPECT_EQ(constraint_from_name("gmean"), Constraint::kGMean);
}

TEST(ConstraintNames, UnknownNameThrowsListingValidNames) {
  for (const char* bad : {"geometric_mean", "GMean", "", "to_output"}) {
    EXPECT_THAT([&] { constraint_from_name(bad); },
                ThrowsMessage<Error>(AllOf(
                    HasSubstr("unknown constraint '" + std::string(bad) + "'"), HasSubstr("none"),
                    HasSubstr("to_output_scale"), HasSubstr("to_grad_input_scale"),
                    HasSubstr("to_left_grad_scale"), HasSubstr("to_right_grad_scale"),
                    HasSubstr("gmean"), HasSubstr("hmean"), HasSubstr("amean"))));
  }
}

TEST(LogInterpolate, EndpointsAndMidpoint) {
  EXPECT_NEAR(log_interpolate(0.0, 2.0, 8.0), 2.0, 1e-15);               // a = 0 gives lo
  EXPECT_NEAR(log_interpolate(1.0, 2.0, 8.0), 8.0, 1e-14);               // a = 1 gives hi
  EXPECT_NEAR(log_interpolate(0.5, 2.0, 8.0), 4.0, 1e-14);               // geometric midpoint
  EXPECT_NEAR(log_interpolate(0.5, 3.0, 12.0), std::sqrt(36.0), 1e-14);  // √(lo·hi)
}

TEST(LogInterpolate, IdentitiesHold) {
  for (const double a : {-0.5, 0.0, 0.2, 0.5, 0.8, 1.0, 1.5}) {
    // LI(a, x, x) = x, and swapping the endpoints mirrors a.
    EXPECT_NEAR(log_interpolate(a, 5.0, 5.0), 5.0, 1e-14) << a;
    EXPECT_NEAR(log_interpolate(a, 2.0, 32.0), log_interpolate(1.0 - a, 32.0, 2.0),
                1e-13 * log_interpolate(a, 2.0, 32.0))
        << a;
    // lo^(1-a) · hi^a, and the log is linear in a.
    EXPECT_NEAR(log_interpolate(a, 2.0, 32.0), std::pow(2.0, 1.0 - a) * std::pow(32.0, a),
                1e-13 * std::pow(2.0, 1.0 + 4.0 * a))
        << a;
    EXPECT_NEAR(std::log(log_interpolate(a, 2.0, 32.0)), std::log(2.0) + a * std::log(16.0), 1e-14)
        << a;
  }
  // The gelu β at m = 1 (spec §4): a = 1/(1 + 1/4) = 0.8, LI(0.8, 2, √2) = 2^0.6.
  EXPECT_NEAR(log_interpolate(0.8, 2.0, std::sqrt(2.0)), 1.515717, 5e-7);
  EXPECT_NEAR(log_interpolate(0.8, 2.0, std::sqrt(2.0)), std::pow(2.0, 0.6), 1e-14);
}

}  // namespace
}  // namespace unitscale

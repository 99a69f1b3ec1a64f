// The scale policies: current amax scaling (margin, power-of-two rounding, degenerate amax),
// delayed scaling's history (roll, skip when unused, max and most recent, stale scale kept), and
// the MX block scale rules RCEIL and FLOOR on hand-made amaxes, checked against closed forms.

#include "unitscale/tensor/scale_policy.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "unitscale/error.hpp"
#include "unitscale/format/format_spec.hpp"

namespace unitscale {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(AmaxScale, PowerOfTwoThatFitsTheAmaxUnderTheFormatsMaximum) {
  // E4M3's max is 448: amax 448 fits scale 1; 449 needs 2; 100 gets 2^-2 (100 / 448 = 0.22).
  EXPECT_EQ(amax_scale(448.0f, kFloat8E4M3FN).scale, Scale::power_of_two(0));
  EXPECT_EQ(amax_scale(449.0f, kFloat8E4M3FN).scale, Scale::power_of_two(1));
  EXPECT_EQ(amax_scale(100.0f, kFloat8E4M3FN).scale, Scale::power_of_two(-2));
  EXPECT_EQ(amax_scale(1e-6f, kFloat8E5M2).scale, Scale::power_of_two(-35));  // 1e-6 / 57344
  // The margin leaves 2^m of headroom; without power-of-two rounding s = amax / max exactly.
  EXPECT_EQ(amax_scale(448.0f, kFloat8E4M3FN, {.margin = 2}).scale, Scale::power_of_two(2));
  EXPECT_DOUBLE_EQ(amax_scale(100.0f, kFloat8E4M3FN, {.power_of_two = false}).scale.value(),
                   100.0 / 448.0);
  // Scaled by it, the amax never exceeds the format's maximum (checked over many amaxes).
  for (float a = 1e-20f; a < 1e20f; a *= 1.37f) {
    const double s = amax_scale(a, kFloat8E4M3FN).scale.value();
    EXPECT_LE(a / s, 448.0) << a;
    EXPECT_GT(a / s, 224.0) << a;  // and it is the largest such power of two
  }
}

TEST(AmaxScale, DegenerateAmaxesGiveOneAndSaySo) {
  for (const float a : {0.0f, kInf, kNaN}) {
    const ChosenScale c = amax_scale(a, kFloat8E4M3FN);
    EXPECT_TRUE(c.degenerate) << a;
    EXPECT_EQ(c.scale, Scale()) << a;
  }
  // The ε floor turns an all-zero tensor into an ordinary one.
  EXPECT_FALSE(amax_scale(0.0f, kFloat8E4M3FN, {.amax_epsilon = 1e-12}).degenerate);
  // A subnormal amax: the scale stays a normal float, 2^-126, and its inverse finite.
  const ChosenScale tiny = amax_scale(std::numeric_limits<float>::denorm_min(), kFloat8E4M3FN);
  EXPECT_FALSE(tiny.degenerate);
  EXPECT_EQ(tiny.scale, Scale::power_of_two(-126));
}

TEST(DelayedScaling, UsesTheScaleFromBeforeTheStepAndRollsOnlyWhenUsed) {
  DelayedScaling role(kFloat8E4M3FN, {.history_length = 3});
  EXPECT_EQ(role.scale(), Scale());  // s_0 = 1
  role.record(100.0f);
  role.record(-900.0f);              // max |amax| over the step
  EXPECT_EQ(role.scale(), Scale());  // unchanged during the step
  role.end_step();
  EXPECT_THAT(role.history(), ElementsAre(900.0f));
  EXPECT_EQ(role.scale(), Scale::power_of_two(2));  // 900 / 448 -> 4
  role.end_step();                                  // a step in which the role did not run: no roll
  EXPECT_THAT(role.history(), ElementsAre(900.0f));
  for (const float a : {10.0f, 20.0f, 30.0f}) {
    role.record(a);
    role.end_step();
  }
  // Length 3: 900 was evicted; max over {10, 20, 30} = 30 -> 2^-3 (30 / 448 = 0.067).
  EXPECT_THAT(role.history(), ElementsAre(10.0f, 20.0f, 30.0f));
  EXPECT_EQ(role.scale(), Scale::power_of_two(-3));
}

TEST(DelayedScaling, MostRecentAndDegenerateHistories) {
  DelayedScaling recent(kFloat8E4M3FN,
                        {.history_length = 4, .algorithm = AmaxAlgorithm::kMostRecent});
  for (const float a : {900.0f, 10.0f}) {
    recent.record(a);
    recent.end_step();
  }
  EXPECT_EQ(recent.scale(), Scale::power_of_two(-5));  // 10 / 448 = 0.022 -> 2^-5
  // An all-zero step keeps the scale (a zero amax says nothing), as does a NaN one.
  recent.record(0.0f);
  recent.end_step();
  EXPECT_EQ(recent.scale(), Scale::power_of_two(-5));
  recent.record(kNaN);
  recent.record(5.0f);  // NaN sticks for the step
  recent.end_step();
  EXPECT_EQ(recent.scale(), Scale::power_of_two(-5));
  EXPECT_TRUE(std::isnan(recent.history().back()));
  EXPECT_THAT([] { DelayedScaling(kFloat8E4M3FN, {.history_length = 0}); },
              ThrowsMessage<Error>(HasSubstr("history_length must be >= 1, got 0")));
}

// The OCP MX examples: an E4M3 block with amax 500 gets X = 1 under FLOOR (500 saturates to 448)
// and X = 2 under RCEIL; the special amaxes; the element formats' emax.
TEST(MxScaleCode, RceilAndFloorOnHandMadeBlocks) {
  EXPECT_EQ(mx_scale_code(500.0f, kFloat8E4M3FN, MxScaleRule::kFloor), 127);
  EXPECT_EQ(mx_scale_code(500.0f, kFloat8E4M3FN, MxScaleRule::kRceil), 128);
  EXPECT_EQ(mx_scale_code(448.0f, kFloat8E4M3FN, MxScaleRule::kRceil), 127);  // exact fit
  EXPECT_EQ(mx_scale_code(6.0f, kFloat4E2M1FN, MxScaleRule::kRceil), 127);
  EXPECT_EQ(mx_scale_code(6.5f, kFloat4E2M1FN, MxScaleRule::kRceil), 128);
  EXPECT_EQ(mx_scale_code(7.5f, kFloat6E2M3FN, MxScaleRule::kFloor), 127);      // emax 2
  EXPECT_EQ(mx_scale_code(1.0f, kFloat6E3M2FN, MxScaleRule::kFloor), 127 - 4);  // emax 4
  EXPECT_EQ(mx_scale_code(1.0f, kFloat8E5M2, MxScaleRule::kFloor), 127 - 15);   // emax 15
  for (const MxScaleRule rule : {MxScaleRule::kRceil, MxScaleRule::kFloor}) {
    EXPECT_EQ(mx_scale_code(0.0f, kFloat8E4M3FN, rule), 0x00) << mx_scale_rule_name(rule);
    EXPECT_EQ(mx_scale_code(kNaN, kFloat8E4M3FN, rule), 0xFF) << mx_scale_rule_name(rule);
    EXPECT_EQ(mx_scale_code(kInf, kFloat8E4M3FN, rule), 0xFE) << mx_scale_rule_name(rule);
  }
  // The largest float: 2^127.99 / 6 -> 2^126 (RCEIL), 2^(127 - 2) (FLOOR).
  EXPECT_EQ(mx_scale_code(std::numeric_limits<float>::max(), kFloat4E2M1FN, MxScaleRule::kRceil),
            127 + 126);
  EXPECT_EQ(mx_scale_code(std::numeric_limits<float>::max(), kFloat4E2M1FN, MxScaleRule::kFloor),
            127 + 125);
  // FLOOR clips at 2^-127 (0x00); RCEIL's t = amax / 448 underflows float to 0, code 0x00.
  for (const MxScaleRule rule : {MxScaleRule::kRceil, MxScaleRule::kFloor}) {
    EXPECT_EQ(mx_scale_code(std::numeric_limits<float>::denorm_min(), kFloat8E4M3FN, rule), 0x00);
  }
  // RCEIL never clips: amax / X is at most the element's max, for amaxes across the range.
  for (float a = 1e-30f; a < 1e30f; a *= 1.29f) {
    const int code = mx_scale_code(a, kFloat8E4M3FN, MxScaleRule::kRceil);
    EXPECT_LE(a / std::ldexp(1.0, code - 127), 448.0) << a;
    EXPECT_GT(a / std::ldexp(1.0, code - 127), 224.0) << a;
  }
}

}  // namespace
}  // namespace unitscale

#include "unitscale/ops/linear.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes linear_attrs(std::string_view constraint = "to_output_scale", double power_alpha = 0.5) {
  return {{"constraint", std::string(constraint)},
          {"power_alpha", power_alpha},
          {"power_beta_x", 0.5},
          {"power_beta_weight", 0.5}};
}

TEST(LinearGradcheck, WithAndWithoutBiasAndBatchDims) {
  std::mt19937 rng(1);
  testing::gradcheck(kLinearOp,
                     {random_normal({3, 5}, rng), random_normal({4, 5}, rng), random_normal({4}, rng)},
                     linear_attrs());
  testing::gradcheck(kLinearOp, {random_normal({2, 3, 5}, rng), random_normal({4, 5}, rng), std::nullopt},
                     linear_attrs());
  testing::gradcheck(kLinearReadoutOp,
                     {random_normal({3, 6}, rng), random_normal({2, 6}, rng), std::nullopt},
                     linear_attrs("none", 1.0));
}

// The scaled op's gradients are exactly β times the unscaled ones, and the output α times.
TEST(LinearScales, ScaledEqualsBetaTimesUnscaled) {
  std::mt19937 rng(2);
  const Tensor x = random_normal({6, 8}, rng), w = random_normal({16, 8}, rng), b = random_normal({16}, rng);
  const Tensor g = random_normal({6, 16}, rng);
  OpRun plain(kLinearOp, {x, w, b}, linear_attrs(), Scaling::kUnscaled);
  OpRun scaled(kLinearOp, {x, w, b}, linear_attrs(), Scaling::kUnit);
  plain.forward();
  scaled.forward();
  const double alpha = scaled.attrs().get_double("t", "alpha");
  EXPECT_DOUBLE_EQ(alpha, 1 / std::sqrt(8.0));
  EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", "beta_x"), 1 / std::sqrt(8.0));  // constrained
  EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", "beta_weight"), 1 / std::sqrt(6.0));
  for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
    EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i], 1e-6 * (1 + std::abs(plain.output()[i])));
  }
  const auto gp = plain.backward({g});
  const auto gs = scaled.backward({g});
  const char* names[] = {"beta_x", "beta_weight", "beta_bias"};
  for (std::size_t k = 0; k < 3; ++k) {
    const double beta = scaled.attrs().get_double("t", names[k]);
    for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
      EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-5 * (1 + std::abs((*gp[k])[i])));
    }
  }
}

// Targets measured with the unit-scaling reference library (arXiv 2303.11257): linear 1024 -> 4096,
// B = 256, N(0,1) inputs and output gradients.
struct LinearTarget {
  std::string constraint;
  double out_std, grad_x_std, grad_w_std;
};

class LinearStatistics : public ::testing::TestWithParam<LinearTarget> {};

TEST_P(LinearStatistics, HitsSpecTargets) {
  const LinearTarget& t = GetParam();
  std::mt19937 rng(3);
  OpRun run(kLinearOp, {random_normal({256, 1024}, rng), random_normal({4096, 1024}, rng), std::nullopt},
            linear_attrs(t.constraint), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 4096}, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), t.out_std, 0.1 * std::min(1.0, t.out_std));
  EXPECT_NEAR(testing::std_of(grads[0]->span()), t.grad_x_std, 0.1 * std::min(1.0, t.grad_x_std) + 0.0);
  EXPECT_NEAR(testing::std_of(grads[1]->span()), t.grad_w_std, 0.1);
}

INSTANTIATE_TEST_SUITE_P(
    Constraints, LinearStatistics,
    ::testing::Values(LinearTarget{"to_output_scale", 1.0, 2.0, 1.0}, LinearTarget{"none", 1.0, 1.0, 1.0},
                      LinearTarget{"gmean", std::pow(0.25, 0.25), std::sqrt(2.0), 1.0},
                      LinearTarget{"to_grad_input_scale", 0.5, 1.0, 1.0}),
    [](const auto& test) { return test.param.constraint; });

TEST(LinearStatistics, ReadoutOutputIsInverseSqrtFanIn) {
  std::mt19937 rng(4);
  OpRun run(kLinearReadoutOp, {random_normal({256, 1024}, rng), random_normal({4096, 1024}, rng), std::nullopt},
            linear_attrs("none", 1.0), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 4096}, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 1.0 / 32, 0.1 / 32);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[1]->span()), 1.0, 0.1);
}

TEST(LinearErrors, ShapeMismatchNamesOpAndShapes) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value w = g.parameter("w", {16, 7});
  EXPECT_THAT([&] { linear(x, w); }, ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("linear"), HasSubstr("[4, 8]"), HasSubstr("[16, 7]"))));
  const Value w_ok = g.parameter("w_ok", {16, 8});
  const Value bad_bias = g.parameter("b", {15});
  EXPECT_THAT([&] { linear(x, w_ok, {.bias = bad_bias}); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr("linear"), HasSubstr("bias [15]"))));
}

}  // namespace
}  // namespace unitscale

// Scale-propagation rules of the pointwise ops (ops/scale_rules.hpp): closed-form scales and the
// magnitudes the kernels produce.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "../support/scale_rule_check.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/ops/scale_rules.hpp"
#include "unitscale/ops/softmax.hpp"

namespace unitscale {

// Failure messages show scales as "2^-6" (found by argument-dependent lookup; internal linkage).
static void PrintTo(const Scale& s, std::ostream* os) { *os << s.to_string(); }

namespace {

using namespace testing;

using Shapes = std::vector<std::optional<Shape>>;

// The node's attributes as Graph::apply leaves them: resolved by the op's unit-scaling rule on a
// unit-scaled graph, as given on an unscaled one.
Attributes resolved(const OpDef& op, const Shapes& inputs, Attributes attrs, Scaling scaling) {
  if (scaling == Scaling::kUnit && op.unit_scale != nullptr)
    op.unit_scale(shape_pointers(inputs), attrs);
  return attrs;
}

const Shape kRows{16, 64};
const Shape kRow{64};

// ---------------------------------------------------------------------------------------------
// Closed forms
// ---------------------------------------------------------------------------------------------

TEST(ScaleRulesPointwise, AddIsTheL2RuleTimesAlpha) {
  const Shapes same{kRows, kRows};
  const Attributes plain;
  // √(2^6 + 2^6) = 2^3·√2: rounded down 2^3, up 2^4.
  EXPECT_EQ(forward_rule(kAddOp, {p(3), p(3)}, same, plain)[0], p(3));
  EXPECT_EQ(forward_rule(kAddOp, {p(3), p(3)}, same, plain, Pow2Rounding::kUp)[0], p(4));
  // A much smaller term hardly counts: 2^3·√(1 + 2^-8).
  EXPECT_EQ(forward_rule(kAddOp, {p(3), p(-1)}, same, plain)[0], p(3));
  EXPECT_EQ(forward_rule(kAddOp, {p(-1), p(3)}, same, plain, Pow2Rounding::kUp)[0], p(4));
  // Unit-scaled: α = 1/√2 makes two equal terms exact.
  const Attributes unit = resolved(kAddOp, same, {}, Scaling::kUnit);
  EXPECT_EQ(forward_rule(kAddOp, {p(5), p(5)}, same, unit)[0], p(5));
  EXPECT_EQ(forward_rule(kAddOp, {p(5), p(5)}, same, unit, Pow2Rounding::kUp)[0], p(5));
  // α = 3 (a set scale): p2(3·√2) = 4.
  EXPECT_EQ(forward_rule(kAddOp, {p(0), p(0)}, same, Attributes{{"alpha", 3.0}})[0], p(2));
  // Static zeros drop out; all zero stays zero.
  EXPECT_EQ(forward_rule(kAddOp, {p(-7), Scale::zero()}, same, plain)[0], p(-7));
  EXPECT_EQ(forward_rule(kAddOp, {Scale::zero(), Scale::zero()}, same, plain)[0], Scale::zero());
  // A broadcast scalar is one term like any other.
  EXPECT_EQ(forward_rule(kAddOp, {p(2), p(2)}, {kRows, Shape{}}, plain)[0], p(2));
}

TEST(ScaleRulesPointwise, AddGradientsSumOverTheBroadcastDimensions) {
  const Shapes bias{kRows, kRow};  // b is summed over 16 rows
  const Attributes plain;
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, bias, {p(0)}, {p(-9)}, plain),
            (std::vector<Scale>{p(-9), p(-7)}));  // √16 = 4
  // Unit-scaled, unconstrained: β_b = 16^-½ cancels the fan-in exactly.
  const Attributes unit =
      resolved(kAddOp, bias, Attributes{{"constraint", Constraint::kNone}}, Scaling::kUnit);
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, bias, {p(0)}, {p(-9)}, unit),
            (std::vector<Scale>{p(-9), p(-9)}));
  // The default constraint gives every scale α = 1/√2: down 2^-1, and 2^-1·4 for the bias.
  const Attributes tied = resolved(kAddOp, bias, {}, Scaling::kUnit);
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, bias, {p(0)}, {p(-9)}, tied),
            (std::vector<Scale>{p(-10), p(-8)}));
  // Five rows: √5 rounds down to 2, up to 4.
  const Shapes five{Shape{5, 8}, Shape{8}};
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, five, {p(0)}, {p(4)}, plain)[1], p(5));
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, five, {p(0)}, {p(4)}, plain, Pow2Rounding::kUp)[1],
            p(6));
  // A gradient not asked for gets Scale{}; a static-zero grad_y gives zero gradients.
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, bias, {p(0)}, {p(3)}, plain, Pow2Rounding::kDown,
                          {false, true}),
            (std::vector<Scale>{Scale{}, p(5)}));
  EXPECT_EQ(backward_rule(kAddOp, {p(0), p(0)}, bias, {p(0)}, {Scale::zero()}, plain)[1],
            Scale::zero());
}

TEST(ScaleRulesPointwise, MulIsHomogeneousInBothOperands) {
  const Shapes bias{kRows, kRow};
  EXPECT_EQ(forward_rule(kMulOp, {p(3), p(-1)}, bias, {})[0], p(2));
  EXPECT_EQ(forward_rule(kMulOp, {p(3), Scale::zero()}, bias, {})[0], Scale::zero());
  // grad_a = g·b (not broadcast), grad_b = Σ over 16 rows of g·a.
  EXPECT_EQ(backward_rule(kMulOp, {p(3), p(-1)}, bias, {p(2)}, {p(-10)}, {}),
            (std::vector<Scale>{p(-11), p(-5)}));
  EXPECT_EQ(backward_rule(kMulOp, {Scale::zero(), p(-1)}, bias, {Scale::zero()}, {p(-10)}, {}),
            (std::vector<Scale>{p(-11), Scale::zero()}));
  EXPECT_EQ(backward_rule(kMulOp, {p(3), p(-1)}, bias, {p(2)}, {p(-10)}, {}, Pow2Rounding::kDown,
                          {true, false}),
            (std::vector<Scale>{p(-11), Scale{}}));
}

TEST(ScaleRulesPointwise, ScaleMultipliesByTheMagnitudeOfItsFactors) {
  const Shapes x{kRows};
  EXPECT_EQ(forward_rule(kScaleOp, {p(4)}, x, Attributes{{"alpha", 3.0}})[0], p(5));
  EXPECT_EQ(forward_rule(kScaleOp, {p(4)}, x, Attributes{{"alpha", 3.0}}, Pow2Rounding::kUp)[0],
            p(6));
  EXPECT_EQ(forward_rule(kScaleOp, {p(4)}, x, Attributes{{"alpha", -0.25}})[0], p(2));
  EXPECT_EQ(forward_rule(kScaleOp, {p(4)}, x, Attributes{{"alpha", 0.0}})[0], Scale::zero());
  EXPECT_EQ(forward_rule(kScaleOp, {p(4)}, x, {})[0], p(4));
  const Attributes betas{{"alpha", 5.0}, {"beta_x", -3.0}};
  EXPECT_EQ(backward_rule(kScaleOp, {p(4)}, x, {p(6)}, {p(-20)}, betas),
            (std::vector<Scale>{p(-19)}));
  EXPECT_EQ(backward_rule(kScaleOp, {p(4)}, x, {p(6)}, {p(-20)}, Attributes{{"beta_x", 0.0}}),
            (std::vector<Scale>{Scale::zero()}));
}

TEST(ScaleRulesPointwise, ActivationsAreDegreeOneInX) {
  const Shapes x{kRows};
  EXPECT_EQ(forward_rule(kReluOp, {p(-13)}, x, {})[0], p(-13));
  EXPECT_EQ(forward_rule(kReluOp, {Scale::zero()}, x, {})[0], Scale::zero());
  EXPECT_EQ(backward_rule(kReluOp, {p(-13)}, x, {p(-13)}, {p(7)}, {}), (std::vector<Scale>{p(7)}));
  for (const OpDef* op : {&kGeluOp, &kSiluOp}) {
    SCOPED_TRACE(op->name);
    EXPECT_EQ(forward_rule(*op, {p(20)}, x, {})[0], p(20));
    EXPECT_EQ(forward_rule(*op, {p(20)}, x, Attributes{{"alpha", 3.0}})[0], p(21));
    EXPECT_EQ(forward_rule(*op, {p(20)}, x, Attributes{{"alpha", 3.0}}, Pow2Rounding::kUp)[0],
              p(22));
    // mult changes where the gate switches, not the degree.
    EXPECT_EQ(forward_rule(*op, {p(20)}, x, Attributes{{"mult", 8.0}})[0], p(20));
    EXPECT_EQ(forward_rule(*op, {Scale::zero()}, x, {})[0], Scale::zero());
    EXPECT_EQ(backward_rule(*op, {p(20)}, x, {p(20)}, {p(-30)}, Attributes{{"beta_x", 0.5}}),
              (std::vector<Scale>{p(-31)}));
    // Unit-scaled (mult 1): α ≈ 1.77 and β_x ≈ 1.52 for gelu, α ≈ 1.77 and β_x ≈ 1.68 for silu.
    const Attributes unit = resolved(*op, x, {}, Scaling::kUnit);
    EXPECT_EQ(forward_rule(*op, {p(3)}, x, unit)[0], p(3));
    EXPECT_EQ(forward_rule(*op, {p(3)}, x, unit, Pow2Rounding::kUp)[0], p(4));
    EXPECT_EQ(backward_rule(*op, {p(3)}, x, {p(3)}, {p(-2)}, unit), (std::vector<Scale>{p(-2)}));
  }
}

TEST(ScaleRulesPointwise, SiluGluIsDegreeOneInXAndGate) {
  const Shapes both{kRows, kRows};
  EXPECT_EQ(forward_rule(kSiluGluOp, {p(3), p(-8)}, both, {})[0], p(-5));
  EXPECT_EQ(forward_rule(kSiluGluOp, {p(3), p(-8)}, both, Attributes{{"alpha", 3.0}})[0], p(-4));
  EXPECT_EQ(forward_rule(kSiluGluOp, {p(3), Scale::zero()}, both, {})[0], Scale::zero());
  // grad_x = β_x·g·silu(gate), grad_gate = β_gate·g·x·silu′(gate).
  const Attributes betas{{"beta_x", 4.0}, {"beta_gate", 0.75}};
  EXPECT_EQ(backward_rule(kSiluGluOp, {p(3), p(-8)}, both, {p(-5)}, {p(10)}, betas),
            (std::vector<Scale>{p(4), p(12)}));
  EXPECT_EQ(backward_rule(kSiluGluOp, {p(3), p(-8)}, both, {p(-5)}, {p(10)}, betas,
                          Pow2Rounding::kUp, {false, true}),
            (std::vector<Scale>{Scale{}, p(13)}));
}

TEST(ScaleRulesPointwise, SoftmaxTracksTheProbabilitiesAtTheEffectiveTemperature) {
  const Shapes x{kRows};  // n = 64
  // A flat row (static-zero x) is α/n everywhere; a one-hot row (huge m·s_x) has rms α/√n.
  EXPECT_EQ(forward_rule(kSoftmaxOp, {Scale::zero()}, x, {})[0], p(-6));
  EXPECT_EQ(forward_rule(kSoftmaxOp, {Scale::zero()}, x, {}, Pow2Rounding::kUp)[0], p(-6));
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(40)}, x, {})[0], p(-3));
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(40)}, x, Attributes{{"alpha", 16.0}})[0], p(1));
  // m·s_x = 1: a = 1/5, rms ≈ 64^-0.9 = 2^-5.4.
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(0)}, x, {})[0], p(-6));
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(-1)}, x, Attributes{{"mult", 2.0}})[0], p(-6));
  // Unit-scaled with s_x = 1: α is 1/rms at this temperature, exactly, whatever m and n are.
  for (const double mult : {1.0, 2.0, 0.3}) {
    for (const Shape& shape : {kRows, Shape{3, 100}}) {
      const Attributes unit =
          resolved(kSoftmaxOp, {shape}, Attributes{{"mult", mult}}, Scaling::kUnit);
      EXPECT_EQ(forward_rule(kSoftmaxOp, {p(0)}, {shape}, unit)[0], Scale{}) << mult;
    }
  }
  // Unit-scaled at a much higher temperature: α = 64^0.6 ≈ 2^5.4 over √64 = 2^3.
  const Attributes unit = resolved(kSoftmaxOp, x, {}, Scaling::kUnit);
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(40)}, x, unit)[0], p(2));
  EXPECT_EQ(forward_rule(kSoftmaxOp, {p(40)}, x, unit, Pow2Rounding::kUp)[0], p(3));
}

TEST(ScaleRulesPointwise, SoftmaxGradientIsDegreeOneInYAndGradY) {
  const Shapes x{kRows};
  // dx = β·m·(y/α)⊙(g − Σ y·g/α): factor β·m/α.
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(-6)}, {p(10)}, {}), (std::vector<Scale>{p(4)}));
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(-6)}, {p(10)}, Attributes{{"mult", 3.0}}),
            (std::vector<Scale>{p(5)}));
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(-6)}, {p(10)}, Attributes{{"mult", 3.0}},
                          Pow2Rounding::kUp),
            (std::vector<Scale>{p(6)}));
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(-6)}, {p(10)},
                          Attributes{{"alpha", 64.0}, {"beta_x", 2.0}}),
            (std::vector<Scale>{p(-1)}));
  // Unit-scaled, m = 1: β = α, so s_dx = s_y·s_g exactly.
  const Attributes unit = resolved(kSoftmaxOp, x, {}, Scaling::kUnit);
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(0)}, {p(-30)}, unit),
            (std::vector<Scale>{p(-30)}));
  EXPECT_EQ(backward_rule(kSoftmaxOp, {p(0)}, x, {p(0)}, {Scale::zero()}, unit),
            (std::vector<Scale>{Scale::zero()}));
}

TEST(ScaleRulesPointwise, DropoutTracksTheRmsOfTheMaskedOutput) {
  const Shapes x{kRows};
  // Training: rms(y) = α/√(1−p)·rms(x). p = 0.75: exactly 2; p = 0.5: √2, down 1, up 2.
  EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, Attributes{{"p", 0.75}})[0], p(-4));
  EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, Attributes{{"p", 0.5}})[0], p(-5));
  EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, Attributes{{"p", 0.5}}, Pow2Rounding::kUp)[0],
            p(-4));
  EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, Attributes{{"p", 0.0}})[0], p(-5));
  // Eval: y = α·x.
  const Attributes eval{{"p", 0.75}, {"mode", DropoutMode::kEval}, {"alpha", 0.5}};
  EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, eval)[0], p(-6));
  EXPECT_EQ(backward_rule(kDropoutOp, {p(-5)}, x, {p(-6)}, {p(9)},
                          Attributes{{"p", 0.75}, {"mode", DropoutMode::kEval}, {"beta_x", 4.0}}),
            (std::vector<Scale>{p(11)}));
  EXPECT_EQ(backward_rule(kDropoutOp, {p(-5)}, x, {p(-4)}, {p(9)}, Attributes{{"p", 0.75}}),
            (std::vector<Scale>{p(10)}));
  // Unit-scaled: α = β_x = √(1−p) cancel exactly.
  for (const double drop : {0.1, 0.3, 0.5, 0.9}) {
    const Attributes unit = resolved(kDropoutOp, x, Attributes{{"p", drop}}, Scaling::kUnit);
    EXPECT_EQ(forward_rule(kDropoutOp, {p(-5)}, x, unit)[0], p(-5)) << drop;
    EXPECT_EQ(backward_rule(kDropoutOp, {p(-5)}, x, {p(-5)}, {p(9)}, unit),
              (std::vector<Scale>{p(9)}))
        << drop;
  }
  EXPECT_EQ(forward_rule(kDropoutOp, {Scale::zero()}, x, Attributes{{"p", 0.5}})[0], Scale::zero());
}

TEST(ScaleRulesPointwise, ResidualSplitForksAndWeighsTheGradients) {
  const Shapes x{kRows};
  const Attributes plain{{"tau", 0.3}};
  EXPECT_EQ(forward_rule(kResidualSplitOp, {p(-3)}, x, plain), (std::vector<Scale>{p(-3), p(-3)}));
  // Unscaled: dx = g_b + g_s, √2 → down 1, up 2.
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(3), p(3)}, plain),
            (std::vector<Scale>{p(3)}));
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(3), p(3)}, plain,
                          Pow2Rounding::kUp),
            (std::vector<Scale>{p(4)}));
  // Unit-scaled: β_b² + β_s² = 1, so equal gradient scales stay exactly as they are, for τ whose
  // weights' squares add up to 1 − 2^-53 in double too (0.3, 1, 2, 3).
  for (const double tau : {0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 3.0}) {
    const Attributes unit = resolved(kResidualSplitOp, x, Attributes{{"tau", tau}}, Scaling::kUnit);
    EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(5), p(5)}, unit),
              (std::vector<Scale>{p(5)}))
        << tau;
    EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(5), p(5)}, unit,
                            Pow2Rounding::kUp),
              (std::vector<Scale>{p(5)}))
        << tau;
  }
  // τ = 1 with one gradient absent: β = 1/√2, down 2^-1, up 1; both absent: dx = 0.
  const Attributes unit = resolved(kResidualSplitOp, x, Attributes{{"tau", 1.0}}, Scaling::kUnit);
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(5), std::nullopt}, unit),
            (std::vector<Scale>{p(4)}));
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {std::nullopt, p(5)}, unit,
                          Pow2Rounding::kUp),
            (std::vector<Scale>{p(5)}));
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)},
                          {std::nullopt, std::nullopt}, unit),
            (std::vector<Scale>{Scale::zero()}));
  // A gradient far smaller than the other hardly counts.
  EXPECT_EQ(backward_rule(kResidualSplitOp, {p(-3)}, x, {p(-3), p(-3)}, {p(-40), p(5)}, plain),
            (std::vector<Scale>{p(5)}));
}

TEST(ScaleRulesPointwise, ResidualAddWeighsTheForwardAndCopiesTheGradient) {
  const Shapes both{kRows, kRows};
  const Attributes plain{{"tau", 0.3}};
  EXPECT_EQ(forward_rule(kResidualAddOp, {p(2), p(2)}, both, plain)[0], p(2));
  EXPECT_EQ(forward_rule(kResidualAddOp, {p(2), p(2)}, both, plain, Pow2Rounding::kUp)[0], p(3));
  EXPECT_EQ(forward_rule(kResidualAddOp, {p(2), Scale::zero()}, both, plain)[0], p(2));
  for (const double tau : {0.1, 0.3, 0.5, 1.0, 2.0, 3.0}) {
    const Attributes unit =
        resolved(kResidualAddOp, both, Attributes{{"tau", tau}}, Scaling::kUnit);
    EXPECT_EQ(forward_rule(kResidualAddOp, {p(-7), p(-7)}, both, unit)[0], p(-7)) << tau;
  }
  // τ = 1/8 (α_r ≈ 1/8, α_s ≈ 1): a residual 2^3 times larger than the skip counts as much.
  const Attributes eighth =
      resolved(kResidualAddOp, both, Attributes{{"tau", 0.125}}, Scaling::kUnit);
  EXPECT_EQ(forward_rule(kResidualAddOp, {p(3), p(0)}, both, eighth, Pow2Rounding::kUp)[0], p(1));
  EXPECT_EQ(backward_rule(kResidualAddOp, {p(3), p(0)}, both, {p(0)}, {p(-12)}, eighth),
            (std::vector<Scale>{p(-12), p(-12)}));
  EXPECT_EQ(backward_rule(kResidualAddOp, {p(3), p(0)}, both, {p(0)}, {p(-12)}, eighth,
                          Pow2Rounding::kDown, {false, true}),
            (std::vector<Scale>{Scale{}, p(-12)}));
}

TEST(ScaleRulesPointwise, NormOutputIsScaleInvariantInXAndLinearInTheWeight) {
  const Shapes x_only{kRows, std::nullopt, std::nullopt};
  const Shapes with_weight{kRows, kRow, std::nullopt};
  const Shapes affine{kRows, kRow, kRow};
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(10), Scale{}, Scale{}}, x_only, {})[0], Scale{});
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(10), p(-3), Scale{}}, with_weight, {})[0], p(-3));
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(-7), p(-3), Scale{}}, with_weight, {})[0], p(-3));
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(10), p(-3), p(-3)}, affine, {})[0], p(-3));
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(10), p(-3), p(-3)}, affine, {}, Pow2Rounding::kUp)[0],
            p(-2));
  EXPECT_EQ(
      forward_rule(kLayerNormOp, {p(10), p(-3), p(-3)}, affine, Attributes{{"alpha", 4.0}})[0],
      p(-1));
  // Below √eps (eps = 1e-5 ≈ 2^-16.6) eps dominates: x̂ ≈ x·s_x/√eps, 2^-20/2^-8.3 → 2^-12.
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(-20), p(-3), Scale{}}, with_weight, {})[0], p(-15));
  EXPECT_EQ(forward_rule(kLayerNormOp, {p(-20), p(-3), p(-3)}, affine, {})[0], p(-3));
  // A static-zero x: x̂ = 0, y = α·b.
  EXPECT_EQ(forward_rule(kLayerNormOp, {Scale::zero(), p(-3), p(4)}, affine, {})[0], p(4));
  EXPECT_EQ(forward_rule(kLayerNormOp, {Scale::zero(), p(-3), Scale{}}, with_weight, {})[0],
            Scale::zero());
  // rms_norm: the same without a bias.
  EXPECT_EQ(forward_rule(kRmsNormOp, {p(25), p(6)}, {kRows, kRow}, {})[0], p(6));
  EXPECT_EQ(forward_rule(kRmsNormOp, {p(25), Scale{}}, {kRows, std::nullopt}, {})[0], Scale{});
  EXPECT_EQ(forward_rule(kRmsNormOp, {p(-20), p(6)}, {kRows, kRow}, Attributes{{"eps", 0.0}})[0],
            p(6));
}

TEST(ScaleRulesPointwise, NormGradients) {
  const Shapes affine{kRows, kRow, kRow};
  const std::vector<Scale> fwd{p(10), p(-3), p(-3)};
  // dx: s_g·s_w/s_x; dw, db: sums over 16 rows.
  EXPECT_EQ(backward_rule(kLayerNormOp, fwd, affine, {p(-3)}, {p(5)}, {}),
            (std::vector<Scale>{p(-8), p(7), p(7)}));
  const Attributes unit = resolved(kLayerNormOp, affine, {}, Scaling::kUnit);  // β_w = β_b = 1/4
  EXPECT_EQ(backward_rule(kLayerNormOp, fwd, affine, {p(-3)}, {p(5)}, unit),
            (std::vector<Scale>{p(-8), p(5), p(5)}));
  // Five rows: √5, down 2, up 4.
  const Shapes five{Shape{5, 64}, kRow, kRow};
  EXPECT_EQ(backward_rule(kLayerNormOp, fwd, five, {p(-3)}, {p(5)}, {}),
            (std::vector<Scale>{p(-8), p(6), p(6)}));
  EXPECT_EQ(backward_rule(kLayerNormOp, fwd, five, {p(-3)}, {p(5)}, {}, Pow2Rounding::kUp),
            (std::vector<Scale>{p(-8), p(7), p(7)}));
  // eps dominates: rstd ≈ 1/√eps ≈ 2^8.3 (down 2^8), dw ≈ Σ g·x·s_x/√eps.
  const std::vector<Scale> tiny{p(-20), p(-3), p(-3)};
  EXPECT_EQ(backward_rule(kLayerNormOp, tiny, affine, {p(-3)}, {p(5)}, {}),
            (std::vector<Scale>{p(10), p(-5), p(7)}));
  // A static-zero x: dw = 0, dx = β·g·w/√eps; with eps = 0 that is 0/0, and gets Scale{}.
  const std::vector<Scale> zero{Scale::zero(), p(-3), p(-3)};
  EXPECT_EQ(backward_rule(kLayerNormOp, zero, affine, {p(-3)}, {p(5)}, {}),
            (std::vector<Scale>{p(10), Scale::zero(), p(7)}));
  EXPECT_EQ(backward_rule(kLayerNormOp, zero, affine, {p(-3)}, {p(5)}, Attributes{{"eps", 0.0}})[0],
            Scale{});
  // Gradients not asked for, and no weight (ĝ = g).
  EXPECT_EQ(backward_rule(kLayerNormOp, fwd, affine, {p(-3)}, {p(5)}, {}, Pow2Rounding::kDown,
                          {true, false, false}),
            (std::vector<Scale>{p(-8), Scale{}, Scale{}}));
  EXPECT_EQ(backward_rule(kRmsNormOp, {p(10), Scale{}}, {kRows, std::nullopt}, {p(0)}, {p(5)}, {}),
            (std::vector<Scale>{p(-5), Scale{}}));
  const Attributes rms_unit = resolved(kRmsNormOp, {kRows, kRow}, {}, Scaling::kUnit);
  EXPECT_EQ(backward_rule(kRmsNormOp, {p(10), p(-3)}, {kRows, kRow}, {p(-3)}, {p(5)}, rms_unit),
            (std::vector<Scale>{p(-8), p(5)}));
}

// ---------------------------------------------------------------------------------------------
// Magnitudes: rms(output) / scale on unit data times far-from-1 scales
// ---------------------------------------------------------------------------------------------

// The band every rms / scale must lie in: rounding down puts the scale within [1/2, 1] of the
// tracked magnitude, and the ops' own departures from exact homogeneity (relu's 1/√2, gelu's x/2
// to relu, eps in the norms, softmax between flat and one-hot) are within another factor 2 either
// way. Observed: 2^-1.43 (a broadcast scalar, whose "rms" is one sample's |value|; 2^-1.0
// otherwise, unscaled gelu ≈ x/2 at small x) to 2^1.02.
constexpr double kLow = 0.25, kHigh = 4.0;
// The largest spread of log2(rms / scale) per output across the scale choices: the ratio must not
// drift with the input scales. One octave is rounding, one the op's nonlinearity; observed ≤ 1.52
// (the broadcast scalar again), ≤ 1.02 for every other case.
constexpr double kSpread = 2.0;

struct MagnitudeCase {
  std::string name;
  const OpDef* op;
  Shapes shapes;  // nullopt: an absent optional input
  Attributes attrs;
  std::vector<std::vector<Scale>> input_scales;  // the scale choices, one Scale per input
};

// The scale choices for ops of one, two and three inputs: far from 1 in both directions, mixed.
std::vector<std::vector<Scale>> scale_choices(std::size_t arity) {
  const std::vector<std::vector<int>> exponents = {{20, -13, 0},   {-24, 30, 7},  {0, 0, 0},
                                                   {-13, 20, -30}, {30, -24, 13}, {7, 7, -7}};
  std::vector<std::vector<Scale>> result;
  for (const auto& e : exponents) {
    std::vector<Scale> scales;
    for (std::size_t i = 0; i < arity; ++i) scales.push_back(p(e[i]));
    result.push_back(scales);
  }
  return result;
}

std::vector<MagnitudeCase> magnitude_cases() {
  std::vector<MagnitudeCase> cases;
  const Shapes one{kRows}, two{kRows, kRows};
  // add: rms(a + b) is √(s_a² + s_b²) exactly in expectation; rounding down gives [1, 2) times
  // that, and the data's own rms (about 1 ± 0.05 for 1024 elements) little more.
  cases.push_back({"add", &kAddOp, two, {}, scale_choices(2)});
  cases.push_back({"add_bias", &kAddOp, {kRows, kRow}, {}, scale_choices(2)});
  cases.push_back({"add_scalar", &kAddOp, {kRows, Shape{}}, {}, scale_choices(2)});
  cases.push_back({"add_column", &kAddOp, {kRows, Shape{16, 1}}, {}, scale_choices(2)});
  // mul: a product of independent unit values has rms 1; grad_b sums 16 of them.
  cases.push_back({"mul", &kMulOp, two, {}, scale_choices(2)});
  cases.push_back({"mul_bias", &kMulOp, {kRows, kRow}, {}, scale_choices(2)});
  cases.push_back({"scale", &kScaleOp, one, {{"alpha", -3.0}, {"beta_x", 0.1}}, scale_choices(1)});
  // relu halves the mean square: rms = 1/√2 of the rule, for y and for grad_x.
  cases.push_back({"relu", &kReluOp, one, {}, scale_choices(1)});
  // gelu and silu: between x/2 (small |x|) and relu (large): rms from 1/2 to 1/√2 of s_x·α, the
  // ratio ≥ 1/4 after rounding α down. The spread across scales is that of x/2 to relu(x), plus
  // rounding: below 1.
  cases.push_back({"gelu", &kGeluOp, one, {}, scale_choices(1)});
  cases.push_back({"gelu_tanh_mult4",
                   &kGeluOp,
                   one,
                   {{"mult", 4.0}, {"approximate", GeluApproximation::kTanh}},
                   scale_choices(1)});
  cases.push_back({"silu", &kSiluOp, one, {}, scale_choices(1)});
  cases.push_back({"silu_mult_quarter", &kSiluOp, one, {{"mult", 0.25}}, scale_choices(1)});
  cases.push_back({"silu_glu", &kSiluGluOp, two, {}, scale_choices(2)});
  // dropout: rms(y) = α/√(1−p)·s_x up to the mask's sampling noise.
  cases.push_back(
      {"dropout", &kDropoutOp, one, {{"p", 0.5}, {"seed", std::int64_t{5}}}, scale_choices(1)});
  cases.push_back(
      {"dropout_p09", &kDropoutOp, one, {{"p", 0.9}, {"seed", std::int64_t{5}}}, scale_choices(1)});
  cases.push_back({"dropout_eval",
                   &kDropoutOp,
                   one,
                   {{"p", 0.3}, {"mode", DropoutMode::kEval}},
                   scale_choices(1)});
  cases.push_back({"residual_split", &kResidualSplitOp, one, {{"tau", 0.3}}, scale_choices(1)});
  cases.push_back({"residual_add", &kResidualAddOp, two, {{"tau", 0.3}}, scale_choices(2)});
  cases.push_back({"residual_add_tau8", &kResidualAddOp, two, {{"tau", 8.0}}, scale_choices(2)});
  // The norms: x̂ has rms 1 per row, ĝ's projection removes 2 of 64 dimensions from dx.
  cases.push_back({"layer_norm", &kLayerNormOp, {kRows, kRow, kRow}, {}, scale_choices(3)});
  cases.push_back(
      {"layer_norm_weight", &kLayerNormOp, {kRows, kRow, std::nullopt}, {}, scale_choices(3)});
  cases.push_back({"layer_norm_plain",
                   &kLayerNormOp,
                   {kRows, std::nullopt, std::nullopt},
                   {},
                   scale_choices(3)});
  cases.push_back({"rms_norm", &kRmsNormOp, {kRows, kRow}, {}, scale_choices(2)});
  cases.push_back({"rms_norm_plain", &kRmsNormOp, {kRows, std::nullopt}, {}, scale_choices(2)});
  return cases;
}

struct MagnitudeParam {
  MagnitudeCase c;
  Scaling scaling;
};

void PrintTo(const MagnitudeParam& param, std::ostream* os) {
  *os << param.c.name << (param.scaling == Scaling::kUnit ? " unit" : " unscaled");
}

std::vector<MagnitudeParam> magnitude_params() {
  std::vector<MagnitudeParam> params;
  for (const MagnitudeCase& c : magnitude_cases()) {
    for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled})
      params.push_back({c, scaling});
  }
  return params;
}

// Runs every scale choice with output-gradient scales 2^-40 and 2^25 and checks every ratio
// against [kLow, kHigh], every scale a power of two (or zero), and the spread of log2(ratio) per
// output across the choices.
void check_magnitudes(const MagnitudeCase& c, Scaling scaling) {
  std::mt19937 rng(1234);
  std::vector<std::optional<Tensor>> data;
  for (const auto& shape : c.shapes) {
    data.push_back(shape ? std::optional<Tensor>(random_normal(*shape, rng)) : std::nullopt);
  }
  std::map<std::string, std::pair<double, double>> log_range;  // per output: min, max
  for (const Scale grad_scale : {p(-40), p(25)}) {
    for (const std::vector<Scale>& scales : c.input_scales) {
      RuleCheckOptions options;
      options.scaling = scaling;
      options.grad_scale = grad_scale;
      const std::vector<RuleMagnitude> magnitudes =
          rule_magnitudes(*c.op, data, scales, c.attrs, options);
      EXPECT_EQ(
          magnitudes.size(), c.op->outputs.size() + [&] {
            std::size_t present = 0;
            for (const auto& d : data) present += d.has_value();
            return present;
          }());
      for (const RuleMagnitude& m : magnitudes) {
        std::string where = fmt::format("{} with input scales", m.output);
        for (const Scale& s : scales) where += fmt::format(" {}", s.to_string());
        where += fmt::format(", grad scale {}: rms {}, scale {}", grad_scale.to_string(),
                             std::to_string(m.rms), m.scale.to_string());
        EXPECT_TRUE(m.scale.is_power_of_two()) << where;
        EXPECT_GE(m.ratio(), kLow) << where;
        EXPECT_LE(m.ratio(), kHigh) << where;
        const double log_ratio = std::log2(m.ratio());
        auto [it, inserted] = log_range.try_emplace(m.output, log_ratio, log_ratio);
        it->second.first = std::min(it->second.first, log_ratio);
        it->second.second = std::max(it->second.second, log_ratio);
      }
    }
  }
  for (const auto& [output, range] : log_range) {
    EXPECT_LE(range.second - range.first, kSpread)
        << output << ": log2(rms/scale) from " << range.first << " to " << range.second;
  }
}

class PointwiseMagnitudes : public ::testing::TestWithParam<MagnitudeParam> {};

TEST_P(PointwiseMagnitudes, RmsOverScaleStaysNearOne) {
  check_magnitudes(GetParam().c, GetParam().scaling);
}

INSTANTIATE_TEST_SUITE_P(Ops, PointwiseMagnitudes, ::testing::ValuesIn(magnitude_params()),
                         [](const ::testing::TestParamInfo<MagnitudeParam>& param_info) {
                           return param_info.param.c.name +
                                  (param_info.param.scaling == Scaling::kUnit ? "_unit"
                                                                              : "_unscaled");
                         });

// softmax: the forward tracks rms(y) across the whole range of temperatures, from a flat row
// (s_x = 2^-24) to one-hot (2^30): LI(a, n, √n) is exact at both ends and within a factor 1.5 in
// between (checked at m·s_x = 1/4 ... 4 and n = 64, 1000), rounding adds [1, 2). The gradient
// tracks it while rows are not saturated; a saturated row's gradient vanishes
// (dx = β·m·s⊙(g − Σ s·g) → 0 as s → one-hot), so there the scale only bounds it from above.
TEST(ScaleRulesPointwise, SoftmaxMagnitudes) {
  for (const std::int64_t n : {64, 1000}) {
    for (const double mult : {1.0, 0.5, 4.0}) {
      for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
        std::mt19937 rng(77);
        const std::vector<std::optional<Tensor>> data{random_normal(Shape{16, n}, rng)};
        const Attributes attrs{{"mult", mult}};
        std::vector<double> forward_logs, backward_logs;
        for (const int e : {-24, -13, -2, 0, 1, 2, 20, 30}) {
          for (const Scale grad_scale : {p(-40), p(25)}) {
            RuleCheckOptions options;
            options.scaling = scaling;
            options.grad_scale = grad_scale;
            const auto m = rule_magnitudes(kSoftmaxOp, data, {p(e)}, attrs, options);
            ASSERT_EQ(m.size(), 2u);
            const std::string where =
                "n " + std::to_string(n) + ", mult " + std::to_string(mult) + ", s_x 2^" +
                std::to_string(e) + (scaling == Scaling::kUnit ? ", unit" : ", unscaled") + ": y " +
                std::to_string(m[0].ratio()) + ", grad_x " + std::to_string(m[1].ratio());
            EXPECT_TRUE(m[0].scale.is_power_of_two() && m[1].scale.is_power_of_two()) << where;
            EXPECT_GE(m[0].ratio(), 0.25) << where;
            EXPECT_LE(m[0].ratio(), 4.0) << where;
            forward_logs.push_back(std::log2(m[0].ratio()));
            EXPECT_LE(m[1].ratio(), 4.0) << where;
            if (mult * std::ldexp(1.0, e) <= 2.0) {  // not saturated
              EXPECT_GE(m[1].ratio(), 0.25) << where;
              backward_logs.push_back(std::log2(m[1].ratio()));
            }
          }
        }
        for (const auto* logs : {&forward_logs, &backward_logs}) {
          const auto [low, high] = std::minmax_element(logs->begin(), logs->end());
          EXPECT_LE(*high - *low, 2.0) << "n " << n << ", mult " << mult;
        }
      }
    }
  }
}

}  // namespace
}  // namespace unitscale

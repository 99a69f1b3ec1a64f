// Scale-propagation rules of the structural ops (ops/scale_rules.hpp): closed-form scales and the
// magnitudes the kernels produce. Covers the shape ops, the reductions, exp/log/sqrt/where, cast,
// round_to_format, autodiff's accumulate_grad and the optimizer ops.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "../support/scale_rule_check.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/round_to_format.hpp"
#include "unitscale/optim/clipping.hpp"
#include "unitscale/optim/loss_scaling.hpp"
#include "unitscale/optim/schedule.hpp"
#include "unitscale/optim/update_ops.hpp"

namespace unitscale {
namespace {

using namespace unitscale::testing;
using Ints = std::vector<std::int64_t>;

// autodiff's accumulate_grad has no header: it is found in a graph where x reaches the loss twice.
const OpDef& accumulate_grad_op() {
  static const OpDef* const op = [] {
    static Graph graph(Scaling::kUnscaled);
    const Value x = graph.input("x", Shape{4});
    const Value loss = sum(concat({x, x}, 0));
    const Value wrt[] = {x};
    autodiff(graph, loss, wrt);
    for (const Node& node : graph.nodes()) {
      if (node.op->name == "accumulate_grad") return node.op;
    }
    return static_cast<const OpDef*>(nullptr);
  }();
  if (op == nullptr) throw std::runtime_error("no accumulate_grad node recorded");
  return *op;
}

// ---------------------------------------------------------------------------------------------
// Closed forms
// ---------------------------------------------------------------------------------------------

TEST(StructuralScaleRules, MoversPassTheScaleThrough) {
  const Shape x{4, 6};
  const Attributes reshape_attrs{{"shape", Ints{3, 8}}};
  const Attributes transpose_attrs{{"dim0", std::int64_t{0}}, {"dim1", std::int64_t{1}}};
  const Attributes slice_attrs{
      {"axis", std::int64_t{1}}, {"start", std::int64_t{1}}, {"end", std::int64_t{4}}};
  const std::vector<std::pair<const OpDef*, Attributes>> ops = {
      {&kReshapeOp, reshape_attrs}, {&kTransposeOp, transpose_attrs}, {&kSliceOp, slice_attrs}};
  for (const auto& [op, attrs] : ops) {
    SCOPED_TRACE(op->name);
    EXPECT_EQ(forward_rule(*op, {p(7)}, {x}, attrs), std::vector<Scale>{p(7)});
    EXPECT_EQ(forward_rule(*op, {p(-19)}, {x}, attrs), std::vector<Scale>{p(-19)});
    EXPECT_EQ(forward_rule(*op, {Scale::of(3.0)}, {x}, attrs), std::vector<Scale>{Scale::of(3.0)});
    EXPECT_EQ(forward_rule(*op, {Scale::zero()}, {x}, attrs), std::vector<Scale>{Scale::zero()});
    // Backward: grad_y's scale, whatever x's (x and y are absent).
    EXPECT_EQ(backward_rule(*op, {p(7)}, {x}, p(-30), attrs), std::vector<Scale>{p(-30)});
    EXPECT_EQ(backward_rule(*op, {p(7)}, {x}, Scale::zero(), attrs),
              std::vector<Scale>{Scale::zero()});
  }
}

TEST(StructuralScaleRules, ConcatTakesTheLargerScale) {
  const Attributes attrs{{"axis", std::int64_t{1}}};
  const std::vector<std::optional<Shape>> shapes = {Shape{4, 2}, Shape{4, 6}};
  EXPECT_EQ(forward_rule(kConcatOp, {p(3), p(-5)}, shapes, attrs), std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kConcatOp, {p(-9), p(12)}, shapes, attrs), std::vector<Scale>{p(12)});
  // A static zero operand drops out; two give a static zero.
  EXPECT_EQ(forward_rule(kConcatOp, {Scale::zero(), p(-5)}, shapes, attrs),
            std::vector<Scale>{p(-5)});
  EXPECT_EQ(forward_rule(kConcatOp, {Scale::zero(), Scale::zero()}, shapes, attrs),
            std::vector<Scale>{Scale::zero()});
  EXPECT_EQ(backward_rule(kConcatOp, {p(3), p(-5)}, shapes, p(-11), attrs),
            (std::vector<Scale>{p(-11), p(-11)}));
}

TEST(StructuralScaleRules, SumGrowsAsTheSquareRootOfTheReducedCount) {
  // N = 64: √64 = 8 exactly, in every rounding mode.
  const Attributes row_sums{{"axes", Ints{1}}};
  for (const Pow2Rounding r : {Pow2Rounding::kDown, Pow2Rounding::kUp, Pow2Rounding::kNone}) {
    EXPECT_EQ(forward_rule(kSumOp, {p(-4)}, {Shape{16, 64}}, row_sums, r),
              std::vector<Scale>{p(-1)});
  }
  // Every axis (absent or empty axes): N = 1024, √N = 32; keepdim changes nothing.
  EXPECT_EQ(forward_rule(kSumOp, {p(2)}, {Shape{16, 64}}, {}), std::vector<Scale>{p(7)});
  EXPECT_EQ(forward_rule(kSumOp, {p(2)}, {Shape{16, 64}}, {{"axes", Ints{}}}),
            std::vector<Scale>{p(7)});
  EXPECT_EQ(forward_rule(kSumOp, {p(2)}, {Shape{16, 64}},
                         {{"axes", Ints{0, -1}}, {"keepdim", std::int64_t{1}}}),
            std::vector<Scale>{p(7)});
  // N = 3 · 16 = 48 over two axes: √48 ≈ 6.93 rounds down to 4, up to 8.
  const Attributes two_axes{{"axes", Ints{0, 2}}};
  EXPECT_EQ(forward_rule(kSumOp, {p(0)}, {Shape{3, 5, 16}}, two_axes), std::vector<Scale>{p(2)});
  EXPECT_EQ(forward_rule(kSumOp, {p(0)}, {Shape{3, 5, 16}}, two_axes, Pow2Rounding::kUp),
            std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kSumOp, {Scale::zero()}, {Shape{3, 5, 16}}, two_axes),
            std::vector<Scale>{Scale::zero()});
  // An empty reduction has no growth.
  EXPECT_EQ(forward_rule(kSumOp, {p(5)}, {Shape{4, 0}}, row_sums), std::vector<Scale>{p(5)});
  // The backward broadcasts grad_y: its scale, for any N.
  EXPECT_EQ(backward_rule(kSumOp, {p(2)}, {Shape{3, 5, 16}}, p(-40), two_axes),
            std::vector<Scale>{p(-40)});
}

TEST(StructuralScaleRules, MeanDividesByTheSquareRootOfTheCountAndItsGradientByTheCount) {
  const Attributes row_means{{"axes", Ints{1}}};
  // N = 64: y = Σ/64 grows as 8/64 = 2^-3; grad_x = grad_y / 64.
  EXPECT_EQ(forward_rule(kMeanOp, {p(10)}, {Shape{16, 64}}, row_means), std::vector<Scale>{p(7)});
  EXPECT_EQ(backward_rule(kMeanOp, {p(10)}, {Shape{16, 64}}, p(25), row_means),
            std::vector<Scale>{p(19)});
  // N = 48: 1/√48 ≈ 0.144 → 2^-3 down, 2^-2 up; 1/48 ≈ 0.0208 → 2^-6 down, 2^-5 up.
  const Attributes two_axes{{"axes", Ints{0, 2}}};
  const Shape x{3, 5, 16};
  EXPECT_EQ(forward_rule(kMeanOp, {p(0)}, {x}, two_axes), std::vector<Scale>{p(-3)});
  EXPECT_EQ(forward_rule(kMeanOp, {p(0)}, {x}, two_axes, Pow2Rounding::kUp),
            std::vector<Scale>{p(-2)});
  EXPECT_EQ(backward_rule(kMeanOp, {p(0)}, {x}, p(0), two_axes), std::vector<Scale>{p(-6)});
  EXPECT_EQ(backward_rule(kMeanOp, {p(0)}, {x}, p(0), two_axes, Pow2Rounding::kUp),
            std::vector<Scale>{p(-5)});
  EXPECT_EQ(forward_rule(kMeanOp, {Scale::zero()}, {x}, two_axes),
            std::vector<Scale>{Scale::zero()});
  EXPECT_EQ(backward_rule(kMeanOp, {p(0)}, {x}, Scale::zero(), two_axes),
            std::vector<Scale>{Scale::zero()});
  // An empty mean (N = 0) counts as N = 1 rather than dividing by zero.
  EXPECT_EQ(forward_rule(kMeanOp, {p(5)}, {Shape{4, 0}}, row_means), std::vector<Scale>{p(5)});
  EXPECT_EQ(backward_rule(kMeanOp, {p(5)}, {Shape{4, 0}}, p(1), row_means),
            std::vector<Scale>{p(1)});
  // An absent grad_x: scale 1, and its shape is never asked for.
  const Shape y{5};
  const std::vector<Scale> scales = {Scale{}, Scale{}, p(3)};
  const std::vector<const Shape*> in = {nullptr, nullptr, &y};
  const std::vector<const Shape*> out = {nullptr};
  EXPECT_EQ(kMeanOp.backward_scale_propagation({scales, in, out, two_axes}),
            std::vector<Scale>{Scale{}});
}

TEST(StructuralScaleRules, MaxPassesTheScaleThroughBothWays) {
  const Attributes attrs{{"axis", std::int64_t{1}}};
  EXPECT_EQ(forward_rule(kMaxOp, {p(-13)}, {Shape{8, 16}}, attrs), std::vector<Scale>{p(-13)});
  EXPECT_EQ(forward_rule(kMaxOp, {Scale::zero()}, {Shape{8, 16}}, attrs),
            std::vector<Scale>{Scale::zero()});
  EXPECT_EQ(backward_rule(kMaxOp, {p(-13)}, {Shape{8, 16}}, p(21), attrs),
            std::vector<Scale>{p(21)});
}

TEST(StructuralScaleRules, ExpIsUnitScaledAndItsGradientCarriesYsScale) {
  const Shape x{4, 4};
  for (const Scale s : {p(0), p(-30), p(30), Scale::of(0.3), Scale::zero()}) {
    EXPECT_EQ(forward_rule(kExpOp, {s}, {x}, {}), std::vector<Scale>{Scale{}}) << s.to_string();
  }
  // grad_x = grad_y · y: s_g · s_y, with y's scale as the rule gave it (1).
  EXPECT_EQ(backward_rule(kExpOp, {p(9)}, {x}, p(-7), {}), std::vector<Scale>{p(-7)});
  // Directly, with another scale for y.
  const std::vector<Scale> scales = {Scale{}, p(4), p(-7)};
  const std::vector<const Shape*> in = {nullptr, &x, &x};
  const std::vector<const Shape*> out = {&x};
  EXPECT_EQ(kExpOp.backward_scale_propagation({scales, in, out, {}}), std::vector<Scale>{p(-3)});
}

TEST(StructuralScaleRules, LogTracksTheLogarithmOfTheInputScale) {
  const Shape x{4, 4};
  // √(1 + (ln s)²): s = 1 → 1 (Scalify's unit scale); 2^3 → 2.3 → 2; 2^30 → 20.8 → 16 (32 up);
  // 2^-24 → 16.7 → 16.
  EXPECT_EQ(forward_rule(kLogOp, {p(0)}, {x}, {}), std::vector<Scale>{p(0)});
  EXPECT_EQ(forward_rule(kLogOp, {p(0)}, {x}, {}, Pow2Rounding::kUp), std::vector<Scale>{p(0)});
  EXPECT_EQ(forward_rule(kLogOp, {p(3)}, {x}, {}), std::vector<Scale>{p(1)});
  EXPECT_EQ(forward_rule(kLogOp, {p(30)}, {x}, {}), std::vector<Scale>{p(4)});
  EXPECT_EQ(forward_rule(kLogOp, {p(30)}, {x}, {}, Pow2Rounding::kUp), std::vector<Scale>{p(5)});
  EXPECT_EQ(forward_rule(kLogOp, {p(-24)}, {x}, {}), std::vector<Scale>{p(4)});
  EXPECT_EQ(forward_rule(kLogOp, {Scale::of(std::exp(3.0))}, {x}, {}), std::vector<Scale>{p(1)});
  // log(0) = −∞ has no scale to track: 1.
  EXPECT_EQ(forward_rule(kLogOp, {Scale::zero()}, {x}, {}), std::vector<Scale>{Scale{}});
  // grad_x = grad_y / x.
  EXPECT_EQ(backward_rule(kLogOp, {p(12)}, {x}, p(-3), {}), std::vector<Scale>{p(-15)});
  EXPECT_EQ(backward_rule(kLogOp, {p(-20)}, {x}, p(-3), {}), std::vector<Scale>{p(17)});
  EXPECT_EQ(backward_rule(kLogOp, {Scale::zero()}, {x}, p(-3), {}), std::vector<Scale>{Scale{}});
}

TEST(StructuralScaleRules, SqrtHalvesTheExponentAndKeepsPowersOfTwo) {
  const Shape x{4, 4};
  EXPECT_EQ(forward_rule(kSqrtOp, {p(6)}, {x}, {}), std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(-6)}, {x}, {}), std::vector<Scale>{p(-3)});
  // Odd exponents: 2^⌊e/2⌋, the data absorbs √2 (up: 2^⌈e/2⌉); never a general scale, even when
  // the policy does not round.
  EXPECT_EQ(forward_rule(kSqrtOp, {p(7)}, {x}, {}), std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(7)}, {x}, {}, Pow2Rounding::kUp), std::vector<Scale>{p(4)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(7)}, {x}, {}, Pow2Rounding::kNone), std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(-7)}, {x}, {}), std::vector<Scale>{p(-4)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(-7)}, {x}, {}, Pow2Rounding::kUp), std::vector<Scale>{p(-3)});
  EXPECT_EQ(forward_rule(kSqrtOp, {p(-1)}, {x}, {}), std::vector<Scale>{p(-1)});
  // A general scale: √ through p2.
  EXPECT_EQ(forward_rule(kSqrtOp, {Scale::of(9.0)}, {x}, {}, Pow2Rounding::kNone),
            std::vector<Scale>{Scale::of(3.0)});
  EXPECT_EQ(forward_rule(kSqrtOp, {Scale::of(9.0)}, {x}, {}), std::vector<Scale>{p(1)});
  EXPECT_EQ(forward_rule(kSqrtOp, {Scale::zero()}, {x}, {}), std::vector<Scale>{Scale::zero()});
  // grad_x = ½ · grad_y / y, with y's scale from the forward rule: 2^-10 · ½ / 2^3 = 2^-14.
  EXPECT_EQ(backward_rule(kSqrtOp, {p(7)}, {x}, p(-10), {}), std::vector<Scale>{p(-14)});
  EXPECT_EQ(backward_rule(kSqrtOp, {Scale::zero()}, {x}, p(-10), {}), std::vector<Scale>{Scale{}});
}

TEST(StructuralScaleRules, WhereTakesTheLargerBranchScaleAndIgnoresTheMask) {
  const Shape x{4, 4};
  EXPECT_EQ(forward_rule(kWhereOp, {Scale{}, p(3), p(-5)}, {x, x, x}, {}),
            std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(kWhereOp, {p(20), p(-8), p(-5)}, {x, x, x}, {}),
            std::vector<Scale>{p(-5)});
  EXPECT_EQ(forward_rule(kWhereOp, {Scale{}, p(-8), Scale::zero()}, {x, x, x}, {}),
            std::vector<Scale>{p(-8)});
  EXPECT_EQ(backward_rule(kWhereOp, {Scale{}, p(3), p(-5)}, {x, x, x}, p(-9), {}),
            (std::vector<Scale>{Scale{}, p(-9), p(-9)}));
}

// Casts run on the scaled data (OpDef::runs_on_scaled_data) and never rescale: the "scale"
// attribute multiplies the data and the value's scale passes through, both ways.
TEST(StructuralScaleRules, CastPassesTheScaleThrough) {
  EXPECT_TRUE(kCastOp.runs_on_scaled_data);
  const Shape x{4, 4};
  for (const Attributes& attrs :
       {Attributes{{"dtype", DType::kE4M3FN}}, Attributes{{"dtype", DType::kF32}, {"scale", 0.25}},
        Attributes{{"dtype", DType::kBF16}, {"scale", 3.0}}}) {
    SCOPED_TRACE(attrs.to_string());
    EXPECT_EQ(forward_rule(kCastOp, {p(-12)}, {x}, attrs), std::vector<Scale>{p(-12)});
    EXPECT_EQ(forward_rule(kCastOp, {p(-12)}, {x}, attrs, Pow2Rounding::kUp),
              std::vector<Scale>{p(-12)});
    EXPECT_EQ(forward_rule(kCastOp, {Scale::zero()}, {x}, attrs),
              std::vector<Scale>{Scale::zero()});
    EXPECT_EQ(backward_rule(kCastOp, {p(-12)}, {x}, p(5), attrs), std::vector<Scale>{p(5)});
  }
}

TEST(StructuralScaleRules, RoundToFormatPassesTheScaleThrough) {
  EXPECT_TRUE(kRoundToFormatOp.runs_on_scaled_data);
  const Shape x{4, 4};
  const Attributes attrs{{"format", DType::kE4M3FN}, {"gradient_format", DType::kE5M2}};
  EXPECT_EQ(forward_rule(kRoundToFormatOp, {p(17)}, {x}, attrs), std::vector<Scale>{p(17)});
  EXPECT_EQ(forward_rule(kRoundToFormatOp, {Scale::zero()}, {x}, attrs),
            std::vector<Scale>{Scale::zero()});
  EXPECT_EQ(backward_rule(kRoundToFormatOp, {p(17)}, {x}, p(-33), attrs),
            std::vector<Scale>{p(-33)});
}

TEST(StructuralScaleRules, AccumulateGradCombinesByTheL2Rule) {
  const OpDef& op = accumulate_grad_op();
  EXPECT_EQ(op.backward_kernel, nullptr);
  const Shape x{4};
  // √2 · 2^3 → 2^3 down, 2^4 up; a much smaller term leaves 2^10; a static zero drops out.
  EXPECT_EQ(forward_rule(op, {p(3), p(3)}, {x, x}, {}), std::vector<Scale>{p(3)});
  EXPECT_EQ(forward_rule(op, {p(3), p(3)}, {x, x}, {}, Pow2Rounding::kUp),
            std::vector<Scale>{p(4)});
  EXPECT_EQ(forward_rule(op, {p(10), p(-10)}, {x, x}, {}), std::vector<Scale>{p(10)});
  EXPECT_EQ(forward_rule(op, {Scale::zero(), p(5)}, {x, x}, {}), std::vector<Scale>{p(5)});
  EXPECT_EQ(forward_rule(op, {Scale::zero(), Scale::zero()}, {x, x}, {}),
            std::vector<Scale>{Scale::zero()});
}

TEST(StructuralScaleRules, UpdateOpsLeaveTheirStatesUnscaled) {
  const Shape w{8, 4};
  const Shape one{1};
  const Attributes adam{{"lr", 1e-3}, {"step", std::int64_t{1}}};
  EXPECT_EQ(forward_rule(kAdamUpdateOp, {p(3), p(-30), p(-20), p(-40), Scale{}, p(-15)},
                         {w, w, w, w, one, one}, adam),
            (std::vector<Scale>{Scale{}, Scale{}, Scale{}}));
  const Attributes sgd{{"lr", 0.1}, {"momentum", 0.9}};
  EXPECT_EQ(forward_rule(kSgdUpdateOp, {p(3), p(-30), p(-30), Scale{}, Scale{}},
                         {w, w, w, std::nullopt, std::nullopt}, sgd),
            (std::vector<Scale>{Scale{}, Scale{}}));
  const Attributes schedule{{"kind", ScheduleKind::kWarmupCosine},
                            {"warmup_steps", std::int64_t{10}},
                            {"total_steps", std::int64_t{100}},
                            {"step", std::int64_t{1}}};
  EXPECT_EQ(forward_rule(kLrScheduleOp, {}, {}, schedule), std::vector<Scale>{Scale{}});
}

TEST(StructuralScaleRules, SumOfSquaresIsOfDegreeTwo) {
  const Shape x{1000};
  const Shape one{1};
  // c² · N · s² with c = 1: p2(1000) = 2^9 (down), 2^10 (up); s² = 2^6.
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), Scale{}}, {x, std::nullopt}, {}),
            std::vector<Scale>{p(15)});
  EXPECT_EQ(
      forward_rule(kSumOfSquaresOp, {p(3), Scale{}}, {x, std::nullopt}, {}, Pow2Rounding::kUp),
      std::vector<Scale>{p(16)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(-20), Scale{}}, {x, std::nullopt}, {}),
            std::vector<Scale>{p(-31)});
  // The gradient scale c = 2^-4 enters squared: p2(2^-8 · 1000 ≈ 3.9) = 2; a negative c too.
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), Scale{}}, {x, std::nullopt}, {{"scale", 0.0625}}),
            std::vector<Scale>{p(7)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), Scale{}}, {x, std::nullopt}, {{"scale", -0.0625}}),
            std::vector<Scale>{p(7)});
  // c² · N beyond double's range: rounded as (p2(c · √N))².
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(0), Scale{}}, {Shape{4}, std::nullopt},
                         {{"scale", 0x1p600}}),
            std::vector<Scale>{p(1202)});
  // The partial sum adds linearly: equal parts double; a much smaller one leaves the larger.
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), p(15)}, {x, one}, {}), std::vector<Scale>{p(16)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), p(-15)}, {x, one}, {}), std::vector<Scale>{p(15)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), p(40)}, {x, one}, {}), std::vector<Scale>{p(40)});
  // Static zeros: x zero leaves the partial; c = 0 too; everything zero gives zero.
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {Scale::zero(), p(7)}, {x, one}, {}),
            std::vector<Scale>{p(7)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {p(3), p(7)}, {x, one}, {{"scale", 0.0}}),
            std::vector<Scale>{p(7)});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {Scale::zero(), Scale{}}, {x, std::nullopt}, {}),
            std::vector<Scale>{Scale::zero()});
  EXPECT_EQ(forward_rule(kSumOfSquaresOp, {Scale::zero(), Scale::zero()}, {x, one}, {}),
            std::vector<Scale>{Scale::zero()});
}

TEST(StructuralScaleRules, ClipCoefficientIsUnitScaledAndItsNormIsASquareRoot) {
  const Shape one{1};
  const Attributes attrs{{"max_norm", 1.0}};
  EXPECT_EQ(forward_rule(kClipCoefficientOp, {p(30)}, {one}, attrs),
            (std::vector<Scale>{Scale{}, p(15)}));
  EXPECT_EQ(forward_rule(kClipCoefficientOp, {p(-31)}, {one}, attrs),
            (std::vector<Scale>{Scale{}, p(-16)}));
  EXPECT_EQ(forward_rule(kClipCoefficientOp, {p(-31)}, {one}, attrs, Pow2Rounding::kUp),
            (std::vector<Scale>{Scale{}, p(-15)}));
  EXPECT_EQ(forward_rule(kClipCoefficientOp, {Scale::zero()}, {one}, attrs),
            (std::vector<Scale>{Scale{}, Scale::zero()}));
}

TEST(StructuralScaleRules, LossScalingCarriesTheInitialScale) {
  const Shape one{1};
  const Attributes pow2{{"initial", 32768.0}};
  // The seed is S = initial · 2^log2_scale: p2(initial).
  EXPECT_EQ(forward_rule(kLossScaleSeedOp, {p(4), Scale{}}, {one, Shape{3}}, pow2),
            std::vector<Scale>{p(15)});
  EXPECT_EQ(forward_rule(kLossScaleSeedOp, {Scale{}, Scale{}}, {one, one}, {{"initial", 1000.0}}),
            std::vector<Scale>{p(9)});
  // (log2_scale, good_steps, multiplier, skipped, norm): states and flags 1, the multiplier
  // 1/initial and the norm √squares / initial.
  EXPECT_EQ(forward_rule(kLossScaleUpdateOp, {Scale{}, Scale{}, p(40)}, {one, one, one}, pow2),
            (std::vector<Scale>{Scale{}, Scale{}, p(-15), Scale{}, p(5)}));
  EXPECT_EQ(forward_rule(kLossScaleUpdateOp, {Scale{}, Scale{}, p(41)}, {one, one, one},
                         {{"initial", 1000.0}}),
            (std::vector<Scale>{Scale{}, Scale{}, p(-10), Scale{}, p(10)}));
  EXPECT_EQ(
      forward_rule(kLossScaleUpdateOp, {Scale{}, Scale{}, Scale::zero()}, {one, one, one}, pow2),
      (std::vector<Scale>{Scale{}, Scale{}, p(-15), Scale{}, Scale::zero()}));
}

// ---------------------------------------------------------------------------------------------
// Magnitudes: rms(output) / scale on random unit data times far-from-1 input scales.
// ---------------------------------------------------------------------------------------------

using DataFn = std::function<std::vector<std::optional<Tensor>>(std::mt19937&)>;

struct MagnitudeCase {
  std::string name;
  const OpDef* (*op)();
  DataFn data;
  Attributes attrs;
  std::vector<std::vector<Scale>> scale_sets;  // one scale per input, per trial
  // Outputs that are zero off a known fraction of their elements (a gradient routed to one argmax
  // per row, a zero-padded slice): their rms is √density times that of the non-zero values, which
  // are what the rule tracks (zeros are exact in every format). The ratio is divided by √density.
  std::map<std::string, double> density = {};
  // log2 of the largest spread of rms / scale across the scale sets (one rounding mode): how far
  // the ratio depends on the input scales. 1 (a factor of 2) for the homogeneous ops, where only
  // the data's statistics (the larger operand's share of a concat, an odd exponent's √2) vary.
  double max_spread = 1.0;
};

// gtest names a failing parameter by this rather than by its bytes.
void PrintTo(const MagnitudeCase& c, std::ostream* os) { *os << c.name; }

Tensor unit(const Shape& shape, std::mt19937& rng) { return random_normal(shape, rng); }

// Positive data near 1 (0.5 + |N(0, 1)|), for log and sqrt: their gradients divide by x or √x, so
// the data stays away from 0.
Tensor positive(const Shape& shape, std::mt19937& rng) {
  Tensor t = random_normal(shape, rng);
  for (float& v : t.span()) v = 0.5f + std::abs(v);
  return t;
}

Tensor mask(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::bernoulli_distribution coin(0.5);
  for (float& v : t.span()) v = coin(rng) ? 1.0f : 0.0f;
  return t;
}

std::vector<std::vector<Scale>> unary_sets() {
  return {{p(20)}, {p(-13)}, {p(-24)}, {p(30)}, {p(0)}, {p(7)}};
}
std::vector<std::vector<Scale>> binary_sets() {
  return {{p(20), p(-13)}, {p(-24), p(30)}, {p(0), p(0)}, {p(5), p(5)}, {p(-7), p(-6)}};
}

const OpDef* reshape_op() { return &kReshapeOp; }
const OpDef* transpose_op() { return &kTransposeOp; }
const OpDef* slice_op() { return &kSliceOp; }
const OpDef* concat_op() { return &kConcatOp; }
const OpDef* sum_op() { return &kSumOp; }
const OpDef* mean_op() { return &kMeanOp; }
const OpDef* max_op() { return &kMaxOp; }
const OpDef* exp_op() { return &kExpOp; }
const OpDef* log_op() { return &kLogOp; }
const OpDef* sqrt_op() { return &kSqrtOp; }
const OpDef* where_op() { return &kWhereOp; }
const OpDef* cast_op() { return &kCastOp; }
const OpDef* round_op() { return &kRoundToFormatOp; }
const OpDef* accumulate_op() { return &accumulate_grad_op(); }
const OpDef* sum_of_squares_op() { return &kSumOfSquaresOp; }

std::vector<MagnitudeCase> magnitude_cases() {
  const Shape x{16, 64};
  const auto one_input = [](Shape shape) -> DataFn {
    return
        [shape](std::mt19937& rng) { return std::vector<std::optional<Tensor>>{unit(shape, rng)}; };
  };
  const auto two_inputs = [](Shape a, Shape b) -> DataFn {
    return [a, b](std::mt19937& rng) {
      return std::vector<std::optional<Tensor>>{unit(a, rng), unit(b, rng)};
    };
  };
  const auto positive_input = [](Shape shape) -> DataFn {
    return [shape](std::mt19937& rng) {
      return std::vector<std::optional<Tensor>>{positive(shape, rng)};
    };
  };
  std::vector<MagnitudeCase> cases;
  cases.push_back({"reshape", reshape_op, one_input(x), {{"shape", Ints{32, -1}}}, unary_sets()});
  cases.push_back({"transpose",
                   transpose_op,
                   one_input(Shape{16, 8, 8}),
                   {{"dim0", std::int64_t{0}}, {"dim1", std::int64_t{2}}},
                   unary_sets()});
  cases.push_back(
      {"slice",
       slice_op,
       one_input(x),
       {{"axis", std::int64_t{1}}, {"start", std::int64_t{8}}, {"end", std::int64_t{40}}},
       unary_sets(),
       {{"grad_x", 0.5}}});
  // Equal halves: with far-apart scales the smaller half is ≈ 0, so rms ≈ max / √2.
  cases.push_back({"concat",
                   concat_op,
                   two_inputs(Shape{16, 32}, Shape{16, 32}),
                   {{"axis", std::int64_t{1}}},
                   binary_sets()});
  // Row sums of 256 terms (64 outputs, so the rms of y is a stable estimate).
  cases.push_back({"sum", sum_op, one_input(Shape{64, 256}), {{"axes", Ints{1}}}, unary_sets()});
  cases.push_back(
      {"sum_48", sum_op, one_input(Shape{3, 64, 16}), {{"axes", Ints{0, 2}}}, unary_sets()});
  cases.push_back({"mean", mean_op, one_input(Shape{64, 256}), {{"axes", Ints{1}}}, unary_sets()});
  cases.push_back(
      {"mean_48", mean_op, one_input(Shape{3, 64, 16}), {{"axes", Ints{0, 2}}}, unary_sets()});
  // The maximum of 16 normals is ≈ 1.8 on average; grad_x has one non-zero per row of 16.
  cases.push_back({"max",
                   max_op,
                   one_input(Shape{64, 16}),
                   {{"axis", std::int64_t{1}}},
                   unary_sets(),
                   {{"grad_x", 1.0 / 16}}});
  // exp of unit normals has rms e ≈ 2.7, of tiny inputs 1: the ratio lies in [1, e] and depends
  // on the scale by that much (log2 e ≈ 1.44). Scales above 1 are left out: exp(2^7 · N(0, 1))
  // overflows fp32 in the kernel itself, before any rule or format is involved.
  cases.push_back(
      {"exp", exp_op, one_input(x), {}, {{p(0)}, {p(-3)}, {p(-13)}, {p(-30)}}, {}, 1.6});
  // log: y = ln s + ln d with ln d ≈ 0.1 ± 0.5 for this data. The rule rounds √(1 + ln² s) down,
  // so the ratio ranges from ≈ 0.5 (s = 1, where |y| is mostly below 1) to ≈ 1.8 (s = 2^20,
  // ln s = 13.9 → 8): a spread of ≈ 1.8 octaves that no power of two could avoid for s = 1.
  cases.push_back({"log", log_op, positive_input(x), {}, unary_sets(), {}, 2.0});
  cases.push_back({"sqrt", sqrt_op, positive_input(x), {}, unary_sets()});
  cases.push_back(
      {"where",
       where_op,
       [](std::mt19937& rng) {
         const Shape s{16, 64};
         return std::vector<std::optional<Tensor>>{mask(s, rng), unit(s, rng), unit(s, rng)};
       },
       {},
       {{Scale{}, p(20), p(-13)},
        {Scale{}, p(-24), p(30)},
        {Scale{}, p(0), p(0)},
        {Scale{}, p(5), p(5)}},
       {{"grad_a", 0.5}, {"grad_b", 0.5}}});
  // cast and round_to_format run on the scaled data; on materialised values, as here, keeping the
  // scale tracks them as well. (A cast's "scale" attribute stays in the data by design, so it is 1
  // here.) bf16 has fp32's range, so rounding to it keeps values of any scale finite.
  cases.push_back({"cast", cast_op, one_input(x), {{"dtype", DType::kF32}}, unary_sets()});
  cases.push_back({"round_to_format",
                   round_op,
                   one_input(x),
                   {{"format", DType::kBF16}, {"gradient_format", DType::kBF16}},
                   unary_sets()});
  cases.push_back({"accumulate_grad", accumulate_op, two_inputs(x, x), {}, binary_sets()});
  cases.push_back(
      {"sum_of_squares",
       sum_of_squares_op,
       [](std::mt19937& rng) {
         return std::vector<std::optional<Tensor>>{unit(Shape{16, 64}, rng), std::nullopt};
       },
       {},
       {{p(20), Scale{}},
        {p(-13), Scale{}},
        {p(-24), Scale{}},
        {p(30), Scale{}},
        {p(7), Scale{}}}});
  // With a partial sum (data 1) and a gradient scale c = 2^-3 (c² = 2^-6): parts of similar and
  // of very different sizes.
  cases.push_back(
      {"sum_of_squares_partial",
       sum_of_squares_op,
       [](std::mt19937& rng) {
         return std::vector<std::optional<Tensor>>{unit(Shape{16, 64}, rng),
                                                   Tensor::filled(Shape{1}, 1.0f)};
       },
       {{"scale", 0.125}},
       {{p(13), p(30)}, {p(-13), p(-24)}, {p(-24), p(-20)}, {p(0), p(4)}, {p(-7), p(-10)}}});
  return cases;
}

std::string describe(const std::vector<Scale>& scales) {
  std::string text;
  for (const Scale& s : scales) text += (text.empty() ? "" : ", ") + s.to_string();
  return text;
}

class StructuralMagnitude : public ::testing::TestWithParam<MagnitudeCase> {};

// Band [1/4, 4]: the rules round their constant factors to powers of two (a factor of up to 2)
// and the data's own statistics add at most ≈ 2.7 (exp's rms e, the maximum of 16 normals ≈ 1.8,
// a concat or sum of two equal parts √2), never both at their extremes.
TEST_P(StructuralMagnitude, RmsOverScaleStaysNearOneForAnyInputScales) {
  const MagnitudeCase& c = GetParam();
  const OpDef& op = *c.op();
  // rule_magnitudes asks for the gradient of every f32 input, but autodiff never asks for that of
  // a non-differentiable one (where's cond): its zeros and scale 1 say nothing about the rule.
  std::vector<std::string> skipped;
  for (std::size_t i = 0; i < op.inputs.size(); ++i) {
    if ((op.nondifferentiable_inputs >> i) & 1)
      skipped.push_back("grad_" + std::string(op.input_name(i)));
  }
  for (const Pow2Rounding rounding : {Pow2Rounding::kDown, Pow2Rounding::kUp}) {
    std::map<std::string, std::pair<double, double>> range;  // log2 ratio: min, max
    for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
      for (const Scale grad_scale : {p(-40), p(25)}) {
        for (const std::vector<Scale>& scales : c.scale_sets) {
          std::mt19937 rng(1234);
          const std::vector<std::optional<Tensor>> data = c.data(rng);
          const std::vector<RuleMagnitude> magnitudes = rule_magnitudes(
              op, data, scales, c.attrs,
              {.scaling = scaling, .grad_scale = grad_scale, .rounding = rounding, .seed = 5});
          for (const RuleMagnitude& m : magnitudes) {
            if (std::find(skipped.begin(), skipped.end(), m.output) != skipped.end()) continue;
            SCOPED_TRACE(m.output + ", rounding " + std::string(pow2_rounding_name(rounding)) +
                         ", scales " + describe(scales) + ", grad " + grad_scale.to_string());
            EXPECT_TRUE(m.scale.is_power_of_two()) << m.scale.to_string();
            const auto density = c.density.find(m.output);
            const double ratio =
                m.ratio() / (density == c.density.end() ? 1.0 : std::sqrt(density->second));
            EXPECT_GE(ratio, 0.25) << "rms " << m.rms << ", scale " << m.scale.to_string();
            EXPECT_LE(ratio, 4.0) << "rms " << m.rms << ", scale " << m.scale.to_string();
            const double l = std::log2(ratio);
            const auto it = range.try_emplace(m.output, l, l).first;
            it->second.first = std::min(it->second.first, l);
            it->second.second = std::max(it->second.second, l);
          }
        }
      }
    }
    EXPECT_FALSE(range.empty());
    for (const auto& [output, r] : range) {
      EXPECT_LE(r.second - r.first, c.max_spread)
          << output << " (" << pow2_rounding_name(rounding) << "): log2 ratio spans [" << r.first
          << ", " << r.second << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, StructuralMagnitude, ::testing::ValuesIn(magnitude_cases()),
                         [](const ::testing::TestParamInfo<MagnitudeCase>& param_info) {
                           return param_info.param.name;
                         });

}  // namespace
}  // namespace unitscale

#include "unitscale/ops/matmul.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes matmul_attrs(std::string_view constraint = "to_output_scale") {
  return {{"constraint", std::string(constraint)}};
}

struct MatmulShapes {
  Shape left, right;
};

// Every path of the kernels: plain, equal batches, the tall GEMM (2-D or batch-1 right operand),
// a broadcast left operand, two-sided broadcasting, and enough small batches to run in parallel.
const MatmulShapes kGradcheckShapes[] = {
    {{3, 4}, {4, 5}},           {{2, 3, 4}, {2, 4, 5}},     {{2, 3, 4}, {4, 5}},
    {{2, 3, 4}, {1, 4, 5}},     {{3, 4}, {2, 4, 5}},        {{1, 3, 4}, {2, 4, 5}},
    {{2, 1, 3, 4}, {3, 4, 5}},  {{8, 2, 3}, {8, 3, 2}},     {{2, 3, 1, 4}, {1, 4, 2}},
};

TEST(MatmulGradcheck, BroadcastingVariants) {
  std::mt19937 rng(1);
  for (const MatmulShapes& s : kGradcheckShapes) {
    SCOPED_TRACE(s.left.to_string() + " x " + s.right.to_string());
    testing::gradcheck(kMatmulOp, {random_normal(s.left, rng), random_normal(s.right, rng)},
                       matmul_attrs());
  }
}

TEST(MatmulGradcheck, OneGradientAtATime) {
  std::mt19937 rng(2);
  const Tensor left = random_normal({2, 1, 3, 4}, rng), right = random_normal({3, 4, 5}, rng);
  testing::gradcheck(kMatmulOp, {left, right}, matmul_attrs(), {.differentiable = {true, false}});
  testing::gradcheck(kMatmulOp, {left, right}, matmul_attrs(), {.differentiable = {false, true}});
}

TEST(MatmulShape, BroadcastsBatchDims) {
  Graph g;
  EXPECT_EQ(matmul(g.input("a", {2, 1, 3, 4}), g.input("b", {5, 4, 6})).shape(), Shape({2, 5, 3, 6}));
  EXPECT_EQ(matmul(g.input("c", {3, 4}), g.input("d", {7, 4, 6})).shape(), Shape({7, 3, 6}));
  EXPECT_EQ(matmul(g.input("e", {3, 4}), g.input("f", {4, 6})).shape(), Shape({3, 6}));
}

// The scaled op's gradients are exactly β times the unscaled ones and its output α times, under
// every constraint, with both operands broadcast (b_left = 3, b_right = 2).
class MatmulScales : public ::testing::TestWithParam<std::string> {};

TEST_P(MatmulScales, ScaledEqualsScaleTimesUnscaled) {
  std::mt19937 rng(3);
  const Tensor left = random_normal({2, 1, 6, 8}, rng), right = random_normal({3, 8, 5}, rng);
  const Tensor g = random_normal({2, 3, 6, 5}, rng);
  OpRun plain(kMatmulOp, {left, right}, matmul_attrs(GetParam()), Scaling::kUnscaled);
  OpRun scaled(kMatmulOp, {left, right}, matmul_attrs(GetParam()), Scaling::kUnit);
  plain.forward();
  scaled.forward();
  const double alpha = scaled.attrs().get_double("t", "alpha");
  for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
    EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i], 1e-6 * (1 + std::abs(plain.output()[i])));
  }
  const auto gp = plain.backward({g});
  const auto gs = scaled.backward({g});
  const char* names[] = {"beta_left", "beta_right"};
  for (std::size_t k = 0; k < 2; ++k) {
    const double beta = scaled.attrs().get_double("t", names[k]);
    for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
      EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-6 * (1 + std::abs((*gp[k])[i])));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Constraints, MatmulScales,
                         ::testing::Values("to_output_scale", "to_left_grad_scale",
                                           "to_right_grad_scale", "gmean", "hmean", "amean", "none"));

// The rule's values: α = K^-½, β_L = (N·b_L)^-½, β_R = (M·b_R)^-½, then the constraint.
double scale(const OpRun& run, std::string_view name) { return run.attrs().get_double("t", name); }

TEST(MatmulScales, RuleValues) {
  const auto run = [&](const Shape& l, const Shape& r, std::string_view constraint) {
    return OpRun(kMatmulOp, {Tensor(l), Tensor(r)}, matmul_attrs(constraint), Scaling::kUnit);
  };
  {  // the spec §5 shape: every scale K^-½ = 2^-5 by default
    const OpRun r = run({256, 1024}, {1024, 4096}, "to_output_scale");
    EXPECT_DOUBLE_EQ(scale(r, "alpha"), 0.03125);
    EXPECT_DOUBLE_EQ(scale(r, "beta_left"), 0.03125);
    EXPECT_DOUBLE_EQ(scale(r, "beta_right"), 0.03125);
  }
  {
    const OpRun r = run({256, 1024}, {1024, 4096}, "none");
    EXPECT_DOUBLE_EQ(scale(r, "alpha"), 1.0 / 32);
    EXPECT_DOUBLE_EQ(scale(r, "beta_left"), 1.0 / 64);
    EXPECT_DOUBLE_EQ(scale(r, "beta_right"), 1.0 / 16);
  }
  {  // a 2-D right operand under 8 left matrices is summed over 8·M rows (spec §12 item 6)
    const OpRun r = run({8, 64, 256}, {256, 512}, "none");
    EXPECT_DOUBLE_EQ(scale(r, "alpha"), 1.0 / 16);
    EXPECT_DOUBLE_EQ(scale(r, "beta_left"), 1 / std::sqrt(512.0));
    EXPECT_DOUBLE_EQ(scale(r, "beta_right"), 1 / std::sqrt(8.0 * 64));
  }
  {  // both broadcast: [2, 1] x [3] batches, b_left = 3, b_right = 2
    const OpRun r = run({2, 1, 6, 8}, {3, 8, 5}, "none");
    EXPECT_DOUBLE_EQ(scale(r, "beta_left"), 1 / std::sqrt(5.0 * 3));
    EXPECT_DOUBLE_EQ(scale(r, "beta_right"), 1 / std::sqrt(6.0 * 2));
  }
  {  // equal batches broadcast nothing
    const OpRun r = run({4, 6, 8}, {4, 8, 5}, "none");
    EXPECT_DOUBLE_EQ(scale(r, "beta_left"), 1 / std::sqrt(5.0));
    EXPECT_DOUBLE_EQ(scale(r, "beta_right"), 1 / std::sqrt(6.0));
  }
  {  // the constraints over (α, β_L, β_R) = (2^-2, 2^-3, 2^-1)
    const Shape l{4, 16}, rr{16, 64};
    EXPECT_DOUBLE_EQ(scale(run(l, rr, "to_left_grad_scale"), "alpha"), 1.0 / 8);
    EXPECT_DOUBLE_EQ(scale(run(l, rr, "to_right_grad_scale"), "beta_left"), 1.0 / 2);
    EXPECT_NEAR(scale(run(l, rr, "gmean"), "beta_right"), 1.0 / 4, 1e-15);
    EXPECT_DOUBLE_EQ(scale(run(l, rr, "hmean"), "alpha"), 3 / (4.0 + 8 + 2));
    EXPECT_DOUBLE_EQ(scale(run(l, rr, "amean"), "beta_left"), (1.0 / 4 + 1.0 / 8 + 1.0 / 2) / 3);
  }
}

// ±0.1 for targets >= 1, ±10 % relative below (spec §5).
double tolerance(double target) { return 0.1 * std::min(1.0, target); }

struct MatmulStds {
  double out, grad_left, grad_right;
};

MatmulStds measure(const Shape& left, const Shape& right, std::string_view constraint,
                   unsigned seed) {
  std::mt19937 rng(seed);
  OpRun run(kMatmulOp, {random_normal(left, rng), random_normal(right, rng)},
            matmul_attrs(constraint), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(run.output().shape(), rng)});
  return {testing::std_of(run.output().span()), testing::std_of(grads[0]->span()),
          testing::std_of(grads[1]->span())};
}

// spec §5: matmul 256×1024 · 1024×4096: default out 0.998, L 2.003, R 0.499; None 1.001, 1.0, 1.0.
TEST(MatmulStatistics, SpecShapeDefaultAndNone) {
  const MatmulStds d = measure({256, 1024}, {1024, 4096}, "to_output_scale", 5);
  EXPECT_NEAR(d.out, 1.0, tolerance(1.0));
  EXPECT_NEAR(d.grad_left, 2.0, tolerance(2.0));   // √(N/K)
  EXPECT_NEAR(d.grad_right, 0.5, tolerance(0.5));  // √(M/K)
  const MatmulStds n = measure({256, 1024}, {1024, 4096}, "none", 6);
  EXPECT_NEAR(n.out, 1.0, tolerance(1.0));
  EXPECT_NEAR(n.grad_left, 1.0, tolerance(1.0));
  EXPECT_NEAR(n.grad_right, 1.0, tolerance(1.0));
}

// Every constraint on a shape where they all differ (M = 128, K = 512, N = 1024: unconstrained
// scales 2^-4.5, 2^-5, 2^-3.5). Unscaled stds are √K, √N, √M, so std = scale·√fan.
struct ConstraintTarget {
  std::string constraint;
  double out, grad_left, grad_right;
};

void PrintTo(const ConstraintTarget& t, std::ostream* os) { *os << t.constraint; }

class MatmulConstraintStatistics : public ::testing::TestWithParam<ConstraintTarget> {};

TEST_P(MatmulConstraintStatistics, HitsClosedForm) {
  const ConstraintTarget& t = GetParam();
  const MatmulStds s = measure({128, 512}, {512, 1024}, t.constraint, 7);
  EXPECT_NEAR(s.out, t.out, tolerance(t.out));
  EXPECT_NEAR(s.grad_left, t.grad_left, tolerance(t.grad_left));
  EXPECT_NEAR(s.grad_right, t.grad_right, tolerance(t.grad_right));
  if (t.constraint == "gmean") {  // the geometric mean balances the three: their product is 1
    EXPECT_NEAR(s.out * s.grad_left * s.grad_right, 1.0, 0.1);
  }
}

// The stds when every scale is s: s·√K, s·√N, s·√M.
ConstraintTarget all_scales(std::string constraint, double s) {
  return {std::move(constraint), s * std::sqrt(512.0), s * 32, s * std::sqrt(128.0)};
}

const double kAlpha = std::pow(2.0, -4.5), kBetaLeft = std::pow(2.0, -5), kBetaRight = std::pow(2.0, -3.5);

INSTANTIATE_TEST_SUITE_P(
    Constraints, MatmulConstraintStatistics,
    ::testing::Values(
        ConstraintTarget{"to_output_scale", 1.0, std::sqrt(2.0), 0.5},
        ConstraintTarget{"to_left_grad_scale", std::sqrt(0.5), 1.0, std::pow(2.0, -1.5)},
        ConstraintTarget{"to_right_grad_scale", 2.0, std::pow(2.0, 1.5), 1.0},
        all_scales("gmean", std::pow(2.0, -13.0 / 3)),
        all_scales("hmean", 3 / (1 / kAlpha + 1 / kBetaLeft + 1 / kBetaRight)),
        all_scales("amean", (kAlpha + kBetaLeft + kBetaRight) / 3),
        ConstraintTarget{"none", 1.0, 1.0, 1.0}),
    [](const auto& test) { return test.param.constraint; });

// Broadcast operands: the batch-aware β makes the summed gradient unit under none, where the
// reference library's β_R = M^-½ would give √b (here √16 = 4).
TEST(MatmulStatistics, BroadcastRightOperandGradientIsUnit) {
  const MatmulStds s = measure({16, 64, 256}, {256, 512}, "none", 8);
  EXPECT_NEAR(s.out, 1.0, 0.1);
  EXPECT_NEAR(s.grad_left, 1.0, 0.1);
  EXPECT_NEAR(s.grad_right, 1.0, 0.1);
}

TEST(MatmulStatistics, BroadcastLeftOperandGradientIsUnit) {
  const MatmulStds s = measure({64, 256}, {16, 256, 128}, "none", 9);
  EXPECT_NEAR(s.out, 1.0, 0.1);
  EXPECT_NEAR(s.grad_left, 1.0, 0.1);
  EXPECT_NEAR(s.grad_right, 1.0, 0.1);
}

TEST(MatmulStatistics, TwoSidedBroadcastGradientsAreUnit) {
  const MatmulStds s = measure({4, 1, 64, 128}, {3, 128, 256}, "none", 10);
  EXPECT_NEAR(s.out, 1.0, 0.1);
  EXPECT_NEAR(s.grad_left, 1.0, 0.1);
  EXPECT_NEAR(s.grad_right, 1.0, 0.1);
}

TEST(MatmulErrors, ShapeMismatchNamesOpAndShapes) {
  Graph g;
  const Value a = g.input("a", {4, 8});
  EXPECT_THAT([&] { matmul(a, g.input("b", {7, 16})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("matmul"), HasSubstr("[4, 8]"), HasSubstr("[7, 16]"))));
  EXPECT_THAT([&] { matmul(a, g.input("v", {8})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("matmul"), HasSubstr("[8]"), HasSubstr("rank"))));
  EXPECT_THAT([&] { matmul(g.input("c", {2, 4, 8}), g.input("d", {3, 8, 5})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("matmul"), HasSubstr("[2, 4, 8]"),
                                         HasSubstr("[3, 8, 5]"), HasSubstr("broadcast"))));
  Graph unscaled(Scaling::kUnscaled);  // shape checks do not depend on the scaling mode
  EXPECT_THAT([&] { matmul(unscaled.input("a", {4, 8}), unscaled.input("b", {7, 16})); },
              ThrowsMessage<Error>(HasSubstr("matmul")));
}

TEST(MatmulErrors, BadConstraintNamesOp) {
  const Tensor l({2, 3}), r({3, 4});
  EXPECT_THAT([&] { OpRun(kMatmulOp, {l, r}, matmul_attrs("bogus"), Scaling::kUnit); },
              ThrowsMessage<Error>(AllOf(HasSubstr("matmul"), HasSubstr("bogus"))));
  // to_grad_input_scale takes exactly two scales; matmul has three.
  EXPECT_THAT([&] { OpRun(kMatmulOp, {l, r}, matmul_attrs("to_grad_input_scale"), Scaling::kUnit); },
              ThrowsMessage<Error>(AllOf(HasSubstr("matmul"), HasSubstr("to_grad_input_scale"))));
}


// Through the graph: autodiff emits matmul_backward, which gets only what backward_reads asks for.
// loss = Σ y, written with matmuls against ones so that dloss/dy = 1.
TEST(MatmulGraph, AutodiffAndExecutorMatchTheKernels) {
  std::mt19937 rng(11);
  const Tensor a = random_normal({3, 4}, rng), b = random_normal({1, 4, 5}, rng);
  Graph graph(Scaling::kUnscaled);
  const Value va = graph.parameter("a", {3, 4}), vb = graph.parameter("b", {1, 4, 5});
  const Value y = matmul(va, vb);
  const Value loss = matmul(matmul(graph.constant(Tensor::filled({1, 3}, 1.0f)), y),
                            graph.constant(Tensor::filled({5, 1}, 1.0f)));
  const Value wrt[] = {va, vb};
  const auto grads = autodiff(graph, loss, wrt);
  const Value outputs[] = {y, grads[0], grads[1]};
  Executor exec(graph, outputs);
  exec.bind(va, a);
  exec.bind(vb, b);
  exec.run();

  OpRun direct(kMatmulOp, {a, b}, matmul_attrs());
  direct.forward();
  const auto expected = direct.backward({Tensor::filled(direct.output().shape(), 1.0f)});
  for (std::int64_t i = 0; i < direct.output().numel(); ++i) EXPECT_FLOAT_EQ(exec.get(y).data()[i], direct.output()[i]);
  for (std::size_t k = 0; k < 2; ++k) {
    for (std::int64_t i = 0; i < expected[k]->numel(); ++i) {
      EXPECT_NEAR(exec.get(grads[k]).data()[i], (*expected[k])[i], 1e-5);
    }
  }
}

}  // namespace
}  // namespace unitscale

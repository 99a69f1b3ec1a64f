#include "unitscale/ops/elementwise.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes add_attrs(std::string_view constraint = "to_output_scale") {
  return {{"constraint", std::string(constraint)}};
}

// The offset in an operand of shape `s` of output element `i` under NumPy broadcasting: the
// index arithmetic the kernels avoid, as a reference.
std::int64_t broadcast_offset(const Shape& out, const Shape& s, std::int64_t i) {
  std::int64_t offset = 0, stride = 1;
  for (int d = out.rank() - 1, e = s.rank() - 1; d >= 0; --d, --e) {
    const std::int64_t index = i % out.dim(d);
    i /= out.dim(d);
    if (e < 0) continue;
    if (s.dim(e) != 1) offset += index * stride;
    stride *= s.dim(e);
  }
  return offset;
}

struct BroadcastCase {
  Shape a, b;
};

void PrintTo(const BroadcastCase& c, std::ostream* os) {
  *os << c.a.to_string() << " with " << c.b.to_string();
}

std::string case_name(const BroadcastCase& c) {
  auto part = [](const Shape& s) {
    std::string text = s.rank() == 0 ? "scalar" : "";
    for (const std::int64_t d : s.dims()) {
      if (!text.empty()) text += 'x';
      text += std::to_string(d);
    }
    return text;
  };
  return part(c.a) + "_" + part(c.b);
}

// Small shapes for finite differences: every broadcast pattern the kernels distinguish.
const std::vector<BroadcastCase> kSmallCases = {
    {{3, 4}, {3, 4}},          {{3, 4}, {4}},          {{3, 1}, {3, 4}}, {{}, {2, 3}},
    {{2, 1, 3}, {2, 4, 3}},    {{3, 1}, {1, 4}},       {{4}, {2, 3, 4}}, {{1}, {1}},
    {{2, 3, 1, 2}, {3, 4, 1}}, {{1, 3, 1}, {2, 1, 2}},
};

TEST(ElementwiseGradcheck, AddOverBroadcastPatterns) {
  std::mt19937 rng(1);
  for (const BroadcastCase& c : kSmallCases) {
    SCOPED_TRACE(c.a.to_string() + " + " + c.b.to_string());
    testing::gradcheck(kAddOp, {random_normal(c.a, rng), random_normal(c.b, rng)}, add_attrs());
  }
}

TEST(ElementwiseGradcheck, MulOverBroadcastPatterns) {
  std::mt19937 rng(2);
  for (const BroadcastCase& c : kSmallCases) {
    SCOPED_TRACE(c.a.to_string() + " * " + c.b.to_string());
    testing::gradcheck(kMulOp, {random_normal(c.a, rng), random_normal(c.b, rng)}, {});
  }
}

TEST(ElementwiseGradcheck, ScaleWithEqualForwardAndBackwardScales) {
  // Only with α = β is the backward the true derivative of the forward.
  std::mt19937 rng(3);
  testing::gradcheck(kScaleOp, {random_normal({3, 5}, rng)}, {{"alpha", 1.5}, {"beta_x", 1.5}});
  testing::gradcheck(kScaleOp, {random_normal({4}, rng)}, {});
}

// Large tensors (parallel, blocked walks that cut through inner segments) against the index
// arithmetic reference, for forward and both gradients of add and mul.
class ElementwiseKernels : public ::testing::TestWithParam<BroadcastCase> {};

TEST_P(ElementwiseKernels, MatchReferenceOnLargeTensors) {
  const BroadcastCase& c = GetParam();
  std::mt19937 rng(4);
  const Tensor a = random_normal(c.a, rng), b = random_normal(c.b, rng);
  const Shape out_shape = broadcast_shapes(c.a, c.b, "test");
  const Tensor g = random_normal(out_shape, rng);
  const float alpha = 0.75f, beta_a = 1.25f, beta_b = 0.5f;

  Tensor sum(out_shape), product(out_shape);
  add_forward(a, b, sum, alpha);
  mul_forward(a, b, product);
  Tensor add_grad_a(c.a), add_grad_b(c.b), mul_grad_a(c.a), mul_grad_b(c.b);
  add_backward(g, add_grad_a, add_grad_b, beta_a, beta_b);
  mul_backward(g, a, b, mul_grad_a, mul_grad_b);

  std::vector<double> ref_add_a(static_cast<std::size_t>(a.numel())),
      ref_add_b(static_cast<std::size_t>(b.numel()));
  std::vector<double> ref_mul_a(ref_add_a.size()), ref_mul_b(ref_add_b.size());
  int failures = 0;
  for (std::int64_t i = 0; i < out_shape.numel(); ++i) {
    const std::int64_t ia = broadcast_offset(out_shape, c.a, i),
                       ib = broadcast_offset(out_shape, c.b, i);
    const float expected_sum = alpha * (a[ia] + b[ib]);
    if (sum[i] != expected_sum || product[i] != a[ia] * b[ib]) {
      if (++failures <= 5)
        ADD_FAILURE() << "element " << i << ": " << sum[i] << " vs " << expected_sum;
    }
    ref_add_a[static_cast<std::size_t>(ia)] += g[i];
    ref_add_b[static_cast<std::size_t>(ib)] += g[i];
    ref_mul_a[static_cast<std::size_t>(ia)] += static_cast<double>(g[i]) * b[ib];
    ref_mul_b[static_cast<std::size_t>(ib)] += static_cast<double>(g[i]) * a[ia];
  }
  auto expect_close = [&](const Tensor& got, const std::vector<double>& want, double scale,
                          const char* what) {
    int bad = 0;
    for (std::int64_t i = 0; i < got.numel() && bad < 5; ++i) {
      const double w = scale * want[static_cast<std::size_t>(i)];
      if (std::abs(got[i] - w) > 1e-5 * (1 + std::abs(w))) {
        ++bad;
        ADD_FAILURE() << what << " element " << i << ": " << got[i] << " vs " << w;
      }
    }
  };
  expect_close(add_grad_a, ref_add_a, beta_a, "add grad a");
  expect_close(add_grad_b, ref_add_b, beta_b, "add grad b");
  expect_close(mul_grad_a, ref_mul_a, 1.0, "mul grad a");
  expect_close(mul_grad_b, ref_mul_b, 1.0, "mul grad b");
}

// When both gradients are wanted, the one of a non-broadcast operand is written in the same pass
// as the other's reduction; either gradient alone must come out bit for bit the same.
TEST_P(ElementwiseKernels, OneGradientAloneEqualsBothTogether) {
  const BroadcastCase& c = GetParam();
  std::mt19937 rng(7);
  const Tensor a = random_normal(c.a, rng), b = random_normal(c.b, rng);
  const Tensor g = random_normal(broadcast_shapes(c.a, c.b, "test"), rng);
  const auto same = [](const Tensor& x, const Tensor& y) {
    return std::equal(x.span().begin(), x.span().end(), y.span().begin(), y.span().end());
  };
  Tensor both_a(c.a), both_b(c.b), only_a(c.a), only_b(c.b);
  add_backward(g, both_a, both_b, 1.25f, 0.5f);
  add_backward(g, only_a, TensorView{}, 1.25f, 0.5f);
  add_backward(g, TensorView{}, only_b, 1.25f, 0.5f);
  EXPECT_TRUE(same(both_a, only_a)) << "add, grad a";
  EXPECT_TRUE(same(both_b, only_b)) << "add, grad b";
  mul_backward(g, a, b, both_a, both_b);
  mul_backward(g, a, b, only_a, TensorView{});
  mul_backward(g, a, b, TensorView{}, only_b);
  EXPECT_TRUE(same(both_a, only_a)) << "mul, grad a";
  EXPECT_TRUE(same(both_b, only_b)) << "mul, grad b";
}

// In order: same shape, scalar (either side), row vector (over rows, over two leading
// dimensions), column, a broadcast middle dimension, an outer product, and a mixed pattern that
// takes the general path.
INSTANTIATE_TEST_SUITE_P(
    Patterns, ElementwiseKernels,
    ::testing::Values(BroadcastCase{{1 << 16}, {1 << 16}}, BroadcastCase{{256, 300}, {}},
                      BroadcastCase{{}, {256, 300}}, BroadcastCase{{96, 1000}, {1000}},
                      BroadcastCase{{1000}, {2, 48, 1000}}, BroadcastCase{{512, 1}, {512, 130}},
                      BroadcastCase{{8, 1, 4099}, {8, 9, 4099}}, BroadcastCase{{300, 1}, {1, 257}},
                      BroadcastCase{{3, 1, 7, 1}, {5, 1, 1001}}),
    [](const auto& test_info) { return case_name(test_info.param); });

TEST(ElementwiseKernels, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(5);
  const Tensor g = random_normal({4096, 64}, rng);
  Tensor row_grad({64}), scalar_grad(Shape{}), row_grad_1({64}), scalar_grad_1(Shape{});
  add_backward(g, row_grad, scalar_grad, 1.0f, 1.0f);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  add_backward(g, row_grad_1, scalar_grad_1, 1.0f, 1.0f);
  omp_set_num_threads(threads);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(row_grad[i], row_grad_1[i]);
  EXPECT_EQ(scalar_grad[0], scalar_grad_1[0]);
}

// [3] broadcast against [0, 3]: the output is empty and nothing reaches the [3] operand.
TEST(ElementwiseKernels, EmptyBroadcastGivesZeroGradients) {
  const Tensor a = Tensor::filled({3}, 1.0f), b(Shape{0, 3}), g(Shape{0, 3});
  Tensor grad_a = Tensor::filled({3}, 7.0f), grad_b(Shape{0, 3});
  add_backward(g, grad_a, grad_b, 1.0f, 1.0f);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(grad_a[i], 0.0f);
  grad_a = Tensor::filled({3}, 7.0f);
  mul_backward(g, a, b, grad_a, grad_b);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(grad_a[i], 0.0f);
}

// The scaled op's output is α times the unscaled one and its gradients β times.
TEST(ElementwiseScales, ScaledAddEqualsScalesTimesUnscaled) {
  std::mt19937 rng(6);
  for (const BroadcastCase& c : {BroadcastCase{{6, 8}, {6, 8}}, BroadcastCase{{6, 8}, {8}}}) {
    for (const char* constraint : {"to_output_scale", "none", "gmean"}) {
      SCOPED_TRACE(c.b.to_string() + " " + std::string(constraint));
      const Tensor a = random_normal(c.a, rng), b = random_normal(c.b, rng),
                   g = random_normal(c.a, rng);
      OpRun plain(kAddOp, {a, b}, add_attrs(constraint), Scaling::kUnscaled);
      OpRun scaled(kAddOp, {a, b}, add_attrs(constraint), Scaling::kUnit);
      plain.forward();
      scaled.forward();
      const double alpha = scaled.attrs().get_double("t", "alpha");
      for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
        EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i],
                    1e-6 * (1 + std::abs(plain.output()[i])));
      }
      const auto gp = plain.backward({g});
      const auto gs = scaled.backward({g});
      const char* names[] = {"beta_a", "beta_b"};
      for (std::size_t k = 0; k < 2; ++k) {
        const double beta = scaled.attrs().get_double("t", names[k]);
        for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
          EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-5 * (1 + std::abs((*gp[k])[i])));
        }
      }
    }
  }
}

TEST(ElementwiseScales, AddRuleValues) {
  auto scales = [](const Shape& a, const Shape& b, std::string_view constraint) {
    const Tensor ta(a), tb(b);
    OpRun run(kAddOp, {ta, tb}, add_attrs(constraint), Scaling::kUnit);
    return std::vector<double>{run.attrs().get_double("t", "alpha"),
                               run.attrs().get_double("t", "beta_a"),
                               run.attrs().get_double("t", "beta_b")};
  };
  const double r = 1 / std::sqrt(2.0);
  EXPECT_THAT(scales({4, 8}, {4, 8}, "to_output_scale"), ::testing::ElementsAre(r, r, r));
  EXPECT_THAT(scales({4, 8}, {4, 8}, "none"), ::testing::ElementsAre(r, 1.0, 1.0));
  // A row vector broadcast over 16 rows: its gradient sums 16 unit gradients.
  EXPECT_THAT(scales({16, 8}, {8}, "none"), ::testing::ElementsAre(r, 1.0, 0.25));
  // A one-element operand: an ordinary add (α = 1, and to_output_scale makes every scale 1).
  EXPECT_THAT(scales({16, 8}, {}, "to_output_scale"), ::testing::ElementsAre(1.0, 1.0, 1.0));
  EXPECT_THAT(scales({1}, {16, 8}, "none"),
              ::testing::ElementsAre(1.0, ::testing::DoubleEq(1 / std::sqrt(128.0)), 1.0));
  const double g = std::pow(r, 1.0 / 3);
  EXPECT_THAT(scales({4, 8}, {4, 8}, "gmean"),
              ::testing::ElementsAre(::testing::DoubleEq(g), ::testing::DoubleEq(g),
                                     ::testing::DoubleEq(g)));
}

// Targets measured with the unit-scaling reference library (arXiv 2303.11257): add, default / none:
// output 1.002 / 1.001, gradients 0.708 / 0.998.
struct AddTarget {
  std::string constraint;
  double out_std, grad_std;
};

void PrintTo(const AddTarget& t, std::ostream* os) { *os << t.constraint; }

class AddStatistics : public ::testing::TestWithParam<AddTarget> {};

TEST_P(AddStatistics, HitsSpecTargets) {
  const AddTarget& t = GetParam();
  std::mt19937 rng(7);
  OpRun run(kAddOp, {random_normal({256, 1024}, rng), random_normal({256, 1024}, rng)},
            add_attrs(t.constraint), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 1024}, rng)});
  auto tolerance = [](double target) { return target < 1 ? 0.1 * target : 0.1; };
  EXPECT_NEAR(testing::std_of(run.output().span()), t.out_std, tolerance(t.out_std));
  EXPECT_NEAR(testing::std_of(grads[0]->span()), t.grad_std, tolerance(t.grad_std));
  EXPECT_NEAR(testing::std_of(grads[1]->span()), t.grad_std, tolerance(t.grad_std));
}

// Closed forms: to_output_scale ⇒ gradients 2^-½; gmean over (2^-½, 1, 1) = 2^(-1/6) ⇒ output
// √2·2^(-1/6), gradients 2^(-1/6); hmean = 3/(√2 + 2); amean = (2^-½ + 2)/3.
const double kHMean = 3 / (std::sqrt(2.0) + 2), kAMean = (1 / std::sqrt(2.0) + 2) / 3;
INSTANTIATE_TEST_SUITE_P(Constraints, AddStatistics,
                         ::testing::Values(AddTarget{"to_output_scale", 1.0, 1 / std::sqrt(2.0)},
                                           AddTarget{"none", 1.0, 1.0},
                                           AddTarget{"gmean",
                                                     std::sqrt(2.0) * std::pow(2.0, -1.0 / 6),
                                                     std::pow(2.0, -1.0 / 6)},
                                           AddTarget{"hmean", std::sqrt(2.0) * kHMean, kHMean},
                                           AddTarget{"amean", std::sqrt(2.0) * kAMean, kAMean}),
                         [](const auto& test_info) { return test_info.param.constraint; });

TEST(AddStatistics, BroadcastRowVectorGradientIsUnitWithNone) {
  std::mt19937 rng(8);
  OpRun run(kAddOp, {random_normal({1024, 256}, rng), random_normal({256}, rng)}, add_attrs("none"),
            Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({1024, 256}, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[1]->span()), 1.0, 0.1);
}

TEST(MulStatistics, ProductOfUnitGaussiansIsUnitWithoutScaling) {
  std::mt19937 rng(9);
  OpRun run(kMulOp, {random_normal({256, 1024}, rng), random_normal({256, 1024}, rng)}, {},
            Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 1024}, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), 1.0, 0.1);
  EXPECT_FALSE(run.attrs().has("alpha"));
}

TEST(Scale, ForwardIsAlphaTimesInputAndBackwardIsBetaTimesGradient) {
  std::mt19937 rng(10);
  const Tensor x = random_normal({5, 7}, rng), g = random_normal({5, 7}, rng);
  OpRun run(kScaleOp, {x}, {{"alpha", 0.25}, {"beta_x", 3.0}});
  run.forward();
  const auto grads = run.backward({g});
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(run.output()[i], 0.25f * x[i]);
    EXPECT_EQ((*grads[0])[i], 3.0f * g[i]);
  }
}

// The builders: explicit scales apply in unscaled graphs too; a float operand is an ordinary add.
TEST(ElementwiseBuilders, ScaleFwdAndBwdRecordExplicitScalesInAnyGraph) {
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {1, 4});
  const Value y = scale_bwd(scale_fwd(x, 0.5), 4.0);
  const Node& fwd = g.nodes()[0];
  const Node& bwd = g.nodes()[1];
  EXPECT_EQ(fwd.op, &kScaleOp);
  EXPECT_DOUBLE_EQ(fwd.attrs.get_double("t", "alpha"), 0.5);
  EXPECT_DOUBLE_EQ(fwd.attrs.get_double("t", "beta_x"), 1.0);
  EXPECT_DOUBLE_EQ(bwd.attrs.get_double("t", "alpha"), 1.0);
  EXPECT_DOUBLE_EQ(bwd.attrs.get_double("t", "beta_x"), 4.0);

  // loss = v · y: dloss/dx = 1·4·v (the forward α does not reach the gradient).
  const Value v = g.parameter("v", {1, 4});
  const Value loss = linear(y, v);
  const Value wrt[] = {x};
  const Value grad = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {loss, grad};
  Executor exec(g, outputs);
  const Tensor xt(Shape{1, 4}, std::vector<float>{1, 2, 3, 4}),
      vt(Shape{1, 4}, std::vector<float>{1, -1, 2, 0.5});
  exec.bind(x, xt);
  exec.bind(v, vt);
  exec.run();
  EXPECT_FLOAT_EQ(exec.get(loss).data()[0], 0.5f * (1 - 2 + 6 + 2));
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(exec.get(grad).data()[i], 4.0f * vt[i]);
}

TEST(ElementwiseBuilders, AddOfAFloatIsAnOrdinaryAddInAUnitGraph) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const Value y = add(x, 1.5f);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  const Node& node = g.nodes().back();
  EXPECT_DOUBLE_EQ(node.attrs.get_double("t", "alpha"), 1.0);
  EXPECT_DOUBLE_EQ(node.attrs.get_double("t", "beta_a"), 1.0);
  const Value outputs[] = {y};
  Executor exec(g, outputs);
  const Tensor xt = Tensor::filled({2, 3}, 2.0f);
  exec.bind(x, xt);
  exec.run();
  for (const float v : exec.get(y).span()) EXPECT_EQ(v, 3.5f);
}

// Through autodiff, a broadcast operand's gradient is summed over the rows (and scaled by β).
TEST(ElementwiseBuilders, AutodiffThroughBroadcastAddAndMul) {
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {1, 3});
  const Value b = g.parameter("b", {3});
  const Value w = g.parameter("w", {1, 3});
  const Value loss = linear(mul(add(x, b), x), w);  // Σ_j w_j (x_j + b_j) x_j
  const Value wrt[] = {x, b};
  const auto grads = autodiff(g, loss, wrt);
  const Value outputs[] = {grads[0], grads[1]};
  Executor exec(g, outputs);
  const Tensor xt(Shape{1, 3}, std::vector<float>{1, 2, 3}),
      bt(Shape{3}, std::vector<float>{0.5, -1, 2}), wt(Shape{1, 3}, std::vector<float>{2, 1, -1});
  exec.bind(x, xt);
  exec.bind(b, bt);
  exec.bind(w, wt);
  exec.run();
  for (int j = 0; j < 3; ++j) {
    EXPECT_FLOAT_EQ(exec.get(grads[0]).data()[j], wt[j] * (2 * xt[j] + bt[j]));
    EXPECT_FLOAT_EQ(exec.get(grads[1]).data()[j], wt[j] * xt[j]);
  }
}

TEST(ElementwiseErrors, MessagesNameTheOpAndShapes) {
  Graph g;
  const Value a = g.input("a", {4, 8});
  const Value b = g.input("b", {4, 7});
  EXPECT_THAT([&] { add(a, b); }, ThrowsMessage<Error>(AllOf(HasSubstr("add"), HasSubstr("[4, 8]"),
                                                             HasSubstr("[4, 7]"))));
  EXPECT_THAT([&] { mul(a, b); }, ThrowsMessage<Error>(AllOf(HasSubstr("mul"), HasSubstr("[4, 8]"),
                                                             HasSubstr("[4, 7]"))));
  // add has three scales: the two-scale constraint is rejected, naming the op.
  EXPECT_THAT([&] { add(a, a, {.constraint = Constraint::kToGradInputScale}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("add"), HasSubstr("to_grad_input_scale"))));
  EXPECT_THAT(
      [&] {
        g.apply1(kAddOp, std::vector<Value>{a, a}, add_attrs("bogus"));
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("add"), HasSubstr("bogus"))));
  EXPECT_THAT([&] { scale(a, std::numeric_limits<double>::infinity(), 1.0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("scale"), HasSubstr("alpha"))));
}

}  // namespace
}  // namespace unitscale

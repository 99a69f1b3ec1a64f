#include "unitscale/ops/softmax.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../support/accuracy.hpp"
#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes softmax_attrs(double mult, std::string_view constraint = "to_output_scale") {
  return {{"mult", mult}, {"constraint", std::string(constraint)}};
}

TEST(SoftmaxGradcheck, ShapesAndMults) {
  std::mt19937 rng(1);
  for (const double mult : {0.25, 1.0, 4.0}) {
    SCOPED_TRACE("m=" + std::to_string(mult));
    testing::gradcheck(kSoftmaxOp, {random_normal({3, 5}, rng)}, softmax_attrs(mult));
    testing::gradcheck(kSoftmaxOp, {random_normal({2, 3, 4}, rng)}, softmax_attrs(mult));
    testing::gradcheck(kSoftmaxOp, {random_normal({7}, rng)}, softmax_attrs(mult));
  }
}

TEST(SoftmaxValues, RowsSumToAlphaAndLargeLogitsDoNotOverflow) {
  Tensor x(Shape{2, 3}, std::vector<float>{1, 2, 3, 1000, 1001, 1002});
  OpRun plain(kSoftmaxOp, {x}, softmax_attrs(1.0));
  plain.forward();
  const double e = std::exp(1.0), total = 1 + e + e * e;
  for (int r = 0; r < 2; ++r) {
    EXPECT_NEAR(plain.output()[3 * r + 0], 1 / total, 1e-7);
    EXPECT_NEAR(plain.output()[3 * r + 2], e * e / total, 1e-7);
  }
  OpRun scaled(kSoftmaxOp, {x}, softmax_attrs(0.5), Scaling::kUnit);
  scaled.forward();
  const double alpha = scaled.attrs().get_double("t", "alpha");
  EXPECT_NEAR(scaled.output()[0] + scaled.output()[1] + scaled.output()[2], alpha, 1e-5 * alpha);
}

// ---------------------------------------------------------------------------------------------
// Accuracy against double precision. The kernels use a vectorised float exp (~2 ulps) and float
// lane sums moved to double every block; both runs go through every SIMD level of this CPU.
// ---------------------------------------------------------------------------------------------

// Rows that stress them: a large common offset, huge and tiny logits, one dominant entry, −∞
// (masked) entries, and exp arguments spread over its whole negative range, including below
// ln(FLT_MIN) where results flush to 0. The lengths leave partial vectors at every lane width.
std::vector<std::vector<float>> hard_rows(std::mt19937& rng) {
  std::vector<std::vector<float>> rows;
  std::normal_distribution<float> normal;
  for (const std::size_t n : {1, 3, 17, 100, 1031}) {
    auto add = [&](auto&& value) {
      std::vector<float> row(n);
      for (std::size_t j = 0; j < n; ++j) row[j] = value(j);
      rows.push_back(std::move(row));
    };
    add([&](std::size_t) { return normal(rng); });
    add([&](std::size_t) { return 1e4f + normal(rng); });
    add([&](std::size_t) { return 30.0f * normal(rng); });
    add([&](std::size_t) { return 1e-30f * normal(rng); });
    add([&](std::size_t j) { return j == n / 2 ? 40.0f : normal(rng); });
    add([&](std::size_t j) { return j % 3 == 1 ? -INFINITY : normal(rng); });
    add([&](std::size_t j) { return -100.0f * static_cast<float>(j) / static_cast<float>(n); });
  }
  return rows;
}

// Forward and backward of softmax on one row, in double from the definition: s = exp(m·x − c)/Σ
// with c the largest m·x; y = α·s, dx = β·m·s⊙(g − Σ s·g).
struct SoftmaxReference {
  std::vector<double> s, y, dx;
  // 1 + |m·x_j − c|: the float kernel must round the exponent m·(x_j − x_top), which costs s_j a
  // relative error of up to ε/2·|exponent| however exact its exp is.
  std::vector<double> condition;
  std::vector<double> dx_terms;  // β·m·(|g_j| + Σ s·|g|): dx_j's size is s_j·dx_terms_j
};

SoftmaxReference reference_softmax(const std::vector<float>& x, const Tensor& g, double mult,
                                   double alpha, double beta) {
  const std::size_t n = x.size();
  double top = -INFINITY;
  for (const float v : x) top = std::max(top, mult * v);
  SoftmaxReference ref;
  double sum = 0;
  for (const float v : x) {
    ref.s.push_back(std::exp(mult * v - top));
    sum += ref.s.back();
    ref.condition.push_back(1.0 + std::abs(mult * v - top));
  }
  double s_dot_g = 0, s_dot_abs_g = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const double gj = g[static_cast<std::int64_t>(j)];
    s_dot_g += (ref.s[j] /= sum) * gj;
    s_dot_abs_g += ref.s[j] * std::abs(gj);
  }
  for (std::size_t j = 0; j < n; ++j) {
    const double gj = g[static_cast<std::int64_t>(j)];
    ref.y.push_back(alpha * ref.s[j]);
    ref.dx.push_back(beta * mult * ref.s[j] * (gj - s_dot_g));
    ref.dx_terms.push_back(beta * mult * (std::abs(gj) + s_dot_abs_g));
  }
  return ref;
}

TEST(SoftmaxAccuracy, ForwardAndBackwardMatchDoublePrecisionOnHardRows) {
  std::mt19937 rng(5);
  const auto rows = hard_rows(rng);
  constexpr float kAlpha = 3.0f, kBeta = 0.5f;
  // |error| ≤ kTolerance·condition·|term| + kFlushFloor·(its scale), with |term| = α·s_j for y
  // and s_j·dx_terms_j for dx. kTolerance is about 16 float ulps (the kernels reach ~3); rounding
  // m·x before subtracting the row maximum (m·x − max(m·x) instead of m·(x − x_top)) errs by 1e-4
  // on the 1e4-offset rows at m = 0.3. kFlushFloor allows the exp results below FLT_MIN that are
  // flushed to 0 (the probability that multiplies the scale is then below FLT_MIN).
  constexpr double kTolerance = 1e-6;
  constexpr double kFlushFloor = 2 * FLT_MIN;
  testing::for_each_simd_level([&] {
    testing::WorstError y_error, dx_error;
    for (const float mult : {1.0f, 0.3f, 4.0f}) {
      for (std::size_t r = 0; r < rows.size(); ++r) {
        const auto n = static_cast<std::int64_t>(rows[r].size());
        const Tensor x(Shape{1, n}, rows[r]), g = random_normal({1, n}, rng);
        Tensor y(Shape{1, n}), dx(Shape{1, n});
        softmax_forward(x, y, mult, kAlpha);
        softmax_backward(g, y, dx, mult, kAlpha, kBeta);
        const SoftmaxReference ref = reference_softmax(rows[r], g, mult, kAlpha, kBeta);
        for (std::int64_t j = 0; j < n; ++j) {
          const auto k = static_cast<std::size_t>(j);
          auto where = [&] { return fmt::format("m={} row {} (n={}) j={}", mult, r, n, j); };
          // Normalised so that 1 is the bound.
          const double bound_s = kTolerance * ref.condition[k] * ref.s[k] + kFlushFloor;
          y_error.update(y[j], ref.y[k], kAlpha * bound_s, where);
          dx_error.update(dx[j], ref.dx[k], ref.dx_terms[k] * bound_s, where);
        }
      }
    }
    EXPECT_LE(y_error.error, 1.0) << y_error.where;
    EXPECT_LE(dx_error.error, 1.0) << dx_error.where;
  });
}

double scale_attr(std::int64_t n, double mult, std::string_view constraint, const char* name) {
  OpRun run(kSoftmaxOp, {Tensor(Shape{2, n})}, softmax_attrs(mult, constraint), Scaling::kUnit);
  return run.attrs().get_double("t", name);
}

// The rules' constants at the defaults (docs/unit_scaling.md). The table gives each rule's own
// value, i.e. constraint none; at m = 1 the two coincide (n^0.9), so the constraint does not matter
// there.
TEST(SoftmaxScales, SpecConstants) {
  const std::pair<std::int64_t, double> at_m1[] = {
      {64, 42.2243}, {256, 147.0334}, {1024, 512.0}, {4096, 1782.888}};
  for (const auto& [n, value] : at_m1) {
    for (const char* constraint : {"none", "to_output_scale"}) {
      EXPECT_NEAR(scale_attr(n, 1.0, constraint, "alpha"), value, 5e-4) << n;
      EXPECT_NEAR(scale_attr(n, 1.0, constraint, "beta_x"), value, 5e-4) << n;
    }
  }
  EXPECT_DOUBLE_EQ(scale_attr(1024, 1.0, "none", "alpha"), 512.0);
  EXPECT_NEAR(scale_attr(1024, 0.25, "none", "alpha"), 970.831, 5e-4);
  EXPECT_NEAR(scale_attr(1024, 0.25, "none", "beta_x"), 3842.134, 5e-4);
  // The default constraint sets β to α.
  EXPECT_NEAR(scale_attr(1024, 0.25, "to_output_scale", "beta_x"), 970.831, 5e-4);
  EXPECT_NEAR(scale_attr(1024, 0.25, "to_grad_input_scale", "alpha"), 3842.134, 5e-4);
}

TEST(SoftmaxScales, ScaledEqualsScalesTimesUnscaled) {
  std::mt19937 rng(2);
  const Tensor x = random_normal({6, 32}, rng), g = random_normal({6, 32}, rng);
  for (const char* constraint : {"to_output_scale", "none"}) {
    SCOPED_TRACE(constraint);
    OpRun plain(kSoftmaxOp, {x}, softmax_attrs(0.25, constraint), Scaling::kUnscaled);
    OpRun scaled(kSoftmaxOp, {x}, softmax_attrs(0.25, constraint), Scaling::kUnit);
    plain.forward();
    scaled.forward();
    const double alpha = scaled.attrs().get_double("t", "alpha"),
                 beta = scaled.attrs().get_double("t", "beta_x");
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i],
                  1e-6 * alpha * std::abs(plain.output()[i]));
    }
    const auto gp = plain.backward({g}), gs = scaled.backward({g});
    double max_grad = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i)
      max_grad = std::max(max_grad, std::abs(double((*gp[0])[i])));
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_NEAR((*gs[0])[i], beta * (*gp[0])[i], 1e-5 * beta * max_grad);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics (targets measured with the unit-scaling reference library, arXiv 2303.11257): the rule
// is accurate for small m, so the test is at m = ¼ over four sizes: output RMS and gradient RMS 1 ±
// 0.1 with constraint none. Inputs and output gradients are N(0,1); each case uses 2^18 elements.
// ---------------------------------------------------------------------------------------------
struct Measured {
  double out_rms, grad_rms;
};

Measured measure(std::int64_t n, double mult, std::string_view constraint) {
  std::mt19937 rng(3);
  const Shape shape{(std::int64_t{1} << 18) / n, n};
  OpRun run(kSoftmaxOp, {random_normal(shape, rng)}, softmax_attrs(mult, constraint),
            Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(shape, rng)});
  return {testing::rms_of(run.output().span()), testing::rms_of(grads[0]->span())};
}

class SoftmaxStatistics : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(SoftmaxStatistics, UnitAtQuarterMultWithNone) {
  const Measured m = measure(GetParam(), 0.25, "none");
  EXPECT_NEAR(m.out_rms, 1.0, 0.1);
  EXPECT_NEAR(m.grad_rms, 1.0, 0.1);
}

// to_output_scale: the output stays unit, the gradient becomes the closed form α/β (±10%).
TEST_P(SoftmaxStatistics, DefaultConstraintGradientIsAlphaOverBeta) {
  const std::int64_t n = GetParam();
  const Measured m = measure(n, 0.25, "to_output_scale");
  const double ratio = scale_attr(n, 0.25, "none", "alpha") / scale_attr(n, 0.25, "none", "beta_x");
  EXPECT_NEAR(m.out_rms, 1.0, 0.1);
  EXPECT_NEAR(m.grad_rms, ratio, 0.1 * ratio);
}

INSTANTIATE_TEST_SUITE_P(Sizes, SoftmaxStatistics, ::testing::Values(64, 256, 1024, 4096),
                         [](const auto& test_info) {
                           std::string name = "n";
                           name += std::to_string(test_info.param);
                           return name;
                         });

// The known model error at m = 1 (spec §5): at n = 1024 the reference measures output RMS 0.828 /
// 0.832 and gradient RMS 0.826 / 0.803 (default / none), not 1: we reproduce it, not hide it.
TEST(SoftmaxStatistics, KnownModelErrorAtMultOne) {
  const Measured by_default = measure(1024, 1.0, "to_output_scale");
  const Measured none = measure(1024, 1.0, "none");
  EXPECT_NEAR(by_default.out_rms, 0.828, 0.1 * 0.828);
  EXPECT_NEAR(by_default.grad_rms, 0.826, 0.1 * 0.826);
  EXPECT_NEAR(none.out_rms, 0.832, 0.1 * 0.832);
  EXPECT_NEAR(none.grad_rms, 0.803, 0.1 * 0.803);
  EXPECT_LT(by_default.out_rms, 0.9);  // the model really is off at m = 1
}

// ---------------------------------------------------------------------------------------------
// Builder and graph integration
// ---------------------------------------------------------------------------------------------
TEST(SoftmaxBuilder, RecordsMultAndConstraint) {
  Graph g;
  const Value x = g.input("x", {8, 1024});
  const Value y = softmax(x, {.mult = 0.25, .constraint = Constraint::kNone});
  EXPECT_EQ(y.shape(), (Shape{8, 1024}));
  const Attributes& attrs = g.nodes().back().attrs;
  EXPECT_DOUBLE_EQ(attrs.get_double("t", "mult"), 0.25);
  EXPECT_EQ(attrs.get_enum_name("t", "constraint"), "none");
  EXPECT_NEAR(attrs.get_double("t", "beta_x"), 3842.134, 5e-4);
}

// Autodiff (the backward reads only the output) equals the kernel's backward.
TEST(SoftmaxBuilder, AutodiffMatchesKernel) {
  std::mt19937 rng(4);
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {1, 8}), w = g.parameter("w", {1, 8});
  const Value loss = linear(softmax(x, {.mult = 2.0}), w);
  const Value wrt[] = {x};
  const Value grad = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {grad};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({1, 8}, rng), wt = random_normal({1, 8}, rng);
  exec.bind(x, xt);
  exec.bind(w, wt);
  exec.run();
  OpRun run(kSoftmaxOp, {xt}, softmax_attrs(2.0));
  run.forward();
  const auto expected = run.backward({wt});
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(exec.get(grad).data()[i], (*expected[0])[i]);
}

TEST(SoftmaxErrors, MessagesNameTheOp) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  EXPECT_THAT([&] { softmax(g.input("s", {})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("softmax"), HasSubstr("[]"))));
  EXPECT_THAT(
      [&] {
        softmax(g.input("e", {4, 0}));
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("softmax"), HasSubstr("[4, 0]"))));
  EXPECT_THAT([&] { softmax(x, {.mult = -0.5}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("softmax"), HasSubstr("mult"))));
  EXPECT_THAT([&] { softmax(x, {.constraint = Constraint::kToRightGradScale}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("softmax"), HasSubstr("to_right_grad_scale"))));
  EXPECT_THAT([&] { g.apply1(kSoftmaxOp, std::vector<Value>{x}, softmax_attrs(1.0, "max")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("softmax"), HasSubstr("max"))));
  Graph unscaled(Scaling::kUnscaled);  // shape checks do not depend on the scaling mode
  EXPECT_THAT([&] { softmax(unscaled.input("s", {})); },
              ThrowsMessage<Error>(HasSubstr("softmax")));
}

}  // namespace
}  // namespace unitscale

#include "unitscale/ops/activation.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes gelu_attrs(double mult, std::string_view approximate = "none",
                      std::string_view constraint = "to_output_scale") {
  return {{"mult", mult},
          {"approximate", std::string(approximate)},
          {"constraint", std::string(constraint)}};
}
Attributes silu_attrs(double mult, std::string_view constraint = "to_output_scale") {
  return {{"mult", mult}, {"constraint", std::string(constraint)}};
}
Attributes silu_glu_attrs(double mult) { return {{"mult", mult}}; }

const double kMults[] = {0.25, 1.0, 4.0};

// ReLU's kink is not differentiable: keep the inputs at least 0.1 away from it.
Tensor away_from_zero(Tensor t) {
  for (float& v : t.span()) v = v < 0 ? std::min(v, -0.1f) : std::max(v, 0.1f);
  return t;
}

TEST(ActivationGradcheck, Relu) {
  std::mt19937 rng(1);
  testing::gradcheck(kReluOp, {away_from_zero(random_normal({4, 6}, rng))}, {});
}

TEST(ActivationGradcheck, GeluExactAndTanhAtEachMult) {
  std::mt19937 rng(2);
  for (const double mult : kMults) {
    for (const char* approximate : {"none", "tanh"}) {
      SCOPED_TRACE(std::string(approximate) + " m=" + std::to_string(mult));
      testing::gradcheck(kGeluOp, {random_normal({3, 7}, rng)}, gelu_attrs(mult, approximate));
    }
  }
}

TEST(ActivationGradcheck, SiluAndSiluGluAtEachMult) {
  std::mt19937 rng(3);
  for (const double mult : kMults) {
    SCOPED_TRACE("m=" + std::to_string(mult));
    testing::gradcheck(kSiluOp, {random_normal({3, 7}, rng)}, silu_attrs(mult));
    testing::gradcheck(kSiluGluOp, {random_normal({2, 9}, rng), random_normal({2, 9}, rng)},
                       silu_glu_attrs(mult));
  }
}

// The forward values themselves, against the textbook formulas.
TEST(ActivationValues, MatchDefinitions) {
  const Tensor x(Shape{5}, std::vector<float>{-2.0f, -0.5f, 0.0f, 0.7f, 3.0f});
  auto run = [&](const OpDef& op, const Attributes& attrs) {
    OpRun r(op, {x}, attrs);
    r.forward();
    return r.output();
  };
  const Tensor relu_y = run(kReluOp, {}), gelu_y = run(kGeluOp, gelu_attrs(2.0)),
               tanh_y = run(kGeluOp, gelu_attrs(2.0, "tanh")),
               silu_y = run(kSiluOp, silu_attrs(2.0));
  for (int i = 0; i < 5; ++i) {
    const double v = x[i], z = 2 * v;
    EXPECT_FLOAT_EQ(relu_y[i], static_cast<float>(std::max(v, 0.0)));
    EXPECT_NEAR(gelu_y[i], 0.5 * z * (1 + std::erf(z / std::sqrt(2.0))) / 2, 1e-6);  // gelu(2x)/2
    const double u = std::sqrt(2 / std::numbers::pi) * (z + 0.044715 * z * z * z);
    EXPECT_NEAR(tanh_y[i], 0.5 * z * (1 + std::tanh(u)) / 2, 1e-6);
    EXPECT_NEAR(silu_y[i], v / (1 + std::exp(-z)), 1e-6);
  }
}

// The rules' constants at the defaults (docs/unit_scaling.md) (raw rule values, before the
// constraint).
double scale_attr(const OpDef& op, const Attributes& attrs, const char* name, int inputs = 1) {
  std::vector<std::optional<Tensor>> tensors(static_cast<std::size_t>(inputs), Tensor(Shape{2}));
  OpRun run(op, tensors, attrs, Scaling::kUnit);
  return run.attrs().get_double("t", name);
}

TEST(ActivationScales, SpecConstants) {
  struct Expected {
    double mult, alpha, beta;
  };
  for (const Expected& e : {Expected{1.0, 1.766783, 1.515717}, Expected{0.25, 1.938958, 1.866066},
                            Expected{4.0, 1.716947, 1.421774}}) {
    EXPECT_NEAR(scale_attr(kGeluOp, gelu_attrs(e.mult, "none", "none"), "alpha"), e.alpha, 5e-7)
        << e.mult;
    EXPECT_NEAR(scale_attr(kGeluOp, gelu_attrs(e.mult, "none", "none"), "beta_x"), e.beta, 5e-7)
        << e.mult;
  }
  EXPECT_DOUBLE_EQ(scale_attr(kGeluOp, gelu_attrs(1.0, "none", "none"), "beta_x"),
                   std::pow(2.0, 0.6));
  EXPECT_NEAR(scale_attr(kSiluOp, silu_attrs(1.0, "none"), "alpha"), 1.766783, 5e-7);
  EXPECT_DOUBLE_EQ(scale_attr(kSiluOp, silu_attrs(1.0, "none"), "beta_x"), std::pow(2.0, 0.75));
  for (const auto& [mult, s] :
       {std::pair{0.25, 1.959639}, std::pair{1.0, 1.681793}, std::pair{4.0, 1.443341}}) {
    for (const char* name : {"alpha", "beta_x", "beta_gate"}) {
      EXPECT_NEAR(scale_attr(kSiluGluOp, silu_glu_attrs(mult), name, 2), s, 5e-7)
          << mult << " " << name;
    }
  }
  // The tanh approximation uses the exact form's scales; the default constraint sets β = α.
  EXPECT_DOUBLE_EQ(scale_attr(kGeluOp, gelu_attrs(1.0, "tanh", "none"), "alpha"),
                   scale_attr(kGeluOp, gelu_attrs(1.0, "none", "none"), "alpha"));
  EXPECT_DOUBLE_EQ(scale_attr(kGeluOp, gelu_attrs(1.0), "beta_x"),
                   scale_attr(kGeluOp, gelu_attrs(1.0), "alpha"));
}

// Scaled outputs are α × unscaled and scaled gradients β × unscaled.
void expect_scaled_is_scales_times_unscaled(const OpDef& op, const std::vector<Shape>& shapes,
                                            const Attributes& attrs) {
  std::mt19937 rng(4);
  std::vector<std::optional<Tensor>> inputs;
  for (const Shape& s : shapes) inputs.emplace_back(random_normal(s, rng));
  const Tensor g = random_normal(shapes[0], rng);
  OpRun plain(op, inputs, attrs, Scaling::kUnscaled), scaled(op, inputs, attrs, Scaling::kUnit);
  plain.forward();
  scaled.forward();
  const double alpha = scaled.attrs().get_double("t", "alpha");
  for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
    EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i],
                1e-6 * (1 + std::abs(plain.output()[i])));
  }
  const auto gp = plain.backward({g}), gs = scaled.backward({g});
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const double beta = scaled.attrs().get_double("t", "beta_" + std::string(op.input_name(k)));
    for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
      EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-5 * (1 + std::abs((*gp[k])[i])));
    }
  }
}

TEST(ActivationScales, ScaledEqualsScalesTimesUnscaled) {
  for (const char* constraint : {"to_output_scale", "none"}) {
    SCOPED_TRACE(constraint);
    expect_scaled_is_scales_times_unscaled(kGeluOp, {{8, 16}}, gelu_attrs(0.5, "none", constraint));
    expect_scaled_is_scales_times_unscaled(kGeluOp, {{8, 16}}, gelu_attrs(2.0, "tanh", constraint));
    expect_scaled_is_scales_times_unscaled(kSiluOp, {{8, 16}}, silu_attrs(3.0, constraint));
  }
  expect_scaled_is_scales_times_unscaled(kSiluGluOp, {{8, 16}, {8, 16}}, silu_glu_attrs(0.5));
}

// ---------------------------------------------------------------------------------------------
// Statistics (targets measured with the unit-scaling reference library, arXiv 2303.11257): N(0,1)
// inputs and output gradients, 2^16 elements.
// ---------------------------------------------------------------------------------------------
struct Measured {
  double out, grad, grad_gate = 0;
};

Measured measure(const OpDef& op, const Attributes& attrs, int inputs = 1, unsigned seed = 5) {
  std::mt19937 rng(seed);
  std::vector<std::optional<Tensor>> tensors;
  for (int i = 0; i < inputs; ++i) tensors.emplace_back(random_normal({256, 256}, rng));
  OpRun run(op, tensors, attrs, Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal({256, 256}, rng)});
  return {testing::std_of(run.output().span()), testing::std_of(grads[0]->span()),
          inputs > 1 ? testing::std_of(grads[1]->span()) : 0.0};
}

// ±0.1 for targets ≥ 1 (and unit ones), ±10% relative below 1.
double tolerance(double target) { return target < 1 ? 0.1 * target : 0.1; }

// The raw (unconstrained) rule values, for the closed forms of the constrained variants.
double raw_scale(const OpDef& op, double mult, const char* name) {
  return op.name == std::string_view("gelu")
             ? scale_attr(op, gelu_attrs(mult, "none", "none"), name)
             : scale_attr(op, silu_attrs(mult, "none"), name);
}

TEST(ActivationStatistics, GeluSpecTargets) {
  // default / none / gmean: output 1.034 / 1.036 / 0.961, gradient 1.201 / 1.024 / 1.105.
  const Measured by_default = measure(kGeluOp, gelu_attrs(1.0));
  const Measured none = measure(kGeluOp, gelu_attrs(1.0, "none", "none"));
  const Measured gmean = measure(kGeluOp, gelu_attrs(1.0, "none", "gmean"));
  const Measured to_grad = measure(kGeluOp, gelu_attrs(1.0, "none", "to_grad_input_scale"));
  EXPECT_NEAR(by_default.out, 1.034, 0.1);
  EXPECT_NEAR(by_default.grad, 1.201, 0.1);
  EXPECT_NEAR(by_default.grad, 1.766783 / 1.515717, 0.1);  // closed form α/β_true ≈ 1.17
  EXPECT_NEAR(none.out, 1.036, 0.1);
  EXPECT_NEAR(none.grad, 1.024, 0.1);
  EXPECT_NEAR(gmean.out, 0.961, tolerance(0.961));
  EXPECT_NEAR(gmean.grad, 1.105, 0.1);
  EXPECT_NEAR(gmean.out * gmean.grad, 1.0, 0.1);
  EXPECT_NEAR(to_grad.grad, 1.0, 0.1);
  EXPECT_NEAR(to_grad.out, 1.515717 / 1.766783, tolerance(1.515717 / 1.766783));  // β/α_true
}

TEST(ActivationStatistics, SiluSpecTargets) {
  // default / none: output 0.987 / 0.988, gradient 1.083 / 1.029.
  const Measured by_default = measure(kSiluOp, silu_attrs(1.0));
  const Measured none = measure(kSiluOp, silu_attrs(1.0, "none"));
  EXPECT_NEAR(by_default.out, 0.987, tolerance(0.987));
  EXPECT_NEAR(by_default.grad, 1.083, 0.1);
  EXPECT_NEAR(by_default.grad, 1.766783 / std::pow(2.0, 0.75), 0.1);  // closed form α/β
  EXPECT_NEAR(none.out, 0.988, tolerance(0.988));
  EXPECT_NEAR(none.grad, 1.029, 0.1);
}

TEST(ActivationStatistics, SiluGluSpecTargets) {
  // output 0.999, x gradient 0.986, gate gradient 1.03.
  const Measured m = measure(kSiluGluOp, silu_glu_attrs(1.0), 2);
  EXPECT_NEAR(m.out, 0.999, tolerance(0.999));
  EXPECT_NEAR(m.grad, 0.986, tolerance(0.986));
  EXPECT_NEAR(m.grad_gate, 1.03, 0.1);
}

// Every mult and constraint (spec §5): none ⇒ output and gradient unit; to_output_scale ⇒ output
// unit and gradient α/β (the closed form, α and β the unconstrained rule values);
// to_grad_input_scale ⇒ gradient unit and output β/α; gmean ⇒ their product ≈ 1.
struct Case {
  const OpDef* op;
  const char* approximate;
  double mult;
};

class ActivationMults : public ::testing::TestWithParam<Case> {};

Attributes case_attrs(const Case& c, const char* constraint) {
  return c.op == &kGeluOp ? gelu_attrs(c.mult, c.approximate, constraint)
                          : silu_attrs(c.mult, constraint);
}

TEST_P(ActivationMults, UnitUnderEachConstraint) {
  const Case& c = GetParam();
  const Measured none = measure(*c.op, case_attrs(c, "none"));
  EXPECT_NEAR(none.out, 1.0, 0.1);
  EXPECT_NEAR(none.grad, 1.0, 0.1);

  const double alpha = raw_scale(*c.op, c.mult, "alpha"), beta = raw_scale(*c.op, c.mult, "beta_x");
  const Measured by_default = measure(*c.op, case_attrs(c, "to_output_scale"));
  EXPECT_NEAR(by_default.out, 1.0, 0.1);
  EXPECT_NEAR(by_default.grad, alpha / beta, tolerance(alpha / beta));
  const Measured to_grad = measure(*c.op, case_attrs(c, "to_grad_input_scale"));
  EXPECT_NEAR(to_grad.grad, 1.0, 0.1);
  EXPECT_NEAR(to_grad.out, beta / alpha, tolerance(beta / alpha));
  const Measured gmean = measure(*c.op, case_attrs(c, "gmean"));
  EXPECT_NEAR(gmean.out * gmean.grad, 1.0, 0.1);
}

INSTANTIATE_TEST_SUITE_P(
    Mults, ActivationMults,
    ::testing::Values(Case{&kGeluOp, "none", 0.25}, Case{&kGeluOp, "none", 1.0},
                      Case{&kGeluOp, "none", 4.0}, Case{&kGeluOp, "tanh", 0.25},
                      Case{&kGeluOp, "tanh", 1.0}, Case{&kGeluOp, "tanh", 4.0},
                      Case{&kSiluOp, "", 0.25}, Case{&kSiluOp, "", 1.0}, Case{&kSiluOp, "", 4.0}),
    [](const auto& test_info) {
      const Case& c = test_info.param;
      const std::string mult =
          c.mult == 0.25 ? "quarter" : std::to_string(static_cast<int>(c.mult));
      return std::string(c.op->name) + (c.approximate[0] ? std::string("_") + c.approximate : "") +
             "_m" + mult;
    });

TEST(ActivationStatistics, SiluGluUnitAtEachMult) {
  for (const double mult : kMults) {
    const Measured m = measure(kSiluGluOp, silu_glu_attrs(mult), 2);
    EXPECT_NEAR(m.out, 1.0, 0.1) << mult;
    EXPECT_NEAR(m.grad, 1.0, 0.1) << mult;
    EXPECT_NEAR(m.grad_gate, 1.0, 0.1) << mult;
  }
}

// relu has no rule: unscaled even in a unit-scaled graph, with the ReLU limit's closed forms.
TEST(ActivationStatistics, ReluIsUnscaled) {
  const Measured m = measure(kReluOp, {});
  const double out_std = std::sqrt((1 - std::numbers::inv_pi) / 2), grad_std = std::sqrt(0.5);
  EXPECT_NEAR(m.out, out_std, tolerance(out_std));
  EXPECT_NEAR(m.grad, grad_std, tolerance(grad_std));
  OpRun run(kReluOp, {Tensor(Shape{3})}, {}, Scaling::kUnit);
  EXPECT_FALSE(run.attrs().has("alpha"));
}

// ---------------------------------------------------------------------------------------------
// Accuracy against double precision. gelu, silu and silu_glu run on vectorised kernels with their
// own exp and normal tail function (src/ops/activation_kernels.inl), one per instruction set;
// every level this CPU supports is checked over a wide range of inputs, including the tails.
// ---------------------------------------------------------------------------------------------

// A dense grid over [-20, 20] (where every function and its tails vary), a few values in every
// binade from 2^-40 to 2^40 of either sign, and the edges: ±0, the smallest subnormal, FLT_MIN,
// FLT_MAX and the points where exp and σ saturate. An odd count, so that the kernels' tails run.
std::vector<float> accuracy_inputs() {
  std::vector<float> xs;
  for (int i = -20 * 128; i <= 20 * 128; ++i) xs.push_back(static_cast<float>(i) / 128);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  for (int e = -40; e <= 40; ++e) {
    for (int k = 0; k < 8; ++k) {
      const float v = std::ldexp(mantissa(rng), e);
      xs.insert(xs.end(), {v, -v});
    }
  }
  for (const float v : {0.0f, std::numeric_limits<float>::denorm_min(),
                        std::numeric_limits<float>::min(), std::numeric_limits<float>::max(), 12.0f,
                        13.2f, 14.5f, 16.0f, 88.72f, 103.9f, 105.0f, 1e30f}) {
    xs.insert(xs.end(), {v, -v});
  }
  if (xs.size() % 2 == 0) xs.push_back(0.3f);
  return xs;
}

// The exact result, and the scale its rounding error is measured against: |value| for products;
// for the gradients, which are sums crossing zero, the sum of the terms' magnitudes.
struct Exact {
  double value, scale;
};

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::numbers::sqrt2); }
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * std::numbers::pi); }
double logistic(double t) {
  return t >= 0 ? 1 / (1 + std::exp(-t)) : std::exp(t) / (1 + std::exp(t));
}

// The largest error of actual[i] against exact(i, 0), in units of 2^-24 · scale, beyond
// argument_units · cond: the kernel's argument (m·x, or u of the tanh form) carries that many units
// of rounding, which the result amplifies by cond, its relative sensitivity to the argument
// (exact(i, p) evaluates with the argument scaled by 1 + p). Results below FLT_MIN need only be
// that close absolutely, and results beyond FLT_MAX must be inf. `where` describes the worst case.
template <class ExactAt>
double excess_error(std::span<const float> xs, std::span<const float> actual, ExactAt exact,
                    double argument_units, std::string& where) {
  constexpr double kUnit = 0x1p-24, kStep = 1e-6;
  constexpr double kTiny = std::numeric_limits<float>::min();
  double worst = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const Exact e = exact(i, 0.0);
    const double got = actual[i];
    double excess;
    if (std::abs(e.value) > std::numeric_limits<float>::max()) {
      excess = std::isinf(got) && (got > 0) == (e.value > 0) ? 0 : HUGE_VAL;
    } else if (!std::isfinite(got)) {
      excess = HUGE_VAL;
    } else {
      const double error = std::abs(got - e.value);
      if (error <= kTiny) continue;
      const double cond =
          std::abs(exact(i, kStep).value - exact(i, -kStep).value) / (2 * kStep * e.scale);
      excess = (error - kTiny) / (kUnit * e.scale) - argument_units * cond;
    }
    if (excess > worst) {
      worst = excess;
      where = fmt::format("x = {} got {} want {}", xs[i], got, e.value);
    }
  }
  return worst;
}

TEST(ActivationAccuracy, MatchesDoublePrecisionAtEverySimdLevel) {
  const std::vector<float> xs = accuracy_inputs();
  const auto n = static_cast<std::int64_t>(xs.size());
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> magnitude(0.5f, 2.0f);
  std::vector<float> gs(xs.size());
  for (float& g : gs) g = rng() % 2 ? magnitude(rng) : -magnitude(rng);
  const Tensor x(Shape{n}, xs), g(Shape{n}, gs);  // g: the output gradient, and silu_glu's x
  const double alpha = 0.75f, beta = 0.625f;
  constexpr double kTanhArgumentUnits = 4;  // u = 2√(2/π)·(z + 0.044715·z³): a few roundings
  // The largest excess error, in units of 2^-24 (half an ulp at the top of a binade); the kernels
  // reach 6. A wrong coefficient or a lost term costs thousands.
  constexpr double kLimit = 8;
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    detail::force_simd_level(level);
    for (const float mult : {1.0f, 0.25f, 4.0f, 1.7f}) {
      SCOPED_TRACE(fmt::format("{} m={}", detail::simd_level_name(level), mult));
      const double m = mult;
      const double z_units = mult == 1.7f ? 1 : 0;  // m·x is exact for powers of two
      std::string where;
      auto expect_within = [&](std::span<const float> actual, auto exact, double units,
                               double limit, const char* what) {
        const double excess = excess_error(xs, actual, exact, units, where);
        EXPECT_LE(excess, limit) << what << ": " << where;
      };
      Tensor y(Shape{n}), dx(Shape{n}), dgate(Shape{n});

      gelu_forward(x, y, mult, GeluApproximation::kNone, static_cast<float>(alpha));
      gelu_backward(g, x, dx, mult, GeluApproximation::kNone, static_cast<float>(beta));
      expect_within(
          y.span(),
          [&](std::size_t i, double p) {
            const double v = alpha * xs[i] * normal_cdf(m * xs[i] * (1 + p));
            return Exact{v, std::abs(v)};
          },
          z_units, kLimit, "gelu");
      expect_within(
          dx.span(),
          [&](std::size_t i, double p) {
            const double z = m * xs[i] * (1 + p), phi = normal_cdf(z), zpdf = z * normal_pdf(z);
            return Exact{beta * gs[i] * (phi + zpdf),
                         std::abs(beta * gs[i]) * (phi + std::abs(zpdf))};
          },
          z_units, kLimit, "gelu backward");

      // The tanh form, through the stable σ(2u) = ½(1 + tanh u).
      gelu_forward(x, y, mult, GeluApproximation::kTanh, static_cast<float>(alpha));
      gelu_backward(g, x, dx, mult, GeluApproximation::kTanh, static_cast<float>(beta));
      auto two_u = [&](std::size_t i, double p) {
        const double z = m * xs[i];
        return 2 * std::sqrt(2 / std::numbers::pi) * (z + 0.044715 * z * z * z) * (1 + p);
      };
      expect_within(
          y.span(),
          [&](std::size_t i, double p) {
            const double v = alpha * xs[i] * logistic(two_u(i, p));
            return Exact{v, std::abs(v)};
          },
          kTanhArgumentUnits + z_units, kLimit, "gelu tanh");
      expect_within(
          dx.span(),
          [&](std::size_t i, double p) {
            const double z = m * xs[i], s = logistic(two_u(i, p)), c = logistic(-two_u(i, p));
            // ½x(1 − tanh² u)·du/dx with 1 − tanh² u = 4σ(2u)σ(−2u); 0 where σ saturates.
            const double slope = s * c == 0 ? 0
                                            : 2 * s * c * std::sqrt(2 / std::numbers::pi) * z *
                                                  (1 + 0.134145 * z * z);
            return Exact{beta * gs[i] * (s + slope),
                         std::abs(beta * gs[i]) * (s + std::abs(slope))};
          },
          kTanhArgumentUnits + z_units, kLimit, "gelu tanh backward");

      silu_forward(x, y, mult, static_cast<float>(alpha));
      silu_backward(g, x, dx, mult, static_cast<float>(beta));
      expect_within(
          y.span(),
          [&](std::size_t i, double p) {
            const double v = alpha * xs[i] * logistic(m * xs[i] * (1 + p));
            return Exact{v, std::abs(v)};
          },
          z_units, kLimit, "silu");
      expect_within(
          dx.span(),
          [&](std::size_t i, double p) {
            const double z = m * xs[i] * (1 + p), s = logistic(z), zc = z * logistic(-z);
            return Exact{beta * gs[i] * s * (1 + zc),
                         std::abs(beta * gs[i]) * s * (1 + std::abs(zc))};
          },
          z_units, kLimit, "silu backward");

      // silu_glu with the inputs as the gate and g as x (and as the output gradient).
      silu_glu_forward(g, x, y, mult, static_cast<float>(alpha));
      silu_glu_backward(g, g, x, dx, dgate, mult, static_cast<float>(beta),
                        static_cast<float>(alpha));
      expect_within(
          y.span(),
          [&](std::size_t i, double p) {
            const double v = alpha * gs[i] * xs[i] * logistic(m * xs[i] * (1 + p));
            return Exact{v, std::abs(v)};
          },
          z_units, kLimit, "silu_glu");
      expect_within(
          dx.span(),
          [&](std::size_t i, double p) {
            const double v = beta * gs[i] * xs[i] * logistic(m * xs[i] * (1 + p));
            return Exact{v, std::abs(v)};
          },
          z_units, kLimit, "silu_glu backward, x");
      expect_within(
          dgate.span(),
          [&](std::size_t i, double p) {
            const double z = m * xs[i] * (1 + p), s = logistic(z), zc = z * logistic(-z);
            const double gx = alpha * gs[i] * gs[i];
            return Exact{gx * s * (1 + zc), std::abs(gx) * s * (1 + std::abs(zc))};
          },
          z_units, kLimit, "silu_glu backward, gate");
    }
  }
  detail::force_simd_level(detail::best_simd_level());
}

// At ±inf the gradients take their limits (1 and 0); the outputs follow the formulas, so that
// gelu(−inf) and silu(−inf) are −inf·0 = NaN. NaN propagates everywhere.
TEST(ActivationAccuracy, InfinityAndNan) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const float specials[] = {kInf, -kInf, std::numeric_limits<float>::quiet_NaN()};
  const std::int64_t n = 37;  // through the vector loop and its tail at every level
  Tensor x(Shape{n}), g(Shape{n}), y(Shape{n}), dx(Shape{n}), dgate(Shape{n});
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = specials[i % 3];
    g[i] = 2.0f;
  }
  for (const detail::SimdLevel level : detail::supported_simd_levels()) {
    detail::force_simd_level(level);
    auto expect_pattern = [&](const Tensor& t, float at_inf, float at_minus_inf, const char* what) {
      for (std::int64_t i = 0; i < n; ++i) {
        const float want = i % 3 == 0 ? at_inf : i % 3 == 1 ? at_minus_inf : NAN;
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(t[i])) << what << " at " << x[i] << " got " << t[i];
        } else {
          EXPECT_EQ(t[i], want) << what << " at " << x[i];
        }
      }
    };
    SCOPED_TRACE(detail::simd_level_name(level));
    for (const GeluApproximation approximation :
         {GeluApproximation::kNone, GeluApproximation::kTanh}) {
      SCOPED_TRACE(gelu_approximation_name(approximation));
      gelu_forward(x, y, 1.0f, approximation, 1.0f);
      gelu_backward(g, x, dx, 1.0f, approximation, 1.0f);
      expect_pattern(y, kInf, NAN, "gelu");
      expect_pattern(dx, 2.0f, 0.0f, "gelu backward");
    }
    silu_forward(x, y, 1.0f, 1.0f);
    silu_backward(g, x, dx, 1.0f, 1.0f);
    expect_pattern(y, kInf, NAN, "silu");
    expect_pattern(dx, 2.0f, 0.0f, "silu backward");
    // The specials as the gate; x = g = 2.
    silu_glu_forward(g, x, y, 1.0f, 1.0f);
    silu_glu_backward(g, g, x, dx, dgate, 1.0f, 1.0f, 1.0f);
    expect_pattern(y, kInf, NAN, "silu_glu");
    expect_pattern(dx, kInf, NAN, "silu_glu backward, x");
    expect_pattern(dgate, 4.0f, 0.0f, "silu_glu backward, gate");
  }
  detail::force_simd_level(detail::best_simd_level());
}

// ---------------------------------------------------------------------------------------------
// Builders and graph integration
// ---------------------------------------------------------------------------------------------
TEST(ActivationBuilders, RecordAttributesAndScales) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  gelu(x, {.mult = 4.0, .approximate = GeluApproximation::kTanh});
  const Node& node = g.nodes().back();
  EXPECT_EQ(node.attrs.get_enum_name("t", "approximate"), "tanh");
  EXPECT_NEAR(node.attrs.get_double("t", "alpha"), 1.716947, 5e-7);
  EXPECT_NEAR(node.attrs.get_double("t", "beta_x"), 1.716947, 5e-7);  // to_output_scale
  silu(x, {.constraint = Constraint::kNone});
  EXPECT_DOUBLE_EQ(g.nodes().back().attrs.get_double("t", "beta_x"), std::pow(2.0, 0.75));
  const Value y = silu_glu(x, x, {.mult = 0.25});
  EXPECT_NEAR(g.nodes().back().attrs.get_double("t", "beta_gate"), 1.959639, 5e-7);
  EXPECT_EQ(y.shape(), (Shape{4, 8}));
  relu(x);
  EXPECT_FALSE(g.nodes().back().attrs.has("alpha"));
}

// Autodiff through silu_glu and gelu in an unscaled graph equals the kernels' backward.
TEST(ActivationBuilders, AutodiffMatchesKernels) {
  std::mt19937 rng(6);
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {1, 6}), gate = g.input("gate", {1, 6}),
              w = g.parameter("w", {1, 6});
  const Value loss = linear(gelu(silu_glu(x, gate, {.mult = 2.0}), {.mult = 0.5}), w);
  const Value wrt[] = {x, gate};
  const auto grads = autodiff(g, loss, wrt);
  const Value outputs[] = {grads[0], grads[1]};
  Executor exec(g, outputs);
  const Tensor xt = random_normal({1, 6}, rng), gt = random_normal({1, 6}, rng),
               wt = random_normal({1, 6}, rng);
  exec.bind(x, xt);
  exec.bind(gate, gt);
  exec.bind(w, wt);
  exec.run();

  OpRun glu(kSiluGluOp, {xt, gt}, silu_glu_attrs(2.0));
  glu.forward();
  OpRun act(kGeluOp, {glu.output()}, gelu_attrs(0.5));
  act.forward();
  const auto dh = act.backward({wt});  // ∂(h·wᵀ)/∂h = w
  const auto dglu = glu.backward({*dh[0]});
  for (int i = 0; i < 6; ++i) {
    EXPECT_FLOAT_EQ(exec.get(grads[0]).data()[i], (*dglu[0])[i]);
    EXPECT_FLOAT_EQ(exec.get(grads[1]).data()[i], (*dglu[1])[i]);
  }
}

TEST(ActivationErrors, MessagesNameTheOp) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  EXPECT_THAT([&] { gelu(x, {.mult = 0.0}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("gelu"), HasSubstr("mult"))));
  EXPECT_THAT([&] { silu(x, {.mult = -1.0}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("silu"), HasSubstr("mult"))));
  EXPECT_THAT([&] { silu_glu(x, x, {.mult = std::nan("")}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("silu_glu"), HasSubstr("mult"))));
  EXPECT_THAT(
      [&] {
        silu_glu(x, g.input("gate", {4, 7}));
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("silu_glu"), HasSubstr("[4, 8]"), HasSubstr("[4, 7]"))));
  EXPECT_THAT([&] { g.apply1(kGeluOp, std::vector<Value>{x}, gelu_attrs(1.0, "erf")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("gelu"), HasSubstr("erf"))));
  EXPECT_THAT([&] { g.apply1(kSiluOp, std::vector<Value>{x}, silu_attrs(1.0, "average")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("silu"), HasSubstr("average"))));
  // gelu has two scales: a matmul constraint's arity is rejected, naming the op.
  EXPECT_THAT([&] { gelu(x, {.constraint = Constraint::kToLeftGradScale}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("gelu"), HasSubstr("to_left_grad_scale"))));
  EXPECT_THAT([&] { gelu_approximation_from_name("sigmoid"); },
              ThrowsMessage<Error>(HasSubstr("gelu")));
}

}  // namespace
}  // namespace unitscale

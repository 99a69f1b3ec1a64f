#include "unitscale/ops/activation.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/builders/activation.hpp"
#include "unitscale/graph/builders/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::OpRun;
using testing::random_normal;
using ::testing::ThrowsMessage;

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

// spec/unit_scaling.md §4, "Constants at the defaults" (raw rule values, before the constraint).
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
// Statistics (spec/unit_scaling.md §5): N(0,1) inputs and output gradients, 2^16 elements.
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
// Builders and graph integration
// ---------------------------------------------------------------------------------------------
TEST(ActivationBuilders, RecordAttributesAndScales) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  gelu(x, {.mult = 4.0, .approximate = GeluApproximation::kTanh});
  const Node& node = g.nodes().back();
  EXPECT_EQ(node.attrs.get_string("t", "approximate"), "tanh");
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

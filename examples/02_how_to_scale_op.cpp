// How to unit-scale an op — the reference notebook, ported to C++.
//
// Unit scaling asks every op for two numbers: a forward scale α that makes its output unit-variance
// and a backward scale β that makes its input gradient unit-variance, both under the model
// "inputs and incoming gradients are independent N(0, 1)". The library ships the scales of its own
// ops; this program shows how you would add one it does not have, using hardtanh:
//
//   hardtanh_m(x) = clip(m·x, −1, 1) / m = clip(x, −1/m, 1/m)
//
// The recipe (docs/unit_scaling.md, "Adding an op"):
//   1. Give the nonlinearity a `mult` m, a shape hyperparameter (u-μP's α_ffn-act).
//   2. Measure the unscaled op's output std σ_y and input-gradient std σ_∂x under N(0, 1) inputs
//      and gradients — here through the library itself: a graph, autodiff, the executor.
//   3. Derive them in closed form where you can. With Z = erf(1/(m√2)):
//        σ_y²  = Z + (1 − Z)/m² − √(2/π)·(1/m)·e^(−1/(2m²))
//        σ_∂x² = Z          (the gradient passes where |x| < 1/m, and is zero elsewhere)
//      and set α = 1/σ_y, β = 1/σ_∂x.
//   4. Choose a constraint. Unconstrained (None) scales make both sides unit, but are only safe on
//      a cut edge of the graph; constrained ones (the default ToOutputScale) leave one side off.
//   5. Check the scaled op over a range of mults.
//
// The program prints the measured and closed-form scales over m ∈ 2^[−3, 3], compares the
// constraints at m = 1, and writes the figure hardtanh_scales.svg.
//
//   02_how_to_scale_op [--samples N] [--out DIR] [--smoke] [--help]

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"

namespace us = unitscale;

// ---- Step 1: the op, defined once: shapes, scale rule, forward and backward kernels ----------

namespace {

double hardtanh_output_std(double m) {
  const double z = std::erf(1.0 / (m * std::numbers::sqrt2));
  const double variance = z + (1 - z) / (m * m) -
                          std::sqrt(2 / std::numbers::pi) / m * std::exp(-1 / (2 * m * m));
  return std::sqrt(variance);
}

double hardtanh_grad_std(double m) { return std::sqrt(std::erf(1.0 / (m * std::numbers::sqrt2))); }

std::vector<us::Shape> hardtanh_shapes(std::span<const us::Shape* const> in, const us::Attributes&) {
  return {*in[0]};
}

// The unit-scaling rule: a pure function of the shapes and attributes, run when the node is
// recorded into a unit-scaled graph. It stores the scales as attributes "alpha" and "beta_x".
void hardtanh_unit_scale(std::span<const us::Shape* const>, us::Attributes& attrs) {
  const double m = attrs.get_double("hardtanh", "mult");
  const auto constraint = attrs.get_enum<us::Constraint>("hardtanh", "constraint");
  const std::vector<double> scales =
      us::apply_constraint(constraint, {1 / hardtanh_output_std(m), 1 / hardtanh_grad_std(m)});
  attrs.set("alpha", scales[0]).set("beta_x", scales[1]);
}

void hardtanh_kernel(std::span<const us::ConstTensorView> in, std::span<const us::TensorView> out,
                     const us::Attributes& attrs, const us::KernelContext&) {
  const float bound = static_cast<float>(1 / attrs.get_double("hardtanh", "mult"));
  const float alpha = us::scale_of(attrs, "alpha");
  out[0].vector() = alpha * in[0].vector().cwiseMax(-bound).cwiseMin(bound);
}

// Backward inputs: (x, y, grad_y); output: grad_x (the backward op is derived from the OpDef below).
void hardtanh_backward_kernel(std::span<const us::ConstTensorView> in,
                              std::span<const us::TensorView> out, const us::Attributes& attrs, const us::KernelContext&) {
  const float bound = static_cast<float>(1 / attrs.get_double("hardtanh", "mult"));
  const float beta = us::scale_of(attrs, "beta_x");
  out[0].vector() = (in[0].vector().array().abs() < bound).select(beta * in[2].vector().array(), 0.0f);
}

const us::OpDef kHardtanhOp{
    .name = "hardtanh",
    .inputs = {"x"},
    // Checked when a node is recorded: a misspelt name or a wrong type is an error there.
    .attributes = {us::AttributeSpec::real("mult", us::kRequired),
                   us::AttributeSpec::enumeration<us::Constraint>("constraint", us::kRequired)},
    .scales = {"alpha", "beta_x"},  // what the kernels read; Graph::set_scale accepts only these
    .infer_shapes = hardtanh_shapes,
    .unit_scale = hardtanh_unit_scale,
    .kernel = hardtanh_kernel,
    .backward_kernel = hardtanh_backward_kernel,
    .backward_reads = 0b01,  // only x: the output is not needed for the gradient
};

// The builder user code calls: records a node, checks shapes, returns the output value.
us::Value hardtanh(us::Value x, double mult, us::Constraint constraint = us::Constraint::kToOutputScale) {
  if (!(mult > 0)) throw us::Error(fmt::format("hardtanh: mult must be positive, got {}", mult));
  const us::Value inputs[] = {x};
  return x.graph().apply1(kHardtanhOp, inputs,
                          {{"mult", mult}, {"constraint", constraint}});
}

// ---- Step 2: measure output and gradient std under N(0, 1) inputs and gradients --------------

struct Measured {
  double output_std, grad_std;
};

double std_of(us::ConstTensorView t) {
  const auto v = t.vector().cast<double>();
  const double mean = v.mean();
  return std::sqrt((v.array() - mean).square().mean());
}

Measured measure(double mult, us::Constraint constraint, us::Scaling scaling, std::int64_t samples,
                 unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  us::Tensor x_data({samples}), grad_data({samples});
  for (float& v : x_data.span()) v = normal(rng);
  for (float& v : grad_data.span()) v = normal(rng);

  // loss = Σ y ⊙ g, so the gradient arriving at y is exactly g.
  us::Graph graph(scaling);
  const us::Value x = graph.input("x", {samples});
  const us::Value y = hardtanh(x, mult, constraint);
  const us::Value loss = us::sum(us::mul(y, graph.constant(grad_data, "g")));
  const us::Value wrt[] = {x};
  const us::Value grad_x = us::autodiff(graph, loss, wrt)[0];

  const us::Value outputs[] = {y, grad_x};
  us::Executor executor(graph, outputs);
  executor.bind(x, x_data);
  executor.run();
  return {std_of(executor.get(y)), std_of(executor.get(grad_x))};
}

struct Options {
  std::int64_t samples = 1 << 20;
  std::filesystem::path out = ".";
  bool smoke = false;
};

void print_help() {
  fmt::print(
      "02_how_to_scale_op: derive unit-scaling factors for a new op (hardtanh), empirically and in\n"
      "closed form, and compare the constraints.\n\n"
      "usage: 02_how_to_scale_op [--samples N] [--out DIR] [--smoke] [--help]\n"
      "  --samples N  Monte Carlo sample size per measurement (default 1048576)\n"
      "  --out DIR    where to write hardtanh_scales.svg (default: current directory)\n"
      "  --smoke      a quick run with 16384 samples (used by the test suite)\n");
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw us::Error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      print_help();
      std::exit(0);
    } else if (arg == "--samples") {
      options.samples = std::stoll(value());
      if (options.samples < 2) throw us::Error("--samples must be at least 2");
    } else if (arg == "--out") {
      options.out = value();
    } else if (arg == "--smoke") {
      options.smoke = true;
      options.samples = 1 << 14;
    } else {
      throw us::Error("unknown argument '" + arg + "' (see --help)");
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse(argc, argv);
  // Monte Carlo error of a std estimate is about std/√(2n); allow 5 of those.
  const double tolerance = 5 / std::sqrt(2.0 * static_cast<double>(options.samples));

  fmt::print("Unscaled hardtanh at m = 1 with N(0,1) inputs and gradients ({} samples):\n",
             options.samples);
  const Measured at_one = measure(1.0, us::Constraint::kNone, us::Scaling::kUnscaled, options.samples, 1);
  fmt::print("  std(y) = {:.3f} (closed form {:.4f}),  std(dx) = {:.3f} (closed form {:.4f})\n\n",
             at_one.output_std, hardtanh_output_std(1), at_one.grad_std, hardtanh_grad_std(1));

  fmt::print("Scales over mult: empirical (1/measured std) vs closed form\n");
  fmt::print("  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}\n", "mult", "α meas.", "α exact", "β meas.", "β exact");
  std::vector<double> mults, alpha_measured, alpha_exact, beta_measured, beta_exact;
  bool all_close = true;
  for (int e = -3; e <= 3; ++e) {
    const double m = std::ldexp(1.0, e);
    const Measured s = measure(m, us::Constraint::kNone, us::Scaling::kUnscaled, options.samples,
                               static_cast<unsigned>(10 + e));
    mults.push_back(m);
    alpha_measured.push_back(1 / s.output_std);
    beta_measured.push_back(1 / s.grad_std);
    alpha_exact.push_back(1 / hardtanh_output_std(m));
    beta_exact.push_back(1 / hardtanh_grad_std(m));
    all_close = all_close && std::abs(alpha_measured.back() / alpha_exact.back() - 1) < tolerance &&
                std::abs(beta_measured.back() / beta_exact.back() - 1) < tolerance;
    fmt::print("  {:>7}  {:>9.4f}  {:>9.4f}  {:>9.4f}  {:>9.4f}\n", fmt::format("2^{}", e),
               alpha_measured.back(), alpha_exact.back(), beta_measured.back(), beta_exact.back());
  }
  fmt::print("  closed form {} simulation within {:.2g} relative\n\n",
             all_close ? "agrees with" : "DISAGREES with", tolerance);

  fmt::print("Constraints at m = 1 (unit-scaled graph): constrained variants leave one side non-unit\n");
  fmt::print("  {:<20}  {:>7}  {:>8}  {:>14}\n", "constraint", "std(y)", "std(dx)", "std(y)·std(dx)");
  for (const us::Constraint c : {us::Constraint::kNone, us::Constraint::kToOutputScale,
                                 us::Constraint::kToGradInputScale, us::Constraint::kGMean}) {
    const Measured s = measure(1.0, c, us::Scaling::kUnit, options.samples, 99);
    fmt::print("  {:<20}  {:>7.3f}  {:>8.3f}  {:>14.3f}\n", us::constraint_name(c), s.output_std,
               s.grad_std, s.output_std * s.grad_std);
  }

  us::LinePlot plot("hardtanh: unit-scaling factors vs mult");
  plot.x_axis({.label = "mult m", .scale = us::AxisScale::kLog2})
      .y_axis({.label = "scale", .scale = us::AxisScale::kLog2})
      .add({.label = "α closed form", .x = mults, .y = alpha_exact, .line = us::LineStyle::kSolid})
      .add({.label = "α measured", .x = mults, .y = alpha_measured, .line = us::LineStyle::kMarkers})
      .add({.label = "β closed form", .x = mults, .y = beta_exact, .line = us::LineStyle::kDashed})
      .add({.label = "β measured", .x = mults, .y = beta_measured, .line = us::LineStyle::kMarkers})
      .reference({.label = "1 (no scaling)", .y = 1});
  std::filesystem::create_directories(options.out);
  const auto figure = options.out / "hardtanh_scales.svg";
  plot.save(figure);
  fmt::print("\nwrote {}\n", figure.string());
  return all_close ? 0 : 1;
} catch (const std::exception& e) {
  fmt::print(stderr, "02_how_to_scale_op: {}\n", e.what());
  return 2;
}

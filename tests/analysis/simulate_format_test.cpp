// simulate_format: the rounded matmuls against hand-quantised double-precision references (forward
// and both backward GEMMs, bias included), the critical-matmul exception, per-tensor scaling,
// stochastic rounding's statistics and reproducibility, FNUZ formats on their BF16 carrier, the
// whole-model FP16 rounding of values and gradients, and the errors.

#include "unitscale/graph/simulate_format.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/round_to_format.hpp"

namespace unitscale {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

using Rounder = std::function<double(float)>;

double to_e4m3(float v) { return static_cast<float>(convert<float8_e4m3fn>(v)); }
double to_e5m2(float v) { return static_cast<float>(convert<float8_e5m2>(v)); }
double exact(float v) { return v; }

std::vector<float> random_values(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = scale * normal(rng);
  return v;
}

// y = linear(x, w, b) with an upstream gradient g given as the autodiff seed; every tensor is a
// graph input, bound from the vectors here.
struct LinearCase {
  static constexpr std::int64_t kRows = 6, kIn = 16, kOut = 5;
  Graph graph;
  Value x, w, b, g, y, dx, dw, db;
  std::vector<float> xs, ws, bs, gs;

  explicit LinearCase(std::string weight_name = "w") {
    x = graph.input("x", {kRows, kIn});
    w = graph.input(std::move(weight_name), {kOut, kIn});
    b = graph.input("b", {kOut});
    g = graph.input("g", {kRows, kOut});
    y = linear(x, w, {.bias = b});
    // Operands over many binades, so that rounding to FP8 changes most of them; the gradient
    // mixes unit-scale entries with ones below E5M2's smallest subnormal.
    xs = random_values(kRows * kIn, 1);
    ws = random_values(kOut * kIn, 2, 0.3f);
    bs = random_values(kOut, 3);
    gs = random_values(kRows * kOut, 4);
    for (std::size_t i = 0; i < gs.size(); i += 3) gs[i] *= 1e-6f;
  }
  void differentiate() {
    const Value wrt[] = {x, w, b};
    const std::vector<Value> grads = autodiff(graph, y, wrt, {.seed = g});
    dx = grads[0];
    dw = grads[1];
    db = grads[2];
  }
  double scale(std::string_view name) const {
    return graph.nodes()[static_cast<std::size_t>(graph.info(y).node)].attrs.get_double(
        "linear", name, 1.0);
  }
};

struct LinearResult {
  std::vector<float> y, dx, dw, db;
};

LinearResult run(LinearCase& c, std::uint64_t step = 0) {
  const Value outputs[] = {c.y, c.dx, c.dw, c.db};
  Executor exec(c.graph, outputs);
  exec.bind(c.x, ConstTensorView(c.xs.data(), c.graph.info(c.x).shape));
  exec.bind(c.w, ConstTensorView(c.ws.data(), c.graph.info(c.w).shape));
  exec.bind(c.b, ConstTensorView(c.bs.data(), c.graph.info(c.b).shape));
  exec.bind(c.g, ConstTensorView(c.gs.data(), c.graph.info(c.g).shape));
  exec.set_step(step);
  exec.run();
  auto copy = [&](Value v) {
    const std::span<const float> s = exec.get(v).span();
    return std::vector<float>(s.begin(), s.end());
  };
  return {copy(c.y), copy(c.dx), copy(c.dw), copy(c.db)};
}

// The linear's forward and backward in double from operands rounded by `in` (x, W) and `grad` (g).
LinearResult reference(const LinearCase& c, const Rounder& in, const Rounder& grad) {
  const std::int64_t R = LinearCase::kRows, I = LinearCase::kIn, O = LinearCase::kOut;
  std::vector<double> qx(c.xs.size()), qw(c.ws.size()), qg(c.gs.size());
  for (std::size_t i = 0; i < qx.size(); ++i) qx[i] = in(c.xs[i]);
  for (std::size_t i = 0; i < qw.size(); ++i) qw[i] = in(c.ws[i]);
  for (std::size_t i = 0; i < qg.size(); ++i) qg[i] = grad(c.gs[i]);
  LinearResult r{std::vector<float>(R * O), std::vector<float>(R * I), std::vector<float>(O * I),
                 std::vector<float>(O)};
  for (std::int64_t i = 0; i < R; ++i) {
    for (std::int64_t o = 0; o < O; ++o) {
      double acc = c.bs[o];
      for (std::int64_t k = 0; k < I; ++k) acc += qx[i * I + k] * qw[o * I + k];
      r.y[i * O + o] = static_cast<float>(c.scale("alpha") * acc);
    }
    for (std::int64_t k = 0; k < I; ++k) {
      double acc = 0;
      for (std::int64_t o = 0; o < O; ++o) acc += qg[i * O + o] * qw[o * I + k];
      r.dx[i * I + k] = static_cast<float>(c.scale("beta_x") * acc);
    }
  }
  for (std::int64_t o = 0; o < O; ++o) {
    double bias = 0;
    for (std::int64_t i = 0; i < R; ++i) bias += qg[i * O + o];
    r.db[o] = static_cast<float>(c.scale("beta_bias") * bias);
    for (std::int64_t k = 0; k < I; ++k) {
      double acc = 0;
      for (std::int64_t i = 0; i < R; ++i) acc += qg[i * O + o] * qx[i * I + k];
      r.dw[o * I + k] = static_cast<float>(c.scale("beta_weight") * acc);
    }
  }
  return r;
}

// Elementwise within FP32 summation error of the largest element.
void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                  std::string_view what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double largest = 0;
  for (const float e : expected) largest = std::max(largest, std::abs(double(e)));
  for (std::size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-6 * largest + 1e-30) << what << " [" << i << "]";
  }
}

// Far apart: the rounding made a difference the tolerance above could not hide.
double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

void expect_matches(const LinearResult& actual, const LinearResult& expected) {
  expect_close(actual.y, expected.y, "y");
  expect_close(actual.dx, expected.dx, "dx");
  expect_close(actual.dw, expected.dw, "dw");
  expect_close(actual.db, expected.db, "db");
}

TEST(SimulateFormat, Fp8LinearIsTheHandQuantisedLinearForwardAndBackward) {
  LinearCase c;
  const SimulateFormatReport report = simulate_format(c.graph, SimulateFormatOptions::fp8());
  EXPECT_THAT(report.rounded_matmuls, ElementsAre("w"));
  EXPECT_TRUE(report.kept_matmuls.empty());
  c.differentiate();
  const LinearResult fp8 = run(c);
  expect_matches(fp8, reference(c, to_e4m3, to_e5m2));
  // The rounding is real: the fp32 linear differs by far more than the tolerance.
  const LinearResult fp32 = reference(c, exact, exact);
  EXPECT_GT(max_difference(fp8.y, fp32.y), 1e-3);
  EXPECT_GT(max_difference(fp8.dx, reference(c, to_e4m3, exact).dx), 1e-4);
}

TEST(SimulateFormat, RunsAfterAutodiffTooAndChangesTheBackwardNode) {
  LinearCase before, after;
  simulate_format(before.graph, SimulateFormatOptions::fp8());
  before.differentiate();
  after.differentiate();
  simulate_format(after.graph, SimulateFormatOptions::fp8());
  const LinearResult a = run(before), b = run(after);
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.dx, b.dx);
  EXPECT_EQ(a.dw, b.dw);
  EXPECT_EQ(a.db, b.db);
}

TEST(SimulateFormat, CriticalMatmulsStayExactFp32) {
  // Two linears in a row: the first is an FFN up projection (rounded), the second an attention
  // output projection (kept).
  Graph graph;
  const Value x = graph.input("x", {4, 8});
  const Value up = graph.input("layers.0.mlp.up.weight", {8, 8});
  const Value out = graph.input("layers.0.attn.out.weight", {8, 8});
  const Value h = linear(x, up);
  const Value y = linear(h, out);
  const SimulateFormatReport report =
      simulate_format(graph, SimulateFormatOptions::fp8(/*keep_critical_matmuls=*/true));
  EXPECT_THAT(report.rounded_matmuls, ElementsAre("layers.0.mlp.up.weight"));
  EXPECT_THAT(report.kept_matmuls, ElementsAre("layers.0.attn.out.weight"));
  EXPECT_THAT(report.to_string(), HasSubstr("1 of 2 matmuls rounded, kept in fp32: "
                                            "layers.0.attn.out.weight"));

  const std::vector<float> xs = random_values(32, 5), us = random_values(64, 6),
                           os = random_values(64, 7);
  const Value outputs[] = {h, y};
  Executor exec(graph, outputs);
  exec.bind(x, ConstTensorView(xs.data(), Shape{4, 8}));
  exec.bind(up, ConstTensorView(us.data(), Shape{8, 8}));
  exec.bind(out, ConstTensorView(os.data(), Shape{8, 8}));
  exec.run();
  const std::span<const float> hs = exec.get(h).span();
  // The kept matmul is the plain fp32 linear of the rounded one's output, bit for bit.
  Tensor expected(Shape{4, 8});
  linear_forward(exec.get(h), ConstTensorView(os.data(), Shape{8, 8}), ConstTensorView(),
                 expected.view(), static_cast<float>(std::pow(8.0, -0.5)));
  const std::span<const float> ys = exec.get(y).span();
  for (std::size_t i = 0; i < ys.size(); ++i) EXPECT_EQ(ys[i], expected.span()[i]) << i;
  // ... and the rounded one is not the fp32 linear.
  Tensor unrounded(Shape{4, 8});
  linear_forward(ConstTensorView(xs.data(), Shape{4, 8}), ConstTensorView(us.data(), Shape{8, 8}),
                 ConstTensorView(), unrounded.view(), static_cast<float>(std::pow(8.0, -0.5)));
  EXPECT_GT(max_difference(std::vector<float>(hs.begin(), hs.end()),
                           std::vector<float>(unrounded.span().begin(), unrounded.span().end())),
            1e-3);
}

TEST(SimulateFormat, PerTensorScalingUsesThePowerOfTwoThatFitsTheAmax) {
  LinearCase c;
  for (float& v : c.xs) v *= 1e-5f;  // far below E4M3's smallest subnormal, 2^-9
  SimulateFormatOptions options = SimulateFormatOptions::fp8();
  options.matmuls.per_tensor_scaling = true;
  simulate_format(c.graph, options);
  c.differentiate();
  // x / s with s = 2^ceil(log2(amax / 448)), rounded, times s; the same for W and g.
  auto scaled = [](const std::vector<float>& values, double max, auto round) {
    double amax = 0;
    for (const float v : values) amax = std::max(amax, std::abs(double(v)));
    const double s = std::exp2(std::ceil(std::log2(amax / max)));
    return Rounder([s, round](float v) { return round(static_cast<float>(v / s)) * s; });
  };
  // One rounder for x and W each: the reference applies `in` to both, so check them separately
  // through the forward output: y = α(Σ q(x)q(w) + b).
  const Rounder qx = scaled(c.xs, 448, to_e4m3), qw = scaled(c.ws, 448, to_e4m3);
  const LinearResult actual = run(c);
  std::vector<float> expected_y(actual.y.size());
  for (std::int64_t i = 0; i < LinearCase::kRows; ++i) {
    for (std::int64_t o = 0; o < LinearCase::kOut; ++o) {
      double acc = c.bs[o];
      for (std::int64_t k = 0; k < LinearCase::kIn; ++k) {
        acc += qx(c.xs[i * LinearCase::kIn + k]) * qw(c.ws[o * LinearCase::kIn + k]);
      }
      expected_y[i * LinearCase::kOut + o] = static_cast<float>(c.scale("alpha") * acc);
    }
  }
  expect_close(actual.y, expected_y, "y");
  // Without scaling every x underflows and y is α·b.
  LinearCase unscaled;
  unscaled.xs = c.xs;
  simulate_format(unscaled.graph, SimulateFormatOptions::fp8());
  unscaled.differentiate();
  const LinearResult flushed = run(unscaled);
  for (std::int64_t i = 0; i < LinearCase::kRows; ++i) {
    for (std::int64_t o = 0; o < LinearCase::kOut; ++o) {
      EXPECT_FLOAT_EQ(flushed.y[i * LinearCase::kOut + o],
                      static_cast<float>(unscaled.scale("alpha") * c.bs[o]));
    }
  }
}

// A gradient beyond E5M2's 57344 saturates by default, and becomes Inf with gradient_overflow
// non_finite (what dynamic loss scaling needs to see it), while x and W keep saturating.
TEST(SimulateFormat, GradientOverflowSaturatesOrGoesToInfinity) {
  for (const Overflow overflow : {Overflow::kSaturate, Overflow::kNonFinite}) {
    LinearCase c;
    c.gs[0] = 1e6f;
    SimulateFormatOptions options = SimulateFormatOptions::fp8();
    options.matmuls.gradient_overflow = overflow;
    simulate_format(c.graph, options);
    c.differentiate();
    const LinearResult r = run(c);
    const auto saturated = [](float v) {
      return static_cast<double>(
          static_cast<float>(convert<float8_e5m2>(v, Rounding::kNearestEven, Overflow::kSaturate)));
    };
    if (overflow == Overflow::kSaturate) {
      expect_matches(r, reference(c, to_e4m3, saturated));
    } else {
      EXPECT_TRUE(std::isinf(r.db[0])) << r.db[0];
      EXPECT_TRUE(std::isinf(r.dx[0]) || std::isnan(r.dx[0])) << r.dx[0];
      expect_close(r.y, reference(c, to_e4m3, to_e5m2).y, "y");  // the forward is untouched
    }
  }
}

TEST(SimulateFormat, FnuzFormatsRoundOnTheirBf16Carrier) {
  LinearCase c;
  SimulateFormatOptions options;
  options.matmuls.inputs = DType::kE4M3FNUZ;
  options.matmuls.gradients = DType::kE5M2FNUZ;
  simulate_format(c.graph, options);
  c.differentiate();
  expect_matches(run(c),
                 reference(c, [](float v) { return double(static_cast<float>(convert<float8_e4m3fnuz>(v))); },
                           [](float v) { return double(static_cast<float>(convert<float8_e5m2fnuz>(v))); }));
}

// Stochastic rounding of 1 + 1/32 to E4M3 (neighbours 1 and 1.125) goes up a quarter of the time,
// with bits that depend on the step and nothing else.
TEST(SimulateFormat, StochasticRoundingIsUnbiasedAndReproducible) {
  constexpr std::int64_t kN = 4096;
  Graph graph;
  const Value x = graph.input("x", {kN, 1});
  const Value w = graph.input("w", {1, 1});
  const Value y = linear(x, w);  // α = 1 for fan-in 1
  SimulateFormatOptions options = SimulateFormatOptions::fp8();
  options.matmuls.rounding = Rounding::kStochastic;
  options.matmuls.seed = 11;
  simulate_format(graph, options);
  const std::vector<float> xs(kN, 1.0f + 1.0f / 32), ws = {1.0f};
  auto run_at = [&](std::uint64_t step) {
    const Value outputs[] = {y};
    Executor exec(graph, outputs);
    exec.bind(x, ConstTensorView(xs.data(), Shape{kN, 1}));
    exec.bind(w, ConstTensorView(ws.data(), Shape{1, 1}));
    exec.set_step(step);
    exec.run();
    const std::span<const float> s = exec.get(y).span();
    return std::vector<float>(s.begin(), s.end());
  };
  const std::vector<float> first = run_at(3);
  std::int64_t up = 0;
  for (const float v : first) {
    ASSERT_TRUE(v == 1.0f || v == 1.125f) << v;
    up += v == 1.125f ? 1 : 0;
  }
  // 0.25 ± 4 standard deviations of a binomial share over 4096 draws (σ ≈ 0.0068).
  EXPECT_NEAR(static_cast<double>(up) / kN, 0.25, 4 * std::sqrt(0.25 * 0.75 / kN));
  EXPECT_EQ(run_at(3), first);
  EXPECT_NE(run_at(4), first);
}

TEST(SimulateFormat, WholeModelFp16RoundsValuesAndGradientsWithOverflowToInfinity) {
  Graph graph;
  const Value x = graph.input("x", {2, 4});
  const Value w = graph.input("w", {3, 4});
  const Value g = graph.input("g", {2, 3});
  const Value y = linear(x, w, {.constraint = Constraint::kNone});
  const SimulateFormatReport report = simulate_format(graph, SimulateFormatOptions::fp16());
  EXPECT_EQ(report.rounded_values, 2);  // x and w: y is read by nothing
  const Value wrt[] = {x};
  const Value dx = autodiff(graph, y, wrt, {.seed = g})[0];
  // x: 1 + 2^-12 rounds to 1 in FP16 (11 significant bits); 1e5 overflows to +Inf.
  const std::vector<float> xs = {1.0f + std::ldexp(1.0f, -12), 1, 1, 1, 1e5f, 0, 0, 0};
  const std::vector<float> ws(12, 1.0f);
  // g: 1e-8 is below FP16's smallest subnormal (2^-24 ≈ 6e-8) and flushes to zero; 3e-8 rounds
  // up to 2^-24.
  const std::vector<float> gs = {1e-8f, 1e-8f, 1e-8f, 3e-8f, 0, 0};
  const Value outputs[] = {y, dx};
  Executor exec(graph, outputs);
  exec.bind(x, ConstTensorView(xs.data(), Shape{2, 4}));
  exec.bind(w, ConstTensorView(ws.data(), Shape{3, 4}));
  exec.bind(g, ConstTensorView(gs.data(), Shape{2, 3}));
  exec.run();
  const float alpha = 0.5f;  // fan-in 4, unconstrained: 4^-½
  EXPECT_EQ(exec.get(y).span()[0], alpha * 4.0f);
  EXPECT_EQ(exec.get(y).span()[3], INFINITY);
  // dx = β_x g W with g rounded to FP16 by the linear's gradient format: row 0 is all zeros, row 1
  // is β_x · 2^-24 ≈ 0.58 · 2^-24, which x's own rounding node rounds again, to 2^-24.
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(exec.get(dx).span()[k], 0.0f);
    EXPECT_EQ(exec.get(dx).span()[4 + k], std::ldexp(1.0f, -24));
  }
}

TEST(SimulateFormat, ErrorsNameWhatWasWrong) {
  {
    LinearCase c;
    SimulateFormatOptions options = SimulateFormatOptions::fp8();
    options.high_precision_modules = {"attn.oops"};
    EXPECT_THAT([&] { simulate_format(c.graph, options); },
                ThrowsMessage<Error>(HasSubstr("no high-precision module has a matmul (no linear "
                                               "weight named '<module>.weight' or "
                                               "'....<module>.weight' for attn.oops)")));
    // Nothing changed: the linear still has no formats.
    EXPECT_FALSE(c.graph.nodes()[0].attrs.has("input_format"));
  }
  {
    LinearCase c;
    c.differentiate();
    EXPECT_THAT([&] { simulate_format(c.graph, SimulateFormatOptions::fp16()); },
                ThrowsMessage<Error>(HasSubstr("run simulate_format before autodiff")));
  }
  {
    LinearCase c;
    SimulateFormatOptions options;
    options.matmuls.inputs = DType::kE8M0FNU;
    EXPECT_THAT([&] { simulate_format(c.graph, options); },
                ThrowsMessage<Error>(HasSubstr("matmul input format e8m0fnu cannot be a GEMM "
                                               "operand format")));
  }
  EXPECT_THAT([] { SimulateFormatOptions::named("fp4"); },
              ThrowsMessage<Error>(HasSubstr("unknown recipe 'fp4' (expected fp8, fp8-critical")));
  {
    Graph graph;
    const Value x = graph.input("x", {2});
    EXPECT_THAT([&] { round_to_format(x, DType::kF16, {.rounding = Rounding::kStochastic}); },
                ThrowsMessage<Error>(HasSubstr("round_to_format: stochastic rounding is not "
                                               "offered")));
  }
}

}  // namespace
}  // namespace unitscale

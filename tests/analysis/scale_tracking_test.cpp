// Scale tracking: statistics against closed-form values, the format classes against the format
// layer's own rounding, and the tracker on a small training graph (forward, backward, weights),
// its reports and chart.

#include "unitscale/analysis/scale_tracking.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../support/occurrences.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/primitives.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;

using testing_support::occurrences;

TEST(ScaleTracking, FormatRangesAreTheCataloguesLimits) {
  const FormatRange e4m3 = format_range(DType::kE4M3FN);
  EXPECT_EQ(e4m3.min_subnormal, std::ldexp(1.0, -9));
  EXPECT_EQ(e4m3.min_normal, std::ldexp(1.0, -6));
  EXPECT_EQ(e4m3.max, 448.0);
  const FormatRange e5m2 = format_range(DType::kE5M2);
  EXPECT_EQ(e5m2.min_subnormal, std::ldexp(1.0, -16));
  EXPECT_EQ(e5m2.min_normal, std::ldexp(1.0, -14));
  EXPECT_EQ(e5m2.max, 57344.0);
  const FormatRange f16 = format_range(DType::kF16);
  EXPECT_EQ(f16.min_subnormal, std::ldexp(1.0, -24));
  EXPECT_EQ(f16.min_normal, std::ldexp(1.0, -14));
  EXPECT_EQ(f16.max, 65504.0);
  EXPECT_EQ(format_range(DType::kBF16).min_normal, std::ldexp(1.0, -126));
  EXPECT_THAT([] { format_range(DType::kF32); },
              ::testing::ThrowsMessage<Error>(HasSubstr("f32 is not a low-precision")));
}

TEST(ScaleTracking, StatisticsAndFormatClassesOfKnownValues) {
  // 0, 1, -3, 2^-20, 500, 2^-8, NaN: seven elements, six finite.
  const std::vector<float> values = {0.0f, 1.0f, -3.0f, std::ldexp(1.0f, -20), 500.0f,
                                     std::ldexp(1.0f, -8), NAN};
  const ConstTensorView x(values.data(), Shape{7});
  const TensorScale s = measure_scale(x, {DType::kE4M3FN, DType::kE5M2, DType::kF16});
  const double tiny = std::ldexp(1.0, -20), small = std::ldexp(1.0, -8);
  const double sum = 1 - 3 + tiny + 500 + small;
  const double sum_abs = 1 + 3 + tiny + 500 + small;
  const double sum_squares = 1 + 9 + tiny * tiny + 250000 + small * small;
  EXPECT_EQ(s.numel, 7);
  EXPECT_DOUBLE_EQ(s.mean_abs, sum_abs / 6);
  EXPECT_DOUBLE_EQ(s.rms, std::sqrt(sum_squares / 6));
  EXPECT_NEAR(s.std, std::sqrt(sum_squares / 6 - (sum / 6) * (sum / 6)), 1e-9);
  EXPECT_EQ(s.amax, 500.0);
  EXPECT_EQ(s.amin, tiny);
  EXPECT_DOUBLE_EQ(s.non_finite, 1.0 / 7);
  ASSERT_EQ(s.formats.size(), 3u);
  // E4M3 (2^-9 .. 448): 2^-20 underflows, 2^-8 is subnormal, 500 saturates.
  EXPECT_DOUBLE_EQ(s.formats[0].underflow, 1.0 / 7);
  EXPECT_DOUBLE_EQ(s.formats[0].subnormal, 1.0 / 7);
  EXPECT_DOUBLE_EQ(s.formats[0].saturate, 1.0 / 7);
  // E5M2 (2^-16 .. 57344): 2^-20 underflows, nothing else.
  EXPECT_DOUBLE_EQ(s.formats[1].underflow, 1.0 / 7);
  EXPECT_EQ(s.formats[1].subnormal, 0);
  EXPECT_EQ(s.formats[1].saturate, 0);
  // FP16 (2^-24 .. 65504): 2^-20 is subnormal.
  EXPECT_EQ(s.formats[2].underflow, 0);
  EXPECT_DOUBLE_EQ(s.formats[2].subnormal, 1.0 / 7);
  EXPECT_EQ(s.formats[2].saturate, 0);

  const std::vector<float> zeros(5, 0.0f);
  const TensorScale z = measure_scale(ConstTensorView(zeros.data(), Shape{5}), {DType::kE5M2});
  EXPECT_EQ(z.amin, 0);
  EXPECT_EQ(z.rms, 0);
  EXPECT_EQ(z.formats[0].underflow, 0);  // zero is exact, not an underflow
}

// A tensor large enough to be scanned in parallel stretches gives what one plain loop in double
// gives, and the same on every run.
TEST(ScaleTracking, LargeTensorsMatchAPlainDoubleLoop) {
  const std::int64_t n = (std::int64_t{1} << 18) + 123;
  std::vector<float> values(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    // Magnitudes from 2^-30 to 2^20, both signs, a few zeros, one NaN and one Inf.
    const double e = -30.0 + 50.0 * static_cast<double>((i * 7919) % 100003) / 100003.0;
    values[static_cast<std::size_t>(i)] =
        i % 997 == 0 ? 0.0f : static_cast<float>((i % 3 == 0 ? -1 : 1) * std::exp2(e));
  }
  values[1000] = NAN;
  values[2000] = INFINITY;
  double sum_abs = 0, squares = 0, amax = 0, amin = INFINITY, finite = 0;
  std::int64_t under = 0, sub = 0, sat = 0;
  const FormatRange e5m2 = format_range(DType::kE5M2);
  for (const float v : values) {
    if (!std::isfinite(v)) continue;
    const double a = std::abs(double(v));
    ++finite;
    sum_abs += a;
    squares += double(v) * v;
    amax = std::max(amax, a);
    if (a > 0) amin = std::min(amin, a);
    if (a > 0 && a <= e5m2.min_subnormal / 2) ++under;
    if (a > e5m2.min_subnormal / 2 && a < e5m2.min_normal) ++sub;
    if (a > e5m2.max) ++sat;
  }
  const TensorScale s = measure_scale(ConstTensorView(values.data(), Shape{n}), {DType::kE5M2});
  EXPECT_NEAR(s.mean_abs, sum_abs / finite, 1e-12 * sum_abs / finite);
  EXPECT_NEAR(s.rms, std::sqrt(squares / finite), 1e-12 * std::sqrt(squares / finite));
  EXPECT_EQ(s.amax, amax);
  EXPECT_EQ(s.amin, amin);
  EXPECT_DOUBLE_EQ(s.non_finite, 2.0 / static_cast<double>(n));
  EXPECT_DOUBLE_EQ(s.formats[0].underflow, static_cast<double>(under) / static_cast<double>(n));
  EXPECT_DOUBLE_EQ(s.formats[0].subnormal, static_cast<double>(sub) / static_cast<double>(n));
  EXPECT_DOUBLE_EQ(s.formats[0].saturate, static_cast<double>(sat) / static_cast<double>(n));
  EXPECT_GT(under, 0);
  EXPECT_GT(sat, 0);
  const TensorScale again = measure_scale(ConstTensorView(values.data(), Shape{n}), {DType::kE5M2});
  EXPECT_EQ(again.rms, s.rms);
  EXPECT_EQ(again.mean_abs, s.mean_abs);
}

// "Underflow" must mean what the cast does: a positive value counts as an underflow exactly when
// round-to-nearest-even turns it into zero. Checked on every float between 2^-20 and 2^-8 at a
// step of 1/64 binade, across the boundary at min_subnormal / 2.
TEST(ScaleTracking, UnderflowIsExactlyWhatRoundingToNearestFlushesToZero) {
  std::vector<float> values;
  for (int i = 0; i <= 12 * 64; ++i) values.push_back(std::exp2(-20.0f + static_cast<float>(i) / 64));
  values.push_back(std::ldexp(1.0f, -10));                      // E4M3: min_subnormal / 2, a tie
  values.push_back(std::nextafter(std::ldexp(1.0f, -10), 1.0f));  // just above it
  for (const DType format : {DType::kE4M3FN, DType::kE5M2}) {
    for (const float v : values) {
      const TensorScale s = measure_scale(ConstTensorView(&v, Shape{1}), {format});
      const bool to_zero = format == DType::kE4M3FN
                               ? static_cast<float>(convert<float8_e4m3fn>(v)) == 0.0f
                               : static_cast<float>(convert<float8_e5m2>(v)) == 0.0f;
      EXPECT_EQ(s.formats[0].underflow == 1.0, to_zero) << dtype_name(format) << " " << v;
    }
  }
}

struct TinyStep {
  Graph graph;
  Value x, w, y, loss, dw;
};

// y = linear(x, w), loss = sum(y), with w a parameter state.
void build(TinyStep& t) {
  t.x = t.graph.input("x", {4, 8});
  t.w = t.graph.state("w", {3, 8}, ParameterInfo{.fan_in = 8, .fan_out = 3});
  t.y = linear(t.x, t.w);
  t.loss = sum(t.y);
  const Value wrt[] = {t.w};
  t.dw = autodiff(t.graph, t.loss, wrt)[0];
}

TEST(ScaleTracking, TrackerRecordsForwardBackwardAndWeightsOfEachRun) {
  TinyStep t;
  build(t);
  const Value outputs[] = {t.loss, t.dw};
  Executor exec(t.graph, outputs);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  Tensor xt(Shape{4, 8}), wt(Shape{3, 8});
  for (float& v : xt.span()) v = normal(rng);
  for (float& v : wt.span()) v = 0.01f * normal(rng);
  exec.bind(t.x, xt);
  exec.set_state(t.w, wt);

  ScaleTracker tracker = track_scales(exec, t.graph);
  EXPECT_EQ(tracker.runs(), 0u);
  exec.run();
  EXPECT_EQ(tracker.runs(), 1u);
  const auto& scales = tracker.scales();
  ASSERT_FALSE(scales.empty());

  // The linear output against a double reference.
  const TensorScale* y = nullptr;
  const TensorScale* weight = nullptr;
  int gradients = 0;
  for (const TensorScale& s : scales) {
    if (s.value == t.y.id()) y = &s;
    if (s.role == TensorRole::kWeight) weight = &s;
    if (s.role == TensorRole::kGradient) ++gradients;
  }
  ASSERT_NE(y, nullptr);
  double amax = 0, squares = 0;
  const double alpha = t.graph.nodes()[static_cast<std::size_t>(t.graph.info(t.y).node)]
                           .attrs.get_double("linear", "alpha", 1.0);
  for (int i = 0; i < 4; ++i) {
    for (int o = 0; o < 3; ++o) {
      double acc = 0;
      for (int k = 0; k < 8; ++k) acc += double(xt.data()[i * 8 + k]) * double(wt.data()[o * 8 + k]);
      acc *= alpha;
      amax = std::max(amax, std::abs(acc));
      squares += acc * acc;
    }
  }
  EXPECT_NEAR(y->amax, amax, 1e-5 * amax);
  EXPECT_NEAR(y->rms, std::sqrt(squares / 12), 1e-5 * amax);
  EXPECT_EQ(y->role, TensorRole::kActivation);
  EXPECT_EQ(y->numel, 12);
  EXPECT_GT(gradients, 0);
  ASSERT_NE(weight, nullptr);
  EXPECT_EQ(weight->label, "w");
  const TensorScale expected_w = measure_scale(wt, {DType::kE4M3FN, DType::kE5M2, DType::kF16});
  EXPECT_DOUBLE_EQ(weight->rms, expected_w.rms);
  EXPECT_DOUBLE_EQ(weight->formats[0].subnormal, expected_w.formats[0].subnormal);
  // Weights come last, after the activations and gradients.
  EXPECT_EQ(&scales.back(), weight);

  const std::size_t rows = scales.size();
  exec.run();  // a second run replaces the record
  EXPECT_EQ(tracker.runs(), 2u);
  EXPECT_EQ(tracker.scales().size(), rows);

  // Paused, runs leave the record alone; resumed, the next run replaces it with the new weights.
  tracker.set_recording(false);
  Tensor doubled = wt;
  for (float& v : doubled.span()) v *= 2;
  exec.set_state(t.w, doubled);
  exec.run();
  EXPECT_EQ(tracker.runs(), 2u);
  EXPECT_DOUBLE_EQ(tracker.scales().back().rms, expected_w.rms);
  tracker.set_recording(true);
  exec.run();
  EXPECT_EQ(tracker.runs(), 3u);
  EXPECT_NEAR(tracker.scales().back().rms, 2 * expected_w.rms, 1e-12);
}

TEST(ScaleTracking, ReportsAndChartHoldEveryTensor) {
  TinyStep t;
  build(t);
  const Value outputs[] = {t.loss, t.dw};
  Executor exec(t.graph, outputs);
  Tensor xt(Shape{4, 8}), wt(Shape{3, 8});
  for (std::size_t i = 0; i < xt.span().size(); ++i) xt.span()[i] = 0.5f + static_cast<float>(i);
  for (std::size_t i = 0; i < wt.span().size(); ++i) wt.span()[i] = 1e-3f * static_cast<float>(i);
  exec.bind(t.x, xt);
  exec.set_state(t.w, wt);
  ScaleTracker tracker = track_scales(exec, t.graph, {.formats = {DType::kE4M3FN, DType::kE5M2}});
  exec.run();
  const std::size_t n = tracker.scales().size();

  const std::string table = tracker.table();
  EXPECT_EQ(occurrences(table, "\n"), static_cast<int>(n) + 1);
  EXPECT_THAT(table, HasSubstr("e4m3fn uf%"));

  const std::string csv = tracker.csv();
  EXPECT_EQ(occurrences(csv, "\n"), static_cast<int>(n) + 1);
  EXPECT_THAT(csv, HasSubstr("e5m2_underflow,e5m2_subnormal,e5m2_saturate"));
  EXPECT_THAT(csv, HasSubstr(",\"w\",weight,24,"));

  const std::string json = tracker.json();
  EXPECT_THAT(json, HasSubstr("\"runs\": 1"));
  EXPECT_EQ(occurrences(json, "\"label\""), static_cast<int>(n));

  const std::string svg = tracker.chart_svg("tiny <step>");
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_EQ(occurrences(svg, "<svg"), 1);
  EXPECT_EQ(occurrences(svg, "</svg>"), 1);
  EXPECT_THAT(svg, HasSubstr("tiny &lt;step&gt;"));
  EXPECT_THAT(svg, HasSubstr("e4m3fn max"));
  EXPECT_THAT(svg, HasSubstr("e5m2 min sub"));
  // One marker per tensor: circles for activations, squares for gradients, diamonds for weights
  // (the legend draws one of each too).
  int activations = 0, gradients = 0, weights = 0;
  for (const TensorScale& s : tracker.scales()) {
    if (!(s.rms > 0)) continue;
    activations += s.role == TensorRole::kActivation;
    gradients += s.role == TensorRole::kGradient;
    weights += s.role == TensorRole::kWeight;
  }
  EXPECT_EQ(occurrences(svg, "<circle"), activations + 1);
  EXPECT_EQ(occurrences(svg, "<rect x"), gradients + 2);  // + the legend and the frame
  EXPECT_EQ(occurrences(svg, "<path"), weights + 1);
  for (const TensorScale& s : tracker.scales()) EXPECT_THAT(svg, HasSubstr(">" + s.label + "<"));
}

TEST(ScaleTracking, RefusesAFormatItCannotDescribe) {
  TinyStep t;
  build(t);
  const Value outputs[] = {t.loss};
  Executor exec(t.graph, outputs);
  EXPECT_THAT([&] { track_scales(exec, t.graph, {.formats = {DType::kI32}}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("i32")));
}

// The per-class shares of the linear's operands are those of its x, W and output gradient,
// measured on their own: x and W against E4M3, the gradient (ones, from sum) against E5M2.
TEST(ScaleTracking, MatmulOperandSharesAreThoseOfTheOperands) {
  // TinyStep with x computed by a node (an identity cast), as a model's activations are: the
  // tracker records node outputs, not graph inputs.
  TinyStep t;
  const Value x_in = t.graph.input("x", {4, 8});
  t.x = x_in;
  t.w = t.graph.state("w", {3, 8}, ParameterInfo{.fan_in = 8, .fan_out = 3});
  t.y = linear(cast(x_in, DType::kF32), t.w);
  t.loss = sum(t.y);
  const Value wrt[] = {t.w};
  t.dw = autodiff(t.graph, t.loss, wrt)[0];
  const Value outputs[] = {t.loss, t.dw};
  Executor exec(t.graph, outputs);
  Tensor xt(Shape{4, 8}), wt(Shape{3, 8});
  for (std::int64_t i = 0; i < 32; ++i) xt.data()[i] = std::ldexp(1.0f, static_cast<int>(i % 16) - 12);
  for (std::int64_t i = 0; i < 24; ++i) wt.data()[i] = i % 3 == 0 ? 500.0f : 1e-4f;
  exec.bind(t.x, xt);
  exec.set_state(t.w, wt);
  ScaleTracker tracker = track_scales(exec, t.graph);
  exec.run();
  const MatmulOperandShares shares = matmul_operand_shares(tracker, t.graph);
  const TensorScale x = measure_scale(xt, {DType::kE4M3FN});
  const TensorScale w = measure_scale(wt, {DType::kE4M3FN});
  EXPECT_EQ(shares.inputs.underflow, x.formats[0].underflow);
  EXPECT_EQ(shares.inputs.subnormal, x.formats[0].subnormal);
  // x = 2^-12 .. 2^3: 2^-12 and 2^-11 underflow E4M3 (≤ 2^-10), 2^-10 too (the tie rounds to 0).
  EXPECT_DOUBLE_EQ(shares.inputs.underflow, 6.0 / 32);
  EXPECT_DOUBLE_EQ(shares.weights.saturate, 8.0 / 24);   // the 500s
  EXPECT_DOUBLE_EQ(shares.weights.underflow, 16.0 / 24);  // the 1e-4s
  EXPECT_EQ(shares.weights.underflow, w.formats[0].underflow);
  EXPECT_EQ(shares.gradients.format, DType::kE5M2);
  EXPECT_EQ(shares.gradients.underflow, 0.0);
  EXPECT_EQ(shares.gradients.subnormal, 0.0);
  EXPECT_THAT([&] { matmul_operand_shares(tracker, t.graph, DType::kBF16); },
              ::testing::ThrowsMessage<Error>(HasSubstr("the tracker does not measure bf16")));
}

TEST(ScaleTracking, ChartsSideBySideKeepEachChartsSize) {
  const std::vector<std::string> charts = {
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50"><rect/></svg>)",
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="30" height="80"><circle/></svg>)",
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="60" height="20"><path/></svg>)"};
  const std::string two_columns = charts_side_by_side(charts, 2);
  // Columns 100 and 30 wide, rows 80 and 20 tall.
  EXPECT_THAT(two_columns, HasSubstr(R"(width="130" height="100")"));
  EXPECT_THAT(two_columns, HasSubstr(R"(<svg x="100" y="0" xmlns)"));
  EXPECT_THAT(two_columns, HasSubstr(R"(<svg x="0" y="80" xmlns)"));
  EXPECT_EQ(occurrences(two_columns, "<svg "), 4);
  EXPECT_EQ(occurrences(two_columns, "</svg>"), 4);
  EXPECT_THAT(charts_side_by_side(charts), HasSubstr(R"(width="190" height="80")"));
  EXPECT_THAT([] { charts_side_by_side({"<g/>"}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("chart 0 is not an <svg> element")));
  EXPECT_THAT([] { charts_side_by_side({"<svg height=\"3\"></svg>"}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("chart 0 has no width")));
}

}  // namespace
}  // namespace unitscale

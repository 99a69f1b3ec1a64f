#include "unitscale/ops/loss.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../support/accuracy.hpp"
#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes ce_attrs(std::string_view reduction = "mean", double mult = 1.0,
                    std::int64_t ignore_index = kDefaultIgnoreIndex) {
  return {{"mult", mult}, {"reduction", std::string(reduction)}, {"ignore_index", ignore_index}};
}

Attributes mse_attrs(std::string_view reduction = "mean") {
  return {{"reduction", std::string(reduction)}};
}

using Labels = std::vector<std::int32_t>;

// i32 class labels.
Tensor label_tensor(const Shape& shape, const Labels& values) {
  return Tensor(shape, std::span<const std::int32_t>(values));
}

Tensor random_labels(const Shape& shape, std::int64_t vocab, std::mt19937& rng) {
  Tensor labels(shape, DType::kI32);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(vocab - 1));
  for (std::int32_t& v : labels.span_as<std::int32_t>()) v = pick(rng);
  return labels;
}

// Sets one label of an i32 label tensor.
void set_label(Tensor& labels, std::int64_t row, std::int32_t value) {
  labels.span_as<std::int32_t>()[static_cast<std::size_t>(row)] = value;
}

Tensor scalar(float value) { return Tensor(Shape{}, std::vector<float>{value}); }
// The label of a single [V] row: an i32 scalar.
Tensor label_scalar(std::int32_t value) { return label_tensor(Shape{}, Labels{value}); }

// A plain mean (or sum) cross entropy in double, written independently of the kernel:
// -log(exp(m·z_y) / Σ exp(m·z)) averaged over the rows whose label is not ignored.
double reference_cross_entropy(const Tensor& logits, const Tensor& labels, double mult, bool mean,
                               std::int64_t ignore_index = kDefaultIgnoreIndex) {
  const std::int64_t vocab = logits.shape().dim(-1);
  const std::int64_t rows = logits.numel() / vocab;
  double total = 0;
  std::int64_t counted = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t label = labels.span_as<std::int32_t>()[static_cast<std::size_t>(r)];
    if (label == ignore_index) continue;
    double denominator = 0;
    for (std::int64_t i = 0; i < vocab; ++i) denominator += std::exp(mult * logits[r * vocab + i]);
    total += -std::log(std::exp(mult * logits[r * vocab + label]) / denominator);
    ++counted;
  }
  return mean ? total / static_cast<double>(counted) : total;
}

float run_forward(const OpDef& op, std::vector<std::optional<Tensor>> inputs, Attributes attrs,
                  Scaling scaling = Scaling::kUnscaled) {
  OpRun run(op, std::move(inputs), std::move(attrs), scaling);
  run.forward();
  return run.output()[0];
}

// ---------------------------------------------------------------------------------------------
// Gradcheck (unscaled: the true gradient, including ÷B_valid for "mean" and ×m)
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyGradcheck, TwoDimensionalMeanAndSum) {
  std::mt19937 rng(1);
  const Tensor logits = random_normal({4, 5}, rng), labels = random_labels({4}, 5, rng);
  const testing::GradcheckOptions options{.differentiable = {true, false}};
  testing::gradcheck(kCrossEntropyOp, {logits, labels}, ce_attrs("mean"), options);
  testing::gradcheck(kCrossEntropyOp, {logits, labels}, ce_attrs("sum"), options);
}

TEST(CrossEntropyGradcheck, OneDimensional) {
  std::mt19937 rng(2);
  const testing::GradcheckOptions options{.differentiable = {true, false}};
  testing::gradcheck(kCrossEntropyOp, {random_normal({7}, rng), label_scalar(3)}, ce_attrs("mean"),
                     options);
  testing::gradcheck(kCrossEntropyOp, {random_normal({7}, rng), label_scalar(0)}, ce_attrs("sum", 2.0),
                     options);
  // The default (no differentiable list) is every f32 input: the logits, never the i32 labels.
  testing::gradcheck(kCrossEntropyOp, {random_normal({7}, rng), label_scalar(6)}, ce_attrs("mean"));
}

TEST(CrossEntropyGradcheck, MultAndIgnoredRows) {
  std::mt19937 rng(3);
  const Tensor logits = random_normal({5, 6}, rng);
  const Tensor labels = label_tensor({5}, Labels{2, -100, 5, 0, -100});
  const testing::GradcheckOptions options{.differentiable = {true, false}};
  for (const double mult : {0.25, 1.0, 3.0}) {
    testing::gradcheck(kCrossEntropyOp, {logits, labels}, ce_attrs("mean", mult), options);
    testing::gradcheck(kCrossEntropyOp, {logits, labels}, ce_attrs("sum", mult), options);
  }
  // A custom ignore_index, inside the class range: that class is ignored.
  const Tensor labels_custom = label_tensor({5}, Labels{2, 4, 5, 4, 1});
  testing::gradcheck(kCrossEntropyOp, {logits, labels_custom}, ce_attrs("mean", 1.0, 4), options);
}

TEST(MseLossGradcheck, MeanAndSumOverShapes) {
  std::mt19937 rng(4);
  for (const Shape& shape : {Shape{6}, Shape{3, 4}, Shape{2, 3, 2}, Shape{}}) {
    const Tensor a = random_normal(shape, rng), b = random_normal(shape, rng);
    testing::gradcheck(kMseLossOp, {a, b}, mse_attrs("mean"));
    testing::gradcheck(kMseLossOp, {a, b}, mse_attrs("sum"));
  }
}

// ---------------------------------------------------------------------------------------------
// Exact forward values
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyForward, HandMadeValues) {
  // Uniform logits: the loss is ln V whatever the label.
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp,
                              {Tensor({4}, std::vector<float>{0, 0, 0, 0}), label_scalar(2)}, ce_attrs()),
                  static_cast<float>(std::log(4.0)));
  // Logits (0, ln 3): p = (¼, ¾). Row 0 labels class 1 (loss ln(4/3)), row 1 class 0 (loss ln 4).
  const float ln3 = static_cast<float>(std::log(3.0));
  const Tensor logits({2, 2}, std::vector<float>{0, ln3, 0, ln3});
  const Tensor labels = label_tensor({2}, Labels{1, 0});
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("sum")),
                  static_cast<float>(std::log(4.0 / 3.0) + std::log(4.0)));
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("mean")),
                  static_cast<float>((std::log(4.0 / 3.0) + std::log(4.0)) / 2));
  // mult 2 sharpens to softmax(0, 2 ln 3) = (1/10, 9/10).
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("sum", 2.0)),
                  static_cast<float>(std::log(10.0 / 9.0) + std::log(10.0)));
}

TEST(CrossEntropyForward, MeanDividesByNonIgnoredRows) {
  // spec §12 item 5: the reference divides by all B rows; we divide by B_valid.
  const float ln3 = static_cast<float>(std::log(3.0));
  const Tensor logits({3, 2}, std::vector<float>{0, ln3, 5, -5, 0, ln3});
  const Tensor labels = label_tensor({3}, Labels{1, -100, 0});
  const double expected = (std::log(4.0 / 3.0) + std::log(4.0)) / 2;  // not / 3
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("mean")),
                  static_cast<float>(expected));
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("sum")),
                  static_cast<float>(2 * expected));
}

TEST(CrossEntropyForward, AllRowsIgnoredMeanIsNanSumIsZero) {
  const Tensor logits({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  const Tensor labels = label_tensor({2}, Labels{-100, -100});
  EXPECT_TRUE(std::isnan(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("mean"))));
  EXPECT_EQ(run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("sum")), 0.0f);
}

// The loss equals a plain mean CE computed independently, to float rounding, in both modes
// (unit scaling never touches the forward value), for 1-D and 2-D inputs, with ignored rows.
TEST(CrossEntropyForward, EqualsPlainCrossEntropy) {
  std::mt19937 rng(5);
  Tensor logits = random_normal({64, 50}, rng, 3.0f);
  Tensor labels = random_labels({64}, 50, rng);
  for (std::int64_t r = 0; r < 64; r += 5) set_label(labels, r, -100);
  for (const Scaling scaling : {Scaling::kUnscaled, Scaling::kUnit}) {
    for (const double mult : {1.0, 0.5}) {
      EXPECT_FLOAT_EQ(
          run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("mean", mult), scaling),
          static_cast<float>(reference_cross_entropy(logits, labels, mult, true)));
      EXPECT_FLOAT_EQ(
          run_forward(kCrossEntropyOp, {logits, labels}, ce_attrs("sum", mult), scaling),
          static_cast<float>(reference_cross_entropy(logits, labels, mult, false)));
    }
    const Tensor row = random_normal({50}, rng);
    EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {row, label_scalar(17)}, ce_attrs("mean"), scaling),
                    static_cast<float>(reference_cross_entropy(row, label_scalar(17), 1.0, true)));
  }
}

TEST(MseLossForward, HandMadeValues) {
  const Tensor a({2, 2}, std::vector<float>{1, 2, 3, 4});
  const Tensor b({2, 2}, std::vector<float>{1, 0, 4, 1});
  // (0² + 2² + 1² + 3²) = 14
  EXPECT_EQ(run_forward(kMseLossOp, {a, b}, mse_attrs("sum")), 14.0f);
  EXPECT_EQ(run_forward(kMseLossOp, {a, b}, mse_attrs("mean")), 3.5f);
  EXPECT_EQ(run_forward(kMseLossOp, {a, b}, mse_attrs("mean"), Scaling::kUnit), 3.5f);
}

// ---------------------------------------------------------------------------------------------
// Accuracy against extended precision. The kernels use a vectorised float exp (~2 ulps) and float
// lane sums moved to double every block; both are checked on every SIMD level of this CPU.
// ---------------------------------------------------------------------------------------------

struct LabelledRow {
  std::vector<float> logits;
  std::int64_t label = 0;
};

// Rows that stress them: a large common offset, huge and tiny logits, a dominant label (a loss
// of ~1e-11 that must keep its digits, as must 1 − p_label), a label far below the rest, and −∞
// (masked) logits. The lengths leave partial vectors at every lane width.
std::vector<LabelledRow> hard_labelled_rows(std::mt19937& rng) {
  std::vector<LabelledRow> rows;
  std::normal_distribution<float> normal;
  for (const std::size_t v : {2, 5, 100, 1031}) {
    const auto label = static_cast<std::int64_t>(v / 3);
    auto add = [&](auto&& value) {
      LabelledRow row{std::vector<float>(v), label};
      for (std::size_t j = 0; j < v; ++j) row.logits[j] = value(j);
      rows.push_back(std::move(row));
    };
    add([&](std::size_t) { return normal(rng); });
    add([&](std::size_t) { return 1e4f + normal(rng); });
    add([&](std::size_t) { return 1e3f * normal(rng); });
    add([&](std::size_t) { return 1e-30f * normal(rng); });
    add([&](std::size_t j) { return static_cast<std::int64_t>(j) == label ? 30.0f : normal(rng); });
    add([&](std::size_t j) {
      return static_cast<std::int64_t>(j) == label ? -30.0f : normal(rng);
    });
    add([&](std::size_t j) {
      return j % 3 == 2 && static_cast<std::int64_t>(j) != label ? -INFINITY : normal(rng);
    });
  }
  return rows;
}

// ℓ = log Σ_j exp(a_j) with a_j = m·(z_j − z_label), and its gradient m·(p − onehot), in long
// double, through the largest a_j so that a tiny loss keeps its digits: ℓ = a_top + log1p(Σ_{j≠top}
// exp(a_j − a_top)), p_j = exp(a_j − a_top)/(1 + that sum), 1 − p_label = Σ_{j≠label} .../(...).
struct CrossEntropyReference {
  long double loss = 0;
  std::vector<long double> grad;  // m·(p − onehot)
  // The float kernel rounds each exponent a_j − a_top, which costs exp(a_j − a_top) a relative
  // error of up to ε/2·|a_j − a_top| (see softmax_test): condition_j = 1 + |a_j − a_top| bounds
  // the gradient's, and loss_spread = Σ_{j≠top} condition_j·p_j the loss's absolute error.
  std::vector<long double> condition;
  long double loss_spread = 0;
};

CrossEntropyReference reference_row(const LabelledRow& row, double mult) {
  const std::size_t v = row.logits.size();
  const auto label = static_cast<std::size_t>(row.label);
  std::vector<long double> a(v), e(v), condition(v);
  std::size_t top = 0;
  for (std::size_t j = 0; j < v; ++j) {
    a[j] = mult * (static_cast<long double>(row.logits[j]) - row.logits[label]);
    if (a[j] > a[top]) top = j;
  }
  long double rest = 0, others = 0;  // Σ over j ≠ top, and over j ≠ label, of exp(a_j − a_top)
  long double rest_spread = 0, others_spread = 0;  // the same sums weighted by condition_j
  for (std::size_t j = 0; j < v; ++j) {
    e[j] = std::exp(a[j] - a[top]);
    condition[j] = std::isinf(a[j]) ? 1 : 1 + std::abs(a[j] - a[top]);  // −∞: e = 0 exactly
    if (j != top) rest += e[j], rest_spread += condition[j] * e[j];
    if (j != label) others += e[j], others_spread += condition[j] * e[j];
  }
  CrossEntropyReference ref;
  ref.loss = a[top] + std::log1p(rest);
  ref.loss_spread = rest_spread / (1 + rest);
  for (std::size_t j = 0; j < v; ++j) {
    ref.grad.push_back(mult * (j == label ? -others : e[j]) / (1 + rest));
    // 1 − p_label is made of the other classes' terms, and inherits their condition.
    ref.condition.push_back(j == label && others > 0 ? others_spread / others : condition[j]);
  }
  return ref;
}

TEST(CrossEntropyAccuracy, LossAndGradientMatchExtendedPrecisionOnHardRows) {
  std::mt19937 rng(9);
  const auto rows = hard_labelled_rows(rng);
  // |error| ≤ kTolerance·(|expected| scaled by its condition, see CrossEntropyReference) plus
  // kFlushFloor per class for exp results below FLT_MIN, which are flushed to 0. kTolerance is ~16
  // float ulps (the kernels reach ~2). On the dominant-label rows (ℓ ≈ 1 − p_label ≈ 3e-14),
  // computing p_label − 1 as p − 1, or the loss as logsumexp − m·z_label, errs by 100% in float
  // and still by 1e-3 in double.
  constexpr double kTolerance = 1e-6;
  constexpr double kFlushFloor = 2 * FLT_MIN;
  testing::for_each_simd_level([&] {
    testing::WorstError loss_error, grad_error;
    for (const double mult : {1.0, 0.3}) {
      for (std::size_t r = 0; r < rows.size(); ++r) {
        const auto v = static_cast<std::int64_t>(rows[r].logits.size());
        const Tensor logits(Shape{1, v}, rows[r].logits);
        const Tensor labels = label_tensor(Shape{1}, Labels{static_cast<std::int32_t>(rows[r].label)});
        Tensor grad(Shape{1, v});
        const float loss =
            cross_entropy_forward(logits, labels, mult, Reduction::kSum, kDefaultIgnoreIndex);
        cross_entropy_backward(logits, labels, 1.0f, grad, mult, Reduction::kSum,
                               kDefaultIgnoreIndex, LossGradient::kTrue, 1.0f);
        const CrossEntropyReference ref = reference_row(rows[r], mult);
        auto where = [&] { return fmt::format("m={} row {} (V={})", mult, r, v); };
        const double floor = kFlushFloor * static_cast<double>(v);
        loss_error.update(loss, static_cast<double>(ref.loss),
                          kTolerance * static_cast<double>(ref.loss + ref.loss_spread) + floor,
                          where);
        for (std::int64_t j = 0; j < v; ++j) {
          const auto k = static_cast<std::size_t>(j);
          const auto expected = static_cast<double>(ref.grad[k]);
          const auto c = static_cast<double>(ref.condition[k]);
          grad_error.update(grad[j], expected, kTolerance * c * std::abs(expected) + mult * floor,
                            [&] { return where() + fmt::format(" j={}", j); });
        }
      }
    }
    EXPECT_LE(loss_error.error, 1.0) << loss_error.where;
    EXPECT_LE(grad_error.error, 1.0) << grad_error.where;
  });
}

TEST(MseLossAccuracy, MatchesDoublePrecision) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal;
  testing::for_each_simd_level([&] {
    // Sizes below and far above the parallel threshold; operands with a large common offset,
    // and nearly equal ones.
    for (const std::int64_t n : {1, 7, 1031, 300007}) {
      for (const float offset : {0.0f, 1e4f}) {
        for (const float spread : {1.0f, 1e-3f}) {
          Tensor a(Shape{n}), b(Shape{n});
          for (std::int64_t i = 0; i < n; ++i) {
            a[i] = offset + normal(rng);
            b[i] = a[i] + spread * normal(rng);
          }
          double expected = 0;
          for (std::int64_t i = 0; i < n; ++i) {
            const double d = static_cast<double>(a[i]) - b[i];
            expected += d * d;
          }
          SCOPED_TRACE(fmt::format("n={} offset={} spread={}", n, offset, spread));
          // Positive terms: float lane sums of at most 32 terms each lose < 2e-6.
          EXPECT_NEAR(mse_loss_forward(a, b, Reduction::kSum), expected, 2e-6 * expected);
          EXPECT_NEAR(mse_loss_forward(a, b, Reduction::kMean), expected / static_cast<double>(n),
                      2e-6 * expected / static_cast<double>(n));
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Backward values and the unit-scaling rule
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyBackward, HandMadeGradient) {
  // softmax(0, ln 3) = (¼, ¾), label 1: true gradient (¼, −¼) per unit of incoming gradient.
  const float ln3 = static_cast<float>(std::log(3.0));
  OpRun run(kCrossEntropyOp,
            {Tensor({1, 2}, std::vector<float>{0, ln3}), label_tensor({1}, Labels{1})},
            ce_attrs("mean"));
  run.forward();
  const auto grads = run.backward({scalar(2.0f)});
  EXPECT_FLOAT_EQ((*grads[0])[0], 0.5f);
  EXPECT_FLOAT_EQ((*grads[0])[1], -0.5f);
}

TEST(CrossEntropyScales, ConstantsAtTheDefaults) {
  // spec §4, "CE gradient scale, V = 65 / 256 / 4096".
  EXPECT_DOUBLE_EQ(cross_entropy_grad_scale(65), 8.125);
  EXPECT_NEAR(cross_entropy_grad_scale(256), 16.03134, 5e-6);
  EXPECT_NEAR(cross_entropy_grad_scale(4096), 64.00781, 5e-6);
  for (const std::int64_t vocab : {65, 256, 4096}) {
    std::mt19937 rng(6);
    OpRun run(kCrossEntropyOp, {random_normal({2, vocab}, rng), random_labels({2}, vocab, rng)},
              ce_attrs(), Scaling::kUnit);
    EXPECT_DOUBLE_EQ(run.attrs().get_double("t", "beta_logits"), cross_entropy_grad_scale(vocab));
    EXPECT_EQ(run.attrs().get_enum_name("t", "gradient"), "unit");
  }
  EXPECT_DOUBLE_EQ(mse_loss_grad_scale(), 1 / std::sqrt(8.0));
}

// Unit mode: grad = β·(p − onehot)·g, neither ÷B_valid nor ×m. So scaled = β·(B_valid/m)·unscaled
// for "mean" and β/m·unscaled for "sum"; ignored rows are zero in both.
TEST(CrossEntropyScales, ScaledIsBetaTimesUnscaledWithoutForwardOnlyFactors) {
  std::mt19937 rng(7);
  const std::int64_t rows = 12, vocab = 33;
  const Tensor logits = random_normal({rows, vocab}, rng);
  Tensor labels = random_labels({rows}, vocab, rng);
  set_label(labels, 3, -100);
  set_label(labels, 8, -100);
  const double valid_rows = 10;
  const Tensor g = scalar(1.7f);
  for (const double mult : {1.0, 0.5, 4.0}) {
    for (const std::string_view reduction : {"mean", "sum"}) {
      OpRun plain(kCrossEntropyOp, {logits, labels}, ce_attrs(reduction, mult), Scaling::kUnscaled);
      OpRun scaled(kCrossEntropyOp, {logits, labels}, ce_attrs(reduction, mult), Scaling::kUnit);
      plain.forward();
      scaled.forward();
      EXPECT_EQ(scaled.output()[0], plain.output()[0]);
      const auto gp = plain.backward({g});
      const auto gs = scaled.backward({g});
      const double beta = scaled.attrs().get_double("t", "beta_logits");
      const double ratio = beta * (reduction == "mean" ? valid_rows : 1.0) / mult;
      for (std::int64_t i = 0; i < gp[0]->numel(); ++i) {
        ASSERT_NEAR((*gs[0])[i], ratio * (*gp[0])[i], 2e-6 * (1 + std::abs((*gs[0])[i])))
            << "mult " << mult << " " << reduction << " element " << i;
      }
      for (const std::int64_t ignored_row : {3, 8}) {
        for (std::int64_t i = 0; i < vocab; ++i) {
          EXPECT_EQ((*gs[0])[ignored_row * vocab + i], 0.0f);
          EXPECT_EQ((*gp[0])[ignored_row * vocab + i], 0.0f);
        }
      }
      // Labels never get a gradient of their own: none by default, a zero one if asked for.
      EXPECT_FALSE(gp[1].has_value());
      EXPECT_FALSE(gs[1].has_value());
      const auto asked = plain.backward({g}, {true, true});
      ASSERT_TRUE(asked[1].has_value());
      EXPECT_EQ(asked[1]->shape(), labels.shape());
      for (const float v : asked[1]->span()) EXPECT_EQ(v, 0.0f);
      for (std::int64_t i = 0; i < gp[0]->numel(); ++i) EXPECT_EQ((*asked[0])[i], (*gp[0])[i]);
    }
  }
}

TEST(CrossEntropyScales, UnitGradientIsSoftmaxMinusOnehotTimesBeta) {
  const float ln3 = static_cast<float>(std::log(3.0));
  OpRun run(kCrossEntropyOp, {Tensor({2}, std::vector<float>{0, ln3}), label_scalar(1)},
            ce_attrs("mean", 2.0), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({scalar(1.0f)});
  // softmax(2·(0, ln 3)) = (0.1, 0.9); β = 2/√1 = 2; no ×m.
  EXPECT_FLOAT_EQ((*grads[0])[0], 0.2f);
  EXPECT_FLOAT_EQ((*grads[0])[1], -0.2f);
}

TEST(MseLossScales, ScaledIsBetaTimesUnscaledWithoutMeanFactor) {
  std::mt19937 rng(8);
  const Tensor a = random_normal({5, 7}, rng), b = random_normal({5, 7}, rng);
  const Tensor g = scalar(0.6f);
  for (const std::string_view reduction : {"mean", "sum"}) {
    OpRun plain(kMseLossOp, {a, b}, mse_attrs(reduction), Scaling::kUnscaled);
    OpRun scaled(kMseLossOp, {a, b}, mse_attrs(reduction), Scaling::kUnit);
    plain.forward();
    scaled.forward();
    EXPECT_EQ(scaled.output()[0], plain.output()[0]);
    const auto gp = plain.backward({g});
    const auto gs = scaled.backward({g});
    for (std::size_t k = 0; k < 2; ++k) {
      const double beta = scaled.attrs().get_double("t", k == 0 ? "beta_a" : "beta_b");
      EXPECT_DOUBLE_EQ(beta, 1 / std::sqrt(8.0));
      const double ratio = beta * (reduction == "mean" ? 35.0 : 1.0);
      for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
        ASSERT_NEAR((*gs[k])[i], ratio * (*gp[k])[i], 2e-6 * (1 + std::abs((*gs[k])[i])));
        // The true gradient: ±2(a − b)·g·r.
        const double sign = k == 0 ? 1.0 : -1.0;
        const double r = reduction == "mean" ? 1.0 / 35 : 1.0;
        ASSERT_NEAR((*gp[k])[i], sign * 2 * (a[i] - b[i]) * 0.6 * r, 1e-6);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics (spec §5): N(0,1) logits / inputs, incoming gradient 1 (the loss is a scalar)
// ---------------------------------------------------------------------------------------------

TEST(CrossEntropyStatistics, UnitLogitsGradientV256B4096) {
  std::mt19937 rng(9);
  const Tensor logits = random_normal({4096, 256}, rng);
  const Tensor labels = random_labels({4096}, 256, rng);
  for (const std::string_view reduction : {"mean", "sum"}) {
    OpRun run(kCrossEntropyOp, {logits, labels}, ce_attrs(reduction), Scaling::kUnit);
    run.forward();
    const auto grads = run.backward({scalar(1.0f)});
    const double grad_std = testing::std_of(grads[0]->span());
    EXPECT_NEAR(grad_std, 1.003, 0.1) << reduction;
    if (reduction == "mean") {
      // spec: 6.035; closed form ln V + ½ (E[log Σ e^z] ≈ ln V + ½ for N(0,1) logits, E[z_y] = 0).
      EXPECT_NEAR(run.output()[0], 6.035, 0.1);
      EXPECT_NEAR(run.output()[0], std::log(256.0) + 0.5, 0.1);
      RecordProperty("loss", std::to_string(run.output()[0]));
      RecordProperty("logits_grad_std", std::to_string(grad_std));
    }
  }
}

TEST(CrossEntropyStatistics, OneDimensionalRowsAlsoUnit) {
  // A single [V] row: average the std over many independent rows.
  std::mt19937 rng(10);
  double sum_sq = 0;
  const int trials = 256;
  for (int t = 0; t < trials; ++t) {
    OpRun run(kCrossEntropyOp, {random_normal({4096}, rng), random_labels({}, 4096, rng)},
              ce_attrs(), Scaling::kUnit);
    run.forward();
    const auto grads = run.backward({scalar(1.0f)});
    sum_sq += std::pow(testing::rms_of(grads[0]->span()), 2);
  }
  EXPECT_NEAR(std::sqrt(sum_sq / trials), 1.0, 0.1);
  RecordProperty("logits_grad_rms", std::to_string(std::sqrt(sum_sq / trials)));
}

TEST(MseLossStatistics, LossAndGradients) {
  std::mt19937 rng(11);
  OpRun run(kMseLossOp, {random_normal({1024, 1024}, rng), random_normal({1024, 1024}, rng)},
            mse_attrs(), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({scalar(1.0f)});
  const double grad_a_std = testing::std_of(grads[0]->span());
  const double grad_b_std = testing::std_of(grads[1]->span());
  EXPECT_NEAR(run.output()[0], 2.044, 0.1);  // closed form E(a − b)² = 2
  EXPECT_NEAR(grad_a_std, 1.011, 0.1);
  EXPECT_NEAR(grad_b_std, 1.011, 0.1);
  RecordProperty("loss", std::to_string(run.output()[0]));
  RecordProperty("grad_a_std", std::to_string(grad_a_std));
  RecordProperty("grad_b_std", std::to_string(grad_b_std));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// Every label outside [0, V) that is not ignore_index is rejected, by the forward and the backward
// kernel, naming the op, the label, its row and the valid range: V itself, past it, negative,
// next to the ignore index, and the extremes of int32.
TEST(CrossEntropyErrors, BadLabelsNameTheOpAndTheLabel) {
  const Tensor logits({3, 4}, std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  struct Case {
    std::int32_t bad;
    std::string text;
  };
  constexpr std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
  constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();
  for (const Case& c : {Case{4, "label 4 "}, Case{5, "label 5 "}, Case{-1, "label -1 "},
                        Case{-99, "label -99 "}, Case{-101, "label -101 "},
                        Case{kMin, "label -2147483648 "}, Case{kMax, "label 2147483647 "}}) {
    SCOPED_TRACE(c.text);
    Tensor labels = label_tensor({3}, Labels{0, 1, 2});
    set_label(labels, 1, c.bad);
    OpRun run(kCrossEntropyOp, {logits, labels}, ce_attrs());
    EXPECT_THAT([&] { run.forward(); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr(c.text),
                                           HasSubstr("row 1"), HasSubstr("[0, 4)"),
                                           HasSubstr("ignore_index -100"))));
    EXPECT_THAT([&] { run.backward({scalar(1.0f)}); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr(c.text),
                                           HasSubstr("row 1"))));
  }
  // The default ignore index is fine, and so is a custom one; -100 is not when it is not ignored.
  EXPECT_NO_THROW(run_forward(kCrossEntropyOp,
                              {logits, label_tensor({3}, Labels{0, -100, 3})}, ce_attrs()));
  EXPECT_NO_THROW(run_forward(kCrossEntropyOp, {logits, label_tensor({3}, Labels{0, -1, 3})},
                              ce_attrs("mean", 1.0, -1)));
  EXPECT_THAT([&] {
    run_forward(kCrossEntropyOp, {logits, label_tensor({3}, Labels{0, -100, 3})},
                ce_attrs("mean", 1.0, -1));
  }, ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("label -100 "),
                                HasSubstr("row 1"), HasSubstr("ignore_index -1"))));
}

// i32 labels at the edges of the class range: 0 and V - 1 are classes, -100 (the default
// ignore_index) drops its row from the loss and the gradient, and V is rejected.
TEST(CrossEntropyErrors, LabelsAtTheBoundaries) {
  const float ln3 = static_cast<float>(std::log(3.0));
  const Tensor logits({3, 2}, std::vector<float>{0, ln3, 7, -7, 0, ln3});
  const Tensor labels = label_tensor({3}, Labels{1, -100, 0});  // V - 1, ignored, 0
  OpRun run(kCrossEntropyOp, {logits, labels}, ce_attrs("sum"));
  run.forward();
  EXPECT_FLOAT_EQ(run.output()[0], static_cast<float>(std::log(4.0 / 3.0) + std::log(4.0)));
  const auto grads = run.backward({scalar(1.0f)});
  EXPECT_FLOAT_EQ((*grads[0])[0], 0.25f);   // row 0, label 1: p − onehot = (¼, −¼)
  EXPECT_FLOAT_EQ((*grads[0])[1], -0.25f);
  EXPECT_EQ((*grads[0])[2], 0.0f);  // the ignored row
  EXPECT_EQ((*grads[0])[3], 0.0f);
  EXPECT_FLOAT_EQ((*grads[0])[4], -0.75f);  // row 2, label 0: (¼ − 1, ¾)
  EXPECT_FLOAT_EQ((*grads[0])[5], 0.75f);
  // A single row: label V - 1 is fine, V is not, and -100 ignores the only row.
  const Tensor row({2}, std::vector<float>{0, ln3});
  EXPECT_FLOAT_EQ(run_forward(kCrossEntropyOp, {row, label_scalar(1)}, ce_attrs()),
                  static_cast<float>(std::log(4.0 / 3.0)));
  EXPECT_THAT([&] { run_forward(kCrossEntropyOp, {row, label_scalar(2)}, ce_attrs()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("label 2 "),
                                         HasSubstr("row 0"), HasSubstr("[0, 2)"))));
  EXPECT_EQ(run_forward(kCrossEntropyOp, {row, label_scalar(-100)}, ce_attrs("sum")), 0.0f);
}

// The kernels read labels only as i32: a float tensor of labels is refused, never reinterpreted.
TEST(CrossEntropyErrors, KernelsRefuseFloatLabels) {
  const Tensor logits({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  const Tensor float_labels({2}, std::vector<float>{0, 2});
  Tensor grad({2, 3});
  EXPECT_THAT([&] { cross_entropy_forward(logits, float_labels, 1.0, Reduction::kMean, kDefaultIgnoreIndex); },
              ThrowsMessage<Error>(AllOf(HasSubstr("expected a i32"), HasSubstr("got f32"))));
  EXPECT_THAT([&] {
    cross_entropy_backward(logits, float_labels, 1.0f, grad, 1.0, Reduction::kMean,
                           kDefaultIgnoreIndex, LossGradient::kTrue, 1.0f);
  }, ThrowsMessage<Error>(AllOf(HasSubstr("expected a i32"), HasSubstr("got f32"))));
}

// The builder checks the dtypes when the node is recorded: labels of any dtype but i32 (the float
// labels of old, or a low-precision float) and logits of any dtype but f32 fail at once, naming
// the op, the input, the value and both dtypes, and leave the graph unchanged.
TEST(CrossEntropyErrors, WrongDtypesFailAtRecordTime) {
  Graph g;
  const Value logits = g.input("logits", {4, 8});
  for (const DType bad : {DType::kF32, DType::kF16, DType::kE5M2}) {
    const std::string name(dtype_name(bad));
    SCOPED_TRACE(name);
    const Value labels = g.input("labels_" + name, {4}, bad);
    const std::size_t nodes = g.nodes().size();
    EXPECT_THAT([&] { cross_entropy(logits, labels); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("input 'labels'"),
                                           HasSubstr(fmt::format("(%{})", labels.id())),
                                           HasSubstr("has dtype " + name), HasSubstr("expected i32"))));
    EXPECT_EQ(g.nodes().size(), nodes);
  }
  const Value labels = g.input("labels", {4}, DType::kI32);
  const Value int_logits = g.input("int_logits", {4, 8}, DType::kI32);
  EXPECT_THAT([&] { cross_entropy(int_logits, labels); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("input 'logits'"),
                                         HasSubstr(fmt::format("(%{})", int_logits.id())),
                                         HasSubstr("has dtype i32"), HasSubstr("expected f32"))));
  const Value loss = cross_entropy(logits, labels);
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::kF32);
}

TEST(CrossEntropyErrors, ShapeMismatchNamesOpAndShapes) {
  Graph g;
  const auto expect_shape_error = [&](const Shape& logits, const Shape& labels) {
    const Value l = g.input("logits", logits);
    const Value y = g.input("labels", labels, DType::kI32);
    EXPECT_THAT(
        [&] { cross_entropy(l, y); },
        ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr(logits.to_string()),
                                   HasSubstr(labels.to_string()))));
  };
  expect_shape_error({4, 8}, {3});
  expect_shape_error({4, 8}, {4, 1});
  expect_shape_error({4, 8}, {});
  expect_shape_error({8}, {1});
  expect_shape_error({2, 3, 8}, {2, 3});
  expect_shape_error({}, {});
  const Value one_class = g.input("one_class", {4, 1});
  EXPECT_THAT(
      [&] { cross_entropy(one_class, g.input("y4", {4}, DType::kI32)); },
      ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("at least 2 classes"))));
}

TEST(CrossEntropyErrors, BadAttributesNameTheOp) {
  Graph g;
  const Value logits = g.input("logits", {4, 8});
  const Value labels = g.input("labels", {4}, DType::kI32);
  for (const double mult : {0.0, -1.0, static_cast<double>(NAN)}) {
    EXPECT_THAT([&] { cross_entropy(logits, labels, {.mult = mult}); },
                ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("mult"))));
  }
  const Value inputs[] = {logits, labels};
  EXPECT_THAT([&] { g.apply1(kCrossEntropyOp, inputs, ce_attrs("average")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cross_entropy"), HasSubstr("'average'"),
                                         HasSubstr("mean, sum"))));
}

TEST(MseLossErrors, ShapeMismatchNamesOpAndShapes) {
  Graph g;
  const Value a = g.input("a", {4, 8});
  const Value b = g.input("b", {8});
  EXPECT_THAT(
      [&] { mse_loss(a, b); },
      ThrowsMessage<Error>(AllOf(HasSubstr("mse_loss"), HasSubstr("[4, 8]"), HasSubstr("[8]"))));
  const Value inputs[] = {a, a};
  EXPECT_THAT([&] { g.apply1(kMseLossOp, inputs, mse_attrs("max")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("mse_loss"), HasSubstr("'max'"))));
}

// ---------------------------------------------------------------------------------------------
// Through the graph: builders, autodiff and the executor
// ---------------------------------------------------------------------------------------------

TEST(LossGraph, BuilderAutodiffAndExecutorMatchTheKernels) {
  std::mt19937 rng(12);
  const Tensor logits = random_normal({6, 9}, rng);
  Tensor labels = random_labels({6}, 9, rng);
  set_label(labels, 2, -100);
  const Tensor a = random_normal({3, 5}, rng), b = random_normal({3, 5}, rng);
  for (const Scaling scaling : {Scaling::kUnscaled, Scaling::kUnit}) {
    Graph g(scaling);
    const Value logits_v = g.parameter("logits", logits.shape());
    const Value labels_v = g.input("labels", labels.shape(), DType::kI32);
    const Value a_v = g.parameter("a", a.shape());
    const Value b_v = g.input("b", b.shape());
    const Value ce = cross_entropy(logits_v, labels_v, {.mult = 0.5});
    const Value mse = mse_loss(a_v, b_v, {.reduction = Reduction::kSum});
    const Value wrt_ce[] = {logits_v};
    const Value wrt_mse[] = {a_v};
    const Value grad_logits = autodiff(g, ce, wrt_ce)[0];
    const Value grad_a = autodiff(g, mse, wrt_mse)[0];
    const Value outputs[] = {ce, mse, grad_logits, grad_a};
    Executor exec(g, outputs);
    exec.bind(logits_v, logits);
    exec.bind(labels_v, labels);
    exec.bind(a_v, a);
    exec.bind(b_v, b);
    exec.run();

    OpRun ce_run(kCrossEntropyOp, {logits, labels}, ce_attrs("mean", 0.5), scaling);
    ce_run.forward();
    const auto ce_grads = ce_run.backward({scalar(1.0f)}, {true, false});
    OpRun mse_run(kMseLossOp, {a, b}, mse_attrs("sum"), scaling);
    mse_run.forward();
    const auto mse_grads = mse_run.backward({scalar(1.0f)}, {true, false});

    EXPECT_EQ(exec.get(ce).data()[0], ce_run.output()[0]);
    EXPECT_EQ(exec.get(mse).data()[0], mse_run.output()[0]);
    for (std::int64_t i = 0; i < logits.numel(); ++i) {
      EXPECT_EQ(exec.get(grad_logits).data()[i], (*ce_grads[0])[i]);
    }
    for (std::int64_t i = 0; i < a.numel(); ++i)
      EXPECT_EQ(exec.get(grad_a).data()[i], (*mse_grads[0])[i]);
  }
}

}  // namespace
}  // namespace unitscale

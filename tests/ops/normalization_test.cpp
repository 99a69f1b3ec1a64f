#include "unitscale/ops/normalization.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "../support/accuracy.hpp"
#include "../support/op_check.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes eps_attrs(double eps = kDefaultNormEps) { return {{"eps", eps}}; }

// Reference forward in double, straight from the definition.
std::vector<double> reference_norm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                   bool center, double eps) {
  const std::int64_t d = x.shape().inner();
  std::vector<double> y(static_cast<std::size_t>(x.numel()));
  for (std::int64_t r = 0; r < x.shape().outer(); ++r) {
    double mean = 0, sq = 0;
    if (center) {
      for (std::int64_t j = 0; j < d; ++j) mean += x[r * d + j];
      mean /= static_cast<double>(d);
    }
    for (std::int64_t j = 0; j < d; ++j) sq += (x[r * d + j] - mean) * (x[r * d + j] - mean);
    const double rstd = 1 / std::sqrt(sq / static_cast<double>(d) + eps);
    for (std::int64_t j = 0; j < d; ++j) {
      double v = (x[r * d + j] - mean) * rstd;
      if (weight != nullptr) v *= (*weight)[j];
      if (bias != nullptr) v += (*bias)[j];
      y[static_cast<std::size_t>(r * d + j)] = v;
    }
  }
  return y;
}

TEST(NormalizationForward, MatchesDefinition) {
  std::mt19937 rng(11);
  const Tensor x = random_normal({3, 4, 7}, rng, 3.0f);
  const Tensor w = random_normal({7}, rng), b = random_normal({7}, rng);
  OpRun ln(kLayerNormOp, {x, w, b}, eps_attrs(0.1));
  ln.forward();
  const auto ln_ref = reference_norm(x, &w, &b, true, 0.1);
  OpRun rms(kRmsNormOp, {x, w}, eps_attrs(0.1));
  rms.forward();
  const auto rms_ref = reference_norm(x, &w, nullptr, false, 0.1);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_NEAR(ln.output()[i], ln_ref[static_cast<std::size_t>(i)], 1e-5);
    EXPECT_NEAR(rms.output()[i], rms_ref[static_cast<std::size_t>(i)], 1e-5);
  }
}

// ---------------------------------------------------------------------------------------------
// Accuracy against double precision. The kernels accumulate the row statistics in float lanes,
// centred (see normalization.cpp), and compute x̂ and the outputs in float; every SIMD level of
// this CPU is checked.
// ---------------------------------------------------------------------------------------------

// Rows [8, d] that stress the statistics: a large common offset (x + 1e4, 1e6 + 0.1·x), a dominant
// first element (the shift of the first pass) or middle one, a constant row (variance 0), a row
// far below eps, and one whose float sums of squares overflow (|x| ~ 1e20, the double fallback).
// The lengths leave partial vectors at every lane width.
Tensor hard_norm_rows(std::int64_t d, std::mt19937& rng) {
  Tensor x = random_normal({8, d}, rng);
  auto row = [&](std::int64_t r) { return x.span().subspan(static_cast<std::size_t>(r * d)); };
  for (float& v : row(1).first(static_cast<std::size_t>(d))) v += 1e4f;
  row(2)[0] = 1e4f;
  row(3)[static_cast<std::size_t>(d / 2)] = -1e4f;
  for (float& v : row(4).first(static_cast<std::size_t>(d))) v = 5.0f;
  for (float& v : row(5).first(static_cast<std::size_t>(d))) v *= 1e-20f;
  for (float& v : row(6).first(static_cast<std::size_t>(d))) v *= 1e20f;
  for (float& v : row(7).first(static_cast<std::size_t>(d))) v = 1e6f + 0.1f * v;
  return x;
}

// Forward and backward from the definition (normalization.hpp) in double, and long double for the
// statistics, with the size of each result's terms, which scales its error bound (cancellation
// between terms is the input's fault).
struct NormReference {
  std::vector<double> y, y_terms, dx, dx_terms, dw, dw_terms, db, db_terms;
};

struct NormScales {
  double alpha = 1.5, beta_x = 0.7, beta_weight = 0.3, beta_bias = 0.4;
};

NormReference reference_norm_all(const Tensor& x, const Tensor& g, const Tensor& w, const Tensor* b,
                                 bool center, double eps, const NormScales& k) {
  const std::int64_t d = x.shape().inner();
  const auto n = static_cast<double>(d);
  NormReference ref;
  ref.dw.assign(static_cast<std::size_t>(d), 0.0);
  ref.dw_terms = ref.db = ref.db_terms = ref.dw;
  std::vector<double> x_hat(static_cast<std::size_t>(d)), g_hat(x_hat.size());
  for (std::int64_t r = 0; r < x.shape().outer(); ++r) {
    auto at = [&](const Tensor& t, std::int64_t j) -> double { return t[r * d + j]; };
    // Long double: a double sum of 1031 values near 1e6 would itself err by up to 6e-8.
    long double sum = 0, sum_sq = 0;
    for (std::int64_t j = 0; center && j < d; ++j) sum += at(x, j);
    const auto mean = static_cast<double>(sum / d);
    for (std::int64_t j = 0; j < d; ++j) sum_sq += (at(x, j) - sum / d) * (at(x, j) - sum / d);
    const double rstd = 1 / std::sqrt(static_cast<double>(sum_sq / d) + eps);
    double mean_gh = 0, mean_gh_xh = 0, mean_abs_gh = 0, mean_abs_gh_xh = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const auto k_ = static_cast<std::size_t>(j);
      x_hat[k_] = (at(x, j) - mean) * rstd;
      g_hat[k_] = at(g, j) * w[j];
      mean_gh += g_hat[k_] / n;
      mean_gh_xh += g_hat[k_] * x_hat[k_] / n;
      mean_abs_gh += std::abs(g_hat[k_]) / n;
      mean_abs_gh_xh += std::abs(g_hat[k_] * x_hat[k_]) / n;
      const double bias = b != nullptr ? (*b)[j] : 0.0;
      ref.y.push_back(k.alpha * (x_hat[k_] * w[j] + bias));
      // x̂ is exact to float precision relative to the row's spread (|x̂| ~ 1), not to each |x̂_j|:
      // the mean is known to ~1e-7 standard deviations.
      ref.y_terms.push_back(k.alpha *
                            ((std::abs(x_hat[k_]) + 1) * std::abs(w[j]) + std::abs(bias)));
      ref.dw[k_] += k.beta_weight * at(g, j) * x_hat[k_];
      ref.dw_terms[k_] += k.beta_weight * std::abs(at(g, j) * x_hat[k_]);
      ref.db[k_] += k.beta_bias * at(g, j);
      ref.db_terms[k_] += k.beta_bias * std::abs(at(g, j));
    }
    if (!center) mean_gh = mean_abs_gh = 0;
    for (std::size_t j = 0; j < x_hat.size(); ++j) {
      ref.dx.push_back(k.beta_x * rstd * (g_hat[j] - mean_gh - x_hat[j] * mean_gh_xh));
      ref.dx_terms.push_back(
          k.beta_x * rstd *
          (std::abs(g_hat[j]) + mean_abs_gh + std::abs(x_hat[j]) * mean_abs_gh_xh));
    }
  }
  return ref;
}

TEST(NormalizationAccuracy, ForwardAndBackwardMatchDoublePrecisionOnHardRows) {
  std::mt19937 rng(12);
  const NormScales k;
  constexpr double kEps = 1e-5;
  // |error| ≤ kTolerance·(size of the result's terms). kTolerance is ~16 float ulps (the kernels
  // reach ~6); centring on a float mean, as a plain float kernel would, errs by up to 5e-4 on the
  // x + 1e4 rows.
  constexpr double kTolerance = 1e-6;
  testing::for_each_simd_level([&] {
    for (const bool center : {true, false}) {
      testing::WorstError y_error, dx_error, dw_error, db_error;
      for (const std::int64_t d : {1, 3, 17, 256, 1031}) {
        const Tensor x = hard_norm_rows(d, rng), g = random_normal(x.shape(), rng);
        const Tensor w = random_normal({d}, rng), b = random_normal({d}, rng);
        Tensor y(x.shape()), dx(x.shape()), dw(Shape{d}), db(Shape{d});
        const auto alpha = static_cast<float>(k.alpha), beta_x = static_cast<float>(k.beta_x),
                   beta_w = static_cast<float>(k.beta_weight);
        if (center) {
          layer_norm_forward(x, w, b, y, kEps, alpha);
          layer_norm_backward(g, x, w, dx, dw, db, kEps, beta_x, beta_w,
                              static_cast<float>(k.beta_bias));
        } else {
          rms_norm_forward(x, w, y, kEps, alpha);
          rms_norm_backward(g, x, w, dx, dw, kEps, beta_x, beta_w);
        }
        const NormReference ref =
            reference_norm_all(x, g, w, center ? &b : nullptr, center, kEps, k);
        for (std::int64_t i = 0; i < x.numel(); ++i) {
          const auto e = static_cast<std::size_t>(i);
          auto where = [&] { return fmt::format("d={} row {} j={}", d, i / d, i % d); };
          y_error.update(y[i], ref.y[e], kTolerance * ref.y_terms[e], where);
          dx_error.update(dx[i], ref.dx[e], kTolerance * ref.dx_terms[e], where);
        }
        for (std::int64_t j = 0; j < d; ++j) {
          const auto e = static_cast<std::size_t>(j);
          auto where = [&] { return fmt::format("d={} j={}", d, j); };
          dw_error.update(dw[j], ref.dw[e], kTolerance * ref.dw_terms[e], where);
          if (center) db_error.update(db[j], ref.db[e], kTolerance * ref.db_terms[e], where);
        }
      }
      SCOPED_TRACE(center ? "layer_norm" : "rms_norm");
      EXPECT_LE(y_error.error, 1.0) << y_error.where;
      EXPECT_LE(dx_error.error, 1.0) << dx_error.where;
      EXPECT_LE(dw_error.error, 1.0) << dw_error.where;
      EXPECT_LE(db_error.error, 1.0) << db_error.where;
    }
  });
}

// A tiny var + ε (ε = 0 and 0 < ε < 1e-77 included) gives the double-precision result, although
// the float sums of x² underflow and rstd = 1/√(var + ε) is beyond float's range (found by the
// graph fuzzer as norm-tiny-eps: rms_norm([1e-40]) with ε = 0 gave inf instead of 1, a constant
// row with ε = 1e-100 NaN instead of b). Also a constant row with a huge α (rstd·α beyond float).
TEST(NormalizationAccuracy, TinyVariancePlusEpsGivesTheDoublePrecisionResult) {
  struct Case {
    std::vector<float> row;
    double eps;
    float alpha = 1.0f;
  };
  const Case cases[] = {
      {{1e-40f}, 0.0},                     // rms_norm: x/|x| = 1 (x² underflows in float)
      {{3e-30f, -4e-30f, 1e-30f}, 0.0},    // squares below float's range, non-zero mean
      {{1e-30f, 2e-30f, 3.5e-30f}, 1e-300},
      {{0.5f, 0.5f, 0.5f, 0.5f}, 1e-100},  // layer_norm: a constant row is x̂ = 0, y = α·b
      {{-2.0f, -2.0f, -2.0f}, 1e-80},
      {{0.75f, 0.75f}, 1e-5, 1e37f},       // rstd·α ≈ 3e39
  };
  testing::for_each_simd_level([&] {
    for (const Case& c : cases) {
      for (const bool center : {true, false}) {
        SCOPED_TRACE(fmt::format("{} eps {} alpha {} row [{}]", center ? "layer_norm" : "rms_norm",
                                 c.eps, c.alpha, fmt::join(c.row, ", ")));
        const auto d = static_cast<std::int64_t>(c.row.size());
        const Tensor x(Shape{1, d}, c.row);
        Tensor w(Shape{d}), b(Shape{d});
        for (std::int64_t j = 0; j < d; ++j) {
          w[j] = 1.5f - 0.5f * static_cast<float>(j);
          b[j] = 0.25f + 0.125f * static_cast<float>(j);
        }
        Tensor y(x.shape());
        if (center) {
          layer_norm_forward(x, w, b, y, c.eps, c.alpha);
        } else {
          rms_norm_forward(x, w, y, c.eps, c.alpha);
        }
        const std::vector<double> expected = reference_norm(x, &w, center ? &b : nullptr, center, c.eps);
        for (std::int64_t j = 0; j < d; ++j) {
          const double want = c.alpha * expected[static_cast<std::size_t>(j)];
          if (std::isnan(want)) {  // layer_norm of one element with ε = 0: 0/0
            EXPECT_TRUE(std::isnan(y[j])) << "j = " << j << ": " << y[j];
          } else {
            EXPECT_NEAR(y[j], want, 1e-6 * std::abs(want) + 1e-30) << "j = " << j;
          }
        }
      }
    }
    // Backward of a constant row with ε = 1e-100 and a constant output gradient: x̂ = 0, so
    // dw = Σ g·x̂ = 0 and dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)) = 0; db = Σ g.
    const Tensor x(Shape{2, 3}, std::vector<float>{0.5f, 0.5f, 0.5f, -1.0f, -1.0f, -1.0f});
    const Tensor g(Shape{2, 3}, std::vector<float>(6, 0.75f)), ones(Shape{3}, std::vector<float>(3, 1.0f));
    Tensor dx(x.shape()), dw(Shape{3}), db(Shape{3});
    layer_norm_backward(g, x, ones, dx, dw, db, 1e-100, 1.0f, 1.0f, 1.0f);
    for (std::int64_t i = 0; i < 6; ++i) EXPECT_EQ(dx[i], 0.0f) << i;
    for (std::int64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(dw[j], 0.0f) << j;
      EXPECT_EQ(db[j], 1.5f) << j;
    }
    // With ε = 0 a constant row is 0/0, as documented: NaN (in double as in the reference).
    Tensor y(Shape{1, 2});
    layer_norm_forward(Tensor(Shape{1, 2}, std::vector<float>{0.5f, 0.5f}), ConstTensorView{},
                       ConstTensorView{}, y, 0.0, 1.0f);
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
  });
}

// The parameter gradients sum over every row in a fixed order, so they are bit-identical whatever
// the number of threads (and from run to run).
TEST(NormalizationBackward, ParameterGradientsDoNotDependOnTheThreadCount) {
  std::mt19937 rng(5);
  const Shape shape{333, 128};  // above the parallel threshold; rows not a multiple of the chunks
  const Tensor x = random_normal(shape, rng), g = random_normal(shape, rng);
  const Tensor w = random_normal({128}, rng);
  auto grads = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor dx(shape), dw({128}), db({128});
    layer_norm_backward(g, x, w, dx, dw, db, 1e-5, 1.0f, 1.0f, 1.0f);
    omp_set_num_threads(saved);
    std::vector<float> out(dw.data(), dw.data() + 128);
    out.insert(out.end(), db.data(), db.data() + 128);
    return out;
  };
  const std::vector<float> one = grads(1);
  EXPECT_EQ(grads(2), one);
  EXPECT_EQ(grads(3), one);
}

TEST(NormalizationGradcheck, LayerNormAffineVariants) {
  std::mt19937 rng(1);
  testing::gradcheck(kLayerNormOp,
                     {random_normal({3, 6}, rng), random_normal({6}, rng), random_normal({6}, rng)},
                     eps_attrs());
  testing::gradcheck(kLayerNormOp, {random_normal({2, 3, 5}, rng), std::nullopt, std::nullopt},
                     eps_attrs());
  testing::gradcheck(kLayerNormOp, {random_normal({4, 5}, rng), random_normal({5}, rng), std::nullopt},
                     eps_attrs(0.5));
  testing::gradcheck(kLayerNormOp, {random_normal({4, 5}, rng), std::nullopt, random_normal({5}, rng)},
                     eps_attrs());
  testing::gradcheck(kLayerNormOp, {random_normal({6}, rng), random_normal({6}, rng), random_normal({6}, rng)},
                     eps_attrs());
}

TEST(NormalizationGradcheck, RmsNormAffineVariants) {
  std::mt19937 rng(2);
  testing::gradcheck(kRmsNormOp, {random_normal({3, 6}, rng), random_normal({6}, rng)}, eps_attrs());
  testing::gradcheck(kRmsNormOp, {random_normal({2, 3, 5}, rng), std::nullopt}, eps_attrs());
  testing::gradcheck(kRmsNormOp, {random_normal({4, 5}, rng, 0.3f), random_normal({5}, rng)}, eps_attrs(0.2));
}

// Unit scaling leaves the output and the input gradient alone and scales the affine parameter
// gradients by exactly B^-½.
TEST(NormalizationScales, ParameterGradsAreBetaTimesUnscaled) {
  std::mt19937 rng(3);
  const Tensor x = random_normal({2, 6, 8}, rng), w = random_normal({8}, rng), b = random_normal({8}, rng);
  const Tensor g = random_normal({2, 6, 8}, rng);
  struct Case {
    const OpDef* op;
    std::vector<std::optional<Tensor>> inputs;
    std::vector<std::string> beta_names;
  };
  const Case cases[] = {{&kLayerNormOp, {x, w, b}, {"beta_x", "beta_weight", "beta_bias"}},
                        {&kRmsNormOp, {x, w}, {"beta_x", "beta_weight"}}};
  for (const Case& c : cases) {
    OpRun plain(*c.op, c.inputs, eps_attrs(), Scaling::kUnscaled);
    OpRun scaled(*c.op, c.inputs, eps_attrs(), Scaling::kUnit);
    EXPECT_FALSE(plain.attrs().has("beta_weight"));
    EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", "beta_weight"), 1 / std::sqrt(12.0));
    EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", "beta_x", 1.0), 1.0);
    EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", "alpha", 1.0), 1.0);
    plain.forward();
    scaled.forward();
    for (std::int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(scaled.output()[i], plain.output()[i]);
    const auto gp = plain.backward({g});
    const auto gs = scaled.backward({g});
    for (std::size_t k = 0; k < c.beta_names.size(); ++k) {
      const double beta = scaled.attrs().get_double("t", c.beta_names[k], 1.0);
      for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
        EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-6 * (1 + std::abs((*gp[k])[i])))
            << c.op->name << " " << c.beta_names[k];
      }
    }
  }
  OpRun layer_norm_bias_only(kLayerNormOp, {x, std::nullopt, b}, eps_attrs(), Scaling::kUnit);
  EXPECT_FALSE(layer_norm_bias_only.attrs().has("beta_weight"));
  EXPECT_DOUBLE_EQ(layer_norm_bias_only.attrs().get_double("t", "beta_bias"), 1 / std::sqrt(12.0));
}

// Targets measured with the unit-scaling reference library (arXiv 2303.11257): layer_norm (affine)
// out 1.003, x 1.002, w 1.01; rms_norm (affine) out 1.013, x 1.009, w 0.981. The affine parameters
// start at their module init (w = 1, b = 0).
TEST(NormalizationStatistics, AffineHitsSpecTargets) {
  std::mt19937 rng(4);
  const Shape shape{256, 1024};
  const Tensor x = random_normal(shape, rng);
  const Tensor g = random_normal(shape, rng);
  const Tensor ones = Tensor::filled({1024}, 1.0f), zeros({1024});

  OpRun ln(kLayerNormOp, {x, ones, zeros}, eps_attrs(), Scaling::kUnit);
  ln.forward();
  const auto ln_grads = ln.backward({g});
  EXPECT_NEAR(testing::std_of(ln.output().span()), 1.003, 0.1);
  EXPECT_NEAR(testing::std_of(ln_grads[0]->span()), 1.002, 0.1);
  EXPECT_NEAR(testing::std_of(ln_grads[1]->span()), 1.01, 0.1);
  EXPECT_NEAR(testing::std_of(ln_grads[2]->span()), 1.0, 0.1);

  OpRun rms(kRmsNormOp, {x, ones}, eps_attrs(), Scaling::kUnit);
  rms.forward();
  const auto rms_grads = rms.backward({g});
  EXPECT_NEAR(testing::std_of(rms.output().span()), 1.013, 0.1);
  EXPECT_NEAR(testing::std_of(rms_grads[0]->span()), 1.009, 0.1);
  EXPECT_NEAR(testing::std_of(rms_grads[1]->span()), 0.981, 0.1 * 0.981);
}

// Not unit-scaled, the weight gradient grows as √B; the rule is what brings it back to 1.
TEST(NormalizationStatistics, UnscaledWeightGradGrowsAsSqrtRows) {
  std::mt19937 rng(5);
  const Tensor x = random_normal({1024, 64}, rng), g = random_normal({1024, 64}, rng);
  OpRun rms(kRmsNormOp, {x, Tensor::filled({64}, 1.0f)}, eps_attrs(), Scaling::kUnscaled);
  rms.forward();
  const auto grads = rms.backward({g});
  EXPECT_NEAR(testing::std_of(grads[1]->span()) / 32.0, 1.0, 0.2);
}

TEST(NormalizationErrors, ShapesAndAttributesNameTheOp) {
  Graph graph;
  const Value x = graph.input("x", {4, 8});
  const Value w7 = graph.parameter("w7", {7});
  const Value w8 = graph.parameter("w8", {8});
  const Value scalar = graph.input("s", {});
  EXPECT_THAT([&] { layer_norm(x, {.weight = w7}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("layer_norm"), HasSubstr("weight [7]"), HasSubstr("[4, 8]"))));
  EXPECT_THAT([&] { layer_norm(x, {.weight = w8, .bias = w7}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("layer_norm"), HasSubstr("bias [7]"))));
  EXPECT_THAT([&] { rms_norm(x, {.weight = w7}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("rms_norm"), HasSubstr("weight [7]"))));
  EXPECT_THAT([&] { rms_norm(scalar); }, ThrowsMessage<Error>(AllOf(HasSubstr("rms_norm"), HasSubstr("[]"))));
  EXPECT_THAT([&] { layer_norm(x, {.eps = -1.0}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("layer_norm"), HasSubstr("eps"))));
  EXPECT_THAT([&] { rms_norm(x, {.eps = std::nan("")}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("rms_norm"), HasSubstr("eps"))));
}

TEST(NormalizationBuilders, RecordUnitScalesInUnitGraphsOnly) {
  Graph unit;
  const Value x = unit.input("x", {3, 4, 8});
  const Value w = unit.parameter("w", {8});
  const Value y = layer_norm(x, {.weight = w, .eps = 1e-6});
  EXPECT_EQ(y.shape(), (Shape{3, 4, 8}));
  const Attributes& attrs = unit.nodes().back().attrs;
  EXPECT_DOUBLE_EQ(attrs.get_double("t", "eps"), 1e-6);
  EXPECT_DOUBLE_EQ(attrs.get_double("t", "beta_weight"), 1 / std::sqrt(12.0));

  Graph plain(Scaling::kUnscaled);
  const Value xp = plain.input("x", {3, 8});
  rms_norm(xp, {.weight = plain.parameter("w", {8})});
  EXPECT_FALSE(plain.nodes().back().attrs.has("beta_weight"));
}

}  // namespace
}  // namespace unitscale

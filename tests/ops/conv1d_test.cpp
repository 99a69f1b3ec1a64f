#include "unitscale/ops/conv1d.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/matmul.hpp"

namespace unitscale {
namespace {

using namespace testing;

struct Geometry {
  std::int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
};

Attributes conv_attrs(const Geometry& geo = {}, std::string_view constraint = "to_output_scale") {
  return {{"stride", geo.stride},
          {"padding", geo.padding},
          {"dilation", geo.dilation},
          {"groups", geo.groups},
          {"constraint", std::string(constraint)},
          {"power_alpha", 0.5},
          {"power_beta_x", 0.5},
          {"power_beta_weight", 0.5}};
}

struct ConvCase {
  std::string name;
  Shape x, weight;
  bool bias;
  Geometry geo;
};

// Every path of the kernels: plain, strided, padded, dilated, grouped, stride beyond the kernel
// (inputs no tap reads), the identity im2col (k = 1), and batch dims other than one.
const ConvCase kCases[] = {
    {"plain", {2, 3, 7}, {4, 3, 3}, true, {}},
    {"stride2_pad1", {2, 3, 8}, {4, 3, 3}, false, {.stride = 2, .padding = 1}},
    {"dilation2_pad2", {2, 2, 9}, {3, 2, 3}, true, {.padding = 2, .dilation = 2}},
    {"groups2", {2, 4, 6}, {6, 2, 3}, true, {.groups = 2}},
    {"depthwise_pad1", {1, 3, 5}, {3, 1, 3}, false, {.padding = 1, .groups = 3}},
    {"stride3_k2_pad2", {2, 2, 9}, {3, 2, 2}, true, {.stride = 3, .padding = 2}},
    {"all", {2, 4, 11}, {4, 2, 3}, true, {.stride = 2, .padding = 3, .dilation = 3, .groups = 2}},
    {"k1_identity", {2, 3, 5}, {4, 3, 1}, true, {}},
    {"k1_stride2", {2, 3, 5}, {4, 3, 1}, false, {.stride = 2}},
    {"unbatched", {3, 7}, {2, 3, 3}, true, {.padding = 1}},
    {"two_batch_dims", {2, 2, 3, 6}, {2, 3, 3}, false, {.stride = 2}},
};

void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

class Conv1dCases : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv1dCases, Gradcheck) {
  const ConvCase& c = GetParam();
  std::mt19937 rng(1);
  testing::gradcheck(kConv1dOp,
                     {random_normal(c.x, rng), random_normal(c.weight, rng),
                      c.bias ? std::optional<Tensor>(random_normal({c.weight.dim(0)}, rng)) : std::nullopt},
                     conv_attrs(c.geo));
}

// The forward pass against a direct loop in double.
TEST_P(Conv1dCases, ForwardMatchesDirectSum) {
  const ConvCase& c = GetParam();
  std::mt19937 rng(2);
  const Tensor x = random_normal(c.x, rng), w = random_normal(c.weight, rng);
  const Tensor b = random_normal({c.weight.dim(0)}, rng);
  OpRun run(kConv1dOp, {x, w, c.bias ? std::optional<Tensor>(b) : std::nullopt}, conv_attrs(c.geo));
  run.forward();
  const Shape& ys = run.output().shape();
  const std::int64_t c_in = c.x.dim(-2), length = c.x.dim(-1), c_out = ys.dim(-2), l_out = ys.dim(-1);
  const std::int64_t samples = x.numel() / (c_in * length);
  const std::int64_t c_in_group = c_in / c.geo.groups, c_out_group = c_out / c.geo.groups, k = c.weight.dim(2);
  for (std::int64_t n = 0; n < samples; ++n) {
    for (std::int64_t o = 0; o < c_out; ++o) {
      for (std::int64_t t = 0; t < l_out; ++t) {
        double sum = c.bias ? b[o] : 0.0;
        for (std::int64_t ci = 0; ci < c_in_group; ++ci) {
          for (std::int64_t j = 0; j < k; ++j) {
            const std::int64_t pos = t * c.geo.stride + j * c.geo.dilation - c.geo.padding;
            if (pos < 0 || pos >= length) continue;
            const std::int64_t channel = (o / c_out_group) * c_in_group + ci;
            sum += static_cast<double>(w[(o * c_in_group + ci) * k + j]) * x[(n * c_in + channel) * length + pos];
          }
        }
        EXPECT_NEAR(run.output()[(n * c_out + o) * l_out + t], sum, 1e-5 * (1 + std::abs(sum)))
            << "n " << n << " o " << o << " t " << t;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Conv1dCases, ::testing::ValuesIn(kCases),
                         [](const auto& test) { return test.param.name; });

TEST(Conv1dShape, OutputLengthAndBuilder) {
  Graph g;
  const Value x = g.input("x", {8, 16, 100});
  EXPECT_EQ(conv1d(x, g.parameter("w", {32, 16, 5})).shape(), Shape({8, 32, 96}));
  EXPECT_EQ(conv1d(x, g.parameter("w2", {32, 4, 5}), {.bias = g.parameter("b", {32}), .stride = 2,
                                                      .padding = 2, .dilation = 3, .groups = 4})
                .shape(),
            Shape({8, 32, 46}));  // ⌊(100 + 2·2 − (3·4 + 1)) / 2⌋ + 1
}

// A batch spread over threads (one sample per thread) gives what the samples give one by one.
TEST(Conv1dKernels, BatchParallelEqualsPerSample) {
  std::mt19937 rng(3);
  const Geometry geo{.stride = 2, .padding = 3, .dilation = 2, .groups = 2};
  const Tensor x = random_normal({6, 32, 200}, rng), w = random_normal({48, 16, 7}, rng);
  const Tensor b = random_normal({48}, rng);
  OpRun whole(kConv1dOp, {x, w, b}, conv_attrs(geo), Scaling::kUnit);
  whole.forward();
  const Tensor g = random_normal(whole.output().shape(), rng);
  const auto grads = whole.backward({g});
  Tensor dw_sum(w.shape()), db_sum(b.shape());
  const std::int64_t x_size = 32 * 200, y_size = whole.output().numel() / 6;
  for (std::int64_t n = 0; n < 6; ++n) {
    const Tensor xn({1, 32, 200}, x.span().subspan(static_cast<std::size_t>(n * x_size), static_cast<std::size_t>(x_size)));
    const Tensor gn({1, 48, y_size / 48}, g.span().subspan(static_cast<std::size_t>(n * y_size), static_cast<std::size_t>(y_size)));
    OpRun one(kConv1dOp, {xn, w, b}, conv_attrs(geo), Scaling::kUnscaled);
    one.forward();
    const auto grads_n = one.backward({gn});
    const double alpha = whole.attrs().get_double("t", "alpha"), beta_x = whole.attrs().get_double("t", "beta_x");
    for (std::int64_t i = 0; i < y_size; ++i) {
      ASSERT_NEAR(whole.output()[n * y_size + i], alpha * one.output()[i], 1e-5);
    }
    for (std::int64_t i = 0; i < x_size; ++i) {
      ASSERT_NEAR((*grads[0])[n * x_size + i], beta_x * (*grads_n[0])[i], 1e-5);
    }
    for (std::int64_t i = 0; i < w.numel(); ++i) dw_sum[i] += (*grads_n[1])[i];
    for (std::int64_t i = 0; i < b.numel(); ++i) db_sum[i] += (*grads_n[2])[i];
  }
  const double beta_w = whole.attrs().get_double("t", "beta_weight");
  for (std::int64_t i = 0; i < w.numel(); ++i) ASSERT_NEAR((*grads[1])[i], beta_w * dw_sum[i], 1e-4);
  for (std::int64_t i = 0; i < b.numel(); ++i) ASSERT_NEAR((*grads[2])[i], beta_w * db_sum[i], 1e-4);
}

// The scaled op's gradients are exactly β times the unscaled ones and its output α times, for
// every constraint that takes two scales.
class Conv1dScales : public ::testing::TestWithParam<std::string> {};

TEST_P(Conv1dScales, ScaledEqualsScaleTimesUnscaled) {
  std::mt19937 rng(4);
  const Geometry geo{.stride = 2, .padding = 1, .groups = 2};
  const Tensor x = random_normal({3, 4, 12}, rng), w = random_normal({6, 2, 3}, rng), b = random_normal({6}, rng);
  OpRun plain(kConv1dOp, {x, w, b}, conv_attrs(geo, GetParam()), Scaling::kUnscaled);
  OpRun scaled(kConv1dOp, {x, w, b}, conv_attrs(geo, GetParam()), Scaling::kUnit);
  plain.forward();
  scaled.forward();
  const double alpha = scaled.attrs().get_double("t", "alpha");
  for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
    EXPECT_NEAR(scaled.output()[i], alpha * plain.output()[i], 1e-6 * (1 + std::abs(plain.output()[i])));
  }
  const Tensor g = random_normal(plain.output().shape(), rng);
  const auto gp = plain.backward({g});
  const auto gs = scaled.backward({g});
  const char* names[] = {"beta_x", "beta_weight", "beta_bias"};
  for (std::size_t k = 0; k < 3; ++k) {
    const double beta = scaled.attrs().get_double("t", names[k]);
    for (std::int64_t i = 0; i < gp[k]->numel(); ++i) {
      EXPECT_NEAR((*gs[k])[i], beta * (*gp[k])[i], 1e-6 * (1 + std::abs((*gp[k])[i])));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Constraints, Conv1dScales,
                         ::testing::Values("to_output_scale", "to_grad_input_scale", "gmean",
                                           "hmean", "amean", "none"));

double scale(const OpRun& run, std::string_view name) { return run.attrs().get_double("t", name); }

// α = (C_in/g·k)^-½, β_x = (s·g/(C_out·k))^½, β_W = β_b = (B·L_out)^-½, then the constraint.
TEST(Conv1dScales, RuleValues) {
  const auto run = [](const Shape& x, const Shape& w, const Geometry& geo, std::string_view constraint) {
    return OpRun(kConv1dOp, {Tensor(x), Tensor(w), std::nullopt}, conv_attrs(geo, constraint), Scaling::kUnit);
  };
  {  // the spec §5 shape: L_out = 438
    const OpRun none = run({8, 192, 448}, {320, 192, 11}, {}, "none");
    EXPECT_DOUBLE_EQ(scale(none, "alpha"), 1 / std::sqrt(192.0 * 11));
    EXPECT_DOUBLE_EQ(scale(none, "beta_x"), 1 / std::sqrt(320.0 * 11));
    EXPECT_DOUBLE_EQ(scale(none, "beta_weight"), 1 / std::sqrt(8.0 * 438));
    EXPECT_DOUBLE_EQ(scale(none, "beta_bias"), 1 / std::sqrt(8.0 * 438));
    const OpRun dflt = run({8, 192, 448}, {320, 192, 11}, {}, "to_output_scale");
    EXPECT_DOUBLE_EQ(scale(dflt, "beta_x"), 1 / std::sqrt(192.0 * 11));
    EXPECT_DOUBLE_EQ(scale(dflt, "beta_weight"), 1 / std::sqrt(8.0 * 438));  // never constrained
  }
  {  // stride 2, groups 2, padding 1: L_out = 10, two batch dims (B = 6)
    const Geometry geo{.stride = 2, .padding = 1, .groups = 2};
    const OpRun none = run({2, 3, 8, 20}, {6, 4, 3}, geo, "none");
    EXPECT_DOUBLE_EQ(scale(none, "alpha"), 1 / std::sqrt(12.0));
    EXPECT_DOUBLE_EQ(scale(none, "beta_x"), std::sqrt(2.0 * 2 / (6 * 3)));
    EXPECT_DOUBLE_EQ(scale(none, "beta_weight"), 1 / std::sqrt(60.0));
    // The chosen constraint is honoured (the reference library always used to_output_scale).
    const OpRun grad = run({2, 3, 8, 20}, {6, 4, 3}, geo, "to_grad_input_scale");
    EXPECT_DOUBLE_EQ(scale(grad, "alpha"), std::sqrt(2.0 * 2 / (6 * 3)));
    const OpRun gmean = run({2, 3, 8, 20}, {6, 4, 3}, geo, "gmean");
    EXPECT_NEAR(scale(gmean, "alpha"), std::sqrt(std::sqrt(4.0 / 18) / std::sqrt(12.0)), 1e-15);
    EXPECT_DOUBLE_EQ(scale(gmean, "beta_x"), scale(gmean, "alpha"));
  }
  {  // scale powers: the μP-readout-like p0 = 1
    Attributes attrs = conv_attrs({}, "none");
    attrs.set("power_alpha", 1.0).set("power_beta_weight", 1.0);
    const OpRun p = OpRun(kConv1dOp, {Tensor({2, 4, 10}), Tensor({5, 4, 3}), std::nullopt}, attrs, Scaling::kUnit);
    EXPECT_DOUBLE_EQ(scale(p, "alpha"), 1.0 / 12);
    EXPECT_DOUBLE_EQ(scale(p, "beta_weight"), 1.0 / 16);
  }
}

struct ConvStds {
  double out, grad_x, grad_weight, grad_bias;
};

ConvStds measure(const Shape& x, const Shape& w, const Geometry& geo, std::string_view constraint,
                 unsigned seed) {
  std::mt19937 rng(seed);
  OpRun run(kConv1dOp, {random_normal(x, rng), random_normal(w, rng), Tensor({w.dim(0)})},
            conv_attrs(geo, constraint), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(run.output().shape(), rng)});
  return {testing::std_of(run.output().span()), testing::std_of(grads[0]->span()),
          testing::std_of(grads[1]->span()), testing::std_of(grads[2]->span())};
}

// ±0.1 for targets >= 1, ±10 % relative below (spec §5).
double tolerance(double target) { return 0.1 * std::min(1.0, target); }

// spec §5: conv1d 8×192×448, k = 11, out 320, None: out 0.999, grad x 0.988, grad W 1.002.
TEST(Conv1dStatistics, SpecShapeNone) {
  const ConvStds s = measure({8, 192, 448}, {320, 192, 11}, {}, "none", 5);
  EXPECT_NEAR(s.out, 0.999, 0.1);
  EXPECT_NEAR(s.grad_x, 0.988, 0.1);
  EXPECT_NEAR(s.grad_weight, 1.002, 0.1);
  EXPECT_NEAR(s.grad_bias, 1.0, 0.1);
}

// The bias gradient sums B·L_out output gradients; enough channels to measure its std well.
TEST(Conv1dStatistics, BiasGradientIsUnit) {
  const ConvStds s = measure({2, 8, 64}, {8192, 8, 3}, {.padding = 1}, "to_output_scale", 8);
  EXPECT_NEAR(s.grad_bias, 1.0, 0.05);
  EXPECT_NEAR(s.grad_weight, 1.0, 0.05);
}

// Each constraint, on x [4, 64, 256], W [96, 64, 5]: unconstrained α = 320^-½, β_x = 480^-½, so
// with every scale s the stds are s·√320 (out) and s·√480 (grad x, a little less at the edges).
struct ConstraintTarget {
  std::string constraint;
  double out, grad_x;
};

void PrintTo(const ConstraintTarget& t, std::ostream* os) { *os << t.constraint; }

class Conv1dConstraintStatistics : public ::testing::TestWithParam<ConstraintTarget> {};

TEST_P(Conv1dConstraintStatistics, HitsClosedForm) {
  const ConstraintTarget& t = GetParam();
  const ConvStds s = measure({4, 64, 256}, {96, 64, 5}, {}, t.constraint, 6);
  EXPECT_NEAR(s.out, t.out, tolerance(t.out));
  EXPECT_NEAR(s.grad_x, t.grad_x, tolerance(t.grad_x));
  EXPECT_NEAR(s.grad_weight, 1.0, 0.1);
  if (t.constraint == "gmean") {
    EXPECT_NEAR(s.out * s.grad_x, 1.0, 0.1);
  }
}

ConstraintTarget all_scales(std::string constraint, double s) {
  return {std::move(constraint), s * std::sqrt(320.0), s * std::sqrt(480.0)};
}

INSTANTIATE_TEST_SUITE_P(
    Constraints, Conv1dConstraintStatistics,
    ::testing::Values(ConstraintTarget{"to_output_scale", 1.0, std::sqrt(1.5)},
                      ConstraintTarget{"to_grad_input_scale", std::sqrt(2.0 / 3), 1.0},
                      all_scales("gmean", std::pow(320.0 * 480, -0.25)),
                      all_scales("hmean", 2 / (std::sqrt(320.0) + std::sqrt(480.0))),
                      all_scales("amean", (1 / std::sqrt(320.0) + 1 / std::sqrt(480.0)) / 2),
                      ConstraintTarget{"none", 1.0, 1.0}),
    [](const auto& test) { return test.param.constraint; });

// spec §5 "conv1d stride/padding/dilation/groups": under none every std is unit.
struct GeometryTarget {
  std::string name;
  Geometry geo;
};

void PrintTo(const GeometryTarget& t, std::ostream* os) { *os << t.name; }

class Conv1dGeometryStatistics : public ::testing::TestWithParam<GeometryTarget> {};

TEST_P(Conv1dGeometryStatistics, NoneIsUnit) {
  const Geometry& geo = GetParam().geo;
  const ConvStds s = measure({8, 64, 256}, {128, 64 / geo.groups, 5}, geo, "none", 7);
  EXPECT_NEAR(s.out, 1.0, 0.1);
  EXPECT_NEAR(s.grad_x, 1.0, 0.1);
  EXPECT_NEAR(s.grad_weight, 1.0, 0.1);
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, Conv1dGeometryStatistics,
    ::testing::Values(GeometryTarget{"stride2", {.stride = 2}},
                      GeometryTarget{"stride3_padding2", {.stride = 3, .padding = 2}},
                      GeometryTarget{"padding2", {.padding = 2}},
                      GeometryTarget{"dilation3", {.dilation = 3}},
                      GeometryTarget{"groups4", {.groups = 4}},
                      GeometryTarget{"depthwise", {.groups = 64}},
                      GeometryTarget{"all", {.stride = 2, .padding = 3, .dilation = 3, .groups = 4}}),
    [](const auto& test) { return test.param.name; });

TEST(Conv1dErrors, ShapeMismatchNamesOpAndShapes) {
  Graph g;
  const Value x = g.input("x", {2, 6, 20});
  EXPECT_THAT([&] { conv1d(x, g.parameter("w", {4, 5, 3})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("[2, 6, 20]"), HasSubstr("[4, 5, 3]"))));
  EXPECT_THAT([&] { conv1d(x, g.parameter("w2", {4, 6})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("[4, 6]"))));
  EXPECT_THAT([&] { conv1d(g.input("v", {20}), g.parameter("w3", {4, 6, 3})); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("[20]"))));
  // groups must divide C_in and C_out
  EXPECT_THAT([&] { conv1d(x, g.parameter("w4", {5, 2, 3}), {.groups = 3}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("groups = 3"))));
  EXPECT_THAT([&] { conv1d(x, g.parameter("w5", {4, 6, 3}), {.bias = g.parameter("b", {5})}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("bias [5]"))));
  // the kernel span d·(k − 1) + 1 = 21 does not fit in 20
  EXPECT_THAT([&] { conv1d(x, g.parameter("w6", {4, 6, 11}), {.dilation = 2}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("[2, 6, 20]"), HasSubstr("21"))));
}

TEST(Conv1dErrors, BadAttributesNameOp) {
  Graph g;
  const Value x = g.input("x", {2, 6, 20});
  const Value w = g.parameter("w", {4, 6, 3});
  EXPECT_THAT([&] { conv1d(x, w, {.stride = 0}); }, ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("stride 0"))));
  EXPECT_THAT([&] { conv1d(x, w, {.padding = -1}); }, ThrowsMessage<Error>(HasSubstr("conv1d")));
  EXPECT_THAT([&] { conv1d(x, w, {.dilation = 0}); }, ThrowsMessage<Error>(HasSubstr("conv1d")));
  EXPECT_THAT([&] { conv1d(x, w, {.groups = 0}); }, ThrowsMessage<Error>(HasSubstr("conv1d")));
  // to_left_grad_scale takes three scales (matmul's); conv1d constrains two.
  EXPECT_THAT([&] { conv1d(x, w, {.constraint = Constraint::kToLeftGradScale}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("to_left_grad_scale"))));
  const Tensor xt({2, 6, 20}), wt({4, 6, 3});
  EXPECT_THAT([&] { OpRun(kConv1dOp, {xt, wt, std::nullopt}, conv_attrs({}, "bogus"), Scaling::kUnit); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("bogus"))));
}

// A stride, padding or dilation whose index arithmetic would overflow int64 is refused when
// recorded, naming the attribute (found by the graph fuzzer as conv1d-overflow: 2·padding and
// dilation·(k − 1) in shape inference, -offset + stride − 1 in the kernel, all unchecked).
TEST(Conv1dErrors, GeometryWhoseIndicesOverflowInt64IsRefused) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t k2p61 = std::int64_t{1} << 61, k2p62 = std::int64_t{1} << 62;
  Graph g;
  const Value x = g.input("x", {2, 6, 20});
  const Value w = g.parameter("w", {4, 6, 3});
  EXPECT_THAT([&] { conv1d(x, w, {.padding = k2p62}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d: padding 4611686018427387904 with x [2, 6, 20]"),
                                         HasSubstr("L + 2·padding overflows int64"))));
  EXPECT_THAT([&] { conv1d(x, w, {.padding = kMax}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d: padding"), HasSubstr("overflows int64"))));
  EXPECT_THAT([&] { conv1d(x, w, {.dilation = k2p62}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d: dilation 4611686018427387904 with weight [4, 6, 3]"),
                                         HasSubstr("dilation·(k − 1) + 1 overflows int64"))));
  EXPECT_THAT(
      [&] { conv1d(x, w, {.dilation = kMax}); },
      ThrowsMessage<Error>(AllOf(HasSubstr("conv1d: dilation"), HasSubstr("overflows int64"))));
  // groups so large that C_in/groups · groups overflows is a mismatch, not an overflow.
  const Value empty_x = g.input("empty_x", {2, 0, 20});
  EXPECT_THAT([&] { conv1d(empty_x, g.parameter("w_wide", {0, k2p62, 1}), {.groups = 4}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("conv1d"), HasSubstr("groups = 4"))));

  // Huge but representable geometry records and runs: taps that only read the padding give 0.
  const Value small = g.input("small", {1, 1, 4});
  const Value y = conv1d(small, g.parameter("w1", {1, 1, 1}), {.stride = k2p62, .padding = k2p61});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2}));  // ⌊(4 + 2^62 − 1)/2^62⌋ + 1
  OpRun run(kConv1dOp,
            {Tensor(Shape{1, 1, 4}, std::vector<float>{1, 2, 3, 4}),
             Tensor(Shape{1, 1, 1}, std::vector<float>{5}), std::nullopt},
            conv_attrs({.stride = k2p62, .padding = k2p61}));
  run.forward();
  EXPECT_EQ(run.output().shape(), (Shape{1, 1, 2}));
  EXPECT_EQ(run.output()[0], 0.0f);
  EXPECT_EQ(run.output()[1], 0.0f);

  // The largest stride with padding: the first tap reads the padding, the output has one
  // position (found by the graph fuzzer, where ⌈p/s⌉ once overflowed as (p + s − 1)/s).
  for (const std::int64_t padding : {std::int64_t{1}, k2p61}) {
    OpRun widest(kConv1dOp,
                 {Tensor(Shape{1, 1, 4}, std::vector<float>{1, 2, 3, 4}),
                  Tensor(Shape{1, 1, 3}, std::vector<float>{5, 6, 7}), std::nullopt},
                 conv_attrs({.stride = kMax, .padding = padding}));
    widest.forward();
    ASSERT_EQ(widest.output().shape(), (Shape{1, 1, 1}));
    // Position 0 reads x[-p], x[1-p], x[2-p]: with p = 1 that is 0·5 + 1·6 + 2·7.
    EXPECT_EQ(widest.output()[0], padding == 1 ? 20.0f : 0.0f) << "padding " << padding;
    // Backward with dy = 1: dx[t] = w[t + p] for the taps that read x, dw[j] = x[j − p].
    const auto grads = widest.backward({Tensor(Shape{1, 1, 1}, std::vector<float>{1})});
    const std::vector<float> dx =
        padding == 1 ? std::vector<float>{6, 7, 0, 0} : std::vector<float>(4, 0.0f);
    const std::vector<float> dw =
        padding == 1 ? std::vector<float>{0, 1, 2} : std::vector<float>(3, 0.0f);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ((*grads[0])[i], dx[i]) << "dx[" << i << "], padding " << padding;
    for (int j = 0; j < 3; ++j)
      EXPECT_EQ((*grads[1])[j], dw[j]) << "dw[" << j << "], padding " << padding;
  }
}


// Through the graph: autodiff emits conv1d_backward, which gets only what backward_reads asks for.
// loss = Σ y, written with matmuls against ones so that dloss/dy = 1.
TEST(Conv1dGraph, AutodiffAndExecutorMatchTheKernels) {
  std::mt19937 rng(12);
  const Tensor x = random_normal({1, 3, 9}, rng), w = random_normal({4, 3, 3}, rng), b = random_normal({4}, rng);
  Graph graph(Scaling::kUnscaled);
  const Value vx = graph.input("x", {1, 3, 9}), vw = graph.parameter("w", {4, 3, 3});
  const Value vb = graph.parameter("b", {4});
  const Value y = conv1d(vx, vw, {.bias = vb, .stride = 2, .padding = 1});
  ASSERT_EQ(y.shape(), Shape({1, 4, 5}));
  const Value loss = matmul(graph.constant(Tensor::filled({1, 4}, 1.0f)),
                            matmul(y, graph.constant(Tensor::filled({5, 1}, 1.0f))));
  const Value wrt[] = {vx, vw, vb};
  const auto grads = autodiff(graph, loss, wrt);
  const Value outputs[] = {y, grads[0], grads[1], grads[2]};
  Executor exec(graph, outputs);
  exec.bind(vx, x);
  exec.bind(vw, w);
  exec.bind(vb, b);
  exec.run();

  OpRun direct(kConv1dOp, {x, w, b}, conv_attrs({.stride = 2, .padding = 1}));
  direct.forward();
  const auto expected = direct.backward({Tensor::filled(direct.output().shape(), 1.0f)});
  for (std::int64_t i = 0; i < direct.output().numel(); ++i) EXPECT_FLOAT_EQ(exec.get(y).data()[i], direct.output()[i]);
  for (std::size_t k = 0; k < 3; ++k) {
    for (std::int64_t i = 0; i < expected[k]->numel(); ++i) {
      EXPECT_NEAR(exec.get(grads[k]).data()[i], (*expected[k])[i], 1e-5);
    }
  }
}

}  // namespace
}  // namespace unitscale

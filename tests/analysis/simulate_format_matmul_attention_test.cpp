// simulate_format on the other GEMM-bearing ops: batched and broadcast matmul, and attention's q,
// k, v (an option, off by default). Each rounded op must equal the same op on operands rounded by
// hand: the forward against the double-precision reference of tests/support/reference_ops.hpp, the
// backward against the fp32 backward kernel (checked against finite differences of that reference
// by tests/ops/reference_gradcheck_test.cpp) run on the hand-rounded operands and gradient.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../support/reference_ops.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/simulate_format.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/matmul.hpp"

namespace unitscale {
namespace {

using ::testing::ElementsAre;

float to_e4m3(float v) { return static_cast<float>(convert<float8_e4m3fn>(v)); }
float to_e5m2(float v) { return static_cast<float>(convert<float8_e5m2>(v)); }

// N(0, σ²) values spread over many binades (σ from 1e-3 to 10 across the tensor), so that FP8
// rounding changes nearly all of them and flushes some.
Tensor random_tensor(const Shape& shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t(shape);
  const std::span<float> s = t.span();
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = normal(rng) * std::pow(10.0f, -3.0f + 4.0f * static_cast<float>(i % 7) / 6.0f);
  }
  return t;
}

Tensor rounded(const Tensor& t, float (*round)(float)) {
  Tensor r(t.shape());
  for (std::size_t i = 0; i < t.span().size(); ++i) r.span()[i] = round(t.span()[i]);
  return r;
}

testing::RefTensor to_ref(const Tensor& t) {
  return testing::RefTensor(t.shape(), std::vector<double>(t.span().begin(), t.span().end()));
}

// Elementwise within FP32 summation error of the largest element.
void expect_close(std::span<const float> actual, std::span<const float> expected,
                  std::string_view what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double largest = 0;
  for (const float e : expected) largest = std::max(largest, std::abs(double(e)));
  for (std::size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 2e-6 * largest + 1e-30) << what << " [" << i << "]";
  }
}
void expect_close(std::span<const float> actual, const testing::RefTensor& expected,
                  std::string_view what) {
  std::vector<float> e(expected.v.begin(), expected.v.end());
  expect_close(actual, e, what);
}

double max_difference(std::span<const float> a, std::span<const float> b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

// A graph of one op on bound inputs, with the gradient g of its output as the autodiff seed.
struct OneOpGraph {
  Graph graph;
  std::vector<Value> inputs;
  std::vector<Tensor> values;
  Value y, g;
  std::vector<Value> grads;

  Value input(std::string name, const Shape& shape, std::uint32_t seed) {
    inputs.push_back(graph.input(std::move(name), shape));
    values.push_back(random_tensor(shape, seed));
    return inputs.back();
  }
  void differentiate() {
    g = graph.input("g", graph.info(y).shape);
    values.push_back(random_tensor(graph.info(y).shape, 99));
    grads = autodiff(graph, y, inputs, {.seed = g});
  }
  const Tensor& seed_gradient() const { return values.back(); }
  const Attributes& attrs() const {
    return graph.nodes()[static_cast<std::size_t>(graph.info(y).node)].attrs;
  }
  float scale(std::string_view name) const {
    return static_cast<float>(attrs().get_double("scale", name, 1.0));
  }

  // y and the gradients of the inputs.
  std::vector<Tensor> run() {
    std::vector<Value> outputs = {y};
    outputs.insert(outputs.end(), grads.begin(), grads.end());
    Executor exec(graph, outputs);
    for (std::size_t i = 0; i < inputs.size(); ++i) exec.bind(inputs[i], values[i].view());
    exec.bind(g, seed_gradient().view());
    exec.run();
    std::vector<Tensor> results;
    for (const Value v : outputs) {
      Tensor t(exec.get(v).shape());
      std::copy(exec.get(v).span().begin(), exec.get(v).span().end(), t.span().begin());
      results.push_back(std::move(t));
    }
    return results;
  }
};

struct MatmulShapes {
  const char* name;
  Shape left, right;
};

class SimulateFormatMatmul : public ::testing::TestWithParam<MatmulShapes> {};

TEST_P(SimulateFormatMatmul, RoundsBothOperandsAndTheGradient) {
  OneOpGraph c;
  const Value l = c.input("l", GetParam().left, 1);
  const Value r = c.input("layers.0.mix.weight", GetParam().right, 2);
  c.y = matmul(l, r);
  const SimulateFormatReport report = simulate_format(c.graph, SimulateFormatOptions::fp8());
  EXPECT_THAT(report.rounded_matmuls, ElementsAre("layers.0.mix.weight"));
  c.differentiate();
  const std::vector<Tensor> fp8 = c.run();

  const Tensor ql = rounded(c.values[0], to_e4m3), qr = rounded(c.values[1], to_e4m3);
  const Tensor qg = rounded(c.seed_gradient(), to_e5m2);
  const std::vector<testing::RefTensor> y =
      testing::reference_forward("matmul", {to_ref(ql), to_ref(qr)}, c.attrs());
  expect_close(fp8[0].span(), y[0], "y");
  Tensor dl(ql.shape()), dr(qr.shape());
  matmul_backward(qg.view(), ql.view(), qr.view(), dl.view(), dr.view(), c.scale("beta_left"),
                  c.scale("beta_right"));
  expect_close(fp8[1].span(), dl.span(), "d left");
  expect_close(fp8[2].span(), dr.span(), "d right");

  // The rounding is real: the unrounded op differs by far more than the tolerance, forward and
  // backward (where only the gradient's rounding differs).
  Tensor unrounded(fp8[0].shape());
  matmul_forward(c.values[0].view(), c.values[1].view(), unrounded.view(), c.scale("alpha"));
  EXPECT_GT(max_difference(fp8[0].span(), unrounded.span()), 1e-3);
  Tensor dl_exact_grad(ql.shape());
  matmul_backward(c.seed_gradient().view(), ql.view(), qr.view(), dl_exact_grad.view(),
                  TensorView(), c.scale("beta_left"), 1.0f);
  EXPECT_GT(max_difference(fp8[1].span(), dl_exact_grad.span()), 1e-4);
}

// Batched with a broadcast left operand, tall (2-D right under a batched left), and plain 2-D.
INSTANTIATE_TEST_SUITE_P(Shapes, SimulateFormatMatmul,
                         ::testing::Values(MatmulShapes{"broadcast_left", {3, 4, 8}, {2, 3, 8, 5}},
                                           MatmulShapes{"broadcast_right", {2, 3, 4, 8}, {3, 8, 5}},
                                           MatmulShapes{"tall", {2, 6, 8}, {8, 5}},
                                           MatmulShapes{"plain", {6, 8}, {8, 5}}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

struct AttentionCase : OneOpGraph {
  explicit AttentionCase(AttentionMask mask) {
    const Value q = input("q", {2, 5, 8}, 3);
    const Value k = input("k", {2, 5, 8}, 4);
    const Value v = input("v", {2, 5, 6}, 5);
    y = scaled_dot_product_attention(q, k, v, {.mult = 2.0, .mask = mask});
  }
};

TEST(SimulateFormatAttention, IsLeftAloneByDefault) {
  AttentionCase c(AttentionMask::kCausal);
  const SimulateFormatReport report = simulate_format(c.graph, SimulateFormatOptions::fp8());
  EXPECT_TRUE(report.rounded_matmuls.empty());
  EXPECT_FALSE(c.attrs().has("input_format"));
  c.differentiate();
  const std::vector<Tensor> out = c.run();
  Tensor expected(out[0].shape());
  attention_forward(c.values[0].view(), c.values[1].view(), c.values[2].view(), expected.view(),
                    {.mult = 2.0, .mask = AttentionMask::kCausal}, c.scale("alpha"));
  for (std::size_t i = 0; i < expected.span().size(); ++i) {
    EXPECT_EQ(out[0].span()[i], expected.span()[i]) << i;
  }
}

class SimulateFormatAttentionMask : public ::testing::TestWithParam<AttentionMask> {};

TEST_P(SimulateFormatAttentionMask, RoundsQueryKeyValueAndTheGradient) {
  AttentionCase c(GetParam());
  SimulateFormatOptions options = SimulateFormatOptions::fp8();
  options.attention_inputs = true;
  const SimulateFormatReport report = simulate_format(c.graph, options);
  EXPECT_THAT(report.rounded_matmuls, ElementsAre("attention (node 0)"));
  c.differentiate();
  const std::vector<Tensor> fp8 = c.run();

  std::vector<Tensor> qin;
  for (int i = 0; i < 3; ++i)
    qin.push_back(rounded(c.values[static_cast<std::size_t>(i)], to_e4m3));
  const Tensor qg = rounded(c.seed_gradient(), to_e5m2);
  const std::vector<testing::RefTensor> y = testing::reference_forward(
      "scaled_dot_product_attention", {to_ref(qin[0]), to_ref(qin[1]), to_ref(qin[2])}, c.attrs());
  expect_close(fp8[0].span(), y[0], "y");
  const AttentionConfig fp32{.mult = 2.0, .mask = GetParam()};
  Tensor dq(qin[0].shape()), dk(qin[1].shape()), dv(qin[2].shape());
  attention_backward(qg.view(), qin[0].view(), qin[1].view(), qin[2].view(), dq.view(), dk.view(),
                     dv.view(), fp32, c.scale("beta_q"), c.scale("beta_k"), c.scale("beta_v"));
  expect_close(fp8[1].span(), dq.span(), "dq");
  expect_close(fp8[2].span(), dk.span(), "dk");
  expect_close(fp8[3].span(), dv.span(), "dv");

  Tensor unrounded(fp8[0].shape());
  attention_forward(c.values[0].view(), c.values[1].view(), c.values[2].view(), unrounded.view(),
                    fp32, c.scale("alpha"));
  EXPECT_GT(max_difference(fp8[0].span(), unrounded.span()), 1e-3);
  Tensor dv_exact_grad(qin[2].shape());
  attention_backward(c.seed_gradient().view(), qin[0].view(), qin[1].view(), qin[2].view(),
                     TensorView(), TensorView(), dv_exact_grad.view(), fp32, 1.0f, 1.0f,
                     c.scale("beta_v"));
  EXPECT_GT(max_difference(fp8[3].span(), dv_exact_grad.span()), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Masks, SimulateFormatAttentionMask,
                         ::testing::Values(AttentionMask::kNone, AttentionMask::kCausal),
                         [](const auto& param_info) {
                           return std::string(attention_mask_name(param_info.param));
                         });

}  // namespace
}  // namespace unitscale

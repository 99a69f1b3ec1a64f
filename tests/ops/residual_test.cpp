#include "unitscale/ops/residual.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes tau_attrs(double tau) { return {{"tau", tau}}; }

// ---- a test-only loss: L = Σ y·G for a fixed G, so dL/dy = G (an N(0,1) output gradient) ------

std::vector<Shape> scalar_shape(std::span<const Shape* const>, const Attributes&) { return {Shape{}}; }

void projection_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                       const Attributes&, const KernelContext&) {
  double total = 0;
  for (std::int64_t i = 0; i < in[0].numel(); ++i) total += static_cast<double>(in[0].data()[i]) * in[1].data()[i];
  out[0].data()[0] = static_cast<float>(total);
}

// Backward inputs: y, projection, loss, grad_loss.
void projection_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                                const Attributes&, const KernelContext&) {
  if (present(out[0])) out[0].vector() = in[3].data()[0] * in[1].vector();
}

const OpDef kProjectionOp{
    .name = "test_projection",
    .inputs = {"y", "projection"},
    .infer_shapes = scalar_shape,
    .kernel = projection_kernel,
    .backward_kernel = projection_backward_kernel,
    .backward_reads = 0b010,
};

// ---- op-level tests -----------------------------------------------------------------------------

TEST(ResidualGradcheck, SplitAndAdd) {
  std::mt19937 rng(1);
  testing::gradcheck(kResidualSplitOp, {random_normal({3, 5}, rng)}, tau_attrs(0.5));
  testing::gradcheck(kResidualAddOp, {random_normal({2, 3, 4}, rng), random_normal({2, 3, 4}, rng)},
                     tau_attrs(2.0));
}

TEST(ResidualScales, WeightsFollowTau) {
  for (const double tau : {0.0, 0.2, 1.0, 3.0}) {
    const ResidualWeights w = residual_weights(tau);
    EXPECT_DOUBLE_EQ(w.branch, tau / std::sqrt(1 + tau * tau));
    EXPECT_DOUBLE_EQ(w.skip, 1 / std::sqrt(1 + tau * tau));
    EXPECT_NEAR(w.branch * w.branch + w.skip * w.skip, 1.0, 1e-15);
  }
}

// Unit graphs: add = (τ·r + s)/√(1+τ²) forward and identity backward; split weights the branch and
// skip gradients. Unscaled graphs: r + s and a plain fork.
TEST(ResidualScales, UnitAndUnscaledForms) {
  std::mt19937 rng(2);
  const double tau = 3.0;
  const ResidualWeights w = residual_weights(tau);
  const Tensor r = random_normal({4, 6}, rng), s = random_normal({4, 6}, rng);
  const Tensor g = random_normal({4, 6}, rng), g2 = random_normal({4, 6}, rng);

  OpRun add_unit(kResidualAddOp, {r, s}, tau_attrs(tau), Scaling::kUnit);
  OpRun add_plain(kResidualAddOp, {r, s}, tau_attrs(tau), Scaling::kUnscaled);
  add_unit.forward();
  add_plain.forward();
  const auto add_unit_grads = add_unit.backward({g});
  const auto add_plain_grads = add_plain.backward({g});
  for (std::int64_t i = 0; i < r.numel(); ++i) {
    EXPECT_NEAR(add_unit.output()[i], w.branch * r[i] + w.skip * s[i], 1e-6);
    EXPECT_FLOAT_EQ(add_plain.output()[i], r[i] + s[i]);
    for (std::size_t k = 0; k < 2; ++k) {
      EXPECT_EQ((*add_unit_grads[k])[i], g[i]);
      EXPECT_EQ((*add_plain_grads[k])[i], g[i]);
    }
  }

  const Tensor x = random_normal({4, 6}, rng);
  OpRun split_unit(kResidualSplitOp, {x}, tau_attrs(tau), Scaling::kUnit);
  OpRun split_plain(kResidualSplitOp, {x}, tau_attrs(tau), Scaling::kUnscaled);
  split_unit.forward();
  split_plain.forward();
  const auto split_unit_grads = split_unit.backward({g, g2});
  const auto split_plain_grads = split_plain.backward({g, g2});
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(split_unit.output(0)[i], x[i]);
    EXPECT_EQ(split_unit.output(1)[i], x[i]);
    EXPECT_NEAR((*split_unit_grads[0])[i], w.branch * g[i] + w.skip * g2[i], 1e-6);
    EXPECT_FLOAT_EQ((*split_plain_grads[0])[i], g[i] + g2[i]);
  }
}

// An output whose gradient is absent (nothing downstream uses it) contributes zero.
TEST(ResidualScales, AbsentSplitGradientsCountAsZero) {
  std::mt19937 rng(3);
  const ResidualWeights w = residual_weights(0.2);
  const Tensor x = random_normal({5}, rng), g = random_normal({5}, rng);
  Tensor grad_x({5});
  residual_split_backward(ConstTensorView{}, g, grad_x, static_cast<float>(w.branch), static_cast<float>(w.skip));
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(grad_x[i], static_cast<float>(w.skip) * g[i]);
  residual_split_backward(g, ConstTensorView{}, grad_x, static_cast<float>(w.branch), static_cast<float>(w.skip));
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(grad_x[i], static_cast<float>(w.branch) * g[i]);
  grad_x[0] = 7.0f;
  residual_split_backward(ConstTensorView{}, ConstTensorView{}, grad_x, 1.0f, 1.0f);
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_EQ(grad_x[i], 0.0f);

  // Through autodiff: only the skip output is used.
  Graph graph;
  const Value xv = graph.input("x", {5});
  const auto [branch, skip] = residual_split(xv, 0.2);
  const Value loss = graph.apply1(kProjectionOp, std::vector<Value>{skip, graph.constant(g, "g")}, {});
  const Value grad = autodiff(graph, loss, std::vector<Value>{xv}).at(0);
  Executor exec(graph, std::vector<Value>{grad});
  exec.bind(xv, x);
  exec.run();
  for (std::int64_t i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(exec.get(grad).data()[i], static_cast<float>(w.skip) * g[i]);
}

// Large enough for the parallel loops; every combination of present and absent outputs.
TEST(ResidualKernels, LargeTensorsMatchLoops) {
  std::mt19937 rng(5);
  const std::int64_t n = 100003;
  const Tensor x = random_normal({n}, rng), gb = random_normal({n}, rng), gs = random_normal({n}, rng);
  const float wb = 0.6f, ws = 0.8f;
  Tensor branch({n}), skip({n}), only_skip({n});
  residual_split_forward(x, branch, skip);
  residual_split_forward(x, TensorView{}, only_skip);
  Tensor y({n});
  residual_add_forward(gb, gs, y, wb, ws);
  Tensor dx_both({n}), dx_branch({n}), dx_skip({n}), dx_none = Tensor::filled({n}, NAN);
  residual_split_backward(gb, gs, dx_both, wb, ws);
  residual_split_backward(gb, ConstTensorView{}, dx_branch, wb, ws);
  residual_split_backward(ConstTensorView{}, gs, dx_skip, wb, ws);
  residual_split_backward(ConstTensorView{}, ConstTensorView{}, dx_none, wb, ws);
  // residual_add's backward (reachable through its OpDef): both gradients, or one.
  Tensor dr({n}), ds({n}), ds_only({n});
  const ConstTensorView absent{};
  const std::vector<ConstTensorView> in{absent, absent, absent, x};
  kResidualAddOp.backward_kernel(in, std::vector<TensorView>{dr, ds}, {}, KernelContext{});
  kResidualAddOp.backward_kernel(in, std::vector<TensorView>{TensorView{}, ds_only}, {},
                                  KernelContext{});
  for (std::int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(branch[i], x[i]);
    ASSERT_EQ(skip[i], x[i]);
    ASSERT_EQ(only_skip[i], x[i]);
    ASSERT_EQ(y[i], wb * gb[i] + ws * gs[i]);
    ASSERT_EQ(dx_both[i], wb * gb[i] + ws * gs[i]);
    ASSERT_EQ(dx_branch[i], wb * gb[i]);
    ASSERT_EQ(dx_skip[i], ws * gs[i]);
    ASSERT_EQ(dx_none[i], 0.0f);
    ASSERT_EQ(dr[i], x[i]);
    ASSERT_EQ(ds[i], x[i]);
    ASSERT_EQ(ds_only[i], x[i]);
  }
}

// ---- a residual block through the builders, autodiff and the executor ------------------------------

struct BlockRun {
  Tensor residual, output, grad_residual, grad_skip, grad_x;
};

// y = residual_add(linear(branch, W), skip, τ) with (branch, skip) = residual_split(x, τ), and the
// loss Σ y·G.
BlockRun run_block(Scaling scaling, double tau, const Tensor& x, const Tensor& w, const Tensor& g) {
  Graph graph(scaling);
  const Value xv = graph.input("x", x.shape());
  const Value wv = graph.parameter("w", w.shape());
  const auto [branch, skip] = residual_split(xv, tau);
  const Value r = linear(branch, wv);
  const Value y = residual_add(r, skip, tau);
  const Value loss = graph.apply1(kProjectionOp, std::vector<Value>{y, graph.constant(g, "g")}, {});
  const std::vector<Value> grads = autodiff(graph, loss, std::vector<Value>{xv, r, skip});
  Executor exec(graph, std::vector<Value>{r, y, grads[0], grads[1], grads[2]});
  exec.bind(xv, x);
  exec.bind(wv, w);
  exec.run();
  auto copy = [&](Value v) {
    const ConstTensorView t = exec.get(v);
    return Tensor(t.shape(), t.span());
  };
  return {copy(r), copy(y), copy(grads[1]), copy(grads[2]), copy(grads[0])};
}

// The delayed scaling is exact: the gradient reaching x is that of (τ·f(x) + x)/√(1+τ²).
TEST(ResidualBlock, InputGradientIsExact) {
  std::mt19937 rng(4);
  const std::int64_t d = 16;
  const Tensor x = random_normal({8, d}, rng), w = random_normal({d, d}, rng), g = random_normal({8, d}, rng);
  for (const double tau : {0.2, 1.0, 3.0}) {
    const ResidualWeights rw = residual_weights(tau);
    const BlockRun run = run_block(Scaling::kUnit, tau, x, w, g);
    const double alpha = 1 / std::sqrt(static_cast<double>(d));  // the linear's α = β_x
    const RowMajorMatrix expected_grad =
        (rw.branch * alpha * (g.matrix().cast<double>() * w.matrix().cast<double>()) +
         rw.skip * g.matrix().cast<double>()).cast<float>();
    const RowMajorMatrix expected_y =
        (rw.branch * alpha * (x.matrix().cast<double>() * w.matrix().cast<double>().transpose()) +
         rw.skip * x.matrix().cast<double>()).cast<float>();
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_NEAR(run.grad_x[i], expected_grad.data()[i], 1e-5) << "tau " << tau;
      EXPECT_NEAR(run.output[i], expected_y.data()[i], 1e-5) << "tau " << tau;
    }
    // Inside the branch and on the skip the gradient is the unweighted incoming one.
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_EQ(run.grad_residual[i], g[i]);
      EXPECT_EQ(run.grad_skip[i], g[i]);
    }
  }
  // Unscaled: y = f(x) + x with a plain linear.
  const BlockRun plain = run_block(Scaling::kUnscaled, 3.0, x, w, g);
  const RowMajorMatrix expected_plain = g.matrix() * w.matrix() + g.matrix();
  for (std::int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(plain.grad_x[i], expected_plain.data()[i], 1e-4);
}

// spec §6: for τ ∈ {0.2, 1, 3} the residual, the output, and the residual, skip and input
// gradients are all unit (±0.1), with a unit-scaled linear as the branch.
class ResidualStatistics : public ::testing::TestWithParam<double> {};

TEST_P(ResidualStatistics, EverythingIsUnit) {
  const double tau = GetParam();
  std::mt19937 rng(5);
  const Tensor x = random_normal({256, 512}, rng), w = random_normal({512, 512}, rng);
  const Tensor g = random_normal({256, 512}, rng);
  const BlockRun run = run_block(Scaling::kUnit, tau, x, w, g);
  EXPECT_NEAR(testing::std_of(run.residual.span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(run.output.span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(run.grad_residual.span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(run.grad_skip.span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(run.grad_x.span()), 1.0, 0.1);
}

INSTANTIATE_TEST_SUITE_P(Taus, ResidualStatistics, ::testing::Values(0.2, 1.0, 3.0));

// ---- the τ rule --------------------------------------------------------------------------------

struct TauVector {
  double residual_mult, attn_ratio;
  int layers;
  std::vector<double> taus;  // the last taus.size() values of the rule
};

class TauRuleVectors : public ::testing::TestWithParam<TauVector> {};

TEST_P(TauRuleVectors, MatchSpecTable) {
  const TauVector& v = GetParam();
  const std::vector<double> taus = transformer_residual_scaling_rule(v.layers, v.residual_mult, v.attn_ratio);
  ASSERT_EQ(taus.size(), static_cast<std::size_t>(2 * v.layers));
  const std::size_t offset = taus.size() - v.taus.size();
  for (std::size_t i = 0; i < v.taus.size(); ++i) {
    EXPECT_NEAR(taus[offset + i], v.taus[i], 0.5e-4) << "tau_" << offset + i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Spec, TauRuleVectors,
    ::testing::Values(
        TauVector{1, 1, 4, {0.5, 0.4472, 0.4082, 0.3780, 0.3536, 0.3333, 0.3162, 0.3015}},
        TauVector{0.5, 1, 4, {0.25, 0.2425, 0.2357, 0.2294, 0.2236, 0.2182, 0.2132, 0.2085}},
        TauVector{1, 2, 4, {0.6325, 0.2673, 0.5164, 0.2294, 0.4472, 0.2041, 0.4000, 0.1857}},
        TauVector{0.5, 1.0 / 3, 6,
                  {0.0913, 0.2727, 0.0877, 0.2621, 0.0845, 0.2526, 0.0816, 0.2441, 0.0791, 0.2364, 0.0767, 0.2294}},
        TauVector{1, 1, 12, {0.1715, 0.1690}}));

TEST(TauRule, OneOverSqrtOfFourPlusIAtDefaults) {
  const std::vector<double> taus = transformer_residual_scaling_rule(4);
  for (std::size_t i = 0; i < taus.size(); ++i) EXPECT_NEAR(taus[i], 1 / std::sqrt(4.0 + static_cast<double>(i)), 1e-15);
}

// The variance bookkeeping of a stack x_{k} = (x_{k−1} + τ_k·f_k)/√(1+τ_k²) with independent unit
// inputs: the final stream's weight on the embedding and on each branch.
struct StreamWeights {
  double embedding = 1;
  std::vector<double> branch;
};

StreamWeights stream_weights(const std::vector<double>& taus) {
  StreamWeights w;
  for (const double tau : taus) {
    const ResidualWeights rw = residual_weights(tau);
    w.embedding *= rw.skip;
    for (double& b : w.branch) b *= rw.skip;
    w.branch.push_back(rw.branch);
  }
  return w;
}

struct TauRuleCase {
  double residual_mult, attn_ratio;
  int layers;
};

class TauRuleGuarantees : public ::testing::TestWithParam<TauRuleCase> {};

TEST_P(TauRuleGuarantees, HoldForTheStack) {
  const TauRuleCase& c = GetParam();
  const StreamWeights w = stream_weights(transformer_residual_scaling_rule(c.layers, c.residual_mult, c.attn_ratio));
  // 1. The final stream has unit variance.
  double total = w.embedding * w.embedding;
  for (const double b : w.branch) total += b * b;
  EXPECT_NEAR(total, 1.0, 1e-12);
  // 2. All attention branches contribute equally, and so do all MLP branches.
  double attn_var = 0, mlp_var = 0;
  for (std::size_t i = 0; i < w.branch.size(); ++i) {
    EXPECT_NEAR(w.branch[i], w.branch[i % 2], 1e-12) << "branch " << i;
    (i % 2 == 0 ? attn_var : mlp_var) += w.branch[i] * w.branch[i];
  }
  const double emb_var = w.embedding * w.embedding;
  // 3. The RMS average of the all-attention and all-MLP contributions relative to the embedding
  //    is α_res.
  EXPECT_NEAR(std::sqrt((attn_var / emb_var + mlp_var / emb_var) / 2), c.residual_mult, 1e-12);
  // 4. All-attention / all-MLP = r (as std ratios).
  EXPECT_NEAR(std::sqrt(attn_var / mlp_var), c.attn_ratio, 1e-12);
  // 5. With both hyperparameters 1, embedding, attention and MLP each hold ⅓ of the variance.
  if (c.residual_mult == 1 && c.attn_ratio == 1) {
    EXPECT_NEAR(emb_var, 1.0 / 3, 1e-12);
    EXPECT_NEAR(attn_var, 1.0 / 3, 1e-12);
    EXPECT_NEAR(mlp_var, 1.0 / 3, 1e-12);
  }
}

INSTANTIATE_TEST_SUITE_P(Hyperparameters, TauRuleGuarantees,
                         ::testing::Values(TauRuleCase{1, 1, 1}, TauRuleCase{1, 1, 4}, TauRuleCase{1, 1, 12},
                                           TauRuleCase{0.5, 1, 4}, TauRuleCase{1, 2, 4},
                                           TauRuleCase{0.5, 1.0 / 3, 6}, TauRuleCase{2, 0.25, 3}));

// ---- errors --------------------------------------------------------------------------------------

TEST(ResidualErrors, ShapesAndAttributesNameTheOp) {
  Graph graph;
  const Value a = graph.input("a", {4, 8});
  const Value b = graph.input("b", {4, 7});
  EXPECT_THAT([&] { residual_add(a, b, 1.0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("residual_add"), HasSubstr("[4, 8]"), HasSubstr("[4, 7]"))));
  EXPECT_THAT([&] { residual_add(a, a, -1.0); }, ThrowsMessage<Error>(AllOf(HasSubstr("residual_add"), HasSubstr("tau"))));
  EXPECT_THAT([&] { residual_split(a, std::nan("")); },
              ThrowsMessage<Error>(AllOf(HasSubstr("residual_split"), HasSubstr("tau"))));
  Graph plain(Scaling::kUnscaled);
  const Value p = plain.input("p", {3});
  EXPECT_THAT([&] { residual_split(p, -0.5); }, ThrowsMessage<Error>(HasSubstr("residual_split")));
  EXPECT_THAT([&] { plain.apply(kResidualSplitOp, std::vector<Value>{p}, {}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("residual_split"), HasSubstr("tau"))));
}

// τ must keep both weights, τ/√(1+τ²) and 1/√(1+τ²), positive normal floats (unit scales the
// kernels read as float): τ in [2^-126, 2^126]. τ = 0 (weight 0) and τ = 1e300 (τ² overflows, and
// both weights became 0) are refused in unit and unscaled graphs alike; the ends of the range record
// with weights FLT_MIN and 1.
TEST(ResidualErrors, TauOutsideTheRangeOfNormalFloatWeightsIsRefused) {
  for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
    Graph graph(scaling);
    const Value a = graph.input("a", {2, 3});
    for (const double tau : {0.0, 0x1p-127, 0x1p126 * 1.0000001, 1e-300, 1e300}) {
      SCOPED_TRACE(tau);
      // (1e300 is beyond float range and 1e-300 rounds to 0 in float, which the attribute check
      // may report before tau's range.)
      const bool beyond_float = tau > 1e38 || (tau > 0.0 && tau < 1e-45);
      const auto names_tau = [beyond_float](const char* op) {
        return ThrowsMessage<Error>(AllOf(HasSubstr(op), HasSubstr("tau"),
                                          HasSubstr(beyond_float ? "" : "[2^-126, 2^126]")));
      };
      EXPECT_THAT([&] { residual_add(a, a, tau); }, names_tau("residual_add"));
      EXPECT_THAT([&] { residual_split(a, tau); }, names_tau("residual_split"));
    }
  }
  Graph graph;
  const Value a = graph.input("a", {2, 3});
  for (const double tau : {0x1p-126, 0x1p126}) {
    const Value y = residual_add(a, a, tau);
    const Attributes& attrs = graph.nodes()[static_cast<std::size_t>(graph.info(y.id()).node)].attrs;
    const double branch = attrs.get_double("residual_add", "alpha_residual");
    const double skip = attrs.get_double("residual_add", "alpha_skip");
    EXPECT_EQ(std::min(branch, skip), static_cast<double>(std::numeric_limits<float>::min())) << tau;
    EXPECT_EQ(std::max(branch, skip), 1.0) << tau;
    const ResidualSplit split = residual_split(a, tau);
    EXPECT_EQ(split.branch.shape(), (Shape{2, 3}));
  }
}

TEST(TauRuleErrors, BadArgumentsAreRejected) {
  EXPECT_THAT([] { transformer_residual_scaling_rule(0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("transformer_residual_scaling_rule"), HasSubstr("layers"))));
  EXPECT_THAT([] { transformer_residual_scaling_rule(2, -1.0); },
              ThrowsMessage<Error>(HasSubstr("transformer_residual_scaling_rule")));
  EXPECT_THAT([] { transformer_residual_scaling_rule(2, 1.0, std::numeric_limits<double>::infinity()); },
              ThrowsMessage<Error>(HasSubstr("transformer_residual_scaling_rule")));
  // A zero hyperparameter gives τ = 0 branches, which the residual ops refuse: refused here.
  EXPECT_THAT([] { transformer_residual_scaling_rule(2, 0.0); },
              ThrowsMessage<Error>(HasSubstr("must be finite and > 0")));
  EXPECT_THAT([] { transformer_residual_scaling_rule(2, 1.0, 0.0); },
              ThrowsMessage<Error>(HasSubstr("must be finite and > 0")));
}

TEST(ResidualBuilders, RecordScalesInUnitGraphsOnly) {
  Graph unit;
  const Value x = unit.input("x", {2, 4});
  const auto [branch, skip] = residual_split(x, 1.0);
  EXPECT_NE(branch, skip);
  EXPECT_EQ(branch.shape(), x.shape());
  EXPECT_NEAR(unit.nodes().back().attrs.get_double("t", "beta_branch"), std::sqrt(0.5), 1e-15);
  residual_add(branch, skip, 1.0);
  EXPECT_NEAR(unit.nodes().back().attrs.get_double("t", "alpha_skip"), std::sqrt(0.5), 1e-15);

  Graph plain(Scaling::kUnscaled);
  const Value xp = plain.input("x", {2, 4});
  const auto split = residual_split(xp, 1.0);
  EXPECT_FALSE(plain.nodes().back().attrs.has("beta_branch"));
  residual_add(split.branch, split.skip, 1.0);
  EXPECT_FALSE(plain.nodes().back().attrs.has("alpha_skip"));
}

}  // namespace
}  // namespace unitscale

// μP ↔ u-μP equivalence (arXiv 2407.17465: u-μP is μP up to width-independent constants, by
// abc-symmetry). A 3-layer ReLU MLP (d_in 5, hidden width n, d_out 11, batch 3, MSE loss) is built
// twice, as μP (base width 8) and as u-μP, from the same N(0, 1) draws Z (u-μP's weights are Z,
// μP's are its init std times Z), and trained 3 steps with SGD and with Adam (ε → 0). With μP's
// multipliers α_emb, α_out and per-parameter LR constants derived below — none of which depends on
// n — the two runs have the same losses at every width.
//
// Derivation. ReLU is positively homogeneous, so with W_p = s_p·Z_p (s_p μP's init std) the two
// networks compute the same function of Z when
//   input:  α_emb·s_1 = 1/√5 (u-μP's 1/√fan_in)               ⇒ α_emb = √3      (s_1 = 1/√15)
//   hidden: s_2 = 1/√(3n) against u-μP's 1/√n, a factor 1/√3 that the output absorbs:
//   output: (α_out·b/n)·s_3·(1/√3) = 1/n                        ⇒ α_out = 3/√b    (s_3 = 1/√(3b))
// u-μP's backward gives κ_p·∂L/∂Z_p instead of the true gradient: the unit-scaled MSE drops the
// 1/numel and uses 8^-½ (c = 33/√8), the unconstrained readout sends 1/√11 instead of 1/n upstream
// (n/√11), and weight gradients drop the forward multiplier and use B^-½ (B^-½·√fan_in, or
// B^-½·n for the readout). A u-μP step Z_p −= η_u·f_p·κ_p·s_p·∂L/∂W_p is the μP step
// W_p −= η_μ·g_p·∂L/∂W_p when η_μ·g_p = η_u·f_p·κ_p·s_p² (f, g the two schemes' LR factors):
//   SGD:  input  c·B^-½·b/(15√11),   hidden  c·B^-½/(3√11),   output  c·B^-½/3     (· η_u)
//   Adam (invariant to κ; η_μ·g_p = η_u·f_p·s_p):  input 1/(5√3),  hidden 1/(b√3),  output 1/√(3b)
// so η_μ = η_u·(hidden constant), and the input and output LRs get the width-independent extra
// factors b/5 and √11 (SGD) or b/5 and √b (Adam).

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/optim/optimizer.hpp"

namespace unitscale {
namespace {

constexpr std::int64_t kIn = 5, kOut = 11, kBatch = 3, kBase = 8;
constexpr std::uint64_t kSeed = 2024;

ParameterInfo input_info(std::int64_t n) {
  return {.role = ParameterRole::kInput, .fan_in = kIn, .fan_out = n, .width_dims = {0}};
}
ParameterInfo hidden_info(std::int64_t n) {
  return {.role = ParameterRole::kWeight, .fan_in = n, .fan_out = n, .width_dims = {0, 1}};
}
ParameterInfo output_info(std::int64_t n) {
  return {.role = ParameterRole::kOutput, .fan_in = n, .fan_out = kOut, .width_dims = {1}};
}

Tensor draws(std::string_view name, const Shape& shape, double factor = 1.0) {
  Tensor t(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t.data()[i] = static_cast<float>(factor * counter_normal(kSeed, name, static_cast<std::uint64_t>(i)));
  }
  return t;
}

struct Training {
  OptimizerKind kind;
  double eta;                  // η of this scheme
  double input_lr_constant;    // extra width-independent LR factors (μP only; 1 for u-μP)
  double output_lr_constant;
};

// Trains the MLP at width n under `scheme` and returns the loss of each of `steps` runs (each
// run's loss is computed before its update).
std::vector<float> train(Scheme scheme, std::int64_t n, const Training& training, int steps) {
  const double sqrt3 = std::sqrt(3.0);
  Parametrization policy(scheme, {.mup_input_multiplier = sqrt3,
                                  .mup_output_multiplier = 3.0 / std::sqrt(double{kBase})});
  policy.set_base_shape("w1", {kBase, kIn});
  policy.set_base_shape("w2", {kBase, kBase});
  policy.set_base_shape("w3", {kOut, kBase});
  Graph graph(policy.op_scaling());
  Model model(graph, policy);
  const Value w1 = model.parameter("w1", {n, kIn}, input_info(n));
  const Value w2 = model.parameter("w2", {n, n}, hidden_info(n));
  const Value w3 = model.parameter("w3", {kOut, n}, output_info(n));
  const Value x = graph.input("x", {kBatch, kIn});
  const Value target = graph.input("target", {kBatch, kOut});

  Value h = relu(apply_multiplier(linear(x, w1), model.rule(w1)));
  h = relu(apply_multiplier(linear(h, w2), model.rule(w2)));
  const Value y = apply_multiplier(linear_readout(h, w3), model.rule(w3));
  const Value loss = mse_loss(y, target);

  std::vector<ModelParameter> parameters(model.parameters().begin(), model.parameters().end());
  parameters[0].rule.sgd_lr_factor *= training.input_lr_constant;
  parameters[0].rule.adam_lr_factor *= training.input_lr_constant;
  parameters[2].rule.sgd_lr_factor *= training.output_lr_constant;
  parameters[2].rule.adam_lr_factor *= training.output_lr_constant;
  const Value wrt[] = {w1, w2, w3};
  const std::vector<Value> grads = autodiff(graph, loss, wrt);
  const OptimizerStep step = record_optimizer(
      graph, parameters, grads,
      {.kind = training.kind, .lr = training.eta, .eps = 1e-30, .log = [](std::string_view) {}});

  Executor exec(graph, step.outputs({loss}));
  for (const ModelParameter& p : model.parameters()) {
    // The same draws Z for both schemes, times the scheme's init std (1 for u-μP).
    exec.set_state(p.value, draws(p.rule.name, p.rule.shape, p.rule.init_std).view());
  }
  const Tensor x_tensor = draws("x", {kBatch, kIn});
  const Tensor target_tensor = draws("target", {kBatch, kOut});
  exec.bind(x, x_tensor);
  exec.bind(target, target_tensor);
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    exec.run();
    losses.push_back(exec.get(loss).data()[0]);
  }
  return losses;
}

void expect_same_losses(const std::vector<float>& mup, const std::vector<float>& umup,
                        std::int64_t n, double tolerance) {
  ASSERT_EQ(mup.size(), umup.size());
  for (std::size_t t = 0; t < mup.size(); ++t) {
    EXPECT_NEAR(mup[t] / umup[t], 1.0, tolerance)
        << "width " << n << ", step " << t + 1 << ": μP " << mup[t] << ", u-μP " << umup[t];
  }
  // The runs must actually train (the last loss is below the first).
  EXPECT_LT(umup.back(), umup.front()) << "width " << n;
}

constexpr int kSteps = 4;  // three updates, and the loss after the third

TEST(MupEquivalence, SgdLossesAgreeAtEveryWidth) {
  const double c = double(kBatch * kOut) / std::sqrt(8.0);  // unit-scaled MSE against the mean
  const double root_batch = 1.0 / std::sqrt(double{kBatch});
  const double eta_u = 0.05;
  const Training umup{OptimizerKind::kSgd, eta_u, 1.0, 1.0};
  const Training mup{OptimizerKind::kSgd, eta_u * c * root_batch / (3.0 * std::sqrt(11.0)),
                     double{kBase} / 5.0, std::sqrt(11.0)};
  for (const std::int64_t n : {8, 16, 32, 64}) {
    expect_same_losses(train(Scheme::kMuP, n, mup, kSteps), train(Scheme::kUMuP, n, umup, kSteps),
                       n, 1e-6);
  }
}

TEST(MupEquivalence, AdamLossesAgreeAtEveryWidth) {
  const double eta_u = 0.05;
  const Training umup{OptimizerKind::kAdam, eta_u, 1.0, 1.0};
  const Training mup{OptimizerKind::kAdam, eta_u / (double{kBase} * std::sqrt(3.0)),
                     double{kBase} / 5.0, std::sqrt(double{kBase})};
  for (const std::int64_t n : {8, 16, 32, 64}) {
    expect_same_losses(train(Scheme::kMuP, n, mup, kSteps), train(Scheme::kUMuP, n, umup, kSteps),
                       n, 1e-6);
  }
}

}  // namespace
}  // namespace unitscale

#include "unitscale/nn/parametrization.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/nn/init.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// ---- parameters of the u-μP paper's optimizer test (arXiv 2407.17465, reference test) -----------
// Embedding(256, 16), a depth-3 stack of Linear(16, 16, bias), readout 16 → 1024.

struct NamedParameter {
  std::string name;
  Shape shape;
  ParameterInfo info;
};

NamedParameter embedding_table() {
  return {"embedding",
          {256, 16},
          {.role = ParameterRole::kEmbedding, .fan_in = 256, .fan_out = 16, .width_dims = {1}}};
}
NamedParameter hidden_weight(int block) {
  return {"layers." + std::to_string(block) + ".weight",
          {16, 16},
          {.role = ParameterRole::kWeight,
           .fan_in = 16,
           .fan_out = 16,
           .width_dims = {0, 1},
           .depth = block}};
}
NamedParameter hidden_bias(int block) {
  return {"layers." + std::to_string(block) + ".bias",
          {16},
          {.role = ParameterRole::kBias,
           .fan_in = 16,
           .fan_out = 16,
           .width_dims = {0},
           .depth = block}};
}
NamedParameter readout() {
  return {"readout.weight",
          {1024, 16},
          {.role = ParameterRole::kOutput, .fan_in = 16, .fan_out = 1024, .width_dims = {1}}};
}

ParameterRule rule_of(const Parametrization& p, const NamedParameter& param) {
  return p.rule(param.name, param.shape, param.info);
}

// ---- u-μP optimizer rules: the test vector ------------------------------------------------------

TEST(UMuPLearningRates, AdamMatchesTheReferenceTestVector) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const double eta = 0.1;
  EXPECT_NEAR(rule_of(umup, embedding_table()).adam_learning_rate(eta), 0.025, 1e-12);
  for (int block = 0; block < 3; ++block) {
    EXPECT_NEAR(rule_of(umup, hidden_weight(block)).adam_learning_rate(eta), 0.014434, 1e-6);
    EXPECT_NEAR(rule_of(umup, hidden_bias(block)).adam_learning_rate(eta), 0.057735, 1e-6);
  }
  EXPECT_NEAR(rule_of(umup, readout()).adam_learning_rate(eta), 0.1, 1e-12);
}

TEST(UMuPLearningRates, SgdWithToOutputScaleReadoutMatchesTheReferenceTestVector) {
  const Parametrization umup(
      Scheme::kUMuP, {.residual_blocks = 3, .sgd_readout = SgdReadoutConstraint::kToOutputScale});
  const double eta = 0.1;
  EXPECT_NEAR(rule_of(umup, embedding_table()).sgd_learning_rate(eta), 0.4, 1e-12);
  for (int block = 0; block < 3; ++block) {
    EXPECT_NEAR(rule_of(umup, hidden_weight(block)).sgd_learning_rate(eta), 0.23094, 1e-5);
    EXPECT_NEAR(rule_of(umup, hidden_bias(block)).sgd_learning_rate(eta), 0.92376, 1e-5);
  }
  EXPECT_NEAR(rule_of(umup, readout()).sgd_learning_rate(eta), 0.1, 1e-12);
}

TEST(UMuPLearningRates, SgdWithUnconstrainedReadoutUsesTheAdamFactors) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  for (const NamedParameter& param :
       {embedding_table(), hidden_weight(1), hidden_bias(2), readout()}) {
    const ParameterRule rule = rule_of(umup, param);
    EXPECT_EQ(rule.sgd_lr_factor, rule.adam_lr_factor) << param.name;
  }
}

TEST(UMuPLearningRates, IndependentWeightDecayIsLambdaOverLr) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const double eta = 0.1, lambda = 1e-3;
  const std::vector<std::pair<NamedParameter, double>> expected_lr = {
      {embedding_table(), 0.025},
      {hidden_weight(0), 0.1 / 4 / std::sqrt(3.0)},
      {hidden_bias(0), 0.1 / std::sqrt(3.0)},
      {readout(), 0.1}};
  for (const auto& [param, lr] : expected_lr) {
    const ParameterRule rule = rule_of(umup, param);
    EXPECT_EQ(rule.weight_decay, WeightDecayMode::kIndependent) << param.name;
    const double lr_p = rule.adam_learning_rate(eta);
    EXPECT_NEAR(rule.weight_decay_coefficient(lambda, lr_p), lambda / lr, 1e-9) << param.name;
    // The decoupled step lr_p·λ_p is λ, whatever the peak LR.
    EXPECT_NEAR(lr_p * rule.weight_decay_coefficient(lambda, lr_p), lambda, 1e-15) << param.name;
  }
}

TEST(UMuPLearningRates, DepthConventionAndEmbeddingExponentAreOptions) {
  // 2L convention: D = 1/√6 for 3 blocks, a constant √2 below the L convention.
  const Parametrization branches(
      Scheme::kUMuP, {.residual_blocks = 3, .depth_convention = DepthConvention::kBranches});
  EXPECT_NEAR(rule_of(branches, hidden_bias(0)).adam_lr_factor, 1 / std::sqrt(6.0), 1e-15);
  EXPECT_NEAR(rule_of(branches, hidden_weight(2)).adam_lr_factor, 0.25 / std::sqrt(6.0), 1e-15);
  // Outside the stack there is no depth factor.
  EXPECT_NEAR(rule_of(branches, readout()).adam_lr_factor, 1.0, 1e-15);

  // Exponent 0 (the μP choice): the embedding LR is η, as a readout's.
  const Parametrization flat(Scheme::kUMuP, {.embedding_lr_exponent = 0.0, .residual_blocks = 3});
  EXPECT_EQ(flat.embedding_lr_exponent(), 0.0);
  EXPECT_NEAR(rule_of(flat, embedding_table()).adam_lr_factor, 1.0, 1e-15);
  EXPECT_EQ(Parametrization(Scheme::kUMuP).embedding_lr_exponent(), -0.5);
  EXPECT_EQ(Parametrization(Scheme::kMuP).embedding_lr_exponent(), 0.0);
}

TEST(UMuPLearningRates, NormsCanBeExcludedFromWeightDecay) {
  const NamedParameter gain{
      "norm.gain",
      {16},
      {.role = ParameterRole::kNorm, .fan_in = 16, .fan_out = 16, .width_dims = {0}}};
  const Parametrization kept(Scheme::kUMuP);
  EXPECT_EQ(rule_of(kept, gain).weight_decay, WeightDecayMode::kIndependent);
  const Parametrization excluded(Scheme::kUMuP, {.norm_weight_decay = NormWeightDecay::kExclude});
  const ParameterRule rule = rule_of(excluded, gain);
  EXPECT_EQ(rule.weight_decay, WeightDecayMode::kExcluded);
  EXPECT_EQ(rule.weight_decay_coefficient(1e-3, 0.1), 0.0);
  EXPECT_EQ(rule_of(excluded, readout()).weight_decay, WeightDecayMode::kIndependent);
}

// ---- u-μP parametrization table (arXiv 2407.17465) ----------------------------------------------

TEST(UMuPTable, InitMultipliersAndGradientScales) {
  const Parametrization umup(Scheme::kUMuP);
  EXPECT_EQ(umup.op_scaling(), Scaling::kUnit);
  EXPECT_DOUBLE_EQ(umup.attention_logit_scale(64), 1.0 / 64);

  const ParameterRule hidden =
      umup.rule("ffn.up", {64, 256},
                ParameterInfo{.role = ParameterRole::kWeight, .fan_in = 256, .fan_out = 64});
  EXPECT_EQ(hidden.init, InitDistribution::kNormal);
  EXPECT_EQ(hidden.init_std, 1.0);
  EXPECT_DOUBLE_EQ(hidden.multiplier, 1.0 / 16);
  EXPECT_DOUBLE_EQ(hidden.backward_multiplier, 1.0 / 16);
  EXPECT_DOUBLE_EQ(hidden.weight_gradient_scale(64), 1.0 / 8);  // B^-½
  EXPECT_DOUBLE_EQ(hidden.adam_lr_factor, 1.0 / 16);

  const ParameterRule input = umup.rule(
      "stem", {64, 10}, ParameterInfo{.role = ParameterRole::kInput, .fan_in = 10, .fan_out = 64});
  EXPECT_EQ(input.init_std, 1.0);
  EXPECT_DOUBLE_EQ(input.multiplier, 1 / std::sqrt(10.0));
  EXPECT_DOUBLE_EQ(input.weight_gradient_scale(4), 0.5);

  const ParameterRule output =
      umup.rule("head", {1000, 256},
                ParameterInfo{.role = ParameterRole::kOutput, .fan_in = 256, .fan_out = 1000});
  EXPECT_EQ(output.init, InitDistribution::kNormal);
  EXPECT_EQ(output.init_std, 1.0);
  EXPECT_DOUBLE_EQ(output.multiplier, 1.0 / 256);                       // 1/fan_in forward
  EXPECT_DOUBLE_EQ(output.backward_multiplier, 1 / std::sqrt(1000.0));  // 1/√fan_out backward
  EXPECT_DOUBLE_EQ(output.weight_gradient_scale(16), 0.25);

  const ParameterRule table =
      umup.rule("tokens", {256, 64},
                ParameterInfo{.role = ParameterRole::kEmbedding, .fan_in = 256, .fan_out = 64});
  EXPECT_EQ(table.init_std, 1.0);
  EXPECT_EQ(table.multiplier, 1.0);
  EXPECT_DOUBLE_EQ(table.weight_gradient_scale(1024), 0.5);  // √(V/numel(ids)) = √(256/1024)
  EXPECT_DOUBLE_EQ(table.adam_lr_factor, 1.0 / 8);           // 1/√fan_out = 1/√d

  const ParameterRule bias = umup.rule(
      "ffn.bias", {64}, ParameterInfo{.role = ParameterRole::kBias, .fan_in = 256, .fan_out = 64});
  EXPECT_EQ(bias.init, InitDistribution::kConstant);
  EXPECT_EQ(bias.init_value, 0.0);
  EXPECT_EQ(bias.multiplier, 1.0);
  EXPECT_DOUBLE_EQ(bias.weight_gradient_scale(9), 1.0 / 3);
  EXPECT_EQ(bias.adam_lr_factor, 1.0);

  const ParameterRule gain = umup.rule(
      "norm", {64}, ParameterInfo{.role = ParameterRole::kNorm, .fan_in = 64, .fan_out = 64});
  EXPECT_EQ(gain.init, InitDistribution::kConstant);
  EXPECT_EQ(gain.init_value, 1.0);
  EXPECT_EQ(gain.multiplier, 1.0);
  EXPECT_EQ(gain.adam_lr_factor, 1.0);
}

// ---- SP (PyTorch defaults) ----------------------------------------------------------------------

TEST(SpTable, PyTorchInitUnitMultipliersAndPlainLearningRates) {
  const Parametrization sp(Scheme::kSP);
  EXPECT_EQ(sp.op_scaling(), Scaling::kUnscaled);
  EXPECT_DOUBLE_EQ(sp.attention_logit_scale(64), 1.0 / 8);

  const ParameterRule hidden =
      sp.rule("ffn.up", {64, 256},
              ParameterInfo{.role = ParameterRole::kWeight, .fan_in = 256, .fan_out = 64});
  EXPECT_EQ(hidden.init, InitDistribution::kUniform);
  EXPECT_DOUBLE_EQ(hidden.init_std, 1 / std::sqrt(768.0));  // U(±1/16) has std 1/√(3·256)
  const ParameterRule output =
      sp.rule("head", {1000, 64},
              ParameterInfo{.role = ParameterRole::kOutput, .fan_in = 64, .fan_out = 1000});
  EXPECT_EQ(output.init, InitDistribution::kUniform);
  EXPECT_DOUBLE_EQ(output.init_std, 1 / std::sqrt(192.0));
  const ParameterRule table =
      sp.rule("tokens", {1000, 64},
              ParameterInfo{.role = ParameterRole::kEmbedding, .fan_in = 1000, .fan_out = 64});
  EXPECT_EQ(table.init, InitDistribution::kNormal);
  EXPECT_EQ(table.init_std, 1.0);
  const ParameterRule bias = sp.rule("b", {64}, ParameterInfo{.role = ParameterRole::kBias});
  EXPECT_EQ(bias.init, InitDistribution::kConstant);
  EXPECT_EQ(bias.init_value, 0.0);
  const ParameterRule gain = sp.rule("g", {64}, ParameterInfo{.role = ParameterRole::kNorm});
  EXPECT_EQ(gain.init_value, 1.0);

  for (const ParameterRule& rule : {hidden, output, table, bias, gain}) {
    EXPECT_EQ(rule.multiplier, 1.0) << rule.name;
    EXPECT_EQ(rule.backward_multiplier, 1.0) << rule.name;
    EXPECT_EQ(rule.weight_gradient_scale(100), 1.0) << rule.name;
    EXPECT_EQ(rule.adam_lr_factor, 1.0) << rule.name;
    EXPECT_EQ(rule.sgd_lr_factor, 1.0) << rule.name;
    EXPECT_EQ(rule.weight_decay, WeightDecayMode::kCoupledToLr) << rule.name;
    EXPECT_EQ(rule.weight_decay_coefficient(1e-2, 0.5), 1e-2) << rule.name;
  }
}

TEST(SpTable, Gpt2VariantIsNormalWithStd002) {
  const Parametrization sp(Scheme::kSP, {.sp_init = SpInit::kGpt2Normal});
  const ParameterRule hidden = sp.rule(
      "w", {64, 256}, ParameterInfo{.role = ParameterRole::kWeight, .fan_in = 256, .fan_out = 64});
  EXPECT_EQ(hidden.init, InitDistribution::kNormal);
  EXPECT_EQ(hidden.init_std, 0.02);
  const ParameterRule table =
      sp.rule("e", {100, 64},
              ParameterInfo{.role = ParameterRole::kEmbedding, .fan_in = 100, .fan_out = 64});
  EXPECT_EQ(table.init_std, 1.0);  // the variant changes the hidden and readout weights only
}

// ---- μP (Tensor Programs V, Table 8) ------------------------------------------------------------

// A small model at width n: input 10 → n, hidden n → n, readout n → 1000, embedding, bias, gain.
std::vector<NamedParameter> mup_model(std::int64_t n) {
  return {
      {"tokens",
       {1000, n},
       {.role = ParameterRole::kEmbedding, .fan_in = 1000, .fan_out = n, .width_dims = {1}}},
      {"stem",
       {n, 10},
       {.role = ParameterRole::kInput, .fan_in = 10, .fan_out = n, .width_dims = {0}}},
      {"hidden",
       {n, n},
       {.role = ParameterRole::kWeight, .fan_in = n, .fan_out = n, .width_dims = {0, 1}}},
      {"hidden.bias",
       {n},
       {.role = ParameterRole::kBias, .fan_in = n, .fan_out = n, .width_dims = {0}}},
      {"norm", {n}, {.role = ParameterRole::kNorm, .fan_in = n, .fan_out = n, .width_dims = {0}}},
      {"head",
       {1000, n},
       {.role = ParameterRole::kOutput, .fan_in = n, .fan_out = 1000, .width_dims = {1}}},
      {"head.bias", {1000}, {.role = ParameterRole::kBias, .fan_in = n, .fan_out = 1000}},
  };
}

Parametrization mup_with_base_width(std::int64_t base_width, ParametrizationOptions options = {}) {
  Parametrization mup(Scheme::kMuP, options);
  for (const NamedParameter& param : mup_model(base_width))
    mup.set_base_shape(param.name, param.shape);
  return mup;
}

TEST(MuPTable, EqualsSpAtTheBaseShape) {
  for (const SpInit init : {SpInit::kPyTorchUniform, SpInit::kGpt2Normal}) {
    const Parametrization sp(Scheme::kSP, {.sp_init = init});
    const Parametrization mup = mup_with_base_width(64, {.sp_init = init});
    for (const NamedParameter& param : mup_model(64)) {
      const ParameterRule a = rule_of(sp, param), b = rule_of(mup, param);
      EXPECT_EQ(a.init, b.init) << param.name;
      EXPECT_DOUBLE_EQ(a.init_std, b.init_std) << param.name;
      EXPECT_EQ(a.init_value, b.init_value) << param.name;
      EXPECT_DOUBLE_EQ(a.multiplier, b.multiplier) << param.name;
      EXPECT_DOUBLE_EQ(a.adam_lr_factor, b.adam_lr_factor) << param.name;
      EXPECT_DOUBLE_EQ(a.sgd_lr_factor, b.sgd_lr_factor) << param.name;
      EXPECT_EQ(a.weight_decay, b.weight_decay) << param.name;
    }
  }
}

TEST(MuPTable, ScalesAsTpVAtFourTimesTheWidth) {
  const Parametrization mup = mup_with_base_width(64);
  EXPECT_EQ(mup.op_scaling(), Scaling::kUnscaled);
  EXPECT_DOUBLE_EQ(mup.attention_logit_scale(64), 1.0 / 64);
  std::map<std::string, ParameterRule> rules;
  for (const NamedParameter& param : mup_model(256)) rules.emplace(param.name, rule_of(mup, param));

  // Hidden (matrix-like): init var 1/(3·fan_in), Adam LR ÷ m = 4, SGD LR unchanged.
  EXPECT_DOUBLE_EQ(rules["hidden"].init_std, 1 / std::sqrt(3.0 * 256));
  EXPECT_DOUBLE_EQ(rules["hidden"].multiplier, 1.0);
  EXPECT_DOUBLE_EQ(rules["hidden"].adam_lr_factor, 0.25);
  EXPECT_DOUBLE_EQ(rules["hidden"].sgd_lr_factor, 1.0);
  // Input: init constant in width (fan-in 10), Adam η, SGD η·m.
  EXPECT_DOUBLE_EQ(rules["stem"].init_std, 1 / std::sqrt(30.0));
  EXPECT_DOUBLE_EQ(rules["stem"].multiplier, 1.0);
  EXPECT_DOUBLE_EQ(rules["stem"].adam_lr_factor, 1.0);
  EXPECT_DOUBLE_EQ(rules["stem"].sgd_lr_factor, 4.0);
  // Readout: the base model's init, multiplier 1/m, Adam η, SGD η·m.
  EXPECT_DOUBLE_EQ(rules["head"].init_std, 1 / std::sqrt(3.0 * 64));
  EXPECT_DOUBLE_EQ(rules["head"].multiplier, 0.25);
  EXPECT_DOUBLE_EQ(rules["head"].adam_lr_factor, 1.0);
  EXPECT_DOUBLE_EQ(rules["head"].sgd_lr_factor, 4.0);
  // Biases and gains over the width: Adam η, SGD η·m; the readout bias has no width dim.
  for (const char* name : {"hidden.bias", "norm"}) {
    EXPECT_DOUBLE_EQ(rules[name].adam_lr_factor, 1.0) << name;
    EXPECT_DOUBLE_EQ(rules[name].sgd_lr_factor, 4.0) << name;
  }
  EXPECT_DOUBLE_EQ(rules["head.bias"].sgd_lr_factor, 1.0);
  // Embedding: N(0, 1), Adam η·m^0, SGD η·m.
  EXPECT_EQ(rules["tokens"].init_std, 1.0);
  EXPECT_DOUBLE_EQ(rules["tokens"].adam_lr_factor, 1.0);
  EXPECT_DOUBLE_EQ(rules["tokens"].sgd_lr_factor, 4.0);

  // The embedding exponent: −½ gives η·m^-½.
  const Parametrization mup_half = mup_with_base_width(64, {.embedding_lr_exponent = -0.5});
  EXPECT_DOUBLE_EQ(rule_of(mup_half, mup_model(256)[0]).adam_lr_factor, 0.5);
  // The gpt2 init: a hidden weight's std shrinks as √(base/fan_in), the readout's stays 0.02.
  const Parametrization mup_gpt2 = mup_with_base_width(64, {.sp_init = SpInit::kGpt2Normal});
  EXPECT_DOUBLE_EQ(rule_of(mup_gpt2, mup_model(256)[2]).init_std, 0.01);
  EXPECT_DOUBLE_EQ(rule_of(mup_gpt2, mup_model(256)[5]).init_std, 0.02);
}

// u-μP = μP up to width-independent constants (abc-symmetry under Adam: A/θ, B·θ, C·θ). Take
// θ = B_u-μP / B_μP for a hidden weight at each width; the remaining ratios of A and C must not
// depend on the width.
TEST(MuPTable, UMuPEqualsMuPUpToWidthIndependentConstantsForHiddenWeightsUnderAdam) {
  const Parametrization mup = mup_with_base_width(64);
  const Parametrization umup(Scheme::kUMuP);
  std::vector<double> multiplier_ratio, lr_ratio;
  for (const std::int64_t n : {64, 256, 1024}) {
    const NamedParameter hidden = mup_model(n)[2];
    const ParameterRule m = rule_of(mup, hidden), u = rule_of(umup, hidden);
    const double theta = u.init_std / m.init_std;
    multiplier_ratio.push_back(u.multiplier / (m.multiplier / theta));
    lr_ratio.push_back(u.adam_lr_factor / (m.adam_lr_factor * theta));
  }
  for (std::size_t i = 1; i < multiplier_ratio.size(); ++i) {
    EXPECT_NEAR(multiplier_ratio[i], multiplier_ratio[0], 1e-12);
    EXPECT_NEAR(lr_ratio[i], lr_ratio[0], 1e-12);
  }
}

TEST(MuPBaseShapes, SettingTheSameShapeAgainIsIdempotentAndADifferentOneIsAnError) {
  Parametrization mup(Scheme::kMuP);
  mup.set_base_shape("hidden", {64, 64});
  mup.set_base_shape("hidden", {64, 64});
  EXPECT_EQ(mup.base_shape("hidden"), (Shape{64, 64}));
  EXPECT_EQ(mup.base_shape("other"), std::nullopt);
  EXPECT_THAT(
      [&] {
        mup.set_base_shape("hidden", {32, 32});
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("'hidden'"), HasSubstr("[64, 64]"), HasSubstr("[32, 32]"))));
  EXPECT_EQ(mup.base_shape("hidden"), (Shape{64, 64}));
  // Setting all base shapes twice (as re-running a model's setup would) changes no rule.
  const Parametrization once = mup_with_base_width(64);
  Parametrization twice = mup_with_base_width(64);
  for (const NamedParameter& param : mup_model(64)) twice.set_base_shape(param.name, param.shape);
  for (const NamedParameter& param : mup_model(256)) {
    EXPECT_EQ(rule_of(once, param).adam_lr_factor, rule_of(twice, param).adam_lr_factor);
    EXPECT_EQ(rule_of(once, param).init_std, rule_of(twice, param).init_std);
  }
}

// ---- errors -------------------------------------------------------------------------------------

TEST(ParametrizationErrors, MissingMetadataIsAnErrorUnlessAllowed) {
  for (const Scheme scheme : {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP}) {
    const Parametrization strict(scheme);
    EXPECT_THAT(
        [&] {
          strict.rule("mystery", {4, 4}, std::nullopt);
        },
        ThrowsMessage<Error>(AllOf(HasSubstr("'mystery'"), HasSubstr("no parameter metadata"))));
    const Parametrization lenient(scheme, {.missing_metadata = MissingMetadata::kUnscaledLr});
    const ParameterRule rule = lenient.rule("mystery", {4, 4}, std::nullopt);
    EXPECT_EQ(rule.role, std::nullopt);
    EXPECT_EQ(rule.adam_lr_factor, 1.0);
    EXPECT_EQ(rule.sgd_lr_factor, 1.0);
    EXPECT_EQ(rule.multiplier, 1.0);
  }
}

TEST(ParametrizationErrors, BadMetadataNamesTheParameter) {
  const Parametrization umup(Scheme::kUMuP);
  EXPECT_THAT(
      [&] {
        umup.rule("w0", {4, 4}, ParameterInfo{.fan_in = 0});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'w0'"), HasSubstr("fan_in"))));
  EXPECT_THAT(
      [&] {
        umup.rule("w1", {4, 4}, ParameterInfo{.width_dims = {3}});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'w1'"), HasSubstr("width dim 3"))));
  EXPECT_THAT(
      [&] {
        umup.rule("w2", {4, 0}, ParameterInfo{});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'w2'"), HasSubstr("fan-in of 0"))));
  EXPECT_THAT([&] { umup.rule("s", {}, ParameterInfo{.role = ParameterRole::kNorm}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'s'"), HasSubstr("scalar"))));
}

TEST(ParametrizationErrors, UMuPDepthNeedsTheModelDepth) {
  const Parametrization no_depth(Scheme::kUMuP);
  EXPECT_THAT(
      [&] { rule_of(no_depth, hidden_weight(1)); },
      ThrowsMessage<Error>(AllOf(HasSubstr("'layers.1.weight'"), HasSubstr("residual_blocks"))));
  const Parametrization three(Scheme::kUMuP, {.residual_blocks = 3});
  EXPECT_THAT([&] { rule_of(three, hidden_bias(3)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'layers.3.bias'"), HasSubstr("depth 3"))));
  EXPECT_THAT([&] { Parametrization(Scheme::kUMuP, {.residual_blocks = -1}); },
              ThrowsMessage<Error>(HasSubstr("residual_blocks")));
  EXPECT_THAT(
      [&] {
        Parametrization(Scheme::kUMuP,
                        {.embedding_lr_exponent = std::numeric_limits<double>::quiet_NaN()});
      },
      ThrowsMessage<Error>(HasSubstr("embedding_lr_exponent")));
}

TEST(ParametrizationErrors, MuPBaseShapeProblemsNameTheParameter) {
  Parametrization mup(Scheme::kMuP);
  const ParameterInfo hidden{
      .role = ParameterRole::kWeight, .fan_in = 128, .fan_out = 128, .width_dims = {0, 1}};
  EXPECT_THAT(
      [&] {
        mup.rule("h", {128, 128}, hidden);
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'h'"), HasSubstr("base shape"))));
  mup.set_base_shape("h", {64});
  EXPECT_THAT(
      [&] {
        mup.rule("h", {128, 128}, hidden);
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'h'"), HasSubstr("different rank"))));
  mup.set_base_shape("o", {500, 64});
  EXPECT_THAT(
      [&] {
        mup.rule(
            "o", {1000, 128},
            ParameterInfo{
                .role = ParameterRole::kOutput, .fan_in = 128, .fan_out = 1000, .width_dims = {1}});
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("'o'"), HasSubstr("dim 0"), HasSubstr("not a width dim"))));
  mup.set_base_shape("r", {10, 64});
  EXPECT_THAT(
      [&] {
        mup.rule(
            "r", {10, 128},
            ParameterInfo{
                .role = ParameterRole::kWeight, .fan_in = 128, .fan_out = 10, .width_dims = {1}});
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("'r'"), HasSubstr("two width dims"), HasSubstr("readout"))));
  mup.set_base_shape("b", {64, 64});
  EXPECT_THAT(
      [&] {
        mup.rule("b", {128, 128},
                 ParameterInfo{.role = ParameterRole::kBias, .width_dims = {0, 1}});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("'b'"), HasSubstr("at most one"))));
}

TEST(ParametrizationErrors, RuleHelpersRejectBadArguments) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const ParameterRule rule = rule_of(umup, hidden_weight(0));
  EXPECT_THAT([&] { rule.weight_gradient_scale(0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'layers.0.weight'"), HasSubstr("row"))));
  EXPECT_THAT([&] { rule.weight_decay_coefficient(1e-3, 0.0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'layers.0.weight'"), HasSubstr("positive"))));
  EXPECT_THAT([&] { umup.attention_logit_scale(0); }, ThrowsMessage<Error>(HasSubstr("d_head")));
}

// ---- summary row --------------------------------------------------------------------------------

TEST(ParameterRuleSummary, RowShowsNameRoleShapeInitMultiplierAndLearningRates) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const std::string row = rule_of(umup, hidden_weight(0)).to_string();
  EXPECT_THAT(row, AllOf(HasSubstr("layers.0.weight"), HasSubstr(" weight "), HasSubstr("[16, 16]"),
                         HasSubstr("N std 1 "), HasSubstr("mult 0.25 "), HasSubstr("adam 0.1443 "),
                         HasSubstr("sgd 0.1443 "), HasSubstr("wd independent")));
  const std::string bias_row = rule_of(umup, hidden_bias(0)).to_string();
  EXPECT_THAT(bias_row, AllOf(HasSubstr("bias"), HasSubstr("const 0"), HasSubstr("adam 0.5774")));
  // Columns line up, so rows read as a table.
  EXPECT_EQ(row.find("init"), bias_row.find("init"));
  EXPECT_EQ(row.find("mult"), bias_row.find("mult"));
  const Parametrization lenient(Scheme::kSP, {.missing_metadata = MissingMetadata::kUnscaledLr});
  EXPECT_THAT(lenient.rule("x", {3}, std::nullopt).to_string(), HasSubstr("(none)"));
}

// ---- counter-based initialiser ------------------------------------------------------------------

ParameterRule normal_rule(double std) {
  ParameterRule rule;
  rule.init = InitDistribution::kNormal;
  rule.init_std = std;
  return rule;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.bytes(), b.bytes(), a.byte_size()) == 0;
}

TEST(InitParameter, SameSeedAndNameGiveTheSameBits) {
  const Tensor a = init_parameter(7, "layers.0.weight", {32, 16}, normal_rule(1.0));
  const Tensor b = init_parameter(7, "layers.0.weight", {32, 16}, normal_rule(1.0));
  EXPECT_TRUE(same_bits(a, b));
}

TEST(InitParameter, CreationOrderDoesNotMatter) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const std::vector<NamedParameter> forward = {embedding_table(), hidden_weight(0),
                                               hidden_weight(1), hidden_weight(2), readout()};
  std::map<std::string, Tensor> in_order, reversed;
  for (const NamedParameter& p : forward) {
    in_order.emplace(p.name, init_parameter(3, p.name, p.shape, rule_of(umup, p)));
  }
  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    reversed.emplace(it->name, init_parameter(3, it->name, it->shape, rule_of(umup, *it)));
  }
  for (const NamedParameter& p : forward)
    EXPECT_TRUE(same_bits(in_order.at(p.name), reversed.at(p.name))) << p.name;
  // Element i depends on nothing but (seed, name, i): a reshaped parameter keeps its values.
  const Tensor flat = init_parameter(3, "w", {512}, normal_rule(1.0));
  const Tensor matrix = init_parameter(3, "w", {32, 16}, normal_rule(1.0));
  EXPECT_EQ(std::memcmp(flat.bytes(), matrix.bytes(), flat.byte_size()), 0);
}

TEST(InitParameter, DifferentNamesOrSeedsGiveDifferentValues) {
  const Tensor a = init_parameter(7, "layers.0.weight", {64}, normal_rule(1.0));
  const Tensor b = init_parameter(7, "layers.1.weight", {64}, normal_rule(1.0));
  const Tensor c = init_parameter(8, "layers.0.weight", {64}, normal_rule(1.0));
  int equal_ab = 0, equal_ac = 0;
  for (std::int64_t i = 0; i < 64; ++i) {
    equal_ab += a[i] == b[i];
    equal_ac += a[i] == c[i];
  }
  EXPECT_EQ(equal_ab, 0);
  EXPECT_EQ(equal_ac, 0);
}

struct Moments {
  double mean, std, kurtosis, max_abs;
};
Moments moments_of(const Tensor& t) {
  const double n = static_cast<double>(t.numel());
  double sum = 0, max_abs = 0;
  for (const float x : t.span()) {
    sum += x;
    max_abs = std::max(max_abs, std::abs(static_cast<double>(x)));
  }
  const double mean = sum / n;
  double m2 = 0, m4 = 0;
  for (const float x : t.span()) {
    const double d = x - mean;
    m2 += d * d;
    m4 += d * d * d * d;
  }
  m2 /= n;
  m4 /= n;
  return {mean, std::sqrt(m2), m4 / (m2 * m2), max_abs};
}

// 10^5 draws: the standard error of the mean is std/316, of the std about std/447, and of the
// kurtosis about √(24/n) = 0.015 for a normal (about 0.008 for a uniform). Tolerances are ≥ 4.5
// standard errors, so a correct generator fails with probability below 10^-5 (and the seed is
// fixed).
constexpr std::int64_t kDraws = 100000;

TEST(InitParameter, NormalDrawsHaveTheTargetMeanStdAndShape) {
  const double target = 0.5;
  const Moments m = moments_of(init_parameter(11, "stats.normal", {kDraws}, normal_rule(target)));
  EXPECT_NEAR(m.mean, 0.0, 0.016 * target);
  EXPECT_NEAR(m.std, target, 0.01 * target);
  EXPECT_NEAR(m.kurtosis, 3.0, 0.1);
  EXPECT_GT(m.max_abs, 3.5 * target);  // tails: 10^5 normal draws reach beyond 3.5σ
}

// Neighbouring elements are independent: the lag-1 correlation of 10^5 draws has standard error
// 1/√n ≈ 0.003.
TEST(InitParameter, NeighbouringDrawsAreUncorrelated) {
  const Tensor values = init_parameter(12, "stats.lag", {kDraws}, normal_rule(1.0));
  double lagged = 0, squares = 0;
  for (std::int64_t i = 0; i + 1 < kDraws; ++i) {
    lagged += static_cast<double>(values[i]) * values[i + 1];
    squares += static_cast<double>(values[i]) * values[i];
  }
  EXPECT_NEAR(lagged / squares, 0.0, 0.016);
}

TEST(InitParameter, UniformDrawsHaveTheTargetMeanStdAndBound) {
  const Parametrization sp(Scheme::kSP);
  const ParameterRule rule = sp.rule(
      "stats.uniform", {kDraws / 250, 250},
      ParameterInfo{.role = ParameterRole::kWeight, .fan_in = 250, .fan_out = kDraws / 250});
  const Tensor values = init_parameter(11, rule.name, rule.shape, rule);
  const Moments m = moments_of(values);
  const double bound = 1 / std::sqrt(250.0);  // PyTorch's U(±1/√fan_in)
  const double target = bound / std::sqrt(3.0);
  EXPECT_NEAR(m.mean, 0.0, 0.016 * target);
  EXPECT_NEAR(m.std, target, 0.01 * target);
  EXPECT_NEAR(m.kurtosis, 1.8, 0.05);
  EXPECT_LE(m.max_abs, bound);
  EXPECT_GT(m.max_abs, 0.999 * bound);
}

TEST(InitParameter, ConstantsAndRuleMismatches) {
  const Parametrization umup(Scheme::kUMuP, {.residual_blocks = 3});
  const NamedParameter bias = hidden_bias(0);
  const Tensor zeros = init_parameter(1, bias.name, bias.shape, rule_of(umup, bias));
  for (const float x : zeros.span()) EXPECT_EQ(x, 0.0f);
  const ParameterRule gain = umup.rule(
      "norm", {8}, ParameterInfo{.role = ParameterRole::kNorm, .fan_in = 8, .fan_out = 8});
  const Tensor ones = init_parameter(1, "norm", {8}, gain);
  for (const float x : ones.span()) EXPECT_EQ(x, 1.0f);

  EXPECT_THAT([&] { init_parameter(1, "other", bias.shape, rule_of(umup, bias)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'other'"), HasSubstr("'layers.0.bias'"))));
  EXPECT_THAT([&] { init_parameter(1, bias.name, {32}, rule_of(umup, bias)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'layers.0.bias'"), HasSubstr("[16]"))));
  EXPECT_THAT([&] { init_parameter(1, "w", {4}, normal_rule(-1.0)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("'w'"), HasSubstr("std"))));
}

TEST(InitParameter, CounterDrawsAreInRange) {
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const double u = counter_uniform(5, "u", i);
    EXPECT_GT(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_TRUE(std::isfinite(counter_normal(5, "u", i)));
  }
  EXPECT_EQ(counter_normal(5, "u", 3), counter_normal(5, "u", 3));
}

}  // namespace
}  // namespace unitscale

// PrecisionConfig: the one-word form sweep tables and examples use (parse and name), what it hands
// simulate_format and the optimizer, and its errors.

#include "unitscale/train/precision.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::ThrowsMessage;

TEST(PrecisionConfig, ParsesTheRecipeAndItsModifiers) {
  const PrecisionConfig plain = PrecisionConfig::parse("fp8");
  EXPECT_EQ(plain.recipe, "fp8");
  EXPECT_FALSE(plain.round_attention || plain.per_tensor_scaling || plain.stochastic_gradients ||
               plain.dynamic_loss_scaling);

  const PrecisionConfig all = PrecisionConfig::parse("fp8-critical+dls+sr+scaled+attention");
  EXPECT_EQ(all.recipe, "fp8-critical");
  EXPECT_TRUE(all.round_attention);
  EXPECT_TRUE(all.per_tensor_scaling);
  EXPECT_TRUE(all.stochastic_gradients);
  EXPECT_TRUE(all.dynamic_loss_scaling);
  // name() puts the modifiers in a fixed order, so one precision has one name.
  EXPECT_EQ(all.name(), "fp8-critical+attention+scaled+sr+dls");
  for (const char* word : {"fp32", "fp8", "fp16+dls", "bf16+attention", "fp8+scaled+sr"}) {
    EXPECT_EQ(PrecisionConfig::parse(word).name(), word);
  }
}

TEST(PrecisionConfig, HandsItsSettingsToSimulateFormatAndTheOptimizer) {
  EXPECT_FALSE(PrecisionConfig::parse("fp32").simulate_format_options(1).has_value());
  const SimulateFormatOptions fp8 =
      *PrecisionConfig::parse("fp8+attention+scaled+sr").simulate_format_options(7);
  EXPECT_TRUE(fp8.attention_inputs);
  EXPECT_TRUE(fp8.matmuls.per_tensor_scaling);
  EXPECT_EQ(fp8.matmuls.gradient_rounding, Rounding::kStochastic);
  EXPECT_EQ(fp8.matmuls.rounding, Rounding::kNearestEven);
  EXPECT_EQ(fp8.matmuls.seed, 7);
  EXPECT_EQ(fp8.matmuls.inputs, DType::kE4M3FN);
  EXPECT_EQ(fp8.matmuls.gradients, DType::kE5M2);
  EXPECT_TRUE(fp8.high_precision_modules.empty());
  EXPECT_FALSE(PrecisionConfig::parse("fp8-critical")
                   .simulate_format_options(0)
                   ->high_precision_modules.empty());

  // Dynamic loss scaling must see an overflowing gradient as Inf, so its cast stops saturating;
  // x and W keep the recipe's saturation.
  EXPECT_EQ(fp8.matmuls.gradient_overflow, Overflow::kSaturate);
  const SimulateFormatOptions fp8_dls =
      *PrecisionConfig::parse("fp8+dls").simulate_format_options(0);
  EXPECT_EQ(fp8_dls.matmuls.gradient_overflow, Overflow::kNonFinite);
  EXPECT_EQ(fp8_dls.matmuls.overflow, Overflow::kSaturate);

  const PrecisionConfig dls = PrecisionConfig::parse("fp16+dls");
  ASSERT_TRUE(dls.dynamic_loss_scale().has_value());
  EXPECT_EQ(dls.dynamic_loss_scale()->initial, 65536.0);  // loss_scale 1: the default 2^16
  EXPECT_EQ(dls.static_loss_scale(), 1.0);
  EXPECT_FALSE(PrecisionConfig::parse("fp16").dynamic_loss_scale().has_value());
}

// The scale propagation recipes hand a policy to propagate_scales instead of options to
// simulate_format, and name their storage in the config a checkpoint keeps.
TEST(PrecisionConfig, ScalifyRecipesGiveAScalePolicy) {
  EXPECT_FALSE(PrecisionConfig::parse("fp8").scale_policy().has_value());
  EXPECT_THAT(PrecisionConfig::parse("fp8").to_json(), ::testing::Not(HasSubstr("master_weights")));
  PrecisionConfig fp8 = PrecisionConfig::parse("scalify-fp8");
  EXPECT_TRUE(fp8.scalify());
  EXPECT_FALSE(fp8.simulate_format_options(0).has_value());
  fp8.master_weights = DType::kF16;
  const ScalePolicy policy = *fp8.scale_policy();
  EXPECT_EQ(policy.matmul_inputs, DType::kE4M3FN);
  EXPECT_EQ(policy.matmul_gradients, DType::kE5M2);
  EXPECT_EQ(policy.values, DType::kF16);
  EXPECT_EQ(policy.optimizer_state, DType::kF16);
  EXPECT_EQ(policy.parameters, DType::kF16);
  EXPECT_THAT(fp8.to_json(), HasSubstr(R"("master_weights":"f16")"));
  const ScalePolicy fp16 = *PrecisionConfig::parse("scalify-fp16").scale_policy();
  EXPECT_EQ(fp16.matmul_inputs, DType::kF16);
  EXPECT_EQ(fp16.parameters, DType::kF32);
  EXPECT_EQ(PrecisionConfig::parse("scalify-fp16").name(), "scalify-fp16");

  EXPECT_THAT([] { PrecisionConfig::parse("scalify-fp8+sr"); },
              ThrowsMessage<Error>(HasSubstr("scalify-fp8 propagates scales instead of rounding "
                                             "matmuls or scaling the loss")));
  PrecisionConfig delayed = PrecisionConfig::parse("scalify-fp8");
  delayed.matmul_scaling = MatmulScaling::kDelayedAmax;
  delayed.amax_history_length = 4;
  EXPECT_EQ(delayed.scale_policy()->matmul_scaling, MatmulScaling::kDelayedAmax);
  EXPECT_EQ(delayed.scale_policy()->amax_history_length, 4);
  EXPECT_THAT(delayed.to_json(), HasSubstr(R"("amax_history_length":4)"));
  PrecisionConfig fp16_delayed = delayed;
  fp16_delayed.recipe = "scalify-fp16";
  EXPECT_THAT([&] { fp16_delayed.check("task"); },
              ThrowsMessage<Error>(HasSubstr("task: delayed_amax scaling of the matmuls needs "
                                             "scalify-fp8, got scalify-fp16")));

  PrecisionConfig loss_scaled{.recipe = "scalify-fp16"};
  loss_scaled.loss_scale = 1024;
  EXPECT_THAT([&] { loss_scaled.check("task"); },
              ThrowsMessage<Error>(HasSubstr("task: scalify-fp16 propagates scales")));
  PrecisionConfig fp8_weights{.recipe = "scalify-fp16"};
  fp8_weights.master_weights = DType::kE4M3FN;
  EXPECT_THAT([&] { fp8_weights.check("task"); },
              ThrowsMessage<Error>(HasSubstr("task: the master weights storage must be f32, f16 "
                                             "or bf16, got e4m3fn")));

  // FP8 first moments and saved activations: handed to the policy, named in the checkpoint's
  // config, FP8 formats only, and scale propagation's alone.
  PrecisionConfig compact{
      .recipe = "scalify-fp8", .first_moment = DType::kE4M3FN, .saved_activations = DType::kE5M2};
  EXPECT_NO_THROW(compact.check("task"));
  EXPECT_EQ(compact.scale_policy()->first_moment, DType::kE4M3FN);
  EXPECT_EQ(compact.scale_policy()->saved_activations, DType::kE5M2);
  EXPECT_TRUE(compact.scale_policy()->recast_weights_for_backward);
  EXPECT_FALSE(
      PrecisionConfig{.recipe = "scalify-fp8"}.scale_policy()->recast_weights_for_backward);
  EXPECT_THAT(compact.to_json(), HasSubstr(R"("first_moment":"e4m3fn")"));
  EXPECT_THAT(compact.to_json(), HasSubstr(R"("saved_activations":"e5m2")"));
  EXPECT_THAT(PrecisionConfig{.recipe = "scalify-fp8"}.to_json(),
              Not(HasSubstr("saved_activations")));
  PrecisionConfig f16_moment = compact;
  f16_moment.first_moment = DType::kF16;
  EXPECT_THAT([&] { f16_moment.check("task"); },
              ThrowsMessage<Error>(HasSubstr("task: the first moments' storage must be e4m3fn or "
                                             "e5m2, got f16")));
  PrecisionConfig simulated = compact;
  simulated.recipe = "fp8";
  EXPECT_THAT([&] { simulated.check("task"); },
              ThrowsMessage<Error>(HasSubstr("they need scalify-fp16 or scalify-fp8, got fp8")));
}

TEST(PrecisionConfig, ErrorsNameThePart) {
  EXPECT_THAT([] { PrecisionConfig::parse("fp8+qkv"); },
              ThrowsMessage<Error>(HasSubstr("precision 'fp8+qkv': unknown modifier 'qkv' "
                                             "(expected attention, scaled, sr or dls")));
  EXPECT_THAT([] { PrecisionConfig::parse("fp8+"); },
              ThrowsMessage<Error>(HasSubstr("unknown modifier ''")));
  EXPECT_THAT([] { PrecisionConfig::parse("fp4"); },
              ThrowsMessage<Error>(HasSubstr("precision 'fp4': simulate_format: unknown recipe "
                                             "'fp4'")));
  EXPECT_THAT([] { PrecisionConfig::parse("fp32+attention"); },
              ThrowsMessage<Error>(HasSubstr("need a low precision")));
}

}  // namespace
}  // namespace unitscale

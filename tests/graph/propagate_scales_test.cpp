// propagate_scales (graph/propagate_scales.hpp): a scaled graph computes what the fp32 graph does,
// within its storage format's precision, on inputs far outside FP16's range where plain FP16
// overflows or flushes to zero; every propagated scale is a power of two; dynamic rescaling lands
// its statistic in [1, 2); the FP8 policy casts the matmul operands; errors name what is wrong.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/graph.hpp"
#include "unitscale/ops.hpp"
#include "unitscale/optim/update_ops.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

Tensor normal(const Shape& shape, unsigned seed, double std = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor t(shape);
  for (float& v : t.span()) v = static_cast<float>(dist(rng) * std);
  return t;
}

Tensor labels_for(std::int64_t rows, std::int64_t classes, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<unsigned>(classes));
  return Tensor(Shape{rows}, std::span<const std::int32_t>(ids));
}

// A tensor of any floating dtype as fp32 (exact).
Tensor to_f32(ConstTensorView x, DType through = DType::kF32) {
  Tensor narrow(x.shape(), through);
  if (through != DType::kF32) {
    cast_forward(x, narrow, {{"dtype", through}, {"overflow", Overflow::kNonFinite}}, 0);
    x = narrow;
  }
  Tensor y(x.shape());
  cast_forward(x, y, {{"dtype", DType::kF32}}, 0);
  return y;
}

double rms(std::span<const float> x) {
  double sum = 0;
  for (const float v : x) sum += static_cast<double>(v) * v;
  return std::sqrt(sum / static_cast<double>(x.size()));
}

// max |a − b| / rms(b): the error relative to the reference's typical element.
double relative_error(std::span<const float> a, std::span<const float> b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return worst / rms(b);
}

// ‖a − b‖ / ‖b‖.
double relative_l2(std::span<const float> a, std::span<const float> b) {
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
  }
  return std::sqrt(diff / static_cast<double>(a.size())) / rms(b);
}

// The values of `outputs` (through `scaled` when given: its fp32 outputs) after one run of the
// graph with `inputs` bound.
std::vector<Tensor> run_outputs(Graph& graph, std::vector<Value> outputs, const ScaledGraph* scaled,
                                std::initializer_list<std::pair<Value, const Tensor*>> inputs,
                                const Observer& observer = nullptr) {
  if (scaled != nullptr) {
    for (Value& v : outputs) v = scaled->output(v);
  }
  Executor exec(graph, outputs);
  if (observer) exec.add_observer(observer);
  for (const auto& [value, data] : inputs) exec.bind(value, *data);
  exec.run();
  std::vector<Tensor> result;
  for (const Value& v : outputs) result.push_back(copy_of(exec.get(v)));
  return result;
}

// A unit-scaled MLP classifier, 64 → 128 → 10, with a gelu and cross-entropy loss; the input is
// x · input_scale, re-centred by a dynamic rescale when `rescale_input`; with `normed`, an
// rms_norm between the first linear and the gelu.
struct Mlp {
  Graph graph{Scaling::kUnit};
  Value x = graph.input("x", {32, 64});
  Value labels = graph.input("labels", {32}, DType::kI32);
  Value w1 = graph.parameter("w1", {128, 64});
  Value w2 = graph.parameter("w2", {10, 128});
  Value hidden, normed, logits;  // the first linear's output, the norm's (or hidden), the logits
  Value loss, grad_w1, grad_w2, grad_x;
  Tensor x_data, labels_data = labels_for(32, 10, 5), w1_data = normal({128, 64}, 2),
                 w2_data = normal({10, 128}, 3);

  explicit Mlp(double input_scale = 1.0, bool rescale_input = false, bool norm = false) {
    x_data = normal({32, 64}, 1, input_scale);
    // The default floor (2^-14) would stop a 2^-40 input from moving into its scale.
    const Value h_in = rescale_input ? dynamic_rescale(x, {.floor = 0x1p-64}) : x;
    hidden = linear(h_in, w1);
    normed = norm ? rms_norm(hidden) : hidden;
    logits = linear_readout(gelu(normed), w2);
    loss = cross_entropy(logits, labels);
    const auto grads = autodiff(graph, loss, std::vector<Value>{w1, w2, x});
    grad_w1 = grads[0], grad_w2 = grads[1], grad_x = grads[2];
  }
  std::vector<Value> outputs() const { return {loss, grad_w1, grad_w2, grad_x}; }

  // The outputs' values: of the fp32 graph, or through `scaled` after propagate_scales.
  std::vector<Tensor> run(const ScaledGraph* scaled = nullptr, const Observer& observer = nullptr) {
    return run_outputs(graph, outputs(), scaled,
                       {{x, &x_data}, {labels, &labels_data}, {w1, &w1_data}, {w2, &w2_data}},
                       observer);
  }
};

// Every scale output of every node a scaled graph runs, and the largest |data| of its values.
struct ScaleWatch {
  std::vector<float> scales;
  double largest_data = 0;
  bool finite = true;
  Observer observer() {
    return [this](const NodeEvent& event) {
      const std::size_t m = event.outputs.size() / 2;
      if (!is_scaled_op(*event.node.op) || event.node.op == &kMaterializeOp) return;
      for (std::size_t o = 0; o < m; ++o) {
        const TensorView& scale = event.outputs[m + o];
        if (!scale.present()) continue;
        scales.push_back(scale.data()[0]);
        const Tensor data = to_f32(event.outputs[o]);
        for (const float v : data.span()) {
          finite = finite && std::isfinite(v);
          largest_data = std::max(largest_data, std::abs(static_cast<double>(v)));
        }
      }
    };
  }
};

TEST(PropagateScales, Fp16MlpTracksFp32ForwardAndBackward) {
  Mlp reference;
  const std::vector<Tensor> expected = reference.run();
  Mlp mlp;
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), ScalePolicy::fp16());
  ScaleWatch watch;
  const std::vector<Tensor> got = mlp.run(&scaled, watch.observer());
  // FP16 keeps 11 significant bits: one rounding per stored value, a few in a row, gives errors
  // of a few 2^-11 relative to a gradient's typical element.
  EXPECT_NEAR(got[0].data()[0], expected[0].data()[0], 2e-3 * expected[0].data()[0]);
  for (std::size_t k = 1; k < got.size(); ++k) {
    EXPECT_LT(relative_error(got[k].span(), expected[k].span()), 1e-2) << "output " << k;
  }
  EXPECT_GT(scaled.scaled_nodes(), 6);
  EXPECT_FALSE(watch.scales.empty());
}

// Inputs 2^40 and 2^-40 times unit data: far beyond FP16's range (65504) and below its smallest
// subnormal (2^-24). The dynamic rescale moves the input's magnitude into its scale; the rules
// then carry it through every op and gradient, so no data leaves FP16's range, and the scaled run
// tracks fp32 — where the same graph with every value rounded to FP16 overflows or flushes.
class ExtremeInputScale : public ::testing::TestWithParam<int> {};

TEST_P(ExtremeInputScale, DataStaysInFp16RangeAndTracksFp32) {
  const double input_scale = std::ldexp(1.0, GetParam());
  Mlp reference(input_scale, /*rescale_input=*/true);
  const std::vector<Tensor> expected = reference.run();
  Mlp mlp(input_scale, /*rescale_input=*/true);
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), ScalePolicy::fp16());
  ScaleWatch watch;
  const std::vector<Tensor> got = mlp.run(&scaled, watch.observer());
  EXPECT_TRUE(watch.finite);
  EXPECT_LT(watch.largest_data, 256.0) << "data should sit near 1 with rule-tracked scales";
  EXPECT_NEAR(got[0].data()[0], expected[0].data()[0], 2e-3 * expected[0].data()[0]);
  for (std::size_t k = 1; k < got.size(); ++k) {
    EXPECT_LT(relative_error(got[k].span(), expected[k].span()), 1e-2) << "output " << k;
  }

  // The control: the input itself stored in plain FP16 overflows to Inf or flushes to zero.
  const Tensor x16 = to_f32(mlp.x_data, DType::kF16);
  if (GetParam() > 0) {
    EXPECT_FALSE(std::isfinite(rms(x16.span()))) << "FP16 should overflow the input";
  } else {
    EXPECT_EQ(rms(x16.span()), 0.0) << "FP16 should flush the input to zero";
  }
}

INSTANTIATE_TEST_SUITE_P(PowersOfTwo, ExtremeInputScale, ::testing::Values(40, -40),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return param_info.param > 0 ? std::string("Huge") : std::string("Tiny");
                         });

TEST(PropagateScales, EveryPropagatedScaleIsAPowerOfTwo) {
  for (const Pow2Rounding rounding : {Pow2Rounding::kDown, Pow2Rounding::kUp}) {
    Mlp mlp(0x1p20, /*rescale_input=*/true);
    ScalePolicy policy = ScalePolicy::fp16();
    policy.rounding = rounding;
    const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), policy);
    ScaleWatch watch;
    mlp.run(&scaled, watch.observer());
    ASSERT_GT(watch.scales.size(), 8u);
    for (const float s : watch.scales) {
      int exponent = 0;
      EXPECT_EQ(std::frexp(s, &exponent), 0.5f) << s << " under " << pow2_rounding_name(rounding);
    }
  }
}

TEST(PropagateScales, NoRoundingKeepsTheRulesExactFactors) {
  Mlp mlp;
  ScalePolicy policy = ScalePolicy::fp16();
  policy.rounding = Pow2Rounding::kNone;
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), policy);
  ScaleWatch watch;
  Mlp reference;
  const std::vector<Tensor> expected = reference.run();
  const std::vector<Tensor> got = mlp.run(&scaled, watch.observer());
  int general = 0;
  for (const float s : watch.scales) {
    int exponent = 0;
    general += std::frexp(s, &exponent) != 0.5f;
  }
  EXPECT_GT(general, 0) << "some rule factors (√2 of an add, say) are not powers of two";
  for (std::size_t k = 1; k < got.size(); ++k) {
    EXPECT_LT(relative_error(got[k].span(), expected[k].span()), 1e-2) << "output " << k;
  }
}

TEST(PropagateScales, Fp8PolicyCastsMatmulOperandsAndGradients) {
  Mlp mlp;
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), ScalePolicy::fp8());
  // x, w1, h, w2 in E4M3 (each once: the backward reads the forward's casts), and the gradients
  // into both matmuls in E5M2.
  EXPECT_EQ(scaled.casts(), 6);
  const std::string text = mlp.graph.to_string();
  EXPECT_THAT(text, HasSubstr("e4m3fn"));
  EXPECT_THAT(text, HasSubstr("e5m2"));
  Mlp reference;
  const std::vector<Tensor> expected = reference.run();
  const std::vector<Tensor> got = mlp.run(&scaled);
  // Rounding to nearest leaves a relative error uniform in ±2^-4 per E4M3 element (rms 3.6%) and
  // ±2^-3 per E5M2 gradient element (rms 7.2%); sums of many such products average much of it
  // out. Measured: the loss within 0.1%, the gradients 5-8% in relative L2.
  EXPECT_NEAR(got[0].data()[0], expected[0].data()[0], 0.01 * expected[0].data()[0]);
  for (std::size_t k = 1; k < got.size(); ++k) {
    EXPECT_LT(relative_l2(got[k].span(), expected[k].span()), 0.12) << "output " << k;
  }
}

// ScalePolicy::recast_weights_for_backward: a weight (a state) is cast to FP8 twice, for the
// forward GEMM and again for the backward's, the same bits from the same state: the forward's copy
// dies with the forward GEMM, and the backward's is made after the forward pass, so neither holds
// arena space between the passes.
TEST(PropagateScales, WeightsAreCastAgainForTheBackwardGemm) {
  Graph graph{Scaling::kUnit};
  const Value x = graph.input("x", {32, 64});
  const Value labels = graph.input("labels", {32}, DType::kI32);
  const Value w1 = graph.state("w1", {128, 64}, ParameterInfo{});
  const Value w2 = graph.state("w2", {10, 128}, ParameterInfo{});
  const Value loss = cross_entropy(linear_readout(gelu(linear(x, w1)), w2), labels);
  const auto grads = autodiff(graph, loss, std::vector<Value>{w1, w2});
  const std::vector<Value> outputs{loss, sgd_update(w1, grads[0], Value{}, {.lr = 0.1})[0],
                                   sgd_update(w2, grads[1], Value{}, {.lr = 0.1})[0]};
  ScalePolicy policy = ScalePolicy::fp8();
  policy.recast_weights_for_backward = true;
  EXPECT_THAT(policy.to_string(), HasSubstr("weights cast again for the backward"));
  const ScaledGraph scaled = propagate_scales(graph, outputs, policy);
  const std::vector<int> order = graph.execution_order();
  std::vector<std::size_t> position(graph.nodes().size());
  for (std::size_t k = 0; k < order.size(); ++k) position[static_cast<std::size_t>(order[k])] = k;
  const std::size_t loss_position = position[static_cast<std::size_t>(graph.info(loss).node)];
  for (const Value w : {w1, w2}) {
    std::vector<int> casts;
    for (const Graph::Use& use : graph.uses(w)) {
      if (graph.nodes()[static_cast<std::size_t>(use.node)].op == &scaled_of(kCastOp)) {
        casts.push_back(use.node);
      }
    }
    ASSERT_EQ(casts.size(), 2u) << graph.info(w).name;
    for (const int cast : casts) {
      const Value copy = graph.value(graph.nodes()[static_cast<std::size_t>(cast)].outputs[0]);
      EXPECT_EQ(copy.dtype(), DType::kE4M3FN);
      std::set<bool> read_by_backward;
      for (const Graph::Use& use : graph.uses(copy)) {
        read_by_backward.insert(graph.nodes()[static_cast<std::size_t>(use.node)].differentiates >=
                                0);
      }
      ASSERT_EQ(read_by_backward.size(), 1u) << "one copy per pass";
      const bool backward = *read_by_backward.begin();
      EXPECT_EQ(position[static_cast<std::size_t>(cast)] > loss_position, backward)
          << "the backward's copy is made after the forward pass, the forward's before its end";
    }
  }
  Executor exec(graph, scaled.outputs());
  const Tensor x_data = normal({32, 64}, 1), labels_data = labels_for(32, 10, 5);
  exec.bind(x, x_data);
  exec.bind(labels, labels_data);
  exec.set_state(w1, normal({128, 64}, 2));
  exec.set_state(w2, normal({10, 128}, 3));
  exec.run();
  EXPECT_TRUE(std::isfinite(to_f32(exec.get(scaled.output(loss))).data()[0]));
}

// ScalePolicy::saved_activations: the values a norm's and an activation's backward read (rms_norm
// reads its input, gelu its input: the normed MLP's `hidden` and `normed`) reach them as E4M3
// copies made during the forward pass, so that no backward node reads those values themselves
// (they die with their forward readers); the logits, which cross entropy's backward turns into
// probabilities through exp, stay as computed. The forward is unchanged bit for bit, and the
// gradients move by about the copies' rounding.
TEST(PropagateScales, SavedActivationsReachTheBackwardAsEightBitCopies) {
  Mlp fp8(1.0, false, /*norm=*/true), saved(1.0, false, /*norm=*/true);
  const ScaledGraph fp8_scaled = propagate_scales(fp8.graph, fp8.outputs(), ScalePolicy::fp8());
  ScalePolicy policy = ScalePolicy::fp8();
  policy.saved_activations = DType::kE4M3FN;
  const ScaledGraph scaled = propagate_scales(saved.graph, saved.outputs(), policy);
  EXPECT_THAT(policy.to_string(), HasSubstr("saved activations e4m3fn"));

  Graph& graph = saved.graph;
  const std::vector<int> order = graph.execution_order();
  std::vector<std::size_t> position(graph.nodes().size());
  for (std::size_t k = 0; k < order.size(); ++k) position[static_cast<std::size_t>(order[k])] = k;
  const auto node = [&](int index) -> const Node& {
    return graph.nodes()[static_cast<std::size_t>(index)];
  };
  const std::size_t loss_position = position[static_cast<std::size_t>(graph.info(saved.loss).node)];
  for (const Value v : {saved.hidden, saved.normed}) {
    std::vector<int> copies;
    for (const Graph::Use& use : graph.uses(v)) {
      const Node& reader = node(use.node);
      EXPECT_LT(reader.differentiates, 0) << "only forward nodes read %" << v.id() << " itself";
      if (reader.op->name == "save_for_backward") copies.push_back(use.node);
    }
    ASSERT_EQ(copies.size(), 1u);
    EXPECT_LT(position[static_cast<std::size_t>(copies[0])], loss_position)
        << "the copy is made in the forward pass";
    const Value copy = graph.value(node(copies[0]).outputs[0]);
    EXPECT_EQ(copy.dtype(), DType::kE4M3FN);
    const std::vector<Graph::Use> copy_readers = graph.uses(copy);
    ASSERT_EQ(copy_readers.size(), 1u);
    EXPECT_GE(node(copy_readers[0].node).differentiates, 0) << "the backward reads the copy";
  }
  bool logits_read_by_backward = false;
  for (const Graph::Use& use : graph.uses(saved.logits)) {
    logits_read_by_backward |= node(use.node).differentiates >= 0;
  }
  EXPECT_TRUE(logits_read_by_backward) << "cross entropy's backward reads the logits as computed";

  const std::vector<Tensor> expected = fp8.run(&fp8_scaled), got = saved.run(&scaled);
  EXPECT_EQ(got[0].data()[0], expected[0].data()[0]) << "the forward is unchanged";
  EXPECT_EQ(relative_l2(got[2].span(), expected[2].span()), 0.0)
      << "w2's gradient is taken before the gelu and the norm";
  for (const std::size_t k :
       {std::size_t{1}, std::size_t{3}}) {  // w1's and x's gradients, through both copies
    const double error = relative_l2(got[k].span(), expected[k].span());
    // E4M3 rounds to ±2^-4 relative (rms 3.6%); measured 3.3% on both.
    EXPECT_GT(error, 0.0) << "gradient " << k << " reads the copies";
    EXPECT_LT(error, 0.05) << "gradient " << k;
  }
}

// The FP8 operands reach the GEMM engine as the E4M3 and E5M2 codes the casts stored, with their
// scales as the operands' scales (KernelContext::code_scales), never decoded to fp32 first: every
// GEMM of the step multiplies FP8 by FP8 (on BF16 units where the CPU has them). Their results
// are encoded by the GEMM engine too (KernelContext::code_factors).
TEST(PropagateScales, Fp8MatmulsRunOnTheStoredCodes) {
  Mlp mlp;
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), ScalePolicy::fp8());
  reset_gemm_profile();
  mlp.run(&scaled);
  const std::vector<GemmProfileEntry> profile = gemm_profile();
  ASSERT_FALSE(profile.empty());
  int forward = 0, backward = 0;
  for (const GemmProfileEntry& entry : profile) {
    if (entry.calls == 0) continue;  // a problem of an earlier run: the reset zeroes its count
    const GemmType a = entry.problem.a_type, b = entry.problem.b_type;
    EXPECT_TRUE((a == GemmType::kE4M3 || a == GemmType::kE5M2) && b == GemmType::kE4M3)
        << entry.problem.to_string();
    (a == GemmType::kE5M2 ? backward : forward) += static_cast<int>(entry.calls);
    EXPECT_EQ(entry.problem.c_type, GemmType::kF16)
        << entry.problem.to_string() << ": the GEMM writes the FP16 codes the policy stores "
        << "(GemmOutput::type), with no fp32 copy of its result";
  }
  EXPECT_EQ(forward, 2) << "x·W1ᵀ and h·W2ᵀ";
  EXPECT_EQ(backward, 4) << "dx and dW of each linear (the first layer's dx too: not pruned)";
}

// A linear whose results are computed in several panels (8 and 16 MiB of fp32, past
// kGemmOutputPanelBytes): the GEMM engine packs each panel's block of B and, for dW, transposes A
// first, which copies even operands already in the compute type (BF16 codes on BF16 units). Every
// node's workspace must still fit what the executor planned for it (OpDef::workspace).
TEST(PropagateScales, WorkspacesOfPanelledGemmsFitTheirPlan) {
  constexpr std::int64_t kTokens = 2048, kIn = 2048, kOut = 1024;
  const Tensor x_data = normal({kTokens, kIn}, 21), w_data = normal({kOut, kIn}, 22),
               target_data = normal({kTokens, kOut}, 23);
  ScalePolicy bf16 = ScalePolicy::fp16();
  bf16.matmul_inputs = bf16.matmul_gradients = DType::kBF16;
  for (const ScalePolicy& policy : {bf16, ScalePolicy::fp8(), ScalePolicy::fp16()}) {
    Graph graph{Scaling::kUnit};  // the pass rewrites it: one per policy
    const Value x = graph.parameter("x", {kTokens, kIn});
    const Value w = graph.parameter("w", {kOut, kIn});
    const Value target = graph.input("target", {kTokens, kOut});
    const Value loss = mse_loss(linear(x, w), target);
    const std::vector<Value> grads = autodiff(graph, loss, std::vector<Value>{x, w});
    const std::vector<Value> outputs = {loss, grads[0], grads[1]};
    const ScaledGraph scaled = propagate_scales(graph, outputs, policy);
    Executor exec(graph, scaled.outputs());
    exec.bind(x, x_data);
    exec.bind(w, w_data);
    exec.bind(target, target_data);
    exec.run();
    EXPECT_EQ(exec.workspace_beyond_plan(), 0u) << policy.to_string();
    EXPECT_TRUE(std::isfinite(exec.get(scaled.output(loss)).data()[0])) << policy.to_string();
  }
}

// Attention under the FP8 policy: q, k, v and the output gradient reach it as BF16 codes
// (ScalePolicy::attention_inputs: the FP8 recipe keeps attention in 16 bits), and the
// probabilities and dS as BF16 (ScalePolicy::attention_probabilities), so all of its GEMMs multiply
// BF16 by BF16 (the CPU's BF16 units where it has them); under the FP16 policy its operands are
// FP16 and P and dS stay fp32. Either way the step tracks the fp32 graph.
struct AttentionGraph {
  Graph graph{Scaling::kUnit};
  Value q = graph.parameter("q", {4, 32, 16});
  Value k = graph.parameter("k", {4, 32, 16});
  Value v = graph.parameter("v", {4, 32, 8});
  Value target = graph.input("target", {4, 32, 8});
  Value loss;
  std::vector<Value> grads;
  Tensor q_data = normal({4, 32, 16}, 11), k_data = normal({4, 32, 16}, 12),
         v_data = normal({4, 32, 8}, 13), target_data = normal({4, 32, 8}, 14);

  AttentionGraph() {
    loss = mse_loss(
        scaled_dot_product_attention(q, k, v, {.mult = 2.0, .mask = AttentionMask::kCausal}),
        target);
    grads = autodiff(graph, loss, std::vector<Value>{q, k, v});
  }
  std::vector<Value> outputs() const { return {loss, grads[0], grads[1], grads[2]}; }
  std::vector<Tensor> run(const ScaledGraph* scaled = nullptr) {
    return run_outputs(graph, outputs(), scaled,
                       {{q, &q_data}, {k, &k_data}, {v, &v_data}, {target, &target_data}});
  }
};

TEST(PropagateScales, Fp8AttentionRunsAllItsGemmsOnLowPrecisionOperands) {
  AttentionGraph reference;
  const std::vector<Tensor> expected = reference.run();
  for (const bool fp8 : {true, false}) {
    SCOPED_TRACE(fp8 ? "fp8" : "fp16");
    AttentionGraph attention;
    const ScalePolicy policy = fp8 ? ScalePolicy::fp8() : ScalePolicy::fp16();
    EXPECT_EQ(
        policy.to_string().find("attention inputs bf16, probabilities bf16") != std::string::npos,
        fp8);
    const ScaledGraph scaled = propagate_scales(attention.graph, attention.outputs(), policy);
    reset_gemm_profile();
    const std::vector<Tensor> got = attention.run(&scaled);
    int gemms = 0, with_fp32_operand = 0;
    for (const GemmProfileEntry& entry : gemm_profile()) {
      if (entry.calls == 0) continue;
      gemms += static_cast<int>(entry.calls);
      const GemmType a = entry.problem.a_type, b = entry.problem.b_type;
      if (a == GemmType::kF32 || b == GemmType::kF32) {
        with_fp32_operand += static_cast<int>(entry.calls);
      }
      if (fp8) {
        EXPECT_TRUE(a == GemmType::kBF16 && b == GemmType::kBF16) << entry.problem.to_string();
      }
    }
    // Per slice: QKᵀ and P·v forward; QKᵀ again, Pᵀ·g, g·vᵀ, dS·k and dSᵀ·q backward.
    EXPECT_EQ(gemms, 4 * 7);
    // Under FP16, P·v, Pᵀ·g, dS·k and dSᵀ·q multiply the fp32 probabilities or dS.
    EXPECT_EQ(with_fp32_operand, fp8 ? 0 : 4 * 4);
    // BF16 operands and probabilities (8 significant bits: rms error ~0.1% each): the loss within
    // 1%, the gradients within 2% in relative L2; FP16 (11 bits) closer still.
    const double tolerance = fp8 ? 0.02 : 0.01;
    EXPECT_NEAR(got[0].data()[0], expected[0].data()[0], 0.01 * expected[0].data()[0]);
    for (std::size_t i = 1; i < got.size(); ++i) {
      EXPECT_LT(relative_l2(got[i].span(), expected[i].span()), tolerance) << "output " << i;
    }
  }
}

// Current amax scaling: each cast rescales its input from its own max |x| first, so every FP8
// operand's max lands in [max/2, max) of its format (p2 down), with no overflow, and the step
// tracks fp32 as the propagated FP8 recipe does.
TEST(PropagateScales, CurrentAmaxPolicyPutsEveryOperandsMaxBelowItsFormatsLargest) {
  Mlp reference;
  const std::vector<Tensor> expected = reference.run();
  Mlp mlp;
  ScalePolicy policy = ScalePolicy::fp8();
  policy.matmul_scaling = MatmulScaling::kCurrentAmax;
  EXPECT_THAT(policy.to_string(), HasSubstr("matmul gradients e5m2 (current_amax scales)"));
  const ScaledGraph scaled = propagate_scales(mlp.graph, mlp.outputs(), policy);
  EXPECT_EQ(scaled.casts(), 6);
  std::vector<std::pair<DType, double>> cast_maxima;
  std::vector<std::pair<double, double>> rescaled_maxima;  // (target, max |data|) before each cast
  const auto max_of = [](ConstTensorView x) {
    const Tensor values = to_f32(x);
    double largest = 0;
    for (const float v : values.span()) largest = std::max(largest, std::abs(double{v}));
    return largest;
  };
  const std::vector<Tensor> got = mlp.run(&scaled, [&](const NodeEvent& event) {
    if (event.node.op == &scaled_of(kDynamicRescaleOp)) {
      rescaled_maxima.emplace_back(event.node.attrs.get_double("test", "target"),
                                   max_of(event.outputs[0]));
    }
    if (event.node.op == &scaled_of(kCastOp)) {
      cast_maxima.emplace_back(event.outputs[0].dtype(), max_of(event.outputs[0]));
    }
  });
  ASSERT_EQ(rescaled_maxima.size(), 6u);
  for (const auto& [target, largest] : rescaled_maxima) {
    EXPECT_TRUE(target == 224.0 || target == 28672.0) << target;  // half of E4M3's and E5M2's max
    EXPECT_GE(largest, target);
    EXPECT_LT(largest, 2 * target);
  }
  ASSERT_EQ(cast_maxima.size(), 6u);
  for (const auto& [format, largest] : cast_maxima) {
    const double format_largest = format == DType::kE4M3FN ? 448.0 : 57344.0;
    EXPECT_GE(largest, format_largest / 2) << dtype_name(format);
    EXPECT_LE(largest, format_largest) << dtype_name(format);
  }
  EXPECT_NEAR(got[0].data()[0], expected[0].data()[0], 0.01 * expected[0].data()[0]);
  for (std::size_t k = 1; k < got.size(); ++k) {
    EXPECT_LT(relative_l2(got[k].span(), expected[k].span()), 0.12) << "output " << k;
  }
  EXPECT_THAT(
      [&] {
        Mlp m;
        propagate_scales(m.graph, m.outputs(), {.amax_margin = -1});
      },
      ThrowsMessage<Error>(HasSubstr("amax_margin must be in [0, 64], got -1")));
}

// Delayed scaling: each FP8 cast takes its scale from the amax history of earlier steps (the
// first step, with an empty history, from its own amax). With a history of 2 steps and inputs of
// rms 1, 8, 8, 1, 1, 1, the cast of x puts max |data| in [224, 448) (half E4M3's largest, up to
// 2×) when the history matches the input, saturates at 448 on the step the input grew (the scale
// is stale), and sits 8 times lower while the history still remembers the large steps: under
// kMax for two steps, under kMostRecent for one.
TEST(PropagateScales, DelayedAmaxScalesEachCastFromItsHistory) {
  for (const AmaxAlgorithm algorithm : {AmaxAlgorithm::kMax, AmaxAlgorithm::kMostRecent}) {
    Graph graph(Scaling::kUnit);
    const Value x = graph.input("x", {64, 32});
    const Value w = graph.input("w", {16, 32});
    const Value y = linear(x, w);
    ScalePolicy policy = ScalePolicy::fp8();
    policy.matmul_scaling = MatmulScaling::kDelayedAmax;
    policy.amax_history_length = 2;
    policy.amax_algorithm = algorithm;
    EXPECT_THAT(policy.to_string(), HasSubstr("delayed_amax (history 2, "));
    const ScaledGraph scaled = propagate_scales(graph, std::vector<Value>{y}, policy);
    ASSERT_EQ(scaled.amax_histories().size(), 2u) << "one history per cast: x and w";
    EXPECT_EQ(graph.info(scaled.amax_histories()[0]).name, "amax_history.0");
    Executor exec(graph, scaled.outputs());
    double x_max = 0;  // max |data| of x's E4M3 cast
    exec.add_observer([&](const NodeEvent& event) {
      if (event.node.op->name == "scaled_cast" && event.outputs[0].shape() == Shape{64, 32}) {
        x_max = amax(to_f32(event.outputs[0]).span());
      }
    });
    const Tensor x_unit = normal({64, 32}, 1), w_data = normal({16, 32}, 2);
    Tensor x_grown = copy_of(x_unit);
    for (float& v : x_grown.span()) v *= 8.0f;
    const Tensor& x_big = x_grown;
    exec.bind(w, w_data);
    std::vector<double> maxima;
    for (const Tensor* input : {&x_unit, &x_big, &x_big, &x_unit, &x_unit, &x_unit}) {
      exec.bind(x, *input);
      exec.run();
      maxima.push_back(x_max);
    }
    const std::string name(amax_algorithm_name(algorithm));
    EXPECT_GE(maxima[0], 224.0) << name;
    EXPECT_LT(maxima[0], 448.0) << name;
    EXPECT_EQ(maxima[1], 448.0) << name << ": the input grew 8x past a stale scale: saturated";
    EXPECT_GE(maxima[2], 224.0) << name;
    EXPECT_LT(maxima[2], 448.0) << name;
    const std::size_t low_steps = algorithm == AmaxAlgorithm::kMax ? 2 : 1;
    for (std::size_t t = 3; t < 6; ++t) {
      const bool low = t < 3 + low_steps;
      EXPECT_GE(maxima[t], low ? 28.0 : 224.0) << name << " step " << t + 1;
      EXPECT_LT(maxima[t], low ? 56.0 : 448.0) << name << " step " << t + 1;
    }
    // The history holds the last two steps' max |x| as values (not data).
    const ConstTensorView history = exec.state(scaled.amax_histories()[0]);
    EXPECT_EQ(history.data()[1], amax(x_unit.span()));
  }
}

TEST(PropagateScales, DynamicRescaleLandsItsStatisticInOneToTwo) {
  for (const RescaleStatistic statistic :
       {RescaleStatistic::kMax, RescaleStatistic::kL1, RescaleStatistic::kL2}) {
    Graph graph(Scaling::kUnscaled);
    const Value x = graph.input("x", {16, 32});
    const Value y = dynamic_rescale(x, {.statistic = statistic});
    const Value z = dynamic_rescale(y, {.statistic = statistic});  // reads a scaled input
    const ScaledGraph scaled = propagate_scales(graph, std::vector<Value>{z});
    const std::vector<Value> wanted = {scaled.data(z), scaled.scale(z), scaled.output(z)};
    Executor exec(graph, wanted);
    const Tensor x_data = normal({16, 32}, 9, 0x1p30);
    exec.bind(x, x_data);
    exec.run();
    const Tensor data = to_f32(exec.get(scaled.data(z)));
    const double stat = rescale_statistic(data.span(), statistic);
    EXPECT_GE(stat, 1.0) << rescale_statistic_name(statistic);
    EXPECT_LT(stat, 2.0) << rescale_statistic_name(statistic);
    // The value is unchanged up to FP16's rounding of the data, twice: 2^-11 relative to an
    // element, of up to ~3.5 times the rms.
    EXPECT_LT(relative_error(exec.get(scaled.output(z)).span(), x_data.span()), 4e-3);
  }
}

TEST(PropagateScales, DynamicRescaleFloorAndBackwardVariant) {
  Graph graph(Scaling::kUnscaled);
  const Value x = graph.input("x", {8, 8});
  // The backward variant with a floor low enough to act on this gradient (rms 2^-20).
  const Value y = dynamic_rescale(x, {.direction = RescaleDirection::kBackward, .floor = 0x1p-60});
  const Value floored = dynamic_rescale(x);
  const Value loss = sum(mul(y, x));  // the gradient flowing into y's backward is x
  const Value grad = autodiff(graph, loss, std::vector<Value>{x})[0];
  const ScaledGraph scaled = propagate_scales(graph, std::vector<Value>{y, floored, grad});
  const std::vector<Value> wanted = {scaled.scale(y), scaled.scale(floored), scaled.output(grad)};
  Executor exec(graph, wanted);
  double rescaled_rms = 0;  // of the data the backward variant stores
  exec.add_observer([&](const NodeEvent& event) {
    if (event.node.op->name != "scaled_dynamic_rescale_backward") return;
    rescaled_rms = rescale_statistic(to_f32(event.outputs[0]).span(), RescaleStatistic::kL2);
  });
  const Tensor x_data = normal({8, 8}, 4, 0x1p-20);  // rms 2^-20 < the floor 2^-14
  exec.bind(x, x_data);
  exec.run();
  EXPECT_EQ(exec.get(scaled.scale(y)).data()[0], 1.0f) << "the backward variant leaves y alone";
  EXPECT_EQ(exec.get(scaled.scale(floored)).data()[0], 0x1p-14f) << "the floor";
  EXPECT_GE(rescaled_rms, 1.0) << "the gradient's data re-centred";
  EXPECT_LT(rescaled_rms, 2.0);
}

// Pointwise ops on large tensors decode, compute and encode a cache-sized chunk at a time
// (OpDef::pointwise); on small ones, whole. Both must store the same bits: the last 8000 elements
// of a 3 · 8192 + 5 element run (chunked: they span the third chunk and the partial fourth)
// against an 8000-element run of the same values (whole), through gelu, silu_glu,
// residual_split, residual_add and add, FP16 storage.
TEST(PropagateScales, PointwiseOpsInChunksStoreWhatTheWholeTensorPathStores) {
  constexpr std::int64_t kLarge = 3 * 8192 + 5, kSmall = 8000;
  std::vector<float> xs(kLarge), gates(kLarge);
  std::mt19937 random(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    xs[i] = normal(random);
    gates[i] = normal(random);
  }
  // The outputs h and y for elements [first, first + n) of the inputs.
  auto run = [&](std::int64_t first, std::int64_t n) {
    Graph graph;
    const Value x = graph.input("x", Shape{n});
    const Value gate = graph.input("gate", Shape{n});
    const Value h = silu_glu(gelu(x), gate);
    const ResidualSplit split = residual_split(h, 0.5);
    const Value y = add(residual_add(split.branch, split.skip, 0.5), x);
    const ScaledGraph scaled = propagate_scales(graph, std::vector<Value>{h, y});
    Executor executor(graph, scaled.outputs());
    executor.bind(x, ConstTensorView(xs.data() + first, Shape{n}));
    executor.bind(gate, ConstTensorView(gates.data() + first, Shape{n}));
    executor.run();
    std::vector<std::vector<float>> outputs;
    for (const Value v : {scaled.output(h), scaled.output(y)}) {
      const ConstTensorView t = executor.get(v);
      outputs.emplace_back(t.data(), t.data() + t.numel());
    }
    return outputs;
  };
  const auto chunked = run(0, kLarge);
  const auto whole = run(kLarge - kSmall, kSmall);
  for (std::size_t k = 0; k < 2; ++k) {
    for (std::int64_t i = 0; i < kSmall; ++i) {
      ASSERT_EQ(
          std::bit_cast<std::uint32_t>(chunked[k][static_cast<std::size_t>(kLarge - kSmall + i)]),
          std::bit_cast<std::uint32_t>(whole[k][static_cast<std::size_t>(i)]))
          << "output " << k << ", element " << kLarge - kSmall + i;
    }
  }
}

TEST(PropagateScales, EveryOpOfTheZooHasScaleRules) {
  for (const OpDef* op : forward_ops()) {
    EXPECT_TRUE(op->scale_propagation != nullptr || op->runs_on_scaled_data) << op->name;
    if (op->backward_kernel != nullptr) {
      EXPECT_TRUE(op->backward_scale_propagation != nullptr || op->runs_on_scaled_data)
          << op->name << "_backward";
    }
    EXPECT_NO_THROW(scaled_of(*op)) << op->name;
  }
}

const OpDef kNoRuleOp{
    .name = "no_rule",
    .inputs = {"x"},
    .infer_shapes = [](std::span<const Shape* const> in,
                       const Attributes&) { return std::vector<Shape>{*in[0]}; },
    .kernel = [](std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes&, const KernelContext&) { out[0].vector() = in[0].vector(); },
};

TEST(PropagateScales, ErrorsNameWhatIsWrong) {
  Graph graph(Scaling::kUnscaled);
  const Value x = graph.input("x", {4});
  const Value inputs[] = {x};
  const Value y = graph.apply1(kNoRuleOp, inputs, {});
  const Value z = exp(y);
  const std::string before = graph.to_string();
  EXPECT_THAT([&] { propagate_scales(graph, std::vector<Value>{z}); },
              ThrowsMessage<Error>(HasSubstr("propagate_scales: no scale rule for op no_rule")));
  EXPECT_EQ(graph.to_string(), before) << "a refused graph is left as it was";

  Graph ok(Scaling::kUnscaled);
  const Value a = ok.input("a", {4});
  const Value b = exp(a);
  EXPECT_THAT([&] { propagate_scales(ok, std::vector<Value>{b}, {.values = DType::kI32}); },
              ThrowsMessage<Error>(HasSubstr("the value storage must be a floating format")));
  const ScaledGraph scaled = propagate_scales(ok, std::vector<Value>{b});
  EXPECT_THAT([&] { propagate_scales(ok, scaled.outputs()); },
              ThrowsMessage<Error>(HasSubstr("the graph is scaled already")));
  EXPECT_THAT([&] { (void)scaled.output(a); },
              ThrowsMessage<Error>(HasSubstr("was not requested from propagate_scales")));
}

// SGD on a readout layer's weight for 5 steps, W ← W − 0.5·∂CE(x·Wᵀ)/∂W from W0 ~ N(0, 0.1²): the
// fp32 graph, or the graph rewritten under a policy.
struct SgdReadout {
  Graph graph{Scaling::kUnit};
  Value x = graph.input("x", {32, 64});
  Value labels = graph.input("labels", {32}, DType::kI32);
  Value w = graph.state("w", {10, 64}, ParameterInfo{});
  Value updated;
  std::vector<Value> outputs;
  std::optional<ScaledGraph> scaled;
  Tensor x_data = normal({32, 64}, 1), labels_data = labels_for(32, 10, 2);
  Tensor w0 = normal({10, 64}, 3, 0.1);

  explicit SgdReadout(const std::optional<ScalePolicy>& policy) {
    const Value loss = cross_entropy(linear_readout(x, w), labels);
    const Value grad = autodiff(graph, loss, std::vector<Value>{w})[0];
    updated = sgd_update(w, grad, Value{}, {.lr = 0.5})[0];
    outputs = {loss, updated};
    if (policy) {
      scaled = propagate_scales(graph, outputs, *policy);
      outputs = scaled->outputs();
    }
  }
  // Binds the inputs, loads W0 (through the scaled graph, if any) and returns the 5 losses;
  // `after_step` runs after each step.
  std::vector<float> train(Executor& exec, const std::function<void()>& after_step = {}) {
    exec.bind(x, x_data);
    exec.bind(labels, labels_data);
    if (scaled) {
      scaled->load_state(exec, w, w0);
    } else {
      exec.set_state(w, w0);
    }
    std::vector<float> losses;
    for (int step = 0; step < 5; ++step) {
      exec.run();
      losses.push_back(exec.get(outputs[0]).data()[0]);
      if (after_step) after_step();
    }
    return losses;
  }
  // W as fp32.
  std::vector<float> weights(const Executor& exec) const {
    const Tensor now = scaled ? scaled->read_state(exec, w) : copy_of(exec.state(w));
    return {now.span().begin(), now.span().end()};
  }
};

// Scaled states: an SGD update on plain fp32 parameters reads a scaled gradient, materialised.
TEST(PropagateScales, UpdateOpsReadScaledGradients) {
  SgdReadout reference(std::nullopt), scaled(ScalePolicy{});
  Executor ref_exec(reference.graph, reference.outputs), exec(scaled.graph, scaled.outputs);
  const std::vector<float> expected = reference.train(ref_exec), got = scaled.train(exec);
  ASSERT_LT(expected.back(), expected.front());
  for (std::size_t k = 0; k < got.size(); ++k) {
    EXPECT_NEAR(got[k], expected[k], 3e-3 * expected[k]) << "step " << k;
  }
}

// ---- Optimizer state ----

// Adam on gradients of ~1e-6, whose second moment v ≈ 1e-15 plain FP16 would flush to zero: with
// FP16 scaled moments the parameter follows fp32 Adam, the moments are stored as FP16 (two bytes
// an element) with power-of-two scales, and their data's rms stays in [1, 2).
struct TinyGradientAdam {
  static constexpr std::int64_t kSize = 512;
  Graph graph{Scaling::kUnscaled};
  Value w = graph.state("w", {kSize}, ParameterInfo{});
  Value m = graph.state("w.adam_m", {kSize});
  Value v = graph.state("w.adam_v", {kSize});
  Value g = graph.input("g", {kSize});
  std::vector<Value> outputs;
  std::optional<ScaledGraph> scaled;

  explicit TinyGradientAdam(const std::optional<ScalePolicy>& policy) {
    outputs = adam_update(w, g, m, v, {.lr = 1e-3});
    if (policy) {
      scaled = propagate_scales(graph, outputs, *policy);
      outputs = scaled->outputs();
    }
  }
  // Runs `steps` steps from the executor's current state, with gradients 1e-6 · N(0, 1) drawn
  // from step-dependent seeds, and returns w.
  static void run(Executor& exec, Value g, int first_step, int steps) {
    for (int t = first_step; t < first_step + steps; ++t) {
      const Tensor grad = normal({kSize}, static_cast<unsigned>(100 + t), 1e-6);
      exec.bind(g, grad);
      exec.run();
    }
  }
};

// Updates on large states run in chunks (OpDef::pointwise on adam_update and sgd_update): a first
// pass measures the new moments' scales, a second stores them. The same op without the flag runs
// on whole tensors. Both must store the same bits, over steps (so the moments' scales change) and
// with fp32 and FP16 master weights, on 2 · 16384 + 7 elements (chunked: two full chunks and a
// partial one); with lr and gradient multipliers, the scalar inputs every chunk reads whole.
TEST(PropagateScales, UpdatesInChunksStoreWhatTheWholeTensorPathStores) {
  constexpr std::int64_t kSize = 2 * 16384 + 7;
  OpDef whole_adam = kAdamUpdateOp, whole_sgd = kSgdUpdateOp;
  whole_adam.pointwise = whole_sgd.pointwise = false;
  for (const DType parameters : {DType::kF32, DType::kF16}) {
    for (const bool adam : {true, false}) {
      SCOPED_TRACE(fmt::format("{}, {} parameters", adam ? "adam" : "sgd", dtype_name(parameters)));
      // The states after three steps, their data as stored and their scales.
      auto run = [&](bool chunked) {
        Graph graph{Scaling::kUnscaled};
        const Value w = graph.state("w", {kSize}, ParameterInfo{});
        const Value m = graph.state("w.m", {kSize}), v = graph.state("w.v", {kSize});
        const Value g = graph.input("g", {kSize});
        const Value lr = graph.input("lr_multiplier", {}), gm = graph.input("grad_multiplier", {});
        std::vector<Value> outputs;
        if (adam) {
          const Value inputs[] = {w, g, m, v, lr, gm};
          outputs = graph.apply(chunked ? kAdamUpdateOp : whole_adam, inputs,
                                {{"lr", 1e-2}, {"step", std::int64_t{1}}, {"weight_decay", 0.1}});
        } else {
          const Value inputs[] = {w, g, m, lr, gm};
          outputs = graph.apply(chunked ? kSgdUpdateOp : whole_sgd, inputs,
                                {{"lr", 1e-2}, {"momentum", 0.9}, {"step", std::int64_t{1}}});
        }
        ScalePolicy policy = ScalePolicy::fp16();
        policy.parameters = parameters;
        const ScaledGraph scaled = propagate_scales(graph, outputs, policy);
        Executor exec(graph, scaled.outputs());
        scaled.load_state(exec, w, normal({kSize}, 3));
        EXPECT_EQ(rms(scaled.read_state(exec, m).span()), 0.0)
            << "a moment at its static zero reads as zeros";
        const Tensor lr_data(Shape{}, std::vector<float>{0.5f});
        const Tensor gm_data(Shape{}, std::vector<float>{2.0f});
        exec.bind(lr, lr_data);
        exec.bind(gm, gm_data);
        for (int t = 0; t < 3; ++t) {
          const Tensor gradient = normal({kSize}, static_cast<unsigned>(20 + t), 1e-3 * (t + 1));
          exec.bind(g, gradient);
          exec.run();
        }
        std::vector<std::vector<std::byte>> stored;
        for (const Value state : adam ? std::vector<Value>{w, m, v} : std::vector<Value>{w, m}) {
          const ConstTensorView data = exec.state(scaled.data(state));
          stored.emplace_back(data.bytes(), data.bytes() + data.byte_size());
          if (scaled.scale(state).present()) {
            const float scale = exec.state(scaled.scale(state)).data()[0];
            const auto* bytes = reinterpret_cast<const std::byte*>(&scale);
            stored.emplace_back(bytes, bytes + sizeof scale);
          }
        }
        return stored;
      };
      const auto chunked = run(true), whole = run(false);
      ASSERT_EQ(chunked.size(), whole.size());
      for (std::size_t k = 0; k < chunked.size(); ++k) {
        EXPECT_TRUE(chunked[k] == whole[k]) << "stored tensor " << k;
      }
    }
  }
}

TEST(PropagateScales, Fp16AdamMomentsKeepTinySecondMomentsAndTrackFp32Adam) {
  constexpr int kSteps = 12;
  TinyGradientAdam reference(std::nullopt), scaled(ScalePolicy::fp16());
  Executor ref_exec(reference.graph, reference.outputs), exec(scaled.graph, scaled.outputs);
  const Tensor w0 = normal({TinyGradientAdam::kSize}, 7);
  ref_exec.set_state(reference.w, w0);
  exec.set_state(scaled.w, w0);
  TinyGradientAdam::run(ref_exec, reference.g, 0, kSteps);
  TinyGradientAdam::run(exec, scaled.g, 0, kSteps);

  // The claim is meaningful: fp32 Adam's v lies entirely below FP16's smallest subnormal.
  const Tensor v_ref = to_f32(ref_exec.state(reference.v));
  EXPECT_LT(rms(v_ref.span()), 1e-13);
  EXPECT_EQ(rms(to_f32(v_ref, DType::kF16).span()), 0.0) << "plain FP16 flushes v to zero";

  // The parameters moved by η per step in each coordinate (Adam's sign-like update), and the
  // FP16-state run moved them the same way: the update's error is a few FP16 roundings of m and v.
  std::vector<float> moved_ref, moved;
  const ConstTensorView w_ref = ref_exec.state(reference.w), w = exec.state(scaled.w);
  for (std::int64_t i = 0; i < TinyGradientAdam::kSize; ++i) {
    moved_ref.push_back(w_ref.data()[i] - w0.data()[i]);
    moved.push_back(w.data()[i] - w0.data()[i]);
  }
  EXPECT_GT(rms(moved_ref), 1e-3) << "the reference moved";
  EXPECT_LT(relative_l2(moved, moved_ref), 1e-2);

  // The moments: FP16 data with power-of-two scales that put their largest magnitude in FP16's top
  // binade (the moments are private to the update: OpDef::private_states).
  const std::span<const Value> scale_states = scaled.scaled->scale_states();
  ASSERT_EQ(scale_states.size(), 2u);
  EXPECT_EQ(scaled.graph.info(scale_states[0]).name, "w.adam_m.scale");
  EXPECT_EQ(scaled.graph.info(scale_states[1]).name, "w.adam_v.scale");
  const Value moments[] = {scaled.m, scaled.v};
  const Value moments_ref[] = {reference.m, reference.v};
  for (std::size_t k = 0; k < 2; ++k) {
    const ConstTensorView data = exec.state(moments[k]);
    EXPECT_EQ(data.dtype(), DType::kF16);
    EXPECT_EQ(data.byte_size(), 2 * static_cast<std::size_t>(TinyGradientAdam::kSize));
    const float scale = exec.state(scale_states[k]).data()[0];
    int exponent = 0;
    EXPECT_EQ(std::frexp(scale, &exponent), 0.5f) << "a power of two, got " << scale;
    const Tensor decoded = to_f32(data);
    float amax = 0.0f;
    for (const float x : decoded.span()) amax = std::max(amax, std::abs(x));
    EXPECT_GT(amax, 32768.0f);
    EXPECT_LE(amax, 65504.0f);
    std::vector<float> value(decoded.span().begin(), decoded.span().end());
    for (float& x : value) x *= scale;
    EXPECT_LT(relative_l2(value, to_f32(ref_exec.state(moments_ref[k])).span()), 5e-3)
        << (k == 0 ? "m" : "v");
  }
}

// Adam's second moment spans the square of the gradients' range, the first only that range: with
// half the coordinates' gradients 2^-11 below the other half's (as rarely seen embedding rows'
// are), v of those lies 2^-22 below the rest. Unit-rms scales flushed most of it to zero in FP16
// while m survived, and m/(√v + ε) then moved those coordinates 20% (rms) off. Scaled by their
// largest magnitude, both moments keep every coordinate, which moves as in fp32.
TEST(PropagateScales, Fp16AdamMomentsKeepCoordinatesWithGradientsFarBelowTheRest) {
  constexpr std::int64_t kSize = TinyGradientAdam::kSize, kHalf = kSize / 2;
  TinyGradientAdam reference(std::nullopt), scaled(ScalePolicy::fp16());
  Executor ref_exec(reference.graph, reference.outputs), exec(scaled.graph, scaled.outputs);
  const Tensor w0 = normal({kSize}, 7);
  ref_exec.set_state(reference.w, w0);
  exec.set_state(scaled.w, w0);
  for (int t = 0; t < 8; ++t) {
    Tensor grad = normal({kSize}, static_cast<unsigned>(300 + t));
    for (std::int64_t i = kHalf; i < kSize; ++i) grad.data()[i] *= 0x1p-11f;
    ref_exec.bind(reference.g, grad);
    exec.bind(scaled.g, grad);
    ref_exec.run();
    exec.run();
  }
  const ConstTensorView w_ref = ref_exec.state(reference.w), w = exec.state(scaled.w);
  for (const std::int64_t first : {std::int64_t{0}, kHalf}) {
    std::vector<float> moved_ref, moved;
    for (std::int64_t i = first; i < first + kHalf; ++i) {
      moved_ref.push_back(w_ref.data()[i] - w0.data()[i]);
      moved.push_back(w.data()[i] - w0.data()[i]);
    }
    EXPECT_GT(rms(moved_ref), 1e-3) << "the reference moved";
    EXPECT_LT(relative_l2(moved, moved_ref), 1e-2)
        << (first == 0 ? "large gradients" : "gradients 2^-11 below");
  }
}

// A checkpoint of a scaled-state run holds the moments' FP16 data and their scales: restoring
// both into a new executor continues the run exactly as if it had not stopped.
TEST(PropagateScales, ScaledOptimizerStateRoundTripsThroughItsStates) {
  const Tensor w0 = normal({TinyGradientAdam::kSize}, 7);
  TinyGradientAdam straight(ScalePolicy::fp16());
  Executor straight_exec(straight.graph, straight.outputs);
  straight_exec.set_state(straight.w, w0);
  TinyGradientAdam::run(straight_exec, straight.g, 0, 6);

  TinyGradientAdam first(ScalePolicy::fp16()), second(ScalePolicy::fp16());
  Executor first_exec(first.graph, first.outputs), second_exec(second.graph, second.outputs);
  first_exec.set_state(first.w, w0);
  TinyGradientAdam::run(first_exec, first.g, 0, 3);
  std::vector<Value> saved = {first.w, first.m, first.v}, restored = {second.w, second.m, second.v};
  for (std::size_t k = 0; k < 2; ++k) {
    saved.push_back(first.scaled->scale_states()[k]);
    restored.push_back(second.scaled->scale_states()[k]);
  }
  for (std::size_t k = 0; k < saved.size(); ++k) {
    second_exec.set_state(restored[k], first_exec.state(saved[k]));
  }
  second_exec.set_step(3);
  TinyGradientAdam::run(second_exec, second.g, 3, 3);
  const ConstTensorView a = straight_exec.state(straight.w), b = second_exec.state(second.w);
  for (std::int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data()[i], b.data()[i]) << i;
}

// SGD's momentum buffer is a scaled state too; an f32 optimizer_state keeps the moments plain.
TEST(PropagateScales, MomentumBufferIsScaledAndF32StateStaysPlain) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {64}, ParameterInfo{});
  const Value buffer = graph.state("w.momentum", {64});
  const Value g = graph.input("g", {64});
  const std::vector<Value> updated = sgd_update(w, g, buffer, {.lr = 0.1, .momentum = 0.9});
  const ScaledGraph scaled = propagate_scales(graph, updated, ScalePolicy::fp8());
  ASSERT_EQ(scaled.scale_states().size(), 1u);
  EXPECT_EQ(graph.info(buffer).dtype, DType::kF16);
  EXPECT_EQ(scaled.output(updated[1]).dtype(), DType::kF16)
      << "an in-place update's output is its state, not an fp32 copy";
  EXPECT_EQ(graph.info(w).dtype, DType::kF32) << "the parameters stay fp32 master weights";
  Executor exec(graph, scaled.outputs());
  const Tensor grad = normal({64}, 3, 1e-5);
  exec.bind(g, grad);
  exec.run();
  exec.run();  // b = 0.9 g + g, stored as FP16 data · scale
  const Tensor b = to_f32(exec.state(buffer));
  const float scale = exec.state(scaled.scale_states()[0]).data()[0];
  for (std::int64_t i = 0; i < 64; ++i) {
    const float expected = 1.9f * grad.data()[i];
    EXPECT_NEAR(b.data()[i] * scale, expected, 1e-3f * std::abs(expected) + 1e-12f) << i;
  }

  Graph plain(Scaling::kUnscaled);
  const Value w2 = plain.state("w", {64}, ParameterInfo{});
  const Value m2 = plain.state("m", {64}), v2 = plain.state("v", {64});
  const std::vector<Value> adam = adam_update(w2, plain.input("g", {64}), m2, v2, {.lr = 0.1});
  const ScaledGraph kept = propagate_scales(plain, adam, {.optimizer_state = DType::kF32});
  EXPECT_TRUE(kept.scale_states().empty());
  EXPECT_EQ(plain.info(m2).dtype, DType::kF32);
}

// The plain-FP16 state control (scaled_optimizer_state = false): the same v as above flushes to
// zero between steps, so step t sees only its own (1 − β2)·g², which the bias correction
// 1/(1 − β2^t) no longer undoes: the step grows like √t, and over 12 steps of random-sign
// gradients the parameters move √(1 + ... + 12)/√12 ≈ 2.5 times as far (rms) as fp32 Adam's.
TEST(PropagateScales, PlainFp16MomentsFlushTheSecondMomentToZero) {
  constexpr int kSteps = 12;
  ScalePolicy policy = ScalePolicy::fp16();
  policy.scaled_optimizer_state = false;
  EXPECT_THAT(policy.to_string(), HasSubstr("optimizer state f16 (plain)"));
  TinyGradientAdam reference(std::nullopt), plain(policy);
  EXPECT_TRUE(plain.scaled->scale_states().empty());
  EXPECT_EQ(plain.graph.info(plain.v).dtype, DType::kF16);
  Executor ref_exec(reference.graph, reference.outputs), exec(plain.graph, plain.outputs);
  const Tensor w0 = normal({TinyGradientAdam::kSize}, 7);
  ref_exec.set_state(reference.w, w0);
  exec.set_state(plain.w, w0);
  TinyGradientAdam::run(ref_exec, reference.g, 0, kSteps);
  TinyGradientAdam::run(exec, plain.g, 0, kSteps);
  EXPECT_EQ(rms(to_f32(exec.state(plain.v)).span()), 0.0);
  std::vector<float> moved_ref, moved;
  for (std::int64_t i = 0; i < TinyGradientAdam::kSize; ++i) {
    moved_ref.push_back(ref_exec.state(reference.w).data()[i] - w0.data()[i]);
    moved.push_back(exec.state(plain.w).data()[i] - w0.data()[i]);
  }
  EXPECT_GT(rms(moved), 2.0 * rms(moved_ref));
}

// FP16 master weights (ScalePolicy::parameters): the parameter is stored as FP16 data with a
// power-of-two scale state "<name>.scale", load_state and read_state convert from and to fp32,
// and SGD on them tracks fp32 SGD.
TEST(PropagateScales, Fp16ParametersAreScaledStatesThatTrackFp32) {
  SgdReadout reference(std::nullopt), fp16(ScalePolicy{.parameters = DType::kF16});
  const ScaledGraph& scaled = *fp16.scaled;
  EXPECT_EQ(fp16.graph.info(fp16.w).dtype, DType::kF16);
  EXPECT_EQ(scaled.output(fp16.updated).dtype(), DType::kF16)
      << "the update writes the FP16 state in place";
  EXPECT_EQ(scaled.scale_states().size(), 1u);
  EXPECT_EQ(fp16.graph.info(scaled.scale(fp16.w)).name, "w.scale");

  Executor ref_exec(reference.graph, reference.outputs), exec(fp16.graph, fp16.outputs);
  const std::vector<float> expected = reference.train(ref_exec);
  const std::vector<float> got = fp16.train(exec, [&] {
    const float scale = exec.state(scaled.scale(fp16.w)).data()[0];
    int exponent = 0;
    EXPECT_EQ(std::frexp(scale, &exponent), 0.5f) << "a power of two, got " << scale;
  });
  ASSERT_LT(expected.back(), expected.front());
  for (std::size_t k = 0; k < got.size(); ++k) {
    EXPECT_NEAR(got[k], expected[k], 3e-3 * expected[k]) << "step " << k;
  }
  EXPECT_LT(relative_l2(fp16.weights(exec), reference.weights(ref_exec)), 3e-3)
      << "a few FP16 roundings of w per step";

  // Loading: rms 0.1 → scale 2^-4 under p2 down; the data is W0 · 16 rounded to FP16, so W0
  // reads back as W0 rounded to FP16.
  scaled.load_state(exec, fp16.w, fp16.w0);
  EXPECT_EQ(exec.state(scaled.scale(fp16.w)).data()[0], 0x1p-4f);
  const std::vector<float> loaded = fp16.weights(exec);
  const Tensor rounded = to_f32(fp16.w0, DType::kF16);
  for (std::size_t i = 0; i < loaded.size(); ++i) EXPECT_EQ(loaded[i], rounded.data()[i]) << i;
}

// ScalePolicy::first_moment: Adam's m stored as E4M3 data (scaled: its largest magnitude just
// below 448), v as FP16; the update then tracks fp32 Adam within m's 3-bit rounding.
TEST(PropagateScales, Fp8FirstMomentTracksFp32Adam) {
  ScalePolicy policy = ScalePolicy::fp16();
  policy.first_moment = DType::kE4M3FN;
  TinyGradientAdam reference(std::nullopt), scaled(policy);
  EXPECT_EQ(scaled.graph.info(scaled.m).dtype, DType::kE4M3FN);
  EXPECT_EQ(scaled.graph.info(scaled.v).dtype, DType::kF16);
  Executor ref_exec(reference.graph, reference.outputs), exec(scaled.graph, scaled.outputs);
  const Tensor w0 = normal({TinyGradientAdam::kSize}, 7);
  ref_exec.set_state(reference.w, w0);
  exec.set_state(scaled.w, w0);
  TinyGradientAdam::run(ref_exec, reference.g, 0, 12);
  TinyGradientAdam::run(exec, scaled.g, 0, 12);
  std::vector<float> moved_ref, moved;
  const ConstTensorView w_ref = ref_exec.state(reference.w), w = exec.state(scaled.w);
  for (std::int64_t i = 0; i < TinyGradientAdam::kSize; ++i) {
    moved_ref.push_back(w_ref.data()[i] - w0.data()[i]);
    moved.push_back(w.data()[i] - w0.data()[i]);
  }
  const double error = relative_l2(moved, moved_ref);  // measured 2.9%
  EXPECT_GT(error, 1e-3) << "m's E4M3 rounding shows";
  EXPECT_LT(error, 0.05);
  const Tensor m = to_f32(exec.state(scaled.m));
  float amax = 0.0f;
  for (const float x : m.span()) amax = std::max(amax, std::abs(x));
  EXPECT_GT(amax, 224.0f);
  EXPECT_LE(amax, 448.0f);
}

// load_state gives a moment the scale its updates give it, from its largest magnitude: a second
// moment of 2^0 down to 2^-39 gets the scale 2^-15 (1/65504 rounded up) and reads back exactly,
// 2^-39 as FP16's smallest subnormal 2^-24; a unit-rms scale would flush the lowest 2^-16 of it.
TEST(PropagateScales, LoadingAMomentKeepsItsWholeRange) {
  TinyGradientAdam scaled(ScalePolicy::fp16());
  Executor exec(scaled.graph, scaled.outputs);
  Tensor v(Shape{TinyGradientAdam::kSize});
  for (std::int64_t i = 0; i < v.numel(); ++i) v.data()[i] = std::ldexp(1.0f, -static_cast<int>(i % 40));
  scaled.scaled->load_state(exec, scaled.v, v);
  EXPECT_EQ(exec.state(scaled.scaled->scale(scaled.v)).data()[0], 0x1p-15f);
  const Tensor back = scaled.scaled->read_state(exec, scaled.v);
  for (std::int64_t i = 0; i < v.numel(); ++i) EXPECT_EQ(back.data()[i], v.data()[i]) << i;
}

// An update below half a unit in the last place of an FP16 weight is lost, as it is in any FP16
// master weight: w = 1 and η·g = 2^-13 (half an ulp of 1 is 2^-11) leaves w at 1, where fp32 has
// 1 − 2^-13 — and so does a scaled FP16 weight, whose data is w / scale with the same 11 bits.
TEST(PropagateScales, Fp16MasterWeightsLoseUpdatesBelowHalfAnUlp) {
  for (const bool scaled_parameters : {false, true}) {
    Graph graph(Scaling::kUnscaled);
    const Value w = graph.state("w", {4}, ParameterInfo{});
    const Value g = graph.input("g", {4});
    const Value updated = sgd_update(w, g, Value{}, {.lr = 0x1p-13})[0];
    const ScaledGraph scaled =
        propagate_scales(graph, std::vector<Value>{updated},
                         {.parameters = DType::kF16, .scaled_parameters = scaled_parameters});
    EXPECT_EQ(scaled.scale_states().size(), scaled_parameters ? 1u : 0u);
    Executor exec(graph, scaled.outputs());
    const Tensor ones(Shape{4}, std::vector<float>{1, 1, 1, 1});
    scaled.load_state(exec, w, ones);
    exec.bind(g, ones);
    exec.run();
    const Tensor after = scaled.read_state(exec, w);
    for (const float v : after.span()) EXPECT_EQ(v, 1.0f) << "scaled " << scaled_parameters;
  }
}

// The plain control (scaled_values = false): every value is stored in FP16 with no scale, so an
// input of 2^-30 flushes to zero where the scaled graph keeps it.
TEST(PropagateScales, UnscaledControlStoresPlainFp16) {
  auto forward = [](bool scaled_values) {
    Graph graph(Scaling::kUnit);
    const Value x = graph.input("x", {16, 64});
    const Value w = graph.input("w", {32, 64});
    const Value y = linear(dynamic_rescale(x), w);
    const Value out = relu(y);
    const ScaledGraph scaled =
        propagate_scales(graph, std::vector<Value>{out}, {.scaled_values = scaled_values});
    EXPECT_EQ(scaled.scale(y).present(), scaled_values);
    EXPECT_EQ(scaled.data(y).dtype(), DType::kF16);
    Executor exec(graph, scaled.outputs());
    Tensor x_data = normal({16, 64}, 1);
    for (float& v : x_data.span()) v *= 0x1p-30f;
    const Tensor w_data = normal({32, 64}, 2);
    exec.bind(x, x_data);
    exec.bind(w, w_data);
    exec.run();
    return rms(exec.get(scaled.output(out)).span());
  };
  EXPECT_EQ(forward(false), 0.0) << "2^-30 is below FP16's smallest subnormal";
  EXPECT_GT(forward(true), 0x1p-32);
  EXPECT_THAT(
      [] {
        Graph graph;
        const Value x = graph.input("x", {2});
        propagate_scales(graph, std::vector<Value>{relu(x)},
                         {.scaled_values = false, .matmul_scaling = MatmulScaling::kCurrentAmax});
      },
      ThrowsMessage<Error>(HasSubstr("current amax scaling needs scaled values")));
}

TEST(PropagateScales, RetypeStatesChecksEveryReader) {
  Graph graph(Scaling::kUnscaled);
  const Value w = graph.state("w", {8}, ParameterInfo{});
  const Value m = graph.state("m", {8}), v = graph.state("v", {8});
  adam_update(w, graph.input("g", {8}), m, v, {.lr = 0.1});
  const Value moments[] = {m, v};
  EXPECT_THAT([&] { graph.retype_states(moments, DType::kF16); },
              ThrowsMessage<Error>(HasSubstr("retype_states: 'm' (%1) cannot become f16: "
                                             "adam_update reads it as input 'm'")));
  EXPECT_EQ(graph.info(m).dtype, DType::kF32);
  const Value not_states[] = {m, graph.input("x", {2})};
  EXPECT_THAT([&] { graph.retype_states(not_states, DType::kF16); },
              ThrowsMessage<Error>(HasSubstr("retype_states: %7 is not a state value")));
}

}  // namespace
}  // namespace unitscale

// Scalify quickstart — the reference library's quickstart notebook, ported to C++ as a tutorial.
//
// Scalify (Balança et al., arXiv 2407.17353) stores every tensor as narrow data times a scale and
// works out the scales as the computation goes: each op has a scale rule that says what scale its
// output should have, given its inputs' scales, so that the data stays near 1 where FP16 and FP8
// are accurate. This program walks through the four ideas, printing what happens at each:
//
//   1. Scaled tensors: value = data · scale; an FP16 tensor of values near 10^6, which plain FP16
//      cannot hold, stored with a power-of-two scale.
//   2. Scale rules: the worked example of adding two scaled tensors, under the three power-of-two
//      rounding modes (down, up, none).
//   3. The pass: propagate_scales rewrites a whole training graph (an MLP's forward, backward and
//      SGD update) so that every value is FP16 data times a propagated scale; the scaled run
//      matches the fp32 one.
//   4. Dynamic rescaling: a graph input enters with scale 1, so an input of std 2^-30 flushes to
//      zero in FP16 everywhere downstream, until one dynamic_rescale moves its magnitude into its
//      scale.
//
// See docs/scalify.md for the rules of every op, the storage policies and the FP8 recipe.
//
//   07_scalify_quickstart [--input-log2 E] [--seed N] [--smoke] [--help]

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/dynamic_rescale.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/scale_rules.hpp"
#include "unitscale/optim/update_ops.hpp"
#include "unitscale/tensor/scaled_tensor.hpp"
#include "unitscale/train/command_line.hpp"

namespace us = unitscale;

namespace {

struct Options {
  std::int64_t input_log2 = -30;
  std::int64_t seed = 1;
  bool smoke = false;
};

us::Tensor normal(const us::Shape& shape, std::mt19937& rng, double std = 1.0) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  us::Tensor t(shape);
  for (float& v : t.span()) v = static_cast<float>(dist(rng) * std);
  return t;
}

// A tensor of any floating dtype, decoded to fp32.
us::Tensor decoded(us::ConstTensorView x) {
  us::Tensor y(x.shape());
  us::cast_forward(x, y, {{"dtype", us::DType::kF32}}, 0);
  return y;
}

std::string values(us::ConstTensorView x, std::int64_t count = 4) {
  const us::Tensor f = decoded(x);
  std::vector<std::string> items;
  for (std::int64_t i = 0; i < std::min(count, f.numel()); ++i) {
    items.push_back(fmt::format("{:.6g}", f.data()[i]));
  }
  return fmt::format("[{}{}]", fmt::join(items, ", "), f.numel() > count ? ", ..." : "");
}

double rms(us::ConstTensorView x) {
  const us::Tensor f = decoded(x);
  double sum = 0;
  for (const float v : f.span()) sum += static_cast<double>(v) * v;
  return std::sqrt(sum / static_cast<double>(f.numel()));
}

// ---- 1. Scaled tensors -------------------------------------------------------------------------

void scaled_tensors(std::mt19937& rng) {
  fmt::print("1. Scaled tensors: value = data · scale\n\n");
  const us::ScaledTensor small(us::Tensor(us::Shape{2}, std::vector<float>{0.5f, 1.0f}),
                               us::Scale::power_of_two(1));
  fmt::print("   data {} · scale {} = {}\n", values(small.data()), small.scale().value(),
             values(small.dequantize()));

  // Values near 10^6 are beyond FP16's largest finite value, 65504. Stored plainly they become
  // Inf; stored scaled, the data sits near 1 and the scale (a power of two) carries 10^6.
  const us::Tensor big = normal({1000}, rng, 1e6);
  us::Tensor plain(big.shape(), us::DType::kF16);
  us::cast_forward(big, plain, {{"dtype", us::DType::kF16}, {"overflow", us::Overflow::kNonFinite}},
                   0);
  // Scalify keeps data near 1: the scale is the rms rounded down to a power of two (2^19 here),
  // and the FP16 data's rms lands in [1, 2).
  const us::Scale scale = us::Scale::rounded(rms(big), us::Pow2Rounding::kDown);
  const us::ScaledTensor scaled =
      us::ScaledTensor(us::Tensor(big), us::Scale{}).with_scale(scale).astype(us::DType::kF16);
  const us::Tensor back = scaled.dequantize();
  double worst = 0;
  for (std::int64_t i = 0; i < big.numel(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(back.data()[i]) - big.data()[i]) /
                                std::abs(static_cast<double>(big.data()[i])));
  }
  fmt::print("   1000 values of std 1e6:   {}\n", values(big));
  fmt::print("   plain FP16:               {}  (rms {})\n", values(plain), rms(plain));
  fmt::print("   FP16 data, scale 2^{:<4}   {}  (rms {:.3g})\n",
             static_cast<int>(std::log2(scaled.scale().value())), values(scaled.data()),
             rms(scaled.data()));
  fmt::print("   dequantised:              {}  (worst relative error {:.2g}, FP16's 2^-11)\n\n",
             values(back), worst);
}

// ---- 2. Scale rules ----------------------------------------------------------------------------

void scale_rules() {
  fmt::print("2. Scale rules: A = [0.5, 1] · 2,  B = [0.75, 1.5] · 4,  A + B = [4, 8]\n\n");
  // add's rule is Scalify's L2 rule, s = p2(√(s_A² + s_B²)): the scale a sum of independent
  // unit-variance terms needs. Here √(4 + 16) = 4.47, which p2 rounds down to 4 (data [1, 2]), up
  // to 8 (data [0.5, 1]), or keeps as it is. Rules are plain functions of the inputs' scales and
  // shapes (ops/scale_rules.hpp); the pass calls them at run time.
  const us::Scale scales[] = {us::Scale::power_of_two(1), us::Scale::power_of_two(2)};
  const us::Shape shape{2};
  const us::Shape* shapes[] = {&shape, &shape};
  const us::Shape* output_shapes[] = {&shape};
  const us::Attributes attrs;  // a plain add: no unit-scaling α
  const us::ScaledTensor sum(us::Tensor(shape, std::vector<float>{4.0f, 8.0f}), us::Scale{});
  for (const us::Pow2Rounding rounding :
       {us::Pow2Rounding::kDown, us::Pow2Rounding::kUp, us::Pow2Rounding::kNone}) {
    const us::ScaleRuleArgs args{scales, shapes, output_shapes, attrs, rounding};
    const us::Scale s = us::kAddOp.scale_propagation(args)[0];
    fmt::print("   p2 {:<5} scale {:<8.4g} data {}\n", us::pow2_rounding_name(rounding), s.value(),
               values(sum.with_scale(s).data()));
  }
  fmt::print("\n");
}

// ---- 3 and 4. The pass, and dynamic rescaling ---------------------------------------------------

// A unit-scaled MLP classifier (64 → 128 → 10, gelu, cross-entropy) and one SGD step, with inputs
// of std 2^input_log2, optionally re-centred by a dynamic rescale.
struct Mlp {
  us::Graph graph{us::Scaling::kUnit};
  us::Value x = graph.input("x", {32, 64});
  us::Value labels = graph.input("labels", {32}, us::DType::kI32);
  us::Value w1 = graph.state("w1", {128, 64}, us::ParameterInfo{});
  us::Value w2 = graph.state("w2", {10, 128}, us::ParameterInfo{});
  us::Value loss;
  std::vector<us::Value> outputs;

  explicit Mlp(bool rescale_input) {
    // Without the rescale the input's magnitude would stay in its data; the floor 2^-64 lets
    // tiny inputs move into their scale too.
    const us::Value h_in = rescale_input ? us::dynamic_rescale(x, {.floor = 0x1p-64}) : x;
    loss = us::cross_entropy(us::linear_readout(us::gelu(us::linear(h_in, w1)), w2), labels);
    const auto grads = us::autodiff(graph, loss, std::vector<us::Value>{w1, w2});
    outputs = {loss, us::sgd_update(w1, grads[0], {}, {.lr = 0.5})[0],
               us::sgd_update(w2, grads[1], {}, {.lr = 0.5})[0]};
  }

  struct Run {
    std::vector<float> losses;
    double w1_update_rms = 0;  // rms of w1's change over the run
  };
  // `steps` SGD steps on one batch, fp32 or through propagate_scales.
  Run train(const us::Tensor& x_data, const us::Tensor& label_data, bool scalify, int steps) {
    us::Value loss_out = loss;
    std::vector<us::Value> wanted = outputs;
    if (scalify) {
      const us::ScaledGraph scaled = us::propagate_scales(graph, outputs, us::ScalePolicy::fp16());
      loss_out = scaled.output(loss);
      wanted = scaled.outputs();
    }
    us::Executor exec(graph, wanted);
    std::mt19937 rng(7);
    const us::Tensor w1_initial = normal({128, 64}, rng);
    exec.set_state(w1, w1_initial);
    exec.set_state(w2, normal({10, 128}, rng));
    exec.bind(x, x_data);
    exec.bind(labels, label_data);
    Run run;
    for (int t = 0; t < steps; ++t) {
      exec.run();
      run.losses.push_back(exec.get(loss_out).data()[0]);
    }
    us::Tensor update(w1_initial.shape());
    const us::ConstTensorView w1_final = exec.state(w1);
    for (std::int64_t i = 0; i < update.numel(); ++i) {
      update.data()[i] = w1_final.data()[i] - w1_initial.data()[i];
    }
    run.w1_update_rms = rms(update);
    return run;
  }
};

std::string losses_text(const std::vector<float>& losses) {
  std::vector<std::string> items;
  for (const float l : losses) items.push_back(fmt::format("{:.5f}", l));
  return fmt::format("{}", fmt::join(items, "  "));
}

us::Tensor random_labels(std::mt19937& rng) {
  us::Tensor labels(us::Shape{32}, us::DType::kI32);
  for (auto& id : labels.span_as<std::int32_t>()) id = static_cast<std::int32_t>(rng() % 10);
  return labels;
}

double largest_gap(const std::vector<float>& got, const std::vector<float>& expected) {
  double worst = 0;
  for (std::size_t t = 0; t < got.size(); ++t) {
    worst = std::max(worst, std::abs(static_cast<double>(got[t]) - expected[t]) / expected[t]);
  }
  return worst;
}

void the_pass(std::mt19937& rng, int steps) {
  fmt::print(
      "3. propagate_scales: an MLP's forward, backward and SGD update, all FP16 · scale\n\n");
  const us::Tensor x_data = normal({32, 64}, rng), labels = random_labels(rng);
  const std::vector<float> fp32 = Mlp(false).train(x_data, labels, false, steps).losses;
  const std::vector<float> fp16 = Mlp(false).train(x_data, labels, true, steps).losses;
  fmt::print("   fp32 losses:          {}\n", losses_text(fp32));
  fmt::print("   Scalify FP16 losses:  {}\n", losses_text(fp16));
  fmt::print("   largest relative gap: {:.2g}\n\n", largest_gap(fp16, fp32));
}

void dynamic_rescaling(std::mt19937& rng, int steps, int input_log2) {
  fmt::print("4. Dynamic rescaling: the same MLP on inputs of std 2^{}\n\n", input_log2);
  // A graph input is plain: it enters with scale 1, its magnitude in its data. The rules then
  // carry scale 1 forward, so every downstream value and gradient holds that magnitude in its FP16
  // data too: at 2^-30 it flushes to zero (FP16's smallest subnormal is 2^-24), and the first
  // layer never learns. dynamic_rescale(x) measures the data (its rms) and moves it into the
  // scale, from where the rules carry it.
  const us::Tensor x_data = normal({32, 64}, rng, std::ldexp(1.0, input_log2));
  const us::Tensor labels = random_labels(rng);
  const Mlp::Run fp32 = Mlp(false).train(x_data, labels, false, steps);
  const Mlp::Run without = Mlp(false).train(x_data, labels, true, steps);
  const Mlp::Run with = Mlp(true).train(x_data, labels, true, steps);
  fmt::print("   {:<31} {:<11} {}\n", "", "w1 moved by", "losses");
  const std::pair<const char*, const Mlp::Run*> rows[] = {{"fp32", &fp32},
                                                          {"Scalify FP16, no rescale", &without},
                                                          {"Scalify FP16, dynamic_rescale", &with}};
  for (const auto& [name, run] : rows) {
    fmt::print("   {:<31} {:<11.4g} {}\n", name, run->w1_update_rms, losses_text(run->losses));
  }
  fmt::print(
      "\n   (w1 moved by: the rms of its change. The losses agree to FP16's rounding of ln 10.)\n");
}

int run(int argc, char** argv) {
  Options o;
  us::CommandLine cli("07_scalify_quickstart",
                      "Scalify in four steps: scaled tensors, scale rules, the propagation pass "
                      "and dynamic rescaling.");
  cli.option("--input-log2", &o.input_log2, "E", "step 4's input std is 2^E (at most 0)", -120)
      .option("--seed", &o.seed, "N", "data and weight seed")
      .flag("--smoke", &o.smoke, "one training step instead of five");
  if (!cli.parse(argc, argv)) return 0;
  if (o.input_log2 > 0) {
    // Inputs far above 1 make the fp32 run itself diverge at this learning rate.
    throw us::Error(fmt::format("--input-log2 must be at most 0, got {}", o.input_log2));
  }
  std::mt19937 rng(static_cast<unsigned>(o.seed));
  const int steps = o.smoke ? 1 : 5;
  scaled_tensors(rng);
  scale_rules();
  the_pass(rng, steps);
  dynamic_rescaling(rng, steps, static_cast<int>(o.input_log2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("07_scalify_quickstart", [&] { return run(argc, argv); });
}

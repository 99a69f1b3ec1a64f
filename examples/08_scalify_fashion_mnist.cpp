// Scalify on Fashion-MNIST (arXiv 2407.17353): FP16 training without loss scaling, FP8 matmuls
// with a single dynamic rescale, and FP16 optimizer state, each against its fp32 baseline and
// against the plain (unscaled) control that shows what the scales are for.
//
// An MLP 784-512-512-10 with ReLU and biases, every weight and bias drawn from N(0, 0.1²), trained
// with batch 128 for 10 epochs (4,690 steps) on all 60,000 training images; cross-entropy on a
// max-subtracted log-softmax; test accuracy after every epoch, evaluated in fp32 from the
// parameters as stored (data · scale). The arms:
//
//   A  fp32, SGD lr 0.1
//   B  Scalify FP16: every value FP16 data with an fp32 power-of-two scale, FP16 parameters with
//      their own scales (rms-based, 2^-4 for N(0, 0.1²)); no loss scaling           SGD lr 0.1
//   C  control: plain FP16 everywhere, parameters included, no scales, no loss scaling
//   D  B with FP8 matmuls: E4M3 operands, E5M2 output gradients, and one backward-only L2
//      dynamic rescale on the logits (the gradient the rules cannot predict)
//   E  control: D without the dynamic rescale
//   F  fp32, Adam lr 1e-3, ε = 2^-16
//   G  Scalify FP16 values, plain FP16 parameters, and FP16 Adam moments with scales rescaled
//      (L2) after every update                                                        Adam as F
//   H  control: G with plain FP16 moments (no scales)
//
// Every scaled arm goes through propagate_scales (forward, backward and update, p2 down). The
// criteria (mean test accuracy over the seeds; the margin, or two standard deviations of the
// baseline if larger): B within 0.5 pp of A; D within 1.0 pp of A; G within 0.5 pp of F; no NaN or
// Inf in B, D or G and every propagated scale a power of two; A at least 87%. Reported beside them:
// the share of backward values that are zero (what underflow adds to ReLU's zeros, C and E), and
// the share of weights a step leaves unchanged (updates lost below half an ulp of FP16 weights).
//
// OUT gets runs.csv (one row per run, with its per-epoch test accuracy, test loss and training
// loss; rerunning the same command skips the runs it holds), e7_accuracy.svg and e7_summary.md;
// docs/results.md records a measured run.

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph.hpp"
#include "unitscale/io/idx.hpp"
#include "unitscale/ops.hpp"
#include "unitscale/optim/update_ops.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/progress.hpp"
#include "unitscale/train/run_environment.hpp"

namespace fs = std::filesystem;
namespace us = unitscale;

namespace {

// ---- the arms ----------------------------------------------------------------------------------

struct Arm {
  char id;
  const char* description;
  bool adam;
  std::optional<us::ScalePolicy> policy;  // none: plain fp32
  bool rescale_logits = false;            // one backward-only L2 dynamic rescale on the logits
  bool control = false;                   // one seed only
};

std::vector<Arm> all_arms() {
  us::ScalePolicy fp16{.parameters = us::DType::kF16};
  us::ScalePolicy plain_fp16 = fp16;
  plain_fp16.scaled_values = false;
  plain_fp16.scaled_parameters = false;
  us::ScalePolicy fp8 = fp16;
  fp8.matmul_inputs = us::DType::kE4M3FN;
  fp8.matmul_gradients = us::DType::kE5M2;
  us::ScalePolicy fp16_state{.parameters = us::DType::kF16, .scaled_parameters = false};
  us::ScalePolicy plain_state = fp16_state;
  plain_state.scaled_optimizer_state = false;
  return {
      {'A', "fp32, SGD", false, std::nullopt},
      {'B', "Scalify FP16, no loss scaling, SGD", false, fp16},
      {'C', "plain FP16 (control), SGD", false, plain_fp16, false, true},
      {'D', "Scalify FP8 matmuls + 1 dynamic rescale, SGD", false, fp8, true},
      {'E', "D without the rescale (control)", false, fp8, false, true},
      {'F', "fp32, Adam", true, std::nullopt},
      {'G', "FP16 params, Scalify FP16 Adam state", true, fp16_state},
      {'H', "G with plain FP16 state (control)", true, plain_state, false, true},
  };
}

struct Options {
  std::string arms = "ABCDEFGH";
  std::int64_t seeds = 3;
  std::int64_t epochs = 10;
  std::int64_t batch = 128;
  std::string data;
  std::string out = "scalify_fashion_mnist";
  bool smoke = false;
};

// ---- data --------------------------------------------------------------------------------------

// --smoke without a dataset: 10 classes, each a fixed random prototype image plus noise.
us::ImageClassificationData synthetic_images(std::int64_t train, std::int64_t test) {
  constexpr std::int64_t kPixels = 784;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> prototypes(10 * kPixels);
  for (float& p : prototypes) p = normal(rng);
  auto split = [&](std::int64_t n, us::Tensor& images, us::Tensor& labels) {
    images = us::Tensor(us::Shape{n, kPixels});
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(rng() % 10);
      for (std::int64_t p = 0; p < kPixels; ++p) {
        images.data()[i * kPixels + p] =
            prototypes[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)] * kPixels + p)] +
            2.0f * normal(rng);
      }
    }
    labels = us::Tensor(us::Shape{n}, std::span<const std::int32_t>(ids));
  };
  us::ImageClassificationData data;
  split(train, data.train_images, data.train_labels);
  split(test, data.test_images, data.test_labels);
  return data;
}

// Step t's batch: positions (t−1)·B … t·B − 1 of the concatenated epochs, each epoch a
// permutation of the training set keyed by (seed, epoch).
class Batches {
 public:
  Batches(std::int64_t images, std::int64_t batch, std::uint64_t seed)
      : images_(images), batch_(batch), seed_(seed) {}
  std::vector<std::int32_t> indices(std::int64_t step) {
    std::vector<std::int32_t> out;
    for (std::int64_t k = (step - 1) * batch_; k < step * batch_; ++k) {
      const std::int64_t epoch = k / images_;
      if (epoch != epoch_) {
        order_.resize(static_cast<std::size_t>(images_));
        for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<std::int32_t>(i);
        std::mt19937_64 rng(seed_ * 1000003u + static_cast<std::uint64_t>(epoch));
        std::shuffle(order_.begin(), order_.end(), rng);
        epoch_ = epoch;
      }
      out.push_back(order_[static_cast<std::size_t>(k % images_)]);
    }
    return out;
  }

 private:
  std::int64_t images_, batch_;
  std::uint64_t seed_;
  std::int64_t epoch_ = -1;
  std::vector<std::int32_t> order_;
};

// ---- the model ---------------------------------------------------------------------------------

constexpr std::int64_t kWidths[] = {784, 512, 512, 10};

struct Layer {
  us::Value weight, bias;
};

// Records the MLP on `x` with the layers' weights and biases (states or inputs).
us::Value mlp(us::Value x, std::span<const Layer> layers) {
  us::Value h = x;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    h = us::linear(h, layers[l].weight, {.bias = layers[l].bias});
    if (l + 1 < layers.size()) h = us::relu(h);
  }
  return h;
}

// The parameters' initial values, N(0, 0.1²), keyed by the seed: every arm of a seed starts from
// the same model.
std::vector<us::Tensor> initial_parameters(std::uint64_t seed) {
  std::vector<us::Tensor> values;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (std::size_t l = 0; l + 1 < std::size(kWidths); ++l) {
    for (const us::Shape& shape :
         {us::Shape{kWidths[l + 1], kWidths[l]}, us::Shape{kWidths[l + 1]}}) {
      us::Tensor t(shape);
      for (float& v : t.span()) v = normal(rng);
      values.push_back(std::move(t));
    }
  }
  return values;
}

// One arm's training graph, rewritten by the arm's policy.
struct TrainingGraph {
  us::Graph graph{us::Scaling::kUnscaled};
  us::Value images, labels, loss;
  std::vector<us::Value> parameters;  // w1, b1, w2, b2, w3, b3
  std::vector<us::Value> outputs;     // what the executor computes; the loss first
  std::optional<us::ScaledGraph> scaled;

  TrainingGraph(const Arm& arm, std::int64_t batch) {
    images = graph.input("images", {batch, kWidths[0]});
    labels = graph.input("labels", {batch}, us::DType::kI32);
    std::vector<Layer> layers;
    for (std::size_t l = 0; l + 1 < std::size(kWidths); ++l) {
      const std::string n = std::to_string(l + 1);
      const us::ParameterInfo weight{.fan_in = kWidths[l], .fan_out = kWidths[l + 1]};
      const us::ParameterInfo bias{
          .role = us::ParameterRole::kBias, .fan_in = 1, .fan_out = kWidths[l + 1]};
      layers.push_back({graph.state("w" + n, {kWidths[l + 1], kWidths[l]}, weight),
                        graph.state("b" + n, {kWidths[l + 1]}, bias)});
      parameters.push_back(layers.back().weight);
      parameters.push_back(layers.back().bias);
    }
    us::Value logits = mlp(images, layers);
    if (arm.rescale_logits) {
      logits = us::dynamic_rescale(logits, {.direction = us::RescaleDirection::kBackward});
    }
    loss = us::cross_entropy(logits, labels);
    const std::vector<us::Value> grads = us::autodiff(graph, loss, parameters);
    std::vector<us::Value> requested = {loss};
    for (std::size_t p = 0; p < parameters.size(); ++p) {
      if (arm.adam) {
        const std::string& name = graph.info(parameters[p]).name;
        const us::Value m = graph.state(name + ".adam_m", parameters[p].shape());
        const us::Value v = graph.state(name + ".adam_v", parameters[p].shape());
        for (const us::Value& u :
             us::adam_update(parameters[p], grads[p], m, v, {.lr = 1e-3, .eps = 0x1p-16})) {
          requested.push_back(u);
        }
      } else {
        requested.push_back(us::sgd_update(parameters[p], grads[p], us::Value{}, {.lr = 0.1})[0]);
      }
    }
    outputs = requested;
    if (arm.policy) {
      scaled = us::propagate_scales(graph, requested, *arm.policy);
      outputs = scaled->outputs();
    }
  }

  void load(us::Executor& exec, us::Value parameter, const us::Tensor& values) const {
    if (scaled) {
      scaled->load_state(exec, parameter, values);
    } else {
      exec.set_state(parameter, values);
    }
  }
  us::Tensor read(const us::Executor& exec, us::Value parameter) const {
    return scaled ? scaled->read_state(exec, parameter) : us::copy_of(exec.state(parameter));
  }
};

// The fp32 forward on the whole test set, its parameters bound to tensors read off the trained
// executor.
class Evaluator {
 public:
  Evaluator(const us::Tensor& images, const us::Tensor& labels) : labels_(labels) {
    const us::Value x = graph_.input("images", images.shape());
    std::vector<Layer> layers;
    for (std::size_t l = 0; l + 1 < std::size(kWidths); ++l) {
      const std::string n = std::to_string(l + 1);
      layers.push_back({graph_.input("w" + n, {kWidths[l + 1], kWidths[l]}),
                        graph_.input("b" + n, {kWidths[l + 1]})});
      parameters_.push_back(layers.back().weight);
      parameters_.push_back(layers.back().bias);
    }
    logits_ = mlp(x, layers);
    exec_.emplace(graph_, std::vector<us::Value>{logits_});
    exec_->bind(x, images);
    values_.resize(parameters_.size());
  }

  struct Result {
    double loss, accuracy;
  };
  Result evaluate(const TrainingGraph& trained, const us::Executor& exec) {
    for (std::size_t p = 0; p < parameters_.size(); ++p) {
      values_[p] = trained.read(exec, trained.parameters[p]);
      exec_->bind(parameters_[p], values_[p]);
    }
    exec_->run();
    const us::ConstTensorView logits = exec_->get(logits_);
    const std::int64_t rows = logits.shape()[0], classes = logits.shape()[1];
    double loss = 0;
    std::int64_t hits = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* z = logits.data() + r * classes;
      const std::int64_t best = std::max_element(z, z + classes) - z;
      double sum = 0;
      for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(double(z[c]) - z[best]);
      const std::int32_t label = labels_.data_as<std::int32_t>()[r];
      loss += std::log(sum) - (double(z[label]) - z[best]);
      hits += best == label ? 1 : 0;
    }
    return {loss / double(rows), double(hits) / double(rows)};
  }

 private:
  us::Graph graph_{us::Scaling::kUnscaled};
  const us::Tensor& labels_;
  std::vector<us::Value> parameters_;
  us::Value logits_;
  std::optional<us::Executor> exec_;
  std::vector<us::Tensor> values_;
};

// ---- what a run measures -----------------------------------------------------------------------

// Audits a step through an executor observer: every propagated scale a power of two (or the
// static zero), no NaN or Inf in any value, and the share of zeros among the backward values.
struct Audit {
  std::int64_t scales = 0, non_power_of_two = 0;
  std::int64_t values = 0, non_finite = 0;
  std::int64_t backward_values = 0, backward_zeros = 0;
  bool scan_values = false;  // the full scan of every value runs on chosen steps only

  void observe(const us::NodeEvent& event) {
    const us::OpDef& op = *event.node.op;
    std::size_t data_outputs = event.outputs.size();
    if (us::is_scaled_op(op) && op.derived_from != nullptr) {
      data_outputs = op.derived_from->outputs.size();
      for (std::size_t o = data_outputs; o < event.outputs.size(); ++o) {
        if (event.outputs[o].bytes() == nullptr) continue;
        const float s = event.outputs[o].data()[0];
        int exponent = 0;
        ++scales;
        if (s != 0.0f && std::frexp(s, &exponent) != 0.5f) ++non_power_of_two;
      }
    }
    if (!scan_values) return;
    for (std::size_t o = 0; o < data_outputs; ++o) {
      const us::TensorView& y = event.outputs[o];
      if (y.bytes() == nullptr || !us::is_floating(y.dtype())) continue;
      us::Tensor decoded(y.shape());
      us::cast_forward(y, decoded.view(), {{"dtype", us::DType::kF32}}, 0);
      for (const float v : decoded.span()) {
        ++values;
        non_finite += std::isfinite(v) ? 0 : 1;
        if (event.phase == us::Phase::kBackward) {
          ++backward_values;
          backward_zeros += v == 0.0f ? 1 : 0;
        }
      }
    }
  }
};

struct RunResult {
  char arm = 'A';
  std::int64_t seed = 0;
  std::vector<double> test_accuracy, test_loss, train_loss;  // per epoch
  std::int64_t non_finite = 0, scales = 0, non_power_of_two = 0;
  double backward_zero_share = 0;  // over the audited steps
  double unchanged_weight_share = 0;
  double seconds = 0;
};

RunResult train(const Arm& arm, std::int64_t seed, const us::ImageClassificationData& data,
                const Options& o, Evaluator& evaluator) {
  const auto start = std::chrono::steady_clock::now();
  TrainingGraph model(arm, o.batch);
  us::Executor exec(model.graph, model.outputs);
  const std::vector<us::Tensor> initial = initial_parameters(static_cast<std::uint64_t>(seed));
  for (std::size_t p = 0; p < initial.size(); ++p)
    model.load(exec, model.parameters[p], initial[p]);
  Audit audit;
  exec.add_observer([&audit](const us::NodeEvent& event) { audit.observe(event); });

  const std::int64_t train_images = data.train_images.shape()[0];
  const std::int64_t steps = (o.epochs * train_images + o.batch - 1) / o.batch;
  us::Tensor images(us::Shape{o.batch, kWidths[0]});
  us::Tensor labels(us::Shape{o.batch}, us::DType::kI32);
  exec.bind(model.images, images);
  exec.bind(model.labels, labels);
  Batches batches(train_images, o.batch, static_cast<std::uint64_t>(seed));

  RunResult result;
  result.arm = arm.id;
  result.seed = seed;
  us::ProgressReporter progress({.total_steps = steps, .unit = "img"});
  progress.start();
  double epoch_loss = 0;
  std::int64_t epoch_steps = 0, next_epoch = 1, unchanged = 0, weights = 0;
  for (std::int64_t step = 1; step <= steps; ++step) {
    const std::vector<std::int32_t> rows = batches.indices(step);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::copy_n(data.train_images.data() + rows[r] * kWidths[0], kWidths[0],
                  images.data() + static_cast<std::int64_t>(r) * kWidths[0]);
      labels.data_as<std::int32_t>()[r] = data.train_labels.data_as<std::int32_t>()[rows[r]];
    }
    // Audited steps: the first and the last of each epoch's end.
    const bool epoch_ends = step * o.batch >= next_epoch * train_images || step == steps;
    audit.scan_values = step == 1 || epoch_ends;
    std::vector<us::Tensor> before;
    if (audit.scan_values) {
      for (std::size_t p = 0; p < model.parameters.size(); p += 2) {
        before.push_back(model.read(exec, model.parameters[p]));
      }
    }
    exec.run();
    const float loss = exec.get(model.outputs[0]).data()[0];
    if (audit.scan_values) {
      for (std::size_t p = 0; p < model.parameters.size(); p += 2) {
        const us::Tensor after = model.read(exec, model.parameters[p]);
        const us::Tensor& was = before[p / 2];
        for (std::int64_t i = 0; i < after.numel(); ++i) {
          unchanged += after.data()[i] == was.data()[i] ? 1 : 0;
        }
        weights += after.numel();
      }
    }
    if (!std::isfinite(loss)) ++result.non_finite;
    epoch_loss += loss;
    ++epoch_steps;
    progress.update(step, loss, double(step * o.batch));
    if (epoch_ends) {
      const Evaluator::Result test = evaluator.evaluate(model, exec);
      result.test_accuracy.push_back(test.accuracy);
      result.test_loss.push_back(test.loss);
      result.train_loss.push_back(epoch_loss / double(epoch_steps));
      progress.message(
          fmt::format("arm {} seed {} epoch {}: train loss {:.4f}, test accuracy "
                      "{:.2f}%",
                      arm.id, seed, next_epoch, result.train_loss.back(), 100 * test.accuracy));
      epoch_loss = 0;
      epoch_steps = 0;
      ++next_epoch;
    }
  }
  progress.finish();
  result.non_finite += audit.non_finite;
  result.scales = audit.scales;
  result.non_power_of_two = audit.non_power_of_two;
  result.backward_zero_share =
      audit.backward_values > 0 ? double(audit.backward_zeros) / double(audit.backward_values) : 0;
  result.unchanged_weight_share = weights > 0 ? double(unchanged) / double(weights) : 0;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// ---- results files -----------------------------------------------------------------------------

std::string join(const std::vector<double>& values) {
  std::vector<std::string> parts;
  for (const double v : values) parts.push_back(fmt::format("{:.6g}", v));
  return fmt::format("{}", fmt::join(parts, ";"));
}

std::vector<double> split(const std::string& text) {
  std::vector<double> values;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ';');) values.push_back(std::stod(part));
  return values;
}

constexpr const char* kRunsHeader =
    "arm,seed,seconds,non_finite,scales,non_power_of_two,backward_zero_share,"
    "unchanged_weight_share,test_accuracy,test_loss,train_loss";

std::string to_row(const RunResult& r) {
  return fmt::format("{},{},{:.1f},{},{},{},{:.6f},{:.6f},{},{},{}", r.arm, r.seed, r.seconds,
                     r.non_finite, r.scales, r.non_power_of_two, r.backward_zero_share,
                     r.unchanged_weight_share, join(r.test_accuracy), join(r.test_loss),
                     join(r.train_loss));
}

std::vector<RunResult> read_runs(const fs::path& path) {
  std::vector<RunResult> runs;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line != kRunsHeader) return runs;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string field; std::getline(fields, field, ',');) f.push_back(field);
    if (f.size() != 11) {
      throw us::Error(fmt::format("{}: a row has {} fields, expected 11", path.string(), f.size()));
    }
    RunResult r;
    r.arm = f[0][0];
    r.seed = std::stoll(f[1]);
    r.seconds = std::stod(f[2]);
    r.non_finite = std::stoll(f[3]);
    r.scales = std::stoll(f[4]);
    r.non_power_of_two = std::stoll(f[5]);
    r.backward_zero_share = std::stod(f[6]);
    r.unchanged_weight_share = std::stod(f[7]);
    r.test_accuracy = split(f[8]);
    r.test_loss = split(f[9]);
    r.train_loss = split(f[10]);
    runs.push_back(std::move(r));
  }
  return runs;
}

void write_runs(const fs::path& path, const std::vector<RunResult>& runs) {
  std::string text = std::string(kRunsHeader) + "\n";
  for (const RunResult& r : runs) text += to_row(r) + "\n";
  us::write_file_atomically(path, text);
}

struct Stats {
  double mean = 0, std = 0;
  int n = 0;
};

// Final test accuracy of an arm over its seeds, in percent (sample standard deviation).
Stats final_accuracy(const std::vector<RunResult>& runs, char arm) {
  std::vector<double> a;
  for (const RunResult& r : runs) {
    if (r.arm == arm && !r.test_accuracy.empty()) a.push_back(100 * r.test_accuracy.back());
  }
  Stats s;
  s.n = static_cast<int>(a.size());
  if (a.empty()) return s;
  for (const double v : a) s.mean += v / double(a.size());
  for (const double v : a) s.std += (v - s.mean) * (v - s.mean);
  s.std = a.size() > 1 ? std::sqrt(s.std / double(a.size() - 1)) : 0;
  return s;
}

std::string summary(const std::vector<RunResult>& runs, const std::vector<Arm>& arms,
                    const us::RunEnvironment& env) {
  std::string md = "# E7: Scalify on Fashion-MNIST\n\n";
  md += fmt::format("CPU: {}, {} threads, GEMM ISA {}.\n\n", env.cpu_model, env.threads,
                    env.gemm_isa);
  md +=
      "| arm | what | seeds | test accuracy % (mean ± sd) | zero share of backward values | "
      "weights a step left unchanged | NaN/Inf | scales not a power of two | s per run |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  for (const Arm& arm : arms) {
    const Stats s = final_accuracy(runs, arm.id);
    if (s.n == 0) continue;
    double zeros = 0, unchanged = 0, seconds = 0;
    std::int64_t non_finite = 0, scales = 0, bad = 0;
    for (const RunResult& r : runs) {
      if (r.arm != arm.id) continue;
      zeros += r.backward_zero_share / s.n;
      unchanged += r.unchanged_weight_share / s.n;
      seconds += r.seconds / s.n;
      non_finite += r.non_finite;
      scales += r.scales;
      bad += r.non_power_of_two;
    }
    md += fmt::format(
        "| {} | {} | {} | {:.2f} ± {:.2f} | {:.1f}% | {:.1f}% | {} | {} of {} | {:.0f} |\n", arm.id,
        arm.description, s.n, s.mean, s.std, 100 * zeros, 100 * unchanged, non_finite, bad, scales,
        seconds);
  }
  md += "\n## Criteria\n\n";
  const auto within = [&](char arm, char baseline, double margin, std::string_view what) {
    const Stats a = final_accuracy(runs, arm), b = final_accuracy(runs, baseline);
    if (a.n == 0 || b.n == 0) return fmt::format("- {}: not run\n", what);
    const double tolerance = std::max(margin, 2 * b.std);
    const double gap = a.mean - b.mean;
    return fmt::format("- {}: {} − {} = {:+.2f} pp, tolerance ±{:.2f} pp: **{}**\n", what, arm,
                       baseline, gap, tolerance, std::abs(gap) <= tolerance ? "PASS" : "FAIL");
  };
  md += within('B', 'A', 0.5, "1. FP16 without loss scaling (B within 0.5 pp of A)");
  md += within('D', 'A', 1.0, "2. FP8 matmuls with one dynamic rescale (D within 1.0 pp of A)");
  md += within('G', 'F', 0.5, "3. FP16 optimizer state (G within 0.5 pp of F)");
  std::int64_t non_finite = 0, bad = 0, ran = 0;
  for (const RunResult& r : runs) {
    if (r.arm != 'B' && r.arm != 'D' && r.arm != 'G') continue;
    non_finite += r.non_finite;
    bad += r.non_power_of_two;
    ++ran;
  }
  md += ran == 0 ? "- 4. No NaN/Inf, powers of two: not run\n"
                 : fmt::format(
                       "- 4. No NaN or Inf in B, D, G ({} found) and every propagated "
                       "scale a power of two ({} not): **{}**\n",
                       non_finite, bad, non_finite == 0 && bad == 0 ? "PASS" : "FAIL");
  const Stats a = final_accuracy(runs, 'A');
  md += a.n == 0 ? "- 5. Sanity: not run\n"
                 : fmt::format("- 5. Sanity: A = {:.2f}% ≥ 87%: **{}**\n", a.mean,
                               a.mean >= 87.0 ? "PASS" : "FAIL");
  return md;
}

void plot(const std::vector<RunResult>& runs, const std::vector<Arm>& arms, const fs::path& path) {
  us::LinePlot plot("E7: test accuracy by epoch (mean over seeds)");
  plot.x_axis({.label = "epoch"}).y_axis({.label = "test accuracy (%)"});
  for (const Arm& arm : arms) {
    std::vector<double> x, y;
    int n = 0;
    for (const RunResult& r : runs) {
      if (r.arm != arm.id) continue;
      if (y.size() < r.test_accuracy.size()) y.resize(r.test_accuracy.size(), 0.0);
      for (std::size_t e = 0; e < r.test_accuracy.size(); ++e) y[e] += 100 * r.test_accuracy[e];
      ++n;
    }
    if (n == 0) continue;
    for (std::size_t e = 0; e < y.size(); ++e) {
      x.push_back(double(e + 1));
      y[e] /= n;
    }
    plot.add({.label = fmt::format("{}: {}", arm.id, arm.description),
              .x = x,
              .y = y,
              .line = arm.control ? us::LineStyle::kDashed : us::LineStyle::kSolidWithMarkers});
  }
  plot.save(path, 900, 520);
}

int run(int argc, char** argv) {
  Options o;
  us::CommandLine cli("08_scalify_fashion_mnist",
                      "Scalify's Fashion-MNIST experiment (E7): FP16 training without loss "
                      "scaling, FP8 matmuls and FP16 Adam state against fp32 and plain controls.");
  cli.option("--arms", &o.arms, "LETTERS", "the arms to run, of ABCDEFGH")
      .option("--seeds", &o.seeds, "N", "seeds of the arms A, B, D, F, G (controls: 1)", 1)
      .option("--epochs", &o.epochs, "N", "epochs of 60,000 images", 1)
      .option("--batch", &o.batch, "N", "batch size", 1)
      .option("--data", &o.data, "DIR", "Fashion-MNIST IDX files (default: the Debian package's)")
      .option("--out", &o.out, "DIR", "where results go")
      .flag("--smoke", &o.smoke,
            "a quick run into scalify_fashion_mnist_smoke/: 1 seed, 1 epoch, on 2,048 synthetic "
            "images unless --data is given")
      .epilog(
          "Rerunning the same command skips the runs OUT/runs.csv holds. A full run (every "
          "arm, 3 seeds) takes about an hour on two cores.");
  if (!cli.parse(argc, argv)) return 0;
  std::vector<Arm> arms;
  for (const Arm& arm : all_arms()) {
    if (o.arms.find(arm.id) != std::string::npos) arms.push_back(arm);
  }
  for (const char c : o.arms) {
    if (c < 'A' || c > 'H') throw us::Error(fmt::format("--arms: unknown arm '{}'", c));
  }
  us::ImageClassificationData data;
  if (o.smoke) {
    o.seeds = 1;
    o.epochs = 1;
    if (!cli.given("--out")) o.out = "scalify_fashion_mnist_smoke";
    data = o.data.empty() ? synthetic_images(2048, 512) : us::load_fashion_mnist({}, o.data);
  } else {
    data = o.data.empty() ? us::load_fashion_mnist() : us::load_fashion_mnist({}, o.data);
  }
  const fs::path out(o.out);
  fs::create_directories(out);
  const us::RunEnvironment env = us::current_run_environment();
  us::write_file_atomically(out / "environment.json", us::to_json(env) + "\n");
  std::vector<RunResult> runs = read_runs(out / "runs.csv");
  Evaluator evaluator(data.test_images, data.test_labels);
  for (const Arm& arm : arms) {
    for (std::int64_t seed = 0; seed < (arm.control ? 1 : o.seeds); ++seed) {
      const bool done = std::any_of(runs.begin(), runs.end(), [&](const RunResult& r) {
        return r.arm == arm.id && r.seed == seed && std::ssize(r.test_accuracy) == o.epochs;
      });
      if (done) continue;
      fmt::print("arm {} ({}), seed {}\n", arm.id, arm.description, seed);
      std::fflush(stdout);
      runs.push_back(train(arm, seed, data, o, evaluator));
      fmt::print("  test accuracy {:.2f}%, {:.0f} s\n", 100 * runs.back().test_accuracy.back(),
                 runs.back().seconds);
      write_runs(out / "runs.csv", runs);
    }
  }
  plot(runs, all_arms(), out / "e7_accuracy.svg");
  const std::string md = summary(runs, all_arms(), env);
  us::write_file_atomically(out / "e7_summary.md", md);
  fmt::print("\n{}", md);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("08_scalify_fashion_mnist", [&] { return run(argc, argv); });
}

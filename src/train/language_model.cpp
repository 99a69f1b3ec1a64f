#include "unitscale/train/language_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "train/evaluation.hpp"
#include "train/fnv1a.hpp"
#include "train/task_step.hpp"
#include "unitscale/error.hpp"
#include "unitscale/nn/init.hpp"

namespace unitscale {

namespace {

constexpr std::int64_t kVocab = 256;  // bytes

void check_config(const LanguageModelConfig& c) {
  auto fail = [](const std::string& what) {
    return Error("LanguageModelTask: " + what);
  };
  if (c.width < 1 || c.depth < 1 || c.head_dim < 1 || c.width % c.head_dim != 0) {
    throw fail(fmt::format("width ({}) must be a positive multiple of head_dim ({}), depth ({}) ≥ 1",
                           c.width, c.head_dim, c.depth));
  }
  if (c.sequence_length < 1 || c.batch < 1) {
    throw fail(fmt::format("sequence_length and batch must be ≥ 1, got {} and {}",
                           c.sequence_length, c.batch));
  }
  if (c.steps < 1 || c.warmup < 0 || c.warmup > c.steps) {
    throw fail(fmt::format("need steps ≥ 1 and 0 ≤ warmup ≤ steps, got steps {} and warmup {}",
                           c.steps, c.warmup));
  }
  c.precision.check("LanguageModelTask");
  c.data_parallel.check("LanguageModelTask", c.batch, c.precision.scalify());
  if (c.scheme == Scheme::kMuP && (c.mup_base_width < c.head_dim ||
                                   c.mup_base_width % c.head_dim != 0)) {
    throw fail(fmt::format("μP's base width ({}) must be a positive multiple of head_dim ({})",
                           c.mup_base_width, c.head_dim));
  }
}

}  // namespace

DecoderConfig byte_decoder_config(Scheme scheme, std::int64_t width, int depth,
                                  std::int64_t head_dim,
                                  const UmupHyperparameters& hyperparameters) {
  DecoderConfig d{.vocab = kVocab,
                  .width = width,
                  .depth = depth,
                  .heads = width / head_dim,
                  .mlp_expansion = 2,
                  .mlp = MlpKind::kSwiGlu,
                  .norm = NormKind::kRms,
                  .norm_affine = false,
                  .hyperparameters = hyperparameters};
  if (scheme != Scheme::kUMuP) {
    d.attention_logit_scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  }
  return d;
}

double default_learning_rate(Scheme scheme) {
  return scheme == Scheme::kUMuP ? 1.0 : std::ldexp(1.0, -8);
}

LanguageModelTask::LanguageModelTask(const LanguageModelConfig& config, const TextCorpus& corpus)
    : config_(config), corpus_(corpus) {
  check_config(config_);
  const std::int64_t S = config_.sequence_length;
  train_windows_ = std::make_unique<TextWindowSampler>(corpus_.train, S, config_.seed);
  if (!corpus_.validation.empty()) {
    validation_windows_ = std::make_unique<SequentialWindows>(corpus_.validation, S);
  }

  parametrization_ = std::make_unique<Parametrization>(
      config_.scheme, ParametrizationOptions{.residual_blocks = config_.depth});
  const DecoderConfig decoder_config = byte_decoder_config(
      config_.scheme, config_.width, config_.depth, config_.head_dim, config_.hyperparameters);
  if (config_.scheme == Scheme::kMuP) {
    TransformerDecoder::set_base_shapes(
        *parametrization_,
        byte_decoder_config(config_.scheme, config_.mup_base_width, config_.depth,
                            config_.head_dim, config_.hyperparameters));
  }
  graph_ = std::make_unique<Graph>(parametrization_->op_scaling());
  model_ = std::make_unique<Model>(*graph_, *parametrization_, ModelOptions{.seed = config_.seed});
  decoder_ = std::make_unique<TransformerDecoder>(*model_, "", decoder_config);

  const Shape batch_shape{config_.batch, S};
  const Shape shard_shape{config_.data_parallel.shard_rows(config_.batch), S};
  ids_ = graph_->input("ids", shard_shape, DType::kI32);
  targets_ = graph_->input("targets", shard_shape, DType::kI32);
  loss_ = decoder_->loss(ids_, targets_);
  ids_buffer_ = Tensor(shard_shape, DType::kI32);
  targets_buffer_ = Tensor(shard_shape, DType::kI32);

  // The forwards for evaluation and generation share the parameters; recording them now keeps
  // the graph unchanged once executors exist, and lets the precision pass see them with the
  // training forward, before autodiff.
  eval_ids_ = graph_->input("eval_ids", batch_shape, DType::kI32);
  eval_logits_ = decoder_->logits(eval_ids_);
  eval_ids_buffer_ = Tensor(batch_shape, DType::kI32);
  generate_ids_ = graph_->input("generate_ids", Shape{1, S}, DType::kI32);
  generate_logits_ = decoder_->logits(generate_ids_);
  generate_ids_buffer_ = Tensor(Shape{1, S}, DType::kI32);
  Value* const forwards[] = {&eval_logits_, &generate_logits_};
  detail::TaskStep step = detail::record_task_step(*graph_, *model_, loss_,
                                                   {.kind = OptimizerKind::kAdamW,
                                                    .lr = config_.lr,
                                                    .beta1 = 0.9,
                                                    .beta2 = 0.95,
                                                    .eps = 1e-8,
                                                    .weight_decay = config_.weight_decay},
                                                   config_, forwards);
  optimizer_ = std::move(step.optimizer);
  scaled_ = std::move(step.scaled);
  precision_report_ = std::move(step.precision_report);
}

LanguageModelTask::~LanguageModelTask() = default;

void LanguageModelTask::bind_inputs(Executor& executor) {
  executor.bind(ids_, ids_buffer_);
  executor.bind(targets_, targets_buffer_);
}

void LanguageModelTask::load_batch(std::int64_t step) {
  const DataParallelConfig& shard = config_.data_parallel;
  train_windows_->sample_rows(
      step, config_.batch, shard.first_row(config_.batch), shard.shard_rows(config_.batch),
      {ids_buffer_.data_as<std::int32_t>(), static_cast<std::size_t>(ids_buffer_.numel())},
      {targets_buffer_.data_as<std::int32_t>(), static_cast<std::size_t>(targets_buffer_.numel())});
}

std::int64_t LanguageModelTask::validation_windows() const {
  return validation_windows_ ? validation_windows_->count() : 0;
}

std::optional<double> LanguageModelTask::evaluate(const Executor& trained) {
  if (validation_windows() == 0) return std::nullopt;
  return validation_loss(trained);
}

Executor& LanguageModelTask::forward_executor(std::unique_ptr<Executor>& executor, Value logits,
                                              Value ids, const Tensor& ids_buffer,
                                              const Executor& trained) {
  if (!executor) {
    executor = std::make_unique<Executor>(*graph_, std::vector<Value>{logits});
    executor->bind(ids, ids_buffer);
  }
  detail::copy_parameters(*executor, trained, *model_, scaled_.get());
  return *executor;
}

double LanguageModelTask::validation_loss(const Executor& trained) {
  const std::int64_t windows = validation_windows();
  if (windows == 0) {
    throw Error("LanguageModelTask: the corpus has no validation window of " +
                std::to_string(config_.sequence_length + 1) + " bytes");
  }
  Executor& exec =
      forward_executor(eval_executor_, eval_logits_, eval_ids_, eval_ids_buffer_, trained);
  const std::int64_t B = config_.batch;
  const std::int64_t S = config_.sequence_length;
  const double alpha = config_.hyperparameters.loss_softmax_mult;
  std::vector<std::int32_t> targets(static_cast<std::size_t>(B * S));
  auto* ids = eval_ids_buffer_.data_as<std::int32_t>();
  double total = 0;
  for (std::int64_t first = 0; first < windows; first += B) {
    const std::int64_t n = std::min(B, windows - first);
    // Rows past the last window keep whatever ids they had: their logits are not read.
    validation_windows_->fill(first, n, {ids, static_cast<std::size_t>(n * S)},
                              {targets.data(), static_cast<std::size_t>(n * S)});
    exec.run();
    const float* logits = exec.get(eval_logits_).data();
    for (std::int64_t t = 0; t < n * S; ++t) {
      total += detail::softmax_cross_entropy(logits + t * kVocab, kVocab,
                                             targets[static_cast<std::size_t>(t)], alpha);
    }
  }
  return total / static_cast<double>(windows * S);
}

std::string LanguageModelTask::generate(const Executor& trained, std::string_view prompt,
                                        const GenerationOptions& options) {
  if (options.temperature < 0 || options.top_k < 0 || options.max_bytes < 0) {
    throw Error(fmt::format(
        "generate: temperature, top_k and max_bytes must be ≥ 0, got {}, {} and {}",
        options.temperature, options.top_k, options.max_bytes));
  }
  Executor& exec = forward_executor(generate_executor_, generate_logits_, generate_ids_,
                                    generate_ids_buffer_, trained);
  const auto S = static_cast<std::size_t>(config_.sequence_length);
  std::string context(prompt.substr(prompt.size() > S ? prompt.size() - S : 0));
  if (context.empty()) context = "\n";  // the corpus's entry separator: "start a new text"
  auto* ids = generate_ids_buffer_.data_as<std::int32_t>();
  const double alpha = config_.hyperparameters.loss_softmax_mult;
  std::string out;
  std::vector<double> weights(kVocab);
  std::vector<int> order(kVocab);
  for (std::int64_t i = 0; i < options.max_bytes; ++i) {
    std::fill(ids, ids + S, 0);
    for (std::size_t j = 0; j < context.size(); ++j) {
      ids[j] = static_cast<unsigned char>(context[j]);
    }
    exec.run();
    const float* z = exec.get(generate_logits_).data() +
                     static_cast<std::int64_t>(context.size() - 1) * kVocab;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
    int next = order[0];
    if (options.temperature > 0) {
      const std::int64_t k =
          options.top_k > 0 ? std::min<std::int64_t>(options.top_k, kVocab) : kVocab;
      double sum = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        const int v = order[static_cast<std::size_t>(j)];
        weights[static_cast<std::size_t>(j)] =
            std::exp(alpha * (z[v] - z[order[0]]) / options.temperature);
        sum += weights[static_cast<std::size_t>(j)];
      }
      double u = counter_uniform(options.seed, "generate", static_cast<std::uint64_t>(i)) * sum;
      for (std::int64_t j = 0; j < k; ++j) {
        next = order[static_cast<std::size_t>(j)];
        u -= weights[static_cast<std::size_t>(j)];
        if (u < 0) break;
      }
    }
    out.push_back(static_cast<char>(next));
    if (context.size() == S) context.erase(0, 1);
    context.push_back(static_cast<char>(next));
  }
  return out;
}

std::map<std::string, std::string> LanguageModelTask::config() const {
  const UmupHyperparameters& h = config_.hyperparameters;
  const nlohmann::json model = {
      {"kind", "byte-decoder"},
      {"scheme", std::string(scheme_name(config_.scheme))},
      {"width", config_.width},
      {"depth", config_.depth},
      {"head_dim", config_.head_dim},
      {"mup_base_width", config_.mup_base_width},
      {"hyperparameters",
       {{"ffn_act_mult", h.ffn_act_mult},
        {"attn_softmax_mult", h.attn_softmax_mult},
        {"residual_mult", h.residual_mult},
        {"residual_attn_ratio", h.residual_attn_ratio},
        {"loss_softmax_mult", h.loss_softmax_mult}}}};
  const nlohmann::json optimizer = {{"kind", "adamw"},
                                    {"lr", config_.lr},
                                    {"beta1", 0.9},
                                    {"beta2", 0.95},
                                    {"eps", 1e-8},
                                    {"weight_decay", config_.weight_decay},
                                    {"warmup", config_.warmup},
                                    {"schedule", config_.cosine_decay ? "cosine" : "constant"},
                                    {"schedule_steps", config_.steps},
                                    {"max_grad_norm", config_.max_grad_norm}};
  const nlohmann::json data = {
      {"sequence_length", config_.sequence_length},
      {"batch", config_.batch},
      {"train_bytes", corpus_.train.size()},
      {"validation_bytes", corpus_.validation.size()},
      {"train_fingerprint",
       fmt::format("{:016x}", detail::fnv1a(std::as_bytes(std::span(corpus_.train))))}};
  return {{"model", model.dump()},
          {"optimizer", optimizer.dump()},
          {"data", data.dump()},
          {"precision", config_.precision.to_json()},
          {"seed", std::to_string(config_.seed)}};
}

}  // namespace unitscale

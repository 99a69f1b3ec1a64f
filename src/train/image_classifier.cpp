#include "unitscale/train/image_classifier.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "train/evaluation.hpp"
#include "train/task_step.hpp"
#include "unitscale/error.hpp"
#include "unitscale/nn/init.hpp"

namespace unitscale {

namespace {

// Evaluation batches: large enough that the forward is GEMM-bound, small enough to stay in cache.
constexpr std::int64_t kEvalBatch = 500;

void check_data(const ImageClassificationData& d, std::int64_t batch) {
  const Tensor& x = d.train_images;
  if (x.shape().rank() != 2 || d.train_labels.shape() != Shape{x.shape()[0]}) {
    throw Error(fmt::format("ImageClassifierTask: training images must be [N, pixels] with "
                            "labels [N], got {} and {}",
                            x.shape().to_string(), d.train_labels.shape().to_string()));
  }
  if (x.shape()[0] < batch) {
    throw Error(fmt::format("ImageClassifierTask: the batch ({}) is larger than the training set "
                            "({} images)",
                            batch, x.shape()[0]));
  }
}

MlpClassifierConfig classifier_config(const ImageClassifierConfig& c, std::int64_t pixels,
                                      std::int64_t classes, std::int64_t hidden_override = 0) {
  MlpClassifierConfig m{.inputs = pixels,
                        .hidden = c.hidden,
                        .classes = classes,
                        .activation = c.activation,
                        .bias = c.bias,
                        .hyperparameters = c.hyperparameters};
  if (hidden_override > 0) std::fill(m.hidden.begin(), m.hidden.end(), hidden_override);
  return m;
}

}  // namespace

ImageClassifierTask::ImageClassifierTask(const ImageClassifierConfig& config,
                                         const ImageClassificationData& data)
    : config_(config), data_(data) {
  if (config_.batch < 1 || config_.steps < 1 || config_.warmup < 0 ||
      config_.warmup > config_.steps || config_.hidden.empty()) {
    throw Error(fmt::format("ImageClassifierTask: need batch ≥ 1, steps ≥ 1, 0 ≤ warmup ≤ steps "
                            "and a hidden layer, got batch {}, steps {}, warmup {}, {} hidden",
                            config_.batch, config_.steps, config_.warmup, config_.hidden.size()));
  }
  config_.precision.check("ImageClassifierTask");
  config_.data_parallel.check("ImageClassifierTask", config_.batch, config_.precision.scalify());
  check_data(data_, config_.batch);
  pixels_ = data_.train_images.shape()[1];
  parametrization_ = std::make_unique<Parametrization>(config_.scheme);
  if (config_.scheme == Scheme::kMuP) {
    MlpClassifier::set_base_shapes(*parametrization_,
                                   classifier_config(config_, pixels_, data_.classes,
                                                     config_.mup_base_width));
  }
  graph_ = std::make_unique<Graph>(parametrization_->op_scaling());
  model_ = std::make_unique<Model>(*graph_, *parametrization_, ModelOptions{.seed = config_.seed});
  classifier_ = std::make_unique<MlpClassifier>(
      *model_, "", classifier_config(config_, pixels_, data_.classes));

  const std::int64_t shard = config_.data_parallel.shard_rows(config_.batch);
  images_ = graph_->input("images", Shape{shard, pixels_});
  labels_ = graph_->input("labels", Shape{shard}, DType::kI32);
  loss_ = classifier_->loss(images_, labels_);
  images_buffer_ = Tensor(Shape{shard, pixels_});
  labels_buffer_ = Tensor(Shape{shard}, DType::kI32);

  // The evaluation forward, recorded before the precision pass and autodiff (see
  // train/precision.hpp).
  eval_images_ = graph_->input("eval_images", Shape{kEvalBatch, pixels_});
  eval_logits_ = classifier_->logits(eval_images_);
  eval_images_buffer_ = Tensor(Shape{kEvalBatch, pixels_});
  Value* const forwards[] = {&eval_logits_};
  detail::TaskStep step = detail::record_task_step(
      *graph_, *model_, loss_,
      {.kind = config_.optimizer, .lr = config_.lr, .weight_decay = config_.weight_decay}, config_,
      forwards);
  optimizer_ = std::move(step.optimizer);
  scaled_ = std::move(step.scaled);
  precision_report_ = std::move(step.precision_report);
}

ImageClassifierTask::~ImageClassifierTask() = default;

void ImageClassifierTask::bind_inputs(Executor& executor) {
  executor.bind(images_, images_buffer_);
  executor.bind(labels_, labels_buffer_);
}

const std::vector<std::int32_t>& ImageClassifierTask::epoch_order(std::int64_t epoch) {
  if (epoch == cached_epoch_) return order_;
  const std::int64_t n = data_.train_images.shape()[0];
  order_.resize(static_cast<std::size_t>(n));
  std::iota(order_.begin(), order_.end(), 0);
  // Fisher–Yates with counter-based draws: the permutation is a function of (seed, epoch).
  const std::string purpose = fmt::format("image-shuffle/{}", epoch);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = std::min<std::int64_t>(
        i, static_cast<std::int64_t>(counter_uniform(config_.seed, purpose,
                                                     static_cast<std::uint64_t>(i)) *
                                     static_cast<double>(i + 1)));
    std::swap(order_[static_cast<std::size_t>(i)], order_[static_cast<std::size_t>(j)]);
  }
  cached_epoch_ = epoch;
  return order_;
}

std::vector<std::int32_t> ImageClassifierTask::batch_indices(std::int64_t step) {
  const std::int64_t n = data_.train_images.shape()[0];
  std::vector<std::int32_t> indices(static_cast<std::size_t>(config_.batch));
  for (std::int64_t b = 0; b < config_.batch; ++b) {
    const std::int64_t position = (step - 1) * config_.batch + b;
    indices[static_cast<std::size_t>(b)] =
        epoch_order(position / n)[static_cast<std::size_t>(position % n)];
  }
  return indices;
}

void ImageClassifierTask::load_batch(std::int64_t step) {
  const float* images = data_.train_images.data_as<float>();
  const std::int32_t* labels = data_.train_labels.data_as<std::int32_t>();
  float* x = images_buffer_.data_as<float>();
  std::int32_t* y = labels_buffer_.data_as<std::int32_t>();
  const std::vector<std::int32_t> all = batch_indices(step);
  const DataParallelConfig& dp = config_.data_parallel;
  const std::span<const std::int32_t> indices =
      std::span(all).subspan(static_cast<std::size_t>(dp.first_row(config_.batch)),
                             static_cast<std::size_t>(dp.shard_rows(config_.batch)));
  for (std::size_t b = 0; b < indices.size(); ++b) {
    std::copy_n(images + indices[b] * pixels_, pixels_, x + static_cast<std::int64_t>(b) * pixels_);
    y[b] = labels[indices[b]];
  }
}

ImageClassifierTask::Evaluation ImageClassifierTask::evaluate_on(const Executor& trained,
                                                                 const Tensor& images,
                                                                 const Tensor& labels) {
  const std::int64_t n = images.shape()[0];
  if (images.shape() != Shape{n, pixels_} || labels.shape() != Shape{n} || n == 0) {
    throw Error(fmt::format("ImageClassifierTask: evaluation needs images [N, {}] with labels [N], "
                            "N ≥ 1, got {} and {}",
                            pixels_, images.shape().to_string(), labels.shape().to_string()));
  }
  if (!eval_executor_) {
    eval_executor_ = std::make_unique<Executor>(*graph_, std::vector<Value>{eval_logits_});
    eval_executor_->bind(eval_images_, eval_images_buffer_);
  }
  detail::copy_parameters(*eval_executor_, trained, *model_, scaled_.get());
  const std::int64_t classes = data_.classes;
  const double alpha = config_.hyperparameters.loss_softmax_mult;
  const float* x = images.data_as<float>();
  const std::int32_t* y = labels.data_as<std::int32_t>();
  double loss = 0;
  std::int64_t hits = 0;
  for (std::int64_t first = 0; first < n; first += kEvalBatch) {
    const std::int64_t rows = std::min(kEvalBatch, n - first);
    // Rows past `rows` keep earlier images: their logits are not read.
    std::copy_n(x + first * pixels_, rows * pixels_, eval_images_buffer_.data_as<float>());
    eval_executor_->run();
    const float* logits = eval_executor_->get(eval_logits_).data();
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* z = logits + r * classes;
      loss += detail::softmax_cross_entropy(z, classes, y[first + r], alpha);
      hits += std::max_element(z, z + classes) - z == y[first + r] ? 1 : 0;
    }
  }
  return {.loss = loss / static_cast<double>(n),
          .accuracy = static_cast<double>(hits) / static_cast<double>(n)};
}

std::optional<double> ImageClassifierTask::evaluate(const Executor& trained) {
  // A split that was not loaded is a default (rank-0) tensor.
  auto has_images = [](const Tensor& t) { return t.shape().rank() == 2 && t.shape()[0] > 0; };
  const bool has_validation = has_images(data_.validation_images);
  const Tensor& images = has_validation ? data_.validation_images : data_.test_images;
  const Tensor& labels = has_validation ? data_.validation_labels : data_.test_labels;
  if (!has_images(images)) return std::nullopt;
  return evaluate_on(trained, images, labels).loss;
}

std::map<std::string, std::string> ImageClassifierTask::config() const {
  const UmupHyperparameters& h = config_.hyperparameters;
  const nlohmann::json model = {
      {"kind", "mlp-classifier"},
      {"scheme", std::string(scheme_name(config_.scheme))},
      {"inputs", pixels_},
      {"hidden", config_.hidden},
      {"classes", data_.classes},
      {"activation", config_.activation == ClassifierActivation::kGelu ? "gelu" : "relu"},
      {"bias", config_.bias},
      {"mup_base_width", config_.mup_base_width},
      {"hyperparameters",
       {{"ffn_act_mult", h.ffn_act_mult}, {"loss_softmax_mult", h.loss_softmax_mult}}}};
  const nlohmann::json optimizer = {
      {"kind", std::string(optimizer_kind_name(config_.optimizer))},
      {"lr", config_.lr},
      {"weight_decay", config_.weight_decay},
      {"warmup", config_.warmup},
      {"schedule", config_.cosine_decay ? "cosine" : "constant"},
      {"schedule_steps", config_.steps},
      {"max_grad_norm", config_.max_grad_norm}};
  const nlohmann::json data = {{"batch", config_.batch},
                               {"train_images", data_.train_images.shape()[0]},
                               {"pixel_mean", data_.pixel_mean},
                               {"pixel_std", data_.pixel_std}};
  return {{"model", model.dump()},
          {"optimizer", optimizer.dump()},
          {"data", data.dump()},
          {"precision", config_.precision.to_json()},
          {"seed", std::to_string(config_.seed)}};
}

}  // namespace unitscale

#pragma once
// ImageClassifierTask: an MLP classifier trained on an image dataset (Fashion-MNIST from io/idx.hpp)
// as a TrainingTask: epochs of seeded shuffles, AdamW (or SGD) under SP, μP or u-μP, validation
// loss and accuracy.
//
//   const ImageClassificationData data = load_fashion_mnist({.validation_holdout = 5000});
//   ImageClassifierTask task({.hidden = {512, 512}, .steps = 2000}, data);
//   Trainer trainer(task, {.steps = 2000, .eval_every = 500});
//   trainer.run();
//   double acc = task.accuracy(trainer.executor(), data.test_images, data.test_labels);

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/io/idx.hpp"
#include "unitscale/nn/mlp_classifier.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/precision.hpp"
#include "unitscale/train/trainer.hpp"

namespace unitscale {

struct ImageClassifierConfig {
  Scheme scheme = Scheme::kUMuP;
  std::vector<std::int64_t> hidden = {512, 512};
  ClassifierActivation activation = ClassifierActivation::kGelu;
  bool bias = false;
  std::int64_t mup_base_width = 64;  // μP: every hidden width of the base model
  UmupHyperparameters hyperparameters = {};
  std::int64_t batch = 128;  // the global batch: each data-parallel rank trains on batch / ranks
  std::uint64_t seed = 0;  // parameters and the shuffles
  OptimizerKind optimizer = OptimizerKind::kAdamW;
  double lr = 1.0;  // η
  std::int64_t steps = 1000;
  std::int64_t warmup = 0;
  bool cosine_decay = true;
  double weight_decay = 0.0;
  double max_grad_norm = 0.0;  // 0: no clipping
  PrecisionConfig precision = {};  // FP8 / FP16 / BF16 training and loss scaling
  // Data-parallel training (train/trainer.hpp, docs/distributed.md); not part of config().
  DataParallelConfig data_parallel = {};
};

class ImageClassifierTask final : public TrainingTask {
 public:
  // `data` must outlive the task. Throws unitscale::Error naming the bad setting.
  ImageClassifierTask(const ImageClassifierConfig& config, const ImageClassificationData& data);
  ~ImageClassifierTask() override;

  Model& model() override { return *model_; }
  std::string precision_report() const override { return precision_report_; }
  const ScaledGraph* scaled_graph() const override { return scaled_.get(); }
  Value loss() const override { return loss_; }
  const OptimizerStep& optimizer() const override { return optimizer_; }
  void bind_inputs(Executor& executor) override;
  // Step t takes the images at positions (t−1)·B … t·B − 1 of the concatenated epochs, each epoch
  // a permutation of the training set keyed by (seed, epoch).
  void load_batch(std::int64_t step) override;
  // The validation split's loss if the data has one, else the test set's.
  std::optional<double> evaluate(const Executor& trained) override;
  std::int64_t items_per_step() const override { return config_.batch; }
  std::string item_unit() const override { return "img"; }
  // The training-set indices of step `step`'s whole batch (load_batch copies its rank's share).
  std::vector<std::int32_t> batch_indices(std::int64_t step);
  int data_parallel_ranks() const override { return config_.data_parallel.ranks; }
  std::map<std::string, std::string> config() const override;

  const ImageClassifierConfig& settings() const { return config_; }

  struct Evaluation {
    double loss = 0;      // mean cross-entropy (nats), α_loss-softmax included
    double accuracy = 0;  // fraction of argmax hits
  };
  // Of `trained`'s parameters on images [N, pixels] with labels [N].
  Evaluation evaluate_on(const Executor& trained, const Tensor& images, const Tensor& labels);

 private:
  const std::vector<std::int32_t>& epoch_order(std::int64_t epoch);

  ImageClassifierConfig config_;
  const ImageClassificationData& data_;
  std::int64_t pixels_ = 0;
  std::unique_ptr<Parametrization> parametrization_;
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<MlpClassifier> classifier_;
  Value images_, labels_, loss_;
  OptimizerStep optimizer_;
  std::string precision_report_;
  std::unique_ptr<ScaledGraph> scaled_;  // the scale propagation recipes only
  Tensor images_buffer_, labels_buffer_;
  Value eval_images_, eval_logits_;
  Tensor eval_images_buffer_;
  std::unique_ptr<Executor> eval_executor_;
  std::int64_t cached_epoch_ = -1;
  std::vector<std::int32_t> order_;
};

}  // namespace unitscale

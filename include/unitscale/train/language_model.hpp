#pragma once
// LanguageModelTask: a byte-level decoder trained on a text corpus, as a TrainingTask. It builds
// the model M(d, L) of docs/results.md (vocab 256, untied embedding and readout, pre-norm RMSNorm
// without affine, causal NoPE attention with head dim 32, SwiGLU ×2, no biases) under any of SP,
// μP and u-μP, records its AdamW step, samples training windows from (seed, step), evaluates on
// every validation window, and generates text from the trained parameters.
//
//   const TextCorpus corpus = load_text_corpus(kFortunesDirectory);
//   LanguageModelTask task({.scheme = Scheme::kUMuP, .width = 128, .steps = 1000}, corpus);
//   Trainer trainer(task, {.steps = 1000});
//   trainer.run();
//   std::puts(task.generate(trainer.executor(), "Q: ", {.max_bytes = 200}).c_str());

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/nn/hyperparameters.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/tensor/tensor.hpp"
#include "unitscale/train/precision.hpp"
#include "unitscale/train/trainer.hpp"

namespace unitscale {

// The decoder M(d, L) for `scheme`. SP and μP scale attention logits by q·kᵀ/√d_head. μP's own
// rule is 1/d_head (TP-V), which only matters when d_head grows with the width; here d_head is
// fixed and the number of heads grows, so 1/√d_head is a width-independent constant and keeps μP
// identical to SP at the base width. u-μP keeps its parametrization's scale, which its
// unit-scaled attention op is built around.
DecoderConfig byte_decoder_config(Scheme scheme, std::int64_t width, int depth,
                                  std::int64_t head_dim = 32,
                                  const UmupHyperparameters& hyperparameters = {});

struct LanguageModelConfig {
  Scheme scheme = Scheme::kUMuP;
  std::int64_t width = 128;
  int depth = 2;
  std::int64_t head_dim = 32;  // heads = width / head_dim
  std::int64_t mup_base_width = 64;  // μP's base shapes (the other schemes ignore it)
  UmupHyperparameters hyperparameters = {};
  std::int64_t sequence_length = 64;  // S: each window is S + 1 bytes
  std::int64_t batch = 16;  // the global batch: each data-parallel rank trains on batch / ranks
  std::uint64_t seed = 0;  // parameters and training windows
  // AdamW, β = (0.9, 0.95), ε = 1e-8, no weight decay, `warmup` steps of linear warmup and a
  // cosine decay to 0 at `steps` (or a constant LR). lr is η: u-μP's optimum is of order 1, SP's and μP's of 2^-8.
  double lr = 1.0;
  std::int64_t steps = 1000;
  std::int64_t warmup = 100;
  bool cosine_decay = true;  // false: constant after the warmup
  double weight_decay = 0.0;
  double max_grad_norm = 0.0;  // 0: no clipping
  // FP8 / FP16 / BF16 training and loss scaling (train/precision.hpp).
  PrecisionConfig precision = {};
  // Data-parallel training on several ranks (train/trainer.hpp, docs/distributed.md). Not part of
  // config(): a run resumes on any number of ranks.
  DataParallelConfig data_parallel = {};
};


// The learning rate LanguageModelConfig should use for `scheme` when the user gives none: near
// each scheme's optimum for this model (docs/results.md): 1 for u-μP, 2^-8 for SP and μP.
double default_learning_rate(Scheme scheme);

struct GenerationOptions {
  std::int64_t max_bytes = 200;
  double temperature = 0.8;  // 0: greedy
  std::int64_t top_k = 40;   // 0: the whole vocabulary
  std::uint64_t seed = 0;
};

class LanguageModelTask final : public TrainingTask {
 public:
  // `corpus` must outlive the task (the window samplers read its streams). Throws
  // unitscale::Error naming the bad setting (width not a multiple of head_dim, a corpus split
  // shorter than one window, ...).
  LanguageModelTask(const LanguageModelConfig& config, const TextCorpus& corpus);
  ~LanguageModelTask() override;

  Model& model() override { return *model_; }
  std::string precision_report() const override { return precision_report_; }
  const ScaledGraph* scaled_graph() const override { return scaled_.get(); }
  Value loss() const override { return loss_; }
  const OptimizerStep& optimizer() const override { return optimizer_; }
  void bind_inputs(Executor& executor) override;
  void load_batch(std::int64_t step) override;
  std::optional<double> evaluate(const Executor& trained) override;
  std::int64_t items_per_step() const override { return config_.batch * config_.sequence_length; }
  int data_parallel_ranks() const override { return config_.data_parallel.ranks; }
  std::map<std::string, std::string> config() const override;

  const LanguageModelConfig& settings() const { return config_; }
  const Parametrization& parametrization() const { return *parametrization_; }
  // The per-parameter effective learning rates, as the optimizer logged them.
  const std::string& learning_rate_table() const { return optimizer_.learning_rate_table; }
  std::int64_t validation_windows() const;

  // Mean cross-entropy (nats/byte) of `trained`'s parameters over every validation window, in
  // double precision; the same quantity as the training loss, α_loss-softmax included.
  double validation_loss(const Executor& trained);
  // Continues `prompt` by sampling from the model: the context is the last S bytes (a causal NoPE
  // model reads a shorter context as the start of a window).
  std::string generate(const Executor& trained, std::string_view prompt,
                       const GenerationOptions& options = {});

 private:
  // A forward-only executor over one of the extra forwards, with `trained`'s parameters loaded.
  Executor& forward_executor(std::unique_ptr<Executor>& executor, Value logits, Value ids,
                             const Tensor& ids_buffer, const Executor& trained);

  LanguageModelConfig config_;
  const TextCorpus& corpus_;
  std::unique_ptr<Parametrization> parametrization_;
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<TransformerDecoder> decoder_;
  std::unique_ptr<TextWindowSampler> train_windows_;
  std::unique_ptr<SequentialWindows> validation_windows_;
  Value ids_, targets_, loss_;
  OptimizerStep optimizer_;
  std::string precision_report_;
  std::unique_ptr<ScaledGraph> scaled_;  // the scale propagation recipes only
  Tensor ids_buffer_, targets_buffer_;
  // Evaluation ([batch, S]) and generation ([1, S]) forwards, recorded beside the training step.
  Value eval_ids_, eval_logits_, generate_ids_, generate_logits_;
  Tensor eval_ids_buffer_, generate_ids_buffer_;
  std::unique_ptr<Executor> eval_executor_, generate_executor_;
};

}  // namespace unitscale

#pragma once
// MlpClassifier: a plain feed-forward classifier (no residuals), e.g. the Fashion-MNIST MLP
// 784-512-512-10:
//
//   x [B, inputs] → Linear(inputs → h₀, role input) → act → Linear(h₀ → h₁) → act → …
//                 → LinearReadout(h_last → classes) → logits [B, classes]
//   loss = cross_entropy(logits, labels, mult = α_loss-softmax), mean over the batch
//
// act is gelu with mult α_ffn-act (gelu(m·x)/m), or relu (which has no unit-scaling rule and so
// runs unscaled in every graph: its output std is √((1−1/π)/2) ≈ 0.58 for unit inputs).
//
// Parameters: "layers.{i}.weight" (i = 0 the input layer, role input; the rest hidden weights),
// "layers.{i}.bias" with bias, "readout.weight" ("readout.bias"). No parameter has a depth.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/nn/hyperparameters.hpp"
#include "unitscale/nn/layers.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"

namespace unitscale {

enum class ClassifierActivation { kGelu, kRelu };

struct MlpClassifierConfig {
  std::int64_t inputs = 0;
  std::vector<std::int64_t> hidden = {};  // at least one hidden width
  std::int64_t classes = 0;
  ClassifierActivation activation = ClassifierActivation::kGelu;
  bool bias = false;
  UmupHyperparameters hyperparameters = {};
};

class MlpClassifier {
 public:
  // Throws unitscale::Error naming the classifier for no hidden layer, a size below 1 or a
  // hyperparameter that is not finite and positive.
  MlpClassifier(Model& model, std::string_view name, const MlpClassifierConfig& config);

  Value logits(Value x) const;               // x [B, inputs] → [B, classes]
  Value loss(Value x, Value labels) const;   // labels [B], i32 class ids

  const MlpClassifierConfig& config() const { return config_; }
  const std::vector<Linear>& layers() const { return layers_; }
  const LinearReadout& readout() const { return readout_; }

  // μP: base shapes from the classifier with config `base` (the same inputs, classes and number
  // of hidden layers; other hidden widths). A no-op for the other schemes' rules.
  static void set_base_shapes(Parametrization& parametrization, const MlpClassifierConfig& base);

 private:
  std::string name_;
  MlpClassifierConfig config_;
  std::vector<Linear> layers_;
  LinearReadout readout_;
};

}  // namespace unitscale

#pragma once
// The basic modules: Linear, LinearReadout, Embedding, LayerNorm and RmsNorm. Each constructor
// records its parameters through a Model, with the ParameterInfo its parametrization needs (role,
// fan-in and fan-out, width dims, depth); each call records the nodes of one use, so a module may
// be applied several times (the uses share the parameters).
//
//   Graph graph(parametrization.op_scaling());
//   Model model(graph, parametrization);
//   Embedding embed(model, "embedding", {.vocab = 256, .width = 64});
//   Linear up(model, "up", {.in = 64, .out = 128, .depth = 0});
//   LinearReadout readout(model, "readout", {.in = 128, .out = 256});
//   Value logits = readout(up(embed(ids)));
//
// Multipliers. In a unit-scaled graph (u-μP) each op's unit scale is the parameter's multiplier
// (linear α = 1/√fan_in, linear_readout α = 1/fan_in with backward 1/√fan_out: arXiv 2407.17465
// §4); in an unscaled graph (SP, μP) the ops run with α = β = 1 and the rule's multiplier (μP's
// α_emb, α_out/m_w) is recorded after the op by apply_multiplier (nn/model.hpp).
//
// Parameter metadata (docs/umup.md, "Parameter roles"):
//   module          parameter         shape       role             fan_in, fan_out  width dims
//   Linear          weight            [out, in]   weight or input  in, out          {0, 1} / {0}
//                   bias              [out]       bias             in, out          {0}
//   LinearReadout   weight            [out, in]   output           in, out          {1}
//                   bias              [out]       bias             in, out          {}
//   Embedding       weight            [V, d]      embedding        V, d             {1}
//   LayerNorm       weight, bias      [d]         norm, bias       d, d             {0}
//   RmsNorm         weight            [d]         norm             d, d             {0}
// depth (the 0-based residual block) comes from the config; a module outside the residual stack
// leaves it unset.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/graph/parameter_info.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/normalization.hpp"

namespace unitscale {

// "prefix.leaf", or "leaf" for an empty prefix: how modules name their parameters.
std::string nested_name(std::string_view prefix, std::string_view leaf);

struct LinearConfig {
  std::int64_t in = 0;
  std::int64_t out = 0;
  bool bias = false;
  // kWeight (a hidden weight, both dims grow with width) or kInput (reads data of a fixed size).
  ParameterRole role = ParameterRole::kWeight;
  std::optional<int> depth = {};
  // The op's constraint over (α, β_x) in unit-scaled graphs; kToOutputScale is the safe default
  // on the residual trunk, kNone only where the ratios cancel or the edge is cut (arXiv 2303.11257
  // §5.1).
  Constraint constraint = Constraint::kToOutputScale;
};

// y = m·(x·Wᵀ + b), x [..., in], y [..., out].
class Linear {
 public:
  // Records "<name>.weight" (and "<name>.bias"). Throws unitscale::Error naming the module for a
  // size below 1 or a role other than kWeight / kInput.
  Linear(Model& model, std::string_view name, const LinearConfig& config);

  // Throws unitscale::Error naming the module if x is not [..., in] or not of the model's graph.
  Value operator()(Value x) const;

  const LinearConfig& config() const { return config_; }
  const std::string& name() const { return name_; }
  Value weight() const { return weight_; }
  Value bias() const { return bias_; }  // absent without a bias
  const ParameterRule& weight_rule() const { return model_->rule(weight_); }

 private:
  Model* model_;
  std::string name_;
  LinearConfig config_;
  Value weight_;
  Value bias_;
};

struct LinearReadoutConfig {
  std::int64_t in = 0;   // the model width
  std::int64_t out = 0;  // a fixed size: vocabulary or classes
  bool bias = false;
  // The op's constraint in unit-scaled graphs. Unset: the one the parametrization's LR rules
  // assume (ParametrizationOptions::sgd_readout): kNone by default, since the readout sits after
  // the last residual merge, a cut edge; kToOutputScale when the policy's SGD factors are
  // TP-V's MuSGD ones.
  std::optional<Constraint> constraint = {};
};

// The output layer: linear_readout (α = 1/fan_in in unit-scaled graphs, μP's α_out/m_w otherwise).
class LinearReadout {
 public:
  LinearReadout(Model& model, std::string_view name, const LinearReadoutConfig& config);
  Value operator()(Value x) const;

  const LinearReadoutConfig& config() const { return config_; }
  const std::string& name() const { return name_; }
  Value weight() const { return weight_; }
  Value bias() const { return bias_; }
  const ParameterRule& weight_rule() const { return model_->rule(weight_); }

 private:
  Model* model_;
  std::string name_;
  LinearReadoutConfig config_;
  Value weight_;
  Value bias_;
};

struct EmbeddingConfig {
  std::int64_t vocab = 0;
  std::int64_t width = 0;
};

// A table lookup: ids [...] (i32) → [..., width].
class Embedding {
 public:
  Embedding(Model& model, std::string_view name, const EmbeddingConfig& config);
  // Throws unitscale::Error naming the module if ids are not i32 or not of the model's graph.
  Value operator()(Value ids) const;

  const EmbeddingConfig& config() const { return config_; }
  const std::string& name() const { return name_; }
  Value weight() const { return weight_; }

 private:
  Model* model_;
  std::string name_;
  EmbeddingConfig config_;
  Value weight_;
};

struct NormConfig {
  std::int64_t width = 0;
  // Off by default, the u-μP design default (arXiv 2407.17465): a gain only rescales what the
  // next unit-scaled op normalises anyway.
  bool affine = false;
  double eps = kDefaultNormEps;
  std::optional<int> depth = {};
};

// Normalisation over the last dim; with affine, a gain "<name>.weight" (role norm) and, for
// LayerNorm, a shift "<name>.bias" (role bias).
class LayerNorm {
 public:
  LayerNorm(Model& model, std::string_view name, const NormConfig& config);
  Value operator()(Value x) const;

  const NormConfig& config() const { return config_; }
  Value weight() const { return weight_; }
  Value bias() const { return bias_; }

 private:
  Model* model_;
  std::string name_;
  NormConfig config_;
  Value weight_;
  Value bias_;
};

class RmsNorm {
 public:
  RmsNorm(Model& model, std::string_view name, const NormConfig& config);
  Value operator()(Value x) const;

  const NormConfig& config() const { return config_; }
  Value weight() const { return weight_; }

 private:
  Model* model_;
  std::string name_;
  NormConfig config_;
  Value weight_;
};

namespace detail {
// Throws unitscale::Error naming `module` unless x belongs to the model's graph and its last dim
// is `width`.
void check_module_input(const Model& model, std::string_view module, Value x, std::int64_t width);
// Throws unitscale::Error naming `module` and `what` unless size ≥ 1.
void check_positive_size(std::string_view module, std::string_view what, std::int64_t size);
}  // namespace detail

}  // namespace unitscale

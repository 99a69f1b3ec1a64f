#pragma once
// The pre-norm transformer layer and the decoder-only language model built from it, the u-μP
// reference model (arXiv 2407.17465; docs/umup.md):
//
//   TransformerLayer i (of L), τ_a = τ_{2i}, τ_m = τ_{2i+1} from transformer_residual_scaling_rule
//     (b, s) = residual_split(x, τ_a);  x = residual_add(attn(norm(b)), s, τ_a)
//     (b, s) = residual_split(x, τ_m);  x = residual_add(mlp(norm(b)), s, τ_m)
//   In a unit-scaled graph each block is (τ·f(x) + x)/√(1+τ²); in an unscaled one (SP, μP) it is
//   the plain x + f(x), and τ has no effect.
//
//   TransformerDecoder
//     ids [B, S] (i32) → Embedding → L layers → final norm → LinearReadout → logits [B, S, V]
//     loss = cross_entropy(logits, targets, mult = α_loss-softmax), mean over the B·S tokens
//
// Parameter names (prefix "" for the decoder): "embedding.weight",
// "layers.{i}.attn.qkv.weight", "layers.{i}.attn.out.weight", "layers.{i}.mlp.up.weight",
// "layers.{i}.mlp.gate.weight" (SwiGLU), "layers.{i}.mlp.down.weight", with an affine norm
// "layers.{i}.attn_norm.weight", "layers.{i}.mlp_norm.weight", "final_norm.weight" (and ".bias"
// for LayerNorm), and "readout.weight". Everything inside layer i has depth i.
//
// All six u-μP hyperparameters reach the ops: α_ffn-act (silu_glu / gelu mult), α_attn-softmax
// (attention mult), α_res and α_res-attn-ratio (the τ rule), α_loss-softmax (cross_entropy mult);
// η is the optimizer's.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "unitscale/nn/attention.hpp"
#include "unitscale/nn/hyperparameters.hpp"
#include "unitscale/nn/layers.hpp"
#include "unitscale/nn/mlp.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"

namespace unitscale {

enum class MlpKind { kSwiGlu, kGelu };
enum class NormKind { kRms, kLayer };

// The intermediate values of one TransformerLayer call, for diagnostics such as the μP coord check
// (arXiv 2203.03466; experiment E1 in docs/results.md): each branch's output before the
// residual combine, and the residual stream after the layer. A module used twice is traced per
// call, so a caller that reuses a layer gets one trace per use.
struct LayerTrace {
  Value attention_branch;  // attn(norm(x)), [B, S, width]
  Value mlp_branch;        // mlp(norm(x')), [B, S, width]
  Value output;            // the layer's output (the residual stream), [B, S, width]
};

// The intermediate values of one TransformerDecoder call: the embedding output, per layer the two
// branch outputs (before the residual combine) and the residual stream after the layer, and the
// logits. Recording a trace adds no node: it only names values the forward pass already has, so
// requesting them from an Executor is all it costs.
struct DecoderTrace {
  Value embedding;                      // [B, S, width]
  std::vector<Value> attention_branch;  // one per layer
  std::vector<Value> mlp_branch;        // one per layer
  std::vector<Value> residual;          // one per layer: the stream after layer i
  Value logits;                         // [B, S, vocab]
};

struct TransformerLayerConfig {
  std::int64_t width = 0;
  std::int64_t heads = 1;
  std::int64_t mlp_expansion = 2;
  MlpKind mlp = MlpKind::kSwiGlu;
  NormKind norm = NormKind::kRms;
  bool norm_affine = false;
  double norm_eps = kDefaultNormEps;
  std::optional<double> attention_logit_scale = {};  // unset: the parametrization's
  UmupHyperparameters hyperparameters = {};
  // This layer's 0-based index i (its parameters' depth) in a stack of `layers` = L; τ_{2i} and
  // τ_{2i+1} of the τ rule for L layers are its residual weights.
  int index = 0;
  int layers = 1;
};

class TransformerLayer {
 public:
  // Throws unitscale::Error naming the layer for a bad size or hyperparameter, an index outside
  // [0, layers), or (u-μP) a parametrization whose residual_blocks is not `layers`.
  TransformerLayer(Model& model, std::string_view name, const TransformerLayerConfig& config);

  // x [B, S, width] → [B, S, width]. With `trace`, its fields are set to this call's values.
  Value operator()(Value x, LayerTrace* trace = nullptr) const;

  const TransformerLayerConfig& config() const { return config_; }
  double tau_attention() const { return tau_attention_; }
  double tau_mlp() const { return tau_mlp_; }
  const MultiHeadSelfAttention& attention() const { return attention_; }

 private:
  using Norm = std::variant<RmsNorm, LayerNorm>;
  using Mlp = std::variant<SwiGluMlp, GeluMlp>;
  static Norm make_norm(Model& model, const std::string& name, const TransformerLayerConfig& c,
                        std::optional<int> depth);
  static Mlp make_mlp(Model& model, const std::string& name, const TransformerLayerConfig& c);

  std::string name_;
  TransformerLayerConfig config_;
  double tau_attention_;
  double tau_mlp_;
  Norm attention_norm_;
  MultiHeadSelfAttention attention_;
  Norm mlp_norm_;
  Mlp mlp_;
};

struct DecoderConfig {
  std::int64_t vocab = 256;
  std::int64_t width = 128;
  int depth = 2;  // L, the number of transformer layers
  std::int64_t heads = 4;
  std::int64_t mlp_expansion = 2;
  MlpKind mlp = MlpKind::kSwiGlu;
  NormKind norm = NormKind::kRms;
  bool norm_affine = false;
  double norm_eps = kDefaultNormEps;
  std::optional<double> attention_logit_scale = {};
  UmupHyperparameters hyperparameters = {};
};

class TransformerDecoder {
 public:
  // Throws unitscale::Error naming the decoder for a bad config, and for u-μP when the
  // parametrization's residual_blocks is not config.depth (its depth factor D = L^-½ counts the
  // model's blocks).
  TransformerDecoder(Model& model, std::string_view name, const DecoderConfig& config);

  // ids [B, S] (i32) → logits [B, S, vocab]. With `trace`, it is overwritten with this call's
  // intermediate values (the graph is the same with or without it).
  Value logits(Value ids, DecoderTrace* trace = nullptr) const;
  // Mean cross-entropy of logits(ids) against targets [B, S] or flat [B·S] (i32), with mult
  // α_loss-softmax. `trace` as for logits().
  Value loss(Value ids, Value targets, DecoderTrace* trace = nullptr) const;

  const DecoderConfig& config() const { return config_; }
  const std::vector<TransformerLayer>& layers() const { return layers_; }

  // μP: the base shape of every parameter from the decoder with config `base` (the same depth,
  // another width). A no-op for the other schemes' rules.
  static void set_base_shapes(Parametrization& parametrization, const DecoderConfig& base);

 private:
  std::string name_;
  DecoderConfig config_;
  Embedding embedding_;
  std::vector<TransformerLayer> layers_;
  std::variant<RmsNorm, LayerNorm> final_norm_;
  LinearReadout readout_;
};

}  // namespace unitscale

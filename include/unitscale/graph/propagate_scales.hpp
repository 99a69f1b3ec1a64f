#pragma once
// propagate_scales: Scalify's transform (Balança et al., arXiv 2407.17353). It rewrites a graph,
// forward, backward and optimizer update alike, so that every floating value the graph computes is
// scaled, data · scale, with the data stored in a narrow format (FP16 by default, FP8 for the
// matmuls' operands on request) and the scale computed at run time by the op's scale rule
// (ops/scale_rules.hpp) from the scales its inputs have in that run.
//
//   Graph graph;  ... Value loss = ...;  auto grads = autodiff(graph, loss, {w});
//   ScaledGraph scaled = propagate_scales(graph, {loss, grads[0]}, ScalePolicy::fp16());
//   Executor exec(graph, scaled.outputs());
//   ... exec.run();  float l = exec.get(scaled.output(loss)).data()[0];
//
// What changes. Every node of op X becomes, in place, a node of scaled_of(X) (graph/scaled_op.hpp)
// reading its inputs' data and scales: each value keeps its id, a node output now holding its data
// (in its storage format) and gaining a scale value beside it (ScaledGraph::scale); inputs,
// parameters, constants and states stay as they are (plain: scale 1, their own dtype), except the
// optimizer moments (and the parameters, if the policy says so). The requested outputs are
// materialised back to their own dtype (materialize nodes): ask ScaledGraph for them.
//
// Optimizer state and parameters. The moments an update op overwrites in place beside a trained
// parameter (Adam's m and v, SGD's momentum buffer) become scaled states, as in Scalify's FP16
// Adam: the state value keeps its id and name but stores `optimizer_state` data (FP16 by default:
// half of fp32's bytes), and a new scalar state "<name>.scale" (ScaledGraph::scale_states) holds
// its scale. The update decodes the moments to fp32, updates them, and stores them rescaled so
// that their largest magnitude sits in FP16's top binade (measured in the update's epilogue), so
// v ≈ g² of 1e-12 keeps 11 significant bits where plain FP16 would flush it to zero, and v keeps
// 2^38 of range below its largest value. The parameters stay fp32 master weights unless
// `parameters` says otherwise: then they are stored the same way (FP16 data and a scale state, or
// plain FP16 data; rescaled to an rms in [1, 2), as the ops that read them assume), and an update
// smaller than half a unit in the last place of a weight is lost, as it is in any FP16 master
// weight. Load such states, and read them back as
// fp32, with ScaledGraph::load_state and read_state.
//
// Matmuls. The operands of the GEMM ops (OpDef::rounds_gemm_inputs: linear, linear_readout,
// matmul; the bias excepted) are cast to `matmul_inputs`, keeping their scales, and the output
// gradient their backward reads to `matmul_gradients`: the FP8 recipe of the papers, E4M3 operands
// and E5M2 gradients, with the scales keeping the data where the formats are accurate. The
// backward reads the same cast operands as the forward.
//
// Every op must have a scale rule: the pass throws unitscale::Error, changing nothing, naming each
// op that has none.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {

// Where the matmuls' FP8 operands and gradients get their scales.
enum class MatmulScaling : std::uint8_t {
  // Scalify: the rules' propagated scales, which keep the data near 1.
  kPropagated,
  // Current amax scaling (as in TransformerEngine's and FP8-LM's recipes): each cast first
  // rescales its input from its own max |x|, so that the max lands just below the format's largest
  // value (2^-amax_margin of it): in [max/2, max) under p2 down. Such data is far from 1, so the
  // GEMMs' output scales are measured on their outputs (a dynamic L2 rescale) instead of ruled.
  // Costs a pass over each operand and each GEMM output.
  kCurrentAmax,
  // Delayed scaling (TransformerEngine's DelayedScaling): as current amax, but each cast's scale
  // comes from an amax history of the earlier steps (ops/delayed_rescale.hpp; a state
  // "amax_history.<k>" of amax_history_length entries per cast, ScaledGraph::amax_histories), so
  // no pass over the operand has to finish before it is cast; a value that grew since saturates.
  kDelayedAmax,
};
// "propagated", "current_amax", "delayed_amax"
std::string_view matmul_scaling_name(MatmulScaling scaling);

struct ScalePolicy {
  // The storage of every scaled value the graph computes (f32, f16, bf16 or an FP8 format).
  DType values = DType::kF16;
  // false: the values are stored in their formats with no scale at all (scale 1, every rule and
  // rescale ignored), the plain FP16 or FP8 control that scale propagation is measured against.
  bool scaled_values = true;
  // The storage of the GEMM ops' operands and of the output gradient their backward reads.
  DType matmul_inputs = DType::kF16;
  DType matmul_gradients = DType::kF16;
  MatmulScaling matmul_scaling = MatmulScaling::kPropagated;
  // The storage of attention's GEMM operands (q, k, v and its output's gradient), apart from the
  // other GEMMs': the FP8 recipes keep attention in 16 bits (arXiv 2407.17465 §4.4 casts the
  // linear layers alone), and in BF16 all of its GEMMs run on the BF16 units as they are.
  DType attention_inputs = DType::kF16;
  // Inside attention, the probabilities and their gradient as operands of the GEMMs with v, the
  // output gradient, k and q: f32, or bf16 so that with BF16 or FP8 operands those GEMMs too run
  // on the BF16 units (AttentionConfig::probabilities).
  DType attention_probabilities = DType::kF32;
  // kCurrentAmax and kDelayedAmax: headroom, in powers of two below the format's largest value
  int amax_margin = 0;
  // kDelayedAmax: the steps each history keeps (≥ 1), and which of them sets the scale.
  int amax_history_length = 16;
  AmaxAlgorithm amax_algorithm = AmaxAlgorithm::kMax;
  // Casts each weight (a state GEMM operand with a propagated scale) again for its backward GEMM,
  // the same bits from the same state, rather than keeping the forward's copy: the copy then lives
  // for one GEMM instead of from the forward pass to the backward's (40 of the 257 MiB of a
  // width-1024 decoder's arena), for one more cast of every weight per step (about 1% of it).
  bool recast_weights_for_backward = false;
  // Where set, the forward values a backward op saves (reads after the forward pass) are kept for
  // it in this format, beside their own storage for the forward readers, where that op tolerates
  // it (OpDef::backward_tolerates_8_bit_saves: norms, activations; a GEMM's saved operands have
  // matmul_inputs storage already). The copy is made as soon as the value is, so the value itself
  // is freed after its forward readers: of a decoder's saved activations, the residual stream's
  // norm inputs and the gated activations' inputs then take 1 byte an element instead of 2 (COAT,
  // arXiv 2410.19313, keeps such activations in FP8 likewise).
  std::optional<DType> saved_activations = std::nullopt;
  // The storage of the optimizer moments (Adam's m and v, SGD's momentum buffer): f32 keeps them
  // plain; a narrower format stores them scaled, rescaled after every update (or, without
  // scaled_optimizer_state, plain in that format: the control that shows why the scale is there).
  DType optimizer_state = DType::kF16;
  bool scaled_optimizer_state = true;
  // Where set, the first moments (Adam's m, SGD's momentum buffer; OpDef::first_moments) are
  // stored in this format instead, scaled as the others are: FP8-LM (arXiv 2310.18313) keeps
  // Adam's m in FP8 and v in FP16, v's square range needing FP16's. A first moment too small for
  // the format flushes to 0, which stops that coordinate's update rather than blowing it up.
  std::optional<DType> first_moment = std::nullopt;
  // The storage of the trained parameters an update op overwrites: f32 keeps fp32 master weights;
  // a narrower format stores them as the moments are, scaled unless scaled_parameters is false.
  DType parameters = DType::kF32;
  bool scaled_parameters = true;
  // How the rules' scales become powers of two (Scalify's p2; kNone keeps them as they are).
  Pow2Rounding rounding = Pow2Rounding::kDown;
  // A value too large for its storage: ±Inf (non_finite, as real FP16 storage does) or clamped.
  Overflow overflow = Overflow::kNonFinite;

  // FP16 everywhere; FP16 values with E4M3 matmul operands, E5M2 matmul gradients and attention
  // in BF16 (its operands and probabilities).
  static ScalePolicy fp16();
  static ScalePolicy fp8();
  // "values f16, matmul inputs e4m3fn, matmul gradients e5m2 (propagated scales), ..." (a plain
  // storage is named so: "optimizer state f16 (plain)")
  std::string to_string() const;
};

// The rewritten graph's map from the original values.
class ScaledGraph {
 public:
  ScaledGraph() = default;
  ScaledGraph(Graph& graph, int original_values, std::vector<int> scale,
              std::vector<std::pair<int, int>> outputs, std::vector<Value> scale_states,
              std::vector<Value> amax_histories, Pow2Rounding rounding, int scaled_nodes,
              int casts);

  // The data and scale of an original value (the data is the value itself, with its storage
  // dtype; the scale is absent for a plain value).
  Value data(Value original) const;
  Value scale(Value original) const;
  // A requested output, as fp32: its materialised value (or itself when it stayed plain). An
  // output that updates a state in place is its state's data as stored (FP16 for a moment), not
  // materialised: it is requested to make the update run, and an fp32 copy of every moment would
  // undo the memory FP16 moments save.
  Value output(Value original) const;
  // Every requested output, in the order they were requested: what an executor should compute.
  std::vector<Value> outputs() const;

  // The scale states the pass added for the optimizer moments, one per moment (a scalar named
  // "<moment>.scale"). Checkpoint them with the moments, whose data they scale: a moment's data
  // without its scale means nothing.
  std::span<const Value> scale_states() const { return scale_states_; }
  // Under delayed scaling, the amax history of each cast (a state [amax_history_length]): also to
  // checkpoint, for a resumed run to scale as the uninterrupted one.
  std::span<const Value> amax_histories() const { return amax_histories_; }

  // Loads fp32 `values` into a state of the original graph (a parameter, a moment, any state) as
  // the scaled graph stores it: a scaled state gets the scale its updates would give it (a
  // parameter its rms rounded to a power of two as the policy rounds, a moment the scale of its
  // largest magnitude; the static zero for all zeros) and the data
  // values / scale; a plain one its values converted to its format (nearest even, ±Inf beyond
  // it). Throws, naming the state, if it is not one the executor holds or the shape differs.
  void load_state(Executor& executor, Value original, ConstTensorView values) const;
  // A state's values as fp32, data · scale: for evaluation, checkpoints and inspection.
  Tensor read_state(const Executor& executor, Value original) const;

  int scaled_nodes() const { return scaled_nodes_; }
  int casts() const { return casts_; }  // matmul operand and gradient casts inserted

 private:
  int checked(Value original, std::string_view what) const;
  Graph* graph_ = nullptr;
  int original_values_ = 0;                   // the values the graph had before the pass
  std::vector<int> scale_;                    // per original value id: the scale's id (-1: plain)
  std::vector<std::pair<int, int>> outputs_;  // (original id, fp32 output id)
  std::vector<Value> scale_states_;
  std::vector<Value> amax_histories_;
  Pow2Rounding rounding_ = Pow2Rounding::kDown;
  int scaled_nodes_ = 0;
  int casts_ = 0;
};

ScaledGraph propagate_scales(Graph& graph, std::span<const Value> outputs,
                             const ScalePolicy& policy = {});

}  // namespace unitscale

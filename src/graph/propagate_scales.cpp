#include "unitscale/graph/propagate_scales.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "unitscale/error.hpp"
#include "unitscale/graph/scaled_op.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/delayed_rescale.hpp"
#include "unitscale/ops/dynamic_rescale.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {
namespace {

constexpr std::string_view kPass = "propagate_scales";

void check_storage(DType format, std::string_view what) {
  if (!is_floating(format) || format == DType::kE8M0FNU) {
    throw Error(
        fmt::format("{}: {} must be a floating format with a sign (f32, f16, bf16 or an "
                    "8-bit float), got {}",
                    kPass, what, dtype_name(format)));
  }
}

// The backward op derived from a GEMM op, whose forward operands and output gradient get cast.
const OpDef* gemm_op_differentiated_by(const OpDef& op) {
  if (op.derived_from == nullptr || !op.derived_from->rounds_gemm_inputs) return nullptr;
  return &backward_of(*op.derived_from) == &op ? op.derived_from : nullptr;
}

// Whether `op` is the backward op of an op whose backward tolerates 8-bit copies of the values it
// saves (OpDef::backward_tolerates_8_bit_saves).
bool backward_tolerating_8_bit_saves(const OpDef& op) {
  return op.derived_from != nullptr && op.derived_from->backward_tolerates_8_bit_saves &&
         &backward_of(*op.derived_from) == &op;
}

// The cast that keeps a forward value in ScalePolicy::saved_activations for the backward ops that
// read it: the scaled cast, run as soon as its input is ready (OpDef::runs_early), so that the
// value it copies is freed after its forward readers. As a plain cast node it would be appended
// after every node of the graph and, taken in index order, run only when the backward asks for
// it, keeping both the value and its copy through the forward pass.
const OpDef& saving_cast_op() {
  static const OpDef op = [] {
    OpDef saving = scaled_of(kCastOp);
    saving.name = "save_for_backward";
    saving.runs_early = true;
    return saving;
  }();
  return op;
}

// Refuses, before changing anything, a graph the pass cannot rewrite.
void check_graph(const Graph& graph, std::span<const int> order) {
  std::set<std::string> missing;
  for (const int index : order) {
    const OpDef& op = *graph.nodes()[static_cast<std::size_t>(index)].op;
    if (is_scaled_op(op)) {
      throw Error(
          fmt::format("{}: the graph is scaled already (node {} is {})", kPass, index, op.name));
    }
    if (op.scale_propagation == nullptr && !op.runs_on_scaled_data) {
      missing.insert(std::string(op.name));
    }
  }
  if (!missing.empty()) {
    throw Error(fmt::format("{}: no scale rule for op{} {}", kPass, missing.size() > 1 ? "s" : "",
                            fmt::join(missing, ", ")));
  }
}

class Rewriter {
 public:
  Rewriter(Graph& graph, const ScalePolicy& policy)
      : graph_(graph),
        policy_(policy),
        original_values_(graph.value_count()),
        scale_(static_cast<std::size_t>(graph.value_count()), -1) {
    for (int id = 0; id < original_values_; ++id) original_dtypes_.push_back(graph.info(id).dtype);
  }

  // Makes node `index` its scaled op's node in place: its output values keep their ids and become
  // the data, its inputs gain their scales (and casts, for GEMM operands), and it gains the
  // outputs' scales. The nodes it reads from are rewritten already (execution order).
  void rewrite(int index) {
    // By value: recording casts may grow the node table.
    const OpDef& op = *graph_.nodes()[static_cast<std::size_t>(index)].op;
    const std::vector<int> node_inputs = graph_.nodes()[static_cast<std::size_t>(index)].inputs;
    const std::size_t n = node_inputs.size();
    const OpDef* gemm_forward = op.rounds_gemm_inputs ? &op : nullptr;
    const OpDef* gemm_backward = gemm_op_differentiated_by(op);
    // Attention's operands have their own storage, outside the matmul recipe: 16-bit, with the
    // rules' scales (amax scaling is for the FP8 casts; a BF16 operand rescaled to near its
    // largest value would overflow the products).
    const OpDef* gemm = gemm_forward != nullptr ? gemm_forward : gemm_backward;
    const bool attention = gemm != nullptr && gemm->attention_gemms;
    const bool saves_in_8_bits =
        policy_.saved_activations.has_value() && backward_tolerating_8_bit_saves(op);
    std::vector<Value> inputs(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      const int id = node_inputs[i];
      if (id < 0) continue;
      DType cast_to = DType::kF32;  // none
      if (gemm_forward != nullptr && is_operand(*gemm_forward, i)) cast_to = policy_.matmul_inputs;
      if (gemm_backward != nullptr) {
        const std::size_t forward_inputs = gemm_backward->inputs.size();
        if (i < forward_inputs && is_operand(*gemm_backward, i)) cast_to = policy_.matmul_inputs;
        if (i == forward_inputs + gemm_backward->outputs.size()) cast_to = policy_.matmul_gradients;
      }
      if (attention && cast_to != DType::kF32) cast_to = policy_.attention_inputs;
      if (cast_to == DType::kF32 && saves_in_8_bits && is_saved_activation(id)) {
        std::tie(inputs[i], inputs[n + i]) = saved_copy(id);
        continue;
      }
      const auto [data, scale] = cast_to == DType::kF32
                                     ? scaled(id)
                                     : cast(id, cast_to, /*amax_scaled=*/!attention,
                                            /*for_backward=*/gemm_backward != nullptr);
      inputs[i] = data;
      inputs[n + i] = scale;
    }
    const Node& node = graph_.nodes()[static_cast<std::size_t>(index)];
    const std::size_t m = node.outputs.size();
    std::vector<DType> dtypes(m, DType::kF32);
    std::vector<std::optional<Shape>> scale_shapes(m);
    const std::vector<DType> scale_dtypes(m, DType::kF32);
    for (std::size_t o = 0; o < m; ++o) {
      const int id = node.outputs[o];
      if (id < 0) continue;
      const ValueInfo& info = graph_.info(id);
      const int alias = o < op.in_place.size() ? op.in_place[o] : -1;
      dtypes[o] = info.dtype;
      if (alias >= 0) {  // a state updated in place: scaled when its state is
        if (inputs[n + static_cast<std::size_t>(alias)].present()) scale_shapes[o] = Shape{};
        continue;
      }
      if (!is_floating(info.dtype)) continue;  // stays plain
      if (info.dtype == DType::kF32) dtypes[o] = policy_.values;
      if (policy_.scaled_values) scale_shapes[o] = Shape{};
    }
    Attributes attrs;  // set over the node's own
    set_storage_attributes(attrs);
    if (attention && policy_.attention_probabilities != DType::kF32) {
      attrs.set("probabilities_format", policy_.attention_probabilities);
    }
    // Operands with current-amax scales hold data up to the format's largest value, not near 1 as
    // the rules assume, so the GEMMs' output scales are measured instead.
    if (policy_.matmul_scaling != MatmulScaling::kPropagated && !attention &&
        (gemm_forward != nullptr || gemm_backward != nullptr)) {
      attrs.set("measured_output_scales", std::int64_t{1});
    }
    const std::vector<Value> outputs = graph_.replace_node(index, scaled_of(op), inputs, attrs,
                                                           dtypes, scale_shapes, scale_dtypes);
    for (std::size_t o = 0; o < m; ++o) {
      if (outputs[o].present() && outputs[m + o].present()) {
        scale_[static_cast<std::size_t>(outputs[o].id())] = outputs[m + o].id();
      }
    }
    ++scaled_nodes_;
  }

  // Changes the storage of the states an update node overwrites in place beside a trained
  // parameter (the parameter itself and its optimizer moments) as the policy says: finish()
  // retypes them, and each scaled one gets a scale state, the scalar "<name>.scale", starting at 0
  // (the static zero) as the states start at zero.
  void choose_state_storage(const Node& update) {
    // The present in-place inputs (SGD's buffer may be absent), and which are first moments.
    std::vector<std::pair<int, bool>> states;
    const std::vector<int>& in_place = update.op->in_place;
    for (std::size_t o = 0; o < in_place.size(); ++o) {
      const int input = in_place[o];
      if (input >= 0 && update.inputs[static_cast<std::size_t>(input)] >= 0) {
        states.emplace_back(update.inputs[static_cast<std::size_t>(input)],
                            ((update.op->first_moments >> o) & 1u) != 0);
      }
    }
    const auto is_parameter = [&](const std::pair<int, bool>& state) {
      return graph_.info(state.first).parameter.has_value();
    };
    if (std::none_of(states.begin(), states.end(), is_parameter)) return;
    for (const auto& [id, first_moment] : states) {
      const ValueInfo& info = graph_.info(id);
      const bool parameter = info.parameter.has_value();
      const DType storage = parameter                              ? policy_.parameters
                            : first_moment && policy_.first_moment ? *policy_.first_moment
                                                                   : policy_.optimizer_state;
      if (info.dtype != DType::kF32 || storage == DType::kF32 || retyped_.contains(id)) continue;
      retyped_.emplace(id, storage);
      if (!(parameter ? policy_.scaled_parameters : policy_.scaled_optimizer_state)) continue;
      std::string name = info.name + ".scale";  // a copy: state() grows the value table
      scale_[static_cast<std::size_t>(id)] = graph_.state(std::move(name), Shape{}).id();
      scale_states_.push_back(graph_.value(scale_[static_cast<std::size_t>(id)]));
    }
  }

  ScaledGraph finish(std::span<const Value> requested) {
    std::vector<std::pair<int, int>> outputs;
    for (const Value& v : requested) {
      const int id = v.id();
      const int scale = scale_[static_cast<std::size_t>(id)];
      int output = id;
      if (!updates_state_in_place(id)) {
        const Value data = graph_.value(id);
        if (scale >= 0) {
          const Value in[] = {data, graph_.value(scale)};
          output = graph_.apply1(kMaterializeOp, in, {}).id();
        } else if (data.dtype() != original_dtypes_[static_cast<std::size_t>(id)]) {
          // plain narrow data (scaled_values = false): back to the value's own dtype
          output = unitscale::cast(data, original_dtypes_[static_cast<std::size_t>(id)]).id();
        }
      }
      outputs.emplace_back(id, output);
    }
    std::map<DType, std::vector<Value>> by_storage;
    for (const auto& [state, storage] : retyped_)
      by_storage[storage].push_back(graph_.value(state));
    for (const auto& [storage, states] : by_storage) graph_.retype_states(states, storage);
    return {graph_,        original_values_, std::move(scale_), std::move(outputs),
            scale_states_, amax_histories_,  policy_.rounding,  scaled_nodes_,
            casts_};
  }

 private:
  // The policy's rounding and overflow on a scaled node, where they are not the scaled ops'
  // defaults (p2 down, non_finite): most graphs then copy no attribute more than their own.
  void set_storage_attributes(Attributes& attrs) const {
    if (policy_.rounding != Pow2Rounding::kDown) attrs.set("p2_rounding", policy_.rounding);
    if (policy_.overflow != Overflow::kNonFinite) attrs.set("storage_overflow", policy_.overflow);
  }

  // A GEMM op's inputs other than its bias are its operands.
  static bool is_operand(const OpDef& gemm, std::size_t input) {
    return gemm.input_name(input) != "bias";
  }

  // Whether `id` is an output that overwrites a state in place (a moment after its update):
  // requested to make the update run, and not materialised, which would keep an fp32 copy of
  // every moment in the arena.
  bool updates_state_in_place(int id) const {
    const ValueInfo& info = graph_.info(id);
    if (info.node < 0) return false;
    const OpDef& op = *graph_.nodes()[static_cast<std::size_t>(info.node)].op;
    const auto o = static_cast<std::size_t>(info.output_index);
    return o < op.in_place.size() && op.in_place[o] >= 0;
  }

  std::pair<Value, Value> scaled(int id) {
    const int scale = scale_[static_cast<std::size_t>(id)];
    return {graph_.value(id), scale >= 0 ? graph_.value(scale) : Value{}};
  }

  // Whether `id` is an activation a backward op saves: a floating value a forward node computed,
  // stored wider than ScalePolicy::saved_activations.
  bool is_saved_activation(int id) const {
    const ValueInfo& info = graph_.info(id);
    return info.node >= 0 &&
           graph_.nodes()[static_cast<std::size_t>(info.node)].differentiates < 0 &&
           is_floating(info.dtype) &&
           dtype_size(info.dtype) > dtype_size(*policy_.saved_activations);
  }

  // `id`'s copy in ScalePolicy::saved_activations for the backward ops that read it, made once
  // (saving_cast_op), keeping its scale.
  std::pair<Value, Value> saved_copy(int id) {
    if (const auto it = saved_copies_.find(id); it != saved_copies_.end()) return it->second;
    const auto [data, scale] = scaled(id);
    return saved_copies_[id] =
               apply_cast(saving_cast_op(), data, scale, *policy_.saved_activations);
  }

  // A node of `op` (a scaled cast) casting (data, scale) to `format`: its outputs. Rounded to
  // nearest even and saturated, the FP8 recipes' cast (a scale keeping the data near 1 leaves
  // saturation for outliers).
  std::pair<Value, Value> apply_cast(const OpDef& op, Value data, Value scale, DType format) {
    const Value inputs[] = {data, scale};
    const std::optional<Shape> shapes[] = {data.shape(),
                                           scale.present() ? std::optional(Shape{}) : std::nullopt};
    const DType dtypes[] = {format, DType::kF32};
    const Attributes attrs{{"dtype", format}, {"overflow", Overflow::kSaturate}};
    const std::vector<Value> out = graph_.apply_with_shapes(op, inputs, attrs, shapes, -1, dtypes);
    ++casts_;
    return {out[0], out[1]};
  }

  // `id` cast to `format`, keeping its scale (with `amax_scaled`, after the policy's current- or
  // delayed-amax rescale); made once per (value, format), so that a GEMM's backward reads the
  // operands its forward cast (a cast made again could differ: an amax-scaled one measures again).
  // With ScalePolicy::recast_weights_for_backward, a state's (a weight's) propagated-scale cast is
  // made anew for a backward GEMM (`for_backward`), the same bits from the same state, so that the
  // forward's copy is freed after the forward GEMM.
  std::pair<Value, Value> cast(int id, DType format, bool amax_scaled, bool for_backward) {
    const auto [data, scale] = scaled(id);
    if (data.dtype() == format || !is_floating(data.dtype())) return {data, scale};
    const bool rescaled_first = amax_scaled && policy_.matmul_scaling != MatmulScaling::kPropagated;
    const bool recast = policy_.recast_weights_for_backward && for_backward && !rescaled_first &&
                        graph_.info(id).kind == ValueKind::kState;
    const auto key = std::make_tuple(id, format, rescaled_first, recast);
    if (const auto it = casts_made_.find(key); it != casts_made_.end()) return it->second;
    const auto [rescaled, rescaled_scale] =
        rescaled_first ? amax_rescaled(data, scale, format) : std::pair{data, scale};
    return casts_made_[key] = apply_cast(scaled_of(kCastOp), rescaled, rescaled_scale, format);
  }

  // Current amax scaling: a dynamic rescale (statistic max) putting the max |x| of the data in
  // [target, 2·target) under p2 down, target = the format's largest value / 2^(margin + 1) (one
  // power of two higher for the roundings that do not round down, whose max can land at target).
  // Delayed scaling: the same target, from the amax history of earlier steps (a new state).
  std::pair<Value, Value> amax_rescaled(Value data, Value scale, DType format) {
    const double largest = format_max(*dtype_format(format));
    const int halvings = policy_.amax_margin + (policy_.rounding == Pow2Rounding::kDown ? 1 : 0);
    if (policy_.matmul_scaling == MatmulScaling::kDelayedAmax) {
      const Value history = graph_.state(fmt::format("amax_history.{}", amax_histories_.size()),
                                         Shape{policy_.amax_history_length});
      amax_histories_.push_back(history);
      Attributes attrs{{"algorithm", policy_.amax_algorithm},
                       {"target", std::ldexp(largest, -halvings)}};
      set_storage_attributes(attrs);
      const Value inputs[] = {data, history, scale, Value{}};
      const std::optional<Shape> shapes[] = {data.shape(), history.shape(), Shape{}, std::nullopt};
      const DType dtypes[] = {data.dtype(), DType::kF32, DType::kF32, DType::kF32};
      const std::vector<Value> out = graph_.apply_with_shapes(scaled_of(kDelayedRescaleOp), inputs,
                                                              std::move(attrs), shapes, -1, dtypes);
      return {out[0], out[2]};
    }
    Attributes attrs{{"statistic", RescaleStatistic::kMax},
                     {"direction", RescaleDirection::kForward},
                     {"floor", 0x1p-126},
                     {"target", std::ldexp(largest, -halvings)}};
    set_storage_attributes(attrs);
    const Value inputs[] = {data, scale};
    const std::optional<Shape> shapes[] = {data.shape(), Shape{}};
    const DType dtypes[] = {data.dtype(), DType::kF32};
    const std::vector<Value> out = graph_.apply_with_shapes(scaled_of(kDynamicRescaleOp), inputs,
                                                            std::move(attrs), shapes, -1, dtypes);
    return {out[0], out[1]};
  }

  Graph& graph_;
  const ScalePolicy& policy_;
  int original_values_;
  std::vector<DType> original_dtypes_;  // per original value: its dtype before the rewrite
  std::vector<int> scale_;
  std::map<std::tuple<int, DType, bool, bool>, std::pair<Value, Value>> casts_made_;
  std::map<int, std::pair<Value, Value>> saved_copies_;
  std::map<int, DType> retyped_;  // states whose storage changes, and to what
  std::vector<Value> scale_states_;
  std::vector<Value> amax_histories_;
  int scaled_nodes_ = 0;
  int casts_ = 0;
};

}  // namespace

std::string_view matmul_scaling_name(MatmulScaling scaling) {
  switch (scaling) {
    case MatmulScaling::kPropagated:
      return "propagated";
    case MatmulScaling::kCurrentAmax:
      return "current_amax";
    case MatmulScaling::kDelayedAmax:
      return "delayed_amax";
  }
  return "?";
}

ScalePolicy ScalePolicy::fp16() { return {}; }

ScalePolicy ScalePolicy::fp8() {
  return {.matmul_inputs = DType::kE4M3FN,
          .matmul_gradients = DType::kE5M2,
          .attention_inputs = DType::kBF16,
          .attention_probabilities = DType::kBF16};
}

std::string ScalePolicy::to_string() const {
  std::string matmul_scales(matmul_scaling_name(matmul_scaling));
  if (matmul_scaling == MatmulScaling::kDelayedAmax) {
    matmul_scales +=
        fmt::format(" (history {}, {})", amax_history_length, amax_algorithm_name(amax_algorithm));
  }
  if (matmul_scaling != MatmulScaling::kPropagated && amax_margin != 0) {
    matmul_scales += fmt::format(" (margin {})", amax_margin);
  }
  const auto storage = [](DType dtype, bool scaled) {
    return fmt::format("{}{}", dtype_name(dtype), scaled || dtype == DType::kF32 ? "" : " (plain)");
  };
  return fmt::format(
      "values {}, matmul inputs {}, matmul gradients {} ({} scales), optimizer state {}, "
      "parameters {}, p2 {}, overflow {}{}{}{}{}",
      storage(values, scaled_values), dtype_name(matmul_inputs), dtype_name(matmul_gradients),
      matmul_scales, storage(optimizer_state, scaled_optimizer_state),
      storage(parameters, scaled_parameters), pow2_rounding_name(rounding), overflow_name(overflow),
      attention_inputs == DType::kF16 && attention_probabilities == DType::kF32
          ? ""
          : fmt::format(", attention inputs {}, probabilities {}", dtype_name(attention_inputs),
                        dtype_name(attention_probabilities)),
      recast_weights_for_backward ? ", weights cast again for the backward" : "",
      first_moment ? fmt::format(", first moments {}", dtype_name(*first_moment)) : "",
      saved_activations ? fmt::format(", saved activations {}", dtype_name(*saved_activations))
                        : "");
}

ScaledGraph::ScaledGraph(Graph& graph, int original_values, std::vector<int> scale,
                         std::vector<std::pair<int, int>> outputs, std::vector<Value> scale_states,
                         std::vector<Value> amax_histories, Pow2Rounding rounding, int scaled_nodes,
                         int casts)
    : graph_(&graph),
      original_values_(original_values),
      scale_(std::move(scale)),
      outputs_(std::move(outputs)),
      scale_states_(std::move(scale_states)),
      amax_histories_(std::move(amax_histories)),
      rounding_(rounding),
      scaled_nodes_(scaled_nodes),
      casts_(casts) {}

int ScaledGraph::checked(Value original, std::string_view what) const {
  if (graph_ == nullptr || !original.present() || &original.graph() != graph_ ||
      original.id() < 0 || original.id() >= original_values_) {
    throw Error(fmt::format("ScaledGraph::{}: %{} is not a value of the graph before the pass",
                            what, original.id()));
  }
  return original.id();
}

Value ScaledGraph::data(Value original) const { return graph_->value(checked(original, "data")); }

Value ScaledGraph::scale(Value original) const {
  const int scale = scale_[static_cast<std::size_t>(checked(original, "scale"))];
  return scale >= 0 ? graph_->value(scale) : Value{};
}

Value ScaledGraph::output(Value original) const {
  const int id = checked(original, "output");
  for (const auto& [requested, output] : outputs_) {
    if (requested == id) return graph_->value(output);
  }
  throw Error(fmt::format("ScaledGraph::output: %{} was not requested from propagate_scales", id));
}

std::vector<Value> ScaledGraph::outputs() const {
  std::vector<Value> values;
  for (const auto& [requested, output] : outputs_) values.push_back(graph_->value(output));
  return values;
}

void ScaledGraph::load_state(Executor& executor, Value original, ConstTensorView values) const {
  const Value data = graph_->value(checked(original, "load_state"));
  const Value scale = this->scale(original);
  if (!executor.has_state(data)) {
    throw Error(fmt::format("ScaledGraph::load_state: %{} is not a state the executor holds",
                            original.id()));
  }
  if (values.shape() != data.shape() || values.dtype() != DType::kF32) {
    throw Error(fmt::format("ScaledGraph::load_state: '{}' (%{}) is f32 {}, got {} {}",
                            graph_->info(data).name, original.id(), data.shape().to_string(),
                            dtype_name(values.dtype()), values.shape().to_string()));
  }
  float factor = 1.0f;
  if (scale.present()) {
    // The scale its updates will give it (measured_scale): a parameter's from its rms, a
    // moment's from its largest magnitude.
    const RescaleStatistic statistic =
        graph_->info(original).parameter ? RescaleStatistic::kL2 : RescaleStatistic::kMax;
    const std::optional<Scale> chosen = measured_scale(
        statistic,
        rescale_statistic({values.data(), static_cast<std::size_t>(values.numel())}, statistic),
        data.dtype(), rounding_);
    const bool zero = !chosen || chosen->is_zero();
    const float s = zero ? 0.0f : static_cast<float>(chosen->value());
    const float scale_value[] = {s};
    executor.set_state(scale, ConstTensorView(scale_value, Shape{}));
    factor = zero ? 0.0f : 1.0f / s;
  }
  if (data.dtype() == DType::kF32 && factor == 1.0f) {
    executor.set_state(data, values);
    return;
  }
  Tensor stored(data.shape(), data.dtype());
  cast_forward(values, stored.view(),
               {{"dtype", data.dtype()},
                {"scale", static_cast<double>(factor)},
                {"overflow", Overflow::kNonFinite}},
               0);
  executor.set_state(data, stored.view());
}

Tensor ScaledGraph::read_state(const Executor& executor, Value original) const {
  const Value data = graph_->value(checked(original, "read_state"));
  const Value scale = this->scale(original);
  if (!executor.has_state(data)) {
    throw Error(fmt::format("ScaledGraph::read_state: %{} is not a state the executor holds",
                            original.id()));
  }
  const float factor = scale.present() ? executor.state(scale).data()[0] : 1.0f;
  Tensor values(data.shape(), DType::kF32);
  if (factor == 0.0f) return values;  // the static zero (a moment before its first update)
  cast_forward(executor.state(data), values.view(),
               {{"dtype", DType::kF32},
                {"scale", static_cast<double>(factor)},
                {"overflow", Overflow::kNonFinite}},
               0);
  return values;
}

ScaledGraph propagate_scales(Graph& graph, std::span<const Value> outputs,
                             const ScalePolicy& policy) {
  check_storage(policy.values, "the value storage");
  check_storage(policy.matmul_inputs, "the matmul input storage");
  check_storage(policy.matmul_gradients, "the matmul gradient storage");
  check_storage(policy.optimizer_state, "the optimizer state storage");
  check_storage(policy.parameters, "the parameter storage");
  check_storage(policy.attention_inputs, "the attention input storage");
  if (policy.first_moment) check_storage(*policy.first_moment, "the first moments' storage");
  if (policy.saved_activations) {
    check_storage(*policy.saved_activations, "the saved activations' storage");
  }
  if (policy.attention_probabilities != DType::kF32 &&
      policy.attention_probabilities != DType::kBF16) {
    throw Error(fmt::format("{}: the attention probabilities must be f32 or bf16, got {}", kPass,
                            dtype_name(policy.attention_probabilities)));
  }
  if (policy.matmul_scaling != MatmulScaling::kPropagated && !policy.scaled_values) {
    throw Error(fmt::format(
        "{}: {} scaling needs scaled values (the rescale keeps its factor in the scale)", kPass,
        policy.matmul_scaling == MatmulScaling::kCurrentAmax ? "current amax" : "delayed amax"));
  }
  if (policy.amax_history_length < 1 || policy.amax_history_length > 1 << 16) {
    throw Error(fmt::format("{}: amax_history_length must be in [1, 65536], got {}", kPass,
                            policy.amax_history_length));
  }
  if (policy.amax_margin < 0 || policy.amax_margin > 64) {
    throw Error(
        fmt::format("{}: amax_margin must be in [0, 64], got {}", kPass, policy.amax_margin));
  }
  for (const Value& v : outputs) {
    if (!v.present() || &v.graph() != &graph || graph.is_dead(v.id())) {
      throw Error(
          fmt::format("{}: requested output %{} is not a live value of this graph", kPass, v.id()));
    }
  }
  const std::vector<int> order = graph.execution_order();
  check_graph(graph, order);
  Rewriter rewriter(graph, policy);
  // Room for what the pass adds, so that the value table grows once: a scale per node output,
  // and a few values per cast (a GEMM operand's, after an amax rescale under those policies).
  std::size_t outputs_of_nodes = 0, gemm_operands = 0;
  for (const Node& node : graph.nodes()) {
    outputs_of_nodes += node.outputs.size();
    if (node.op->rounds_gemm_inputs || gemm_op_differentiated_by(*node.op) != nullptr) {
      gemm_operands += node.inputs.size();
    }
  }
  graph.reserve(graph.nodes().size() + 2 * gemm_operands + outputs.size(),
                static_cast<std::size_t>(graph.value_count()) + outputs_of_nodes +
                    6 * gemm_operands + outputs.size());
  for (const int index : order) {
    rewriter.choose_state_storage(graph.nodes()[static_cast<std::size_t>(index)]);
  }
  for (const int index : order) rewriter.rewrite(index);
  return rewriter.finish(outputs);
}

}  // namespace unitscale

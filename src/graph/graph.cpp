#include "unitscale/graph/graph.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <queue>

#include "unitscale/error.hpp"

namespace unitscale {

Graph& Value::graph() const {
  if (graph_ == nullptr) throw Error("Value: this value is absent (default-constructed)");
  return *graph_;
}

const Shape& Value::shape() const { return graph().info(id_).shape; }
DType Value::dtype() const { return graph().info(id_).dtype; }

int Graph::add_value(Shape shape, DType dtype, ValueKind kind, std::string name) {
  values_.push_back(
      ValueInfo{std::move(shape), dtype, kind, std::move(name), -1, 0, std::nullopt});
  return value_count() - 1;
}

Value Graph::input(std::string name, Shape shape, DType dtype) {
  return {this, add_value(std::move(shape), dtype, ValueKind::kInput, std::move(name))};
}

Value Graph::parameter(std::string name, Shape shape) {
  return {this, add_value(std::move(shape), DType::kF32, ValueKind::kParameter, std::move(name))};
}

Value Graph::parameter(std::string name, Shape shape, ParameterInfo info) {
  info.check(name, shape);
  const Value v = parameter(std::move(name), std::move(shape));
  values_[static_cast<std::size_t>(v.id())].parameter = std::move(info);
  return v;
}

Value Graph::state(std::string name, Shape shape, std::optional<ParameterInfo> info, DType dtype) {
  if (info) info->check(name, shape);
  const int id = add_value(std::move(shape), dtype, ValueKind::kState, std::move(name));
  values_[static_cast<std::size_t>(id)].parameter = std::move(info);
  return {this, id};
}

Value Graph::constant(Tensor value, std::string name) {
  const int id = add_value(value.shape(), value.dtype(), ValueKind::kConstant, std::move(name));
  constants_.emplace_back(id, std::move(value));
  return {this, id};
}

const ValueInfo& Graph::info(int id) const {
  if (id < 0 || id >= value_count()) {
    throw Error(fmt::format("Graph: no value %{} (the graph has {} values)", id, value_count()));
  }
  return values_[static_cast<std::size_t>(id)];
}

const Tensor& Graph::constant_value(int id) const {
  for (const auto& [constant_id, tensor] : constants_) {
    if (constant_id == id) return tensor;
  }
  throw Error(fmt::format("Graph: value %{} is not a constant", id));
}

Value Graph::find(std::string_view name) {
  for (int id = 0; id < value_count(); ++id) {
    if (values_[static_cast<std::size_t>(id)].name == name &&
        values_[static_cast<std::size_t>(id)].kind != ValueKind::kNodeOutput) {
      return {this, id};
    }
  }
  throw Error(fmt::format("Graph: no input, parameter or constant named '{}'", name));
}

void Graph::check_owned(const Value& v, std::string_view op) const {
  if (v.present() && &v.graph() != this) {
    throw Error(fmt::format("{}: an input value belongs to a different graph", op));
  }
  if (v.present() && is_dead(v.id())) {
    throw Error(fmt::format("{}: input %{} was removed by a pass", op, v.id()));
  }
}

namespace {
// Kernels read unit scales as float (scale_of): one must be a positive normal float, so that it
// neither overflows to inf nor loses its bits (or its value) as a subnormal.
constexpr double kMinUnitScale = std::numeric_limits<float>::min();
constexpr double kMaxUnitScale = std::numeric_limits<float>::max();
bool is_valid_unit_scale(double value) { return value >= kMinUnitScale && value <= kMaxUnitScale; }
}  // namespace

// A rule evaluated on a zero-sized dimension divides by zero: name the op and the shapes rather than
// record a node whose outputs would all be ∞ or NaN. A finite result outside float's normal range
// (0, a power of a huge dimension) is refused too.
void Graph::check_unit_scales(const OpDef& op, std::span<const Shape* const> shapes,
                              const Attributes& attrs) {
  for (const std::string_view name : op.scales) {
    if (!attrs.has(name)) continue;
    const double value = attrs.get_double(op.name, name);
    if (is_valid_unit_scale(value)) continue;
    std::vector<std::string> given;
    for (const Shape* shape : shapes) given.push_back(shape ? shape->to_string() : "absent");
    if (!std::isfinite(value)) {
      throw Error(fmt::format("{}: the unit scale {} is {} for inputs {}: a dimension the rule "
                              "divides by is zero",
                              op.name, name, value, fmt::join(given, ", ")));
    }
    throw Error(fmt::format("{}: the unit scale {} is {} for inputs {} (attributes {}): expected a "
                            "finite positive number in float's normal range [{}, {}]",
                            op.name, name, value, fmt::join(given, ", "), attrs.to_string(),
                            kMinUnitScale, kMaxUnitScale));
  }
}

std::vector<Value> Graph::apply(const OpDef& op, std::span<const Value> inputs, Attributes attrs) {
  if (op.infer_shapes == nullptr) {
    throw Error(fmt::format("{}: this op is recorded by autodiff only", op.name));
  }
  if (inputs.size() != op.inputs.size()) {
    throw Error(fmt::format("{}: expected {} inputs, got {}", op.name, op.inputs.size(), inputs.size()));
  }
  std::vector<const Shape*> shapes;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    check_owned(inputs[i], op.name);
    if (!inputs[i].present() && !op.input_is_optional(i)) {
      throw Error(fmt::format("{}: input '{}' is required", op.name, op.input_name(i)));
    }
    shapes.push_back(inputs[i].present() ? &info(inputs[i].id()).shape : nullptr);
  }
  check_attributes(op.name, op.attributes, op.scales, attrs);
  const std::vector<DType> output_dtypes = infer_dtypes(op, inputs, attrs);
  // Shapes before scales: the scale rules index dimensions that only the shape check guarantees.
  std::vector<Shape> output_shapes;
  try {
    output_shapes = op.infer_shapes(shapes, attrs);
  } catch (const Error& e) {
    // Shape refuses dims whose element count overflows int64 (an output [M, N] of two huge dims)
    // without knowing the op: name it.
    if (std::string_view(e.what()).starts_with("Shape: ")) {
      throw Error(fmt::format("{}: output {}", op.name, e.what()));
    }
    throw;
  }
  UNITSCALE_ASSERT(output_shapes.size() == static_cast<std::size_t>(op.output_count()));
  if (scaling_ == Scaling::kUnit && op.unit_scale != nullptr) {
    op.unit_scale(shapes, attrs);
    check_unit_scales(op, shapes, attrs);
  }
  std::vector<std::optional<Shape>> optional_shapes(output_shapes.begin(), output_shapes.end());
  // An output that updates an absent optional input in place (SGD without a momentum buffer)
  // is absent too.
  for (std::size_t o = 0; o < op.in_place.size() && o < optional_shapes.size(); ++o) {
    const int i = op.in_place[o];
    if (i >= 0 && static_cast<std::size_t>(i) < inputs.size() &&
        !inputs[static_cast<std::size_t>(i)].present()) {
      optional_shapes[o].reset();
    }
  }
  return apply_with_shapes(op, inputs, std::move(attrs), optional_shapes, -1, output_dtypes);
}

std::vector<DType> Graph::infer_dtypes(const OpDef& op, std::span<const Value> inputs,
                                       const Attributes& attrs) const {
  std::vector<DType> dtypes;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].present()) {
      dtypes.push_back(DType::kF32);
      continue;
    }
    const DType dtype = info(inputs[i].id()).dtype;
    const DTypeSet accepted = op.accepted_dtypes(i);
    if (!accepted.contains(dtype)) {
      throw Error(fmt::format("{}: input '{}' (%{}) has dtype {}, expected {}", op.name,
                              op.input_name(i), inputs[i].id(), dtype_name(dtype),
                              accepted.to_string()));
    }
    dtypes.push_back(dtype);
  }
  if (op.infer_dtypes == nullptr) {
    return std::vector<DType>(static_cast<std::size_t>(op.output_count()), DType::kF32);
  }
  std::vector<DType> outputs = op.infer_dtypes(dtypes, attrs);
  UNITSCALE_ASSERT(outputs.size() == static_cast<std::size_t>(op.output_count()));
  return outputs;
}

Value Graph::apply1(const OpDef& op, std::span<const Value> inputs, Attributes attrs) {
  return apply(op, inputs, std::move(attrs)).at(0);
}

std::vector<Value> Graph::apply_with_shapes(const OpDef& op, std::span<const Value> inputs,
                                            Attributes attrs,
                                            std::span<const std::optional<Shape>> output_shapes,
                                            int differentiates,
                                            std::span<const DType> output_dtypes) {
  Node node{&op, {}, {}, std::move(attrs), differentiates};
  for (const Value& v : inputs) {
    check_owned(v, op.name);
    node.inputs.push_back(v.present() ? v.id() : -1);
  }
  for (std::size_t o = 0; o < op.in_place.size() && o < output_shapes.size(); ++o) {
    const int i = op.in_place[o];
    if (i < 0 || !output_shapes[o]) continue;
    const auto input = static_cast<std::size_t>(i);
    const DType dtype = o < output_dtypes.size() ? output_dtypes[o] : DType::kF32;
    if (input >= inputs.size() || !inputs[input].present() ||
        inputs[input].shape() != *output_shapes[o] || inputs[input].dtype() != dtype) {
      throw Error(fmt::format("{}: output {} updates input '{}' in place, which must be given and "
                              "have the output's shape {} and dtype {}",
                              op.name, o, op.input_name(input), output_shapes[o]->to_string(),
                              dtype_name(dtype)));
    }
  }
  const int node_index = static_cast<int>(nodes_.size());
  std::vector<Value> outputs;
  for (std::size_t i = 0; i < output_shapes.size(); ++i) {
    if (!output_shapes[i]) {
      node.outputs.push_back(-1);
      outputs.emplace_back();
      continue;
    }
    const DType dtype = i < output_dtypes.size() ? output_dtypes[i] : DType::kF32;
    const int id = add_value(*output_shapes[i], dtype, ValueKind::kNodeOutput, {});
    values_[static_cast<std::size_t>(id)].node = node_index;
    values_[static_cast<std::size_t>(id)].output_index = static_cast<int>(i);
    node.outputs.push_back(id);
    outputs.emplace_back(this, id);
  }
  nodes_.push_back(std::move(node));
  ++version_;
  return outputs;
}

std::vector<Value> Graph::replace_node(int node, const OpDef& op, std::span<const Value> inputs,
                                       const Attributes& added,
                                       std::span<const DType> output_dtypes,
                                       std::span<const std::optional<Shape>> new_output_shapes,
                                       std::span<const DType> new_output_dtypes) {
  if (node < 0 || node >= static_cast<int>(nodes_.size())) {
    throw Error(fmt::format("replace_node: no node {} (the graph has {})", node, nodes_.size()));
  }
  Node& target = nodes_[static_cast<std::size_t>(node)];
  const std::size_t kept = target.outputs.size();
  if (output_dtypes.size() != kept || new_output_dtypes.size() != new_output_shapes.size() ||
      op.outputs.size() != kept + new_output_shapes.size() || inputs.size() != op.inputs.size()) {
    throw Error(
        fmt::format("replace_node: node {} ({}) has {} outputs; {} has {} inputs and {} "
                    "outputs, got {} inputs, {} output dtypes and {} new outputs",
                    node, target.op->name, kept, op.name, op.inputs.size(), op.outputs.size(),
                    inputs.size(), output_dtypes.size(), new_output_shapes.size()));
  }
  std::vector<int> input_ids;
  input_ids.reserve(inputs.size());
  for (const Value& v : inputs) {
    check_owned(v, op.name);
    input_ids.push_back(v.present() ? v.id() : -1);
  }
  for (std::size_t o = 0; o < kept; ++o) {
    if (target.outputs[o] >= 0)
      values_[static_cast<std::size_t>(target.outputs[o])].dtype = output_dtypes[o];
  }
  for (std::size_t o = 0; o < new_output_shapes.size(); ++o) {
    if (!new_output_shapes[o]) {
      target.outputs.push_back(-1);
      continue;
    }
    const int id =
        add_value(*new_output_shapes[o], new_output_dtypes[o], ValueKind::kNodeOutput, {});
    values_[static_cast<std::size_t>(id)].node = node;
    values_[static_cast<std::size_t>(id)].output_index = static_cast<int>(kept + o);
    target.outputs.push_back(id);  // add_value grows values_ only: `target` stays put
  }
  target.op = &op;
  target.inputs = std::move(input_ids);
  for (const auto& [name, value] : added.entries()) target.attrs.set(name, value);
  ++version_;
  std::vector<Value> outputs;
  for (const int id : target.outputs) outputs.push_back(id >= 0 ? Value(this, id) : Value{});
  return outputs;
}

void Graph::set_scale(Value v, std::string_view scale, double value) {
  check_owned(v, "set_scale");
  const ValueInfo& producer = info(v.id());
  if (producer.kind != ValueKind::kNodeOutput || is_dead(v.id())) {
    throw Error(fmt::format("set_scale: %{} is not the output of a node", v.id()));
  }
  Node& node = nodes_[static_cast<std::size_t>(producer.node)];
  const std::vector<std::string_view>& valid = node.op->scales;
  if (std::find(valid.begin(), valid.end(), scale) == valid.end()) {
    throw Error(valid.empty()
                    ? fmt::format("set_scale: {} has no unit scales (asked for '{}')",
                                  node.op->name, scale)
                    : fmt::format("set_scale: {} has no scale '{}' (expected one of: {})",
                                  node.op->name, scale, fmt::join(valid, ", ")));
  }
  if (!is_valid_unit_scale(value)) {
    throw Error(fmt::format("set_scale: {} {} must be finite and positive, in float's normal range "
                            "[{}, {}], got {}",
                            node.op->name, scale, kMinUnitScale, kMaxUnitScale, value));
  }
  node.attrs.set(scale, value);
  ++version_;
  if (node.op->backward_kernel == nullptr) return;
  const int forward_output = node.outputs.front();
  const OpDef* backward = &backward_of(*node.op);
  for (Node& other : nodes_) {
    if (other.differentiates == forward_output && other.op == backward) {
      other.attrs.set(scale, value);
    }
  }
}

void Graph::set_attributes(int node_index, const Attributes& changes) {
  if (node_index < 0 || node_index >= static_cast<int>(nodes_.size())) {
    throw Error(fmt::format("set_attributes: node {} does not exist (the graph has {} nodes)",
                            node_index, nodes_.size()));
  }
  Node& node = nodes_[static_cast<std::size_t>(node_index)];
  const OpDef& op = *node.op;
  if (op.infer_shapes == nullptr) {
    throw Error(fmt::format("set_attributes: node {} ({}) was recorded by autodiff; change the "
                            "forward node's attributes instead",
                            node_index, op.name));
  }
  Attributes merged = node.attrs;
  for (const auto& [name, value] : changes.entries()) merged.set(name, value);
  check_attributes(op.name, op.attributes, op.scales, merged);
  std::vector<Value> inputs;
  std::vector<const Shape*> shapes;
  for (const int id : node.inputs) {
    inputs.push_back(id >= 0 ? Value(this, id) : Value{});
    shapes.push_back(id >= 0 ? &info(id).shape : nullptr);
  }
  const std::vector<DType> dtypes = infer_dtypes(op, inputs, merged);
  const std::vector<Shape> output_shapes = op.infer_shapes(shapes, merged);
  for (std::size_t o = 0; o < node.outputs.size(); ++o) {
    const int id = node.outputs[o];
    if (id < 0) continue;
    if (output_shapes[o] != info(id).shape || dtypes[o] != info(id).dtype) {
      throw Error(fmt::format("set_attributes: {} would change output '{}' (%{}) from {} {} to {} "
                              "{}; record a new node instead",
                              op.name, op.outputs[o], id, info(id).shape.to_string(),
                              dtype_name(info(id).dtype), output_shapes[o].to_string(),
                              dtype_name(dtypes[o])));
    }
  }
  node.attrs = std::move(merged);
  ++version_;
  if (op.backward_kernel == nullptr) return;
  const int forward_output = node.outputs.front();
  const OpDef* backward = &backward_of(op);
  for (Node& other : nodes_) {
    if (other.differentiates == forward_output && other.op == backward) {
      for (const auto& [name, value] : changes.entries()) other.attrs.set(name, value);
    }
  }
}

Value Graph::grad_of(Value v) {
  check_owned(v, "grad_of");
  const auto id = static_cast<std::size_t>(v.id());
  return id < gradient_.size() && gradient_[id] >= 0 ? Value(this, gradient_[id]) : Value{};
}

void Graph::record_gradient(Value v, Value grad) {
  check_owned(v, "record_gradient");
  check_owned(grad, "record_gradient");
  if (!v.present() || !grad.present() || grad.shape() != v.shape() ||
      grad.dtype() != DType::kF32) {
    throw Error(fmt::format("record_gradient: the gradient of %{} must be present, f32 and of its "
                            "shape {}; got {}",
                            v.id(), v.present() ? v.shape().to_string() : "(absent)",
                            grad.present() ? fmt::format("{} {}", grad.shape().to_string(),
                                                         dtype_name(grad.dtype()))
                                           : "(absent)"));
  }
  if (gradient_.size() < values_.size()) gradient_.resize(values_.size(), -1);
  gradient_[static_cast<std::size_t>(v.id())] = grad.id();
}

std::vector<Graph::Use> Graph::uses(Value v) const {
  check_owned(v, "uses");
  std::vector<Use> found;
  for (const int n : execution_order()) {
    const Node& node = nodes_[static_cast<std::size_t>(n)];
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i] == v.id()) found.push_back(Use{n, static_cast<int>(i)});
    }
  }
  return found;
}

// Whether `value` is computed (directly or not) from an output of node `node`.
bool Graph::depends_on(int value, int node) const {
  std::vector<bool> seen(nodes_.size(), false);
  std::vector<int> pending{value};
  while (!pending.empty()) {
    const int id = pending.back();
    pending.pop_back();
    const int producer = values_[static_cast<std::size_t>(id)].node;
    if (producer < 0 || seen[static_cast<std::size_t>(producer)]) continue;
    if (producer == node) return true;
    seen[static_cast<std::size_t>(producer)] = true;
    for (const int in : nodes_[static_cast<std::size_t>(producer)].inputs) {
      if (in >= 0) pending.push_back(in);
    }
  }
  return false;
}

void Graph::replace_input(int node, int input, Value v) {
  check_owned(v, "replace_input");
  if (node < 0 || node >= static_cast<int>(nodes_.size())) {
    throw Error(fmt::format("replace_input: no node {} (the graph has {})", node, nodes_.size()));
  }
  Node& target = nodes_[static_cast<std::size_t>(node)];
  const std::string_view op = target.op->name;
  if (input < 0 || input >= static_cast<int>(target.inputs.size())) {
    throw Error(fmt::format("replace_input: {} (node {}) has no input {}", op, node, input));
  }
  const int old = target.inputs[static_cast<std::size_t>(input)];
  const std::string_view name = target.op->input_name(static_cast<std::size_t>(input));
  if (old < 0 || !v.present()) {
    throw Error(fmt::format("replace_input: {} input '{}': only a present input can be replaced, "
                            "by a present value (record a new node to add or drop one)",
                            op, name));
  }
  const ValueInfo& before = info(old);
  const ValueInfo& after = info(v.id());
  if (before.shape != after.shape || before.dtype != after.dtype) {
    throw Error(fmt::format("replace_input: {} input '{}' is {} {}; %{} is {} {}", op, name,
                            before.shape.to_string(), dtype_name(before.dtype), v.id(),
                            after.shape.to_string(), dtype_name(after.dtype)));
  }
  if (depends_on(v.id(), node)) {
    throw Error(fmt::format("replace_input: %{} depends on the output of {} (node {}); reading it "
                            "as input '{}' would make a cycle",
                            v.id(), op, node, name));
  }
  target.inputs[static_cast<std::size_t>(input)] = v.id();
  ++version_;
}

int Graph::replace_uses(Value from, Value to, std::span<const int> consumers) {
  check_owned(from, "replace_uses");
  check_owned(to, "replace_uses");
  if (!from.present() || !to.present()) {
    throw Error("replace_uses: both values must be present");
  }
  std::vector<Use> rewired;
  for (const Use& use : uses(from)) {
    const bool chosen = consumers.empty() ||
                        std::find(consumers.begin(), consumers.end(), use.node) != consumers.end();
    // The nodes `to` is computed from keep reading `from`: that is what makes an insertion.
    if (chosen && !depends_on(to.id(), use.node)) rewired.push_back(use);
  }
  // Validate every edit before making any, so an error changes nothing.
  const ValueInfo& a = info(from.id());
  const ValueInfo& b = info(to.id());
  if (!rewired.empty() && (a.shape != b.shape || a.dtype != b.dtype)) {
    throw Error(fmt::format("replace_uses: %{} is {} {} but %{} is {} {}", from.id(),
                            a.shape.to_string(), dtype_name(a.dtype), to.id(),
                            b.shape.to_string(), dtype_name(b.dtype)));
  }
  for (const Use& use : rewired) replace_input(use.node, use.input, to);
  return static_cast<int>(rewired.size());
}

void Graph::reserve(std::size_t nodes, std::size_t values) {
  nodes_.reserve(nodes);
  values_.reserve(values);
  if (!gradient_.empty()) gradient_.reserve(values);
}

void Graph::remove_nodes(std::span<const int> nodes) {
  std::vector<bool> removed(nodes_.size(), false);
  for (const int n : nodes) {
    if (n < 0 || n >= static_cast<int>(nodes_.size())) {
      throw Error(fmt::format("remove_nodes: no node {} (the graph has {})", n, nodes_.size()));
    }
    removed[static_cast<std::size_t>(n)] = true;
  }
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (removed[i]) continue;
    for (const int in : nodes_[i].inputs) {
      if (in < 0) continue;
      const int producer = values_[static_cast<std::size_t>(in)].node;
      if (producer >= 0 && removed[static_cast<std::size_t>(producer)]) {
        throw Error(fmt::format("remove_nodes: node {} ({}) stays but reads %{} from node {} ({}), "
                                "which would be removed",
                                i, nodes_[i].op->name, in, producer,
                                nodes_[static_cast<std::size_t>(producer)].op->name));
      }
    }
  }
  // Compacts in place: each kept node moves down over the removed ones before it.
  std::size_t kept = 0;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const int new_index = removed[i] ? kDeadNode : static_cast<int>(kept);
    for (const int out : nodes_[i].outputs) {
      if (out >= 0) values_[static_cast<std::size_t>(out)].node = new_index;
    }
    if (removed[i]) continue;
    if (kept != i) nodes_[kept] = std::move(nodes_[i]);
    ++kept;
  }
  nodes_.erase(nodes_.begin() + static_cast<std::ptrdiff_t>(kept), nodes_.end());
  ++version_;
}

void Graph::retype_states(std::span<const Value> states, DType dtype) {
  std::vector<bool> retyped(values_.size(), false);
  for (const Value& state : states) {
    check_owned(state, "retype_states");
    if (values_[static_cast<std::size_t>(state.id())].kind != ValueKind::kState) {
      throw Error(fmt::format("retype_states: %{} is not a state value", state.id()));
    }
    retyped[static_cast<std::size_t>(state.id())] = true;
  }
  std::vector<int> aliases;  // the in-place outputs that overwrite the states
  for (const Node& node : nodes_) {
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      const int id = node.inputs[i];
      if (id < 0 || !retyped[static_cast<std::size_t>(id)]) continue;
      if (!node.op->accepted_dtypes(i).contains(dtype)) {
        throw Error(fmt::format(
            "retype_states: '{}' (%{}) cannot become {}: {} reads it as input '{}', which takes {}",
            values_[static_cast<std::size_t>(id)].name, id, dtype_name(dtype), node.op->name,
            node.op->input_name(i), node.op->accepted_dtypes(i).to_string()));
      }
      for (std::size_t o = 0; o < node.op->in_place.size() && o < node.outputs.size(); ++o) {
        if (node.op->in_place[o] == static_cast<int>(i) && node.outputs[o] >= 0) {
          aliases.push_back(node.outputs[o]);
        }
      }
    }
  }
  for (const Value& state : states) values_[static_cast<std::size_t>(state.id())].dtype = dtype;
  for (const int alias : aliases) values_[static_cast<std::size_t>(alias)].dtype = dtype;
  ++version_;
}

std::vector<int> Graph::execution_order() const {
  // Kahn's algorithm, always taking the lowest-index ready node, except that ready nodes of ops
  // that run early (OpDef::runs_early) go first: recording order when it is topological and no op
  // runs early, and a deterministic order otherwise.
  const std::size_t n = nodes_.size();
  // Fast path, the common case: no pass has rewired anything, so recording order is topological.
  bool recorded_order_works = true;
  for (std::size_t i = 0; i < n && recorded_order_works; ++i) {
    if (nodes_[i].op->runs_early) recorded_order_works = false;
    for (const int in : nodes_[i].inputs) {
      if (in >= 0 && values_[static_cast<std::size_t>(in)].node >= static_cast<int>(i)) {
        recorded_order_works = false;
        break;
      }
    }
  }
  if (recorded_order_works) {
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    return order;
  }
  std::vector<int> waiting(n, 0);
  std::vector<std::vector<int>> readers(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (const int in : nodes_[i].inputs) {
      if (in < 0) continue;
      const int producer = values_[static_cast<std::size_t>(in)].node;
      if (producer < 0) continue;
      ++waiting[i];
      readers[static_cast<std::size_t>(producer)].push_back(static_cast<int>(i));
    }
  }
  // Keyed (0 for an early op, else 1; index): the smallest key is taken first.
  using Key = std::pair<int, int>;
  std::priority_queue<Key, std::vector<Key>, std::greater<>> ready;
  auto make_ready = [&](int node) {
    ready.emplace(nodes_[static_cast<std::size_t>(node)].op->runs_early ? 0 : 1, node);
  };
  for (std::size_t i = 0; i < n; ++i) {
    if (waiting[i] == 0) make_ready(static_cast<int>(i));
  }
  std::vector<int> order;
  order.reserve(n);
  while (!ready.empty()) {
    const int next = ready.top().second;
    ready.pop();
    order.push_back(next);
    for (const int reader : readers[static_cast<std::size_t>(next)]) {
      if (--waiting[static_cast<std::size_t>(reader)] == 0) make_ready(reader);
    }
  }
  // replace_input refuses cycles, so every node is reached.
  UNITSCALE_ASSERT(order.size() == n);
  return order;
}

namespace {
// "[4, 8]" for f32, "[4, 8] bf16" otherwise.
std::string typed_shape(const ValueInfo& v) {
  return v.dtype == DType::kF32 ? v.shape.to_string()
                                : fmt::format("{} {}", v.shape.to_string(), dtype_name(v.dtype));
}
}  // namespace

std::string Graph::to_string() const {
  std::string text;
  for (int id = 0; id < value_count(); ++id) {
    const ValueInfo& v = values_[static_cast<std::size_t>(id)];
    switch (v.kind) {
      case ValueKind::kInput:
        text += fmt::format("%{} = input \"{}\" {}\n", id, v.name, typed_shape(v));
        break;
      case ValueKind::kParameter:
        text += fmt::format("%{} = parameter \"{}\" {}", id, v.name, v.shape.to_string());
        if (v.parameter) text += fmt::format(" {{{}}}", v.parameter->to_string());
        text += "\n";
        break;
      case ValueKind::kConstant:
        text += fmt::format("%{} = constant \"{}\" {}\n", id, v.name, typed_shape(v));
        break;
      case ValueKind::kState:
        text += fmt::format("%{} = state \"{}\" {}", id, v.name, typed_shape(v));
        if (v.parameter) text += fmt::format(" {{{}}}", v.parameter->to_string());
        text += "\n";
        break;
      case ValueKind::kNodeOutput:
        break;
    }
  }
  for (const int index : execution_order()) {
    const Node& node = nodes_[static_cast<std::size_t>(index)];
    std::vector<std::string> outputs, arguments;
    for (const int out : node.outputs) outputs.push_back(out >= 0 ? fmt::format("%{}", out) : "_");
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      const std::string_view name = i < node.op->inputs.size() ? node.op->input_name(i) : "";
      const std::string value = node.inputs[i] >= 0 ? fmt::format("%{}", node.inputs[i]) : "_";
      arguments.push_back(name.empty() ? value : fmt::format("{}={}", name, value));
    }
    std::vector<std::string> shapes;
    for (const int out : node.outputs) {
      if (out >= 0) shapes.push_back(typed_shape(values_[static_cast<std::size_t>(out)]));
    }
    text += fmt::format("{} = {}({})", fmt::join(outputs, ", "), node.op->name, fmt::join(arguments, ", "));
    if (!node.attrs.entries().empty()) text += " " + node.attrs.to_string();
    text += fmt::format(" : {}\n", fmt::join(shapes, ", "));
  }
  return text;
}

}  // namespace unitscale

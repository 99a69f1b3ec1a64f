#pragma once
// The op-graph IR. User code records nodes through the builder functions beside each op
// (ops/*.hpp): calling linear(x, w) on graph values checks the shapes and dtypes at once, appends
// a node and returns its output value.
//
// Passes edit a graph in place (see "Writing a pass" in docs/architecture.md): they record new
// nodes with apply or the builders, rewire consumers with replace_uses / replace_input, and drop
// nodes with remove_nodes. Value ids stay valid through every edit (the values of removed nodes
// are marked dead); node indices are valid until the next remove_nodes. Storage order is therefore
// not execution order: execution_order() computes a topological order, which the executor,
// autodiff and the printer use.
//
// A Graph is neither copyable nor movable, because Values point at it.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "unitscale/graph/parameter_info.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

class Graph;

// A handle to a value of a graph: an input, a parameter, a constant or a node output. A
// default-constructed Value is "absent" (an optional input that is not given).
class Value {
 public:
  Value() = default;
  Value(Graph* graph, int id) : graph_(graph), id_(id) {}

  bool present() const { return graph_ != nullptr; }
  Graph& graph() const;  // throws unitscale::Error on an absent value
  int id() const { return id_; }
  const Shape& shape() const;
  DType dtype() const;

  friend bool operator==(const Value&, const Value&) = default;

 private:
  Graph* graph_ = nullptr;
  int id_ = -1;
};

// kState: a value whose storage the executor owns and keeps across runs (trained parameters,
// optimizer moments, step counters); update ops overwrite it in place (OpDef::in_place).
enum class ValueKind { kInput, kParameter, kConstant, kState, kNodeOutput };

struct ValueInfo {
  Shape shape;
  DType dtype = DType::kF32;
  ValueKind kind = ValueKind::kInput;
  std::string name;  // inputs, parameters and named constants
  int node = -1;     // producing node, for node outputs
  int output_index = 0;
  std::optional<ParameterInfo> parameter;  // parameters made with their metadata
};

struct Node {
  const OpDef* op = nullptr;
  std::vector<int> inputs;   // value ids; -1 for an absent optional input
  std::vector<int> outputs;  // value ids; -1 for an absent output (e.g. an unrequested gradient)
  Attributes attrs;
  // For a node recorded by autodiff, the forward value it belongs to (a value id, which stays
  // valid across passes): for a backward node, the first output of the forward node it
  // differentiates; for an accumulate_grad node, the value whose gradient contributions it sums.
  // -1 for forward nodes.
  int differentiates = -1;
};

class Graph {
 public:
  explicit Graph(Scaling scaling = Scaling::kUnit) : scaling_(scaling) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Whether ops recorded into this graph apply their unit-scaling rules.
  Scaling scaling() const { return scaling_; }

  Value input(std::string name, Shape shape, DType dtype = DType::kF32);
  Value parameter(std::string name, Shape shape);
  // A parameter with the metadata the parametrizations need (checked against the shape; the
  // printer shows it).
  Value parameter(std::string name, Shape shape, ParameterInfo info);
  Value constant(Tensor value, std::string name = {});
  // A value kept by the executor across runs (initially zeros; Executor::set_state loads it).
  // With ParameterInfo it is a trained parameter that update ops change in place.
  Value state(std::string name, Shape shape, std::optional<ParameterInfo> info = std::nullopt,
              DType dtype = DType::kF32);

  // Records a node of `op`: checks its inputs' dtypes against op.input_dtypes, infers its output
  // shapes and dtypes (errors name the op, the input and the shapes or dtypes), resolves its unit
  // scales (when the graph is unit-scaled) and returns its outputs.
  std::vector<Value> apply(const OpDef& op, std::span<const Value> inputs, Attributes attrs);
  Value apply1(const OpDef& op, std::span<const Value> inputs, Attributes attrs);
  // As apply, with the output shapes given (std::nullopt: absent output) and no dtype rule: the
  // outputs have `output_dtypes` (empty: all f32). Used by autodiff for backward ops, whose outputs
  // are fp32 gradients, and which passes the forward node's first output as `differentiates`.
  std::vector<Value> apply_with_shapes(const OpDef& op, std::span<const Value> inputs,
                                       Attributes attrs,
                                       std::span<const std::optional<Shape>> output_shapes,
                                       int differentiates = -1,
                                       std::span<const DType> output_dtypes = {});

  // Overrides one unit scale of the node that produced `v`, one of its op's `scales`. The
  // rule's init-time scale assumes independent unit-variance inputs; when that is off (e.g.
  // correlated tokens in a deep residual stream) a measured scale can replace it. The backward
  // node, if autodiff has recorded it already, gets the same value. Throws if `v` is not a node
  // output, the op has no such scale, or `value` is not finite and positive in float's normal
  // range [FLT_MIN, FLT_MAX] (kernels read scales as float).
  void set_scale(Value v, std::string_view scale, double value);

  // Merges `changes` into the attributes of node `node` (an index into nodes()), for passes that
  // change how a node computes without changing what it is (simulate_format's GEMM input formats).
  // The attributes are checked as apply checks them, and the node's output shapes and dtypes must
  // stay as they are; its backward node, if autodiff has recorded it already, gets the same
  // changes. Throws, changing nothing, otherwise.
  void set_attributes(int node, const Attributes& changes);
  // The gradient autodiff recorded for `v` (absent if none): the most recent autodiff that
  // reached `v` records it, so the training step's passes can find a parameter's gradient.
  Value grad_of(Value v);
  // Records `grad` as the gradient of `v`; for autodiff and passes that build backward graphs.
  void record_gradient(Value v, Value grad);

  int value_count() const { return static_cast<int>(values_.size()); }
  const ValueInfo& info(int id) const;
  const ValueInfo& info(Value v) const { return info(v.id()); }
  Value value(int id) { return {this, id}; }
  std::span<const Node> nodes() const { return nodes_; }
  const Tensor& constant_value(int id) const;
  // The input, parameter or named constant called `name`; throws if there is none.
  Value find(std::string_view name);

  // ---- Rewriting (for passes; every edit bumps version()) ----

  // Where a value is read: (node index, input index) pairs, in execution order.
  struct Use {
    int node;
    int input;
    friend bool operator==(const Use&, const Use&) = default;
  };
  std::vector<Use> uses(Value v) const;
  // Makes input `input` of node `node` read `v` instead. `v` must have the old input's shape and
  // dtype (the node's shapes and scales were derived from them) and must not depend on the node's
  // own outputs (that would be a cycle). Throws, changing nothing, otherwise.
  void replace_input(int node, int input, Value v);
  // Rewires uses of `from` to `to`: all of them, or only those of the nodes in `consumers`. The
  // nodes `to` itself depends on keep reading `from`, which is how a node is inserted between a
  // value and its consumers:
  //   Value q = cast(x, DType::kE4M3FN);   // appended; reads x
  //   graph.replace_uses(x, q);            // every other reader of x now reads q
  // Returns the number of inputs rewired. Throws, changing nothing, as replace_input does.
  int replace_uses(Value from, Value to, std::span<const int> consumers = {});
  // Makes node `node` a node of `op` in place, for a pass that changes what every node computes
  // (propagate_scales): the node keeps its index, its `differentiates` and its output values
  // (ids and shapes), which take `output_dtypes`; outputs of `op` past them are new values of
  // `new_output_shapes` (std::nullopt: absent) and `new_output_dtypes`. Its inputs become
  // `inputs`; it keeps its attributes, with `added` set over them; no shape rule runs, so the
  // caller vouches for the shapes. The inputs must not depend on the node's outputs (not checked:
  // that would cost a walk of the graph per input). Throws, changing nothing, if the output counts
  // do not add up or an input is not a value of this graph. Returns every output of the node.
  std::vector<Value> replace_node(int node, const OpDef& op, std::span<const Value> inputs,
                                  const Attributes& added, std::span<const DType> output_dtypes,
                                  std::span<const std::optional<Shape>> new_output_shapes,
                                  std::span<const DType> new_output_dtypes);
  // Makes room for this many nodes and values in all, so that a pass recording many nodes does not
  // move the graph's storage again and again (a hint: the graph grows past it as needed).
  void reserve(std::size_t nodes, std::size_t values);
  // Removes the given nodes (indices into nodes()); their outputs are marked dead. Throws, changing
  // nothing, if an index is out of range or a remaining node reads an output of a removed one.
  void remove_nodes(std::span<const int> nodes);
  bool is_dead(int id) const { return info(id).node == kDeadNode; }
  // Changes how state values are stored (propagate_scales keeps optimizer moments as FP16 data):
  // each state and every in-place output that overwrites it get `dtype`. Throws, changing nothing,
  // if one is not a state value or a node reading it does not accept `dtype` (so a pass records
  // the states' new readers and removes the old ones first). One walk over the nodes for all.
  void retype_states(std::span<const Value> states, DType dtype);

  // The node indices in an order where every node comes after the producers of its inputs
  // (recording order where that is one, so graphs that were never rewired run as recorded).
  std::vector<int> execution_order() const;

  // Counts the changes to the graph (recorded nodes, removed nodes, overridden scales): an executor
  // remembers the version it planned and refuses to run a graph that has changed since.
  std::uint64_t version() const { return version_; }

  // A stable textual form for golden tests, one line per value or node:
  //   %0 = input "x" [4, 8]
  //   %2 = linear(x=%0, weight=%1) {alpha=0.35355339} : [4, 16]
  // Nodes are listed in execution order; values of dtypes other than f32 show it after the shape.
  std::string to_string() const;

 private:
  static constexpr int kDeadNode = -2;
  int add_value(Shape shape, DType dtype, ValueKind kind, std::string name);
  bool depends_on(int value, int node) const;
  std::vector<DType> infer_dtypes(const OpDef& op, std::span<const Value> inputs,
                                  const Attributes& attrs) const;
  void check_owned(const Value& v, std::string_view op) const;
  static void check_unit_scales(const OpDef& op, std::span<const Shape* const> shapes,
                                const Attributes& attrs);

  Scaling scaling_;
  std::vector<ValueInfo> values_;
  std::vector<Node> nodes_;
  std::vector<std::pair<int, Tensor>> constants_;
  std::uint64_t version_ = 0;
  std::vector<int> gradient_;  // per value id: its gradient's id, or -1
};

}  // namespace unitscale

#pragma once
// Executor: runs the part of a graph that the requested values depend on.
//
// Planning happens once, in the constructor: the nodes to run, each op's own preparation (GEMM
// primitives, see OpDef::prepare), and a memory plan in which every intermediate value, and every
// node's workspace (OpDef::workspace, for its own step), gets an offset into one arena, reusing
// the space of values whose last reader has run (graph/arena_plan.hpp: the smaller of a
// step-order best fit and a largest-first packing). peak_bytes() is the arena size. Inputs and
// parameters are bound to caller-owned tensors (no copy); constants live in the graph. Kernels use
// both cores (OpenMP and Eigen's threads).
//
//   Executor exec(graph, {loss, grad_w});
//   exec.bind(x, x_tensor);  exec.bind(w, w_tensor);
//   exec.run();
//   float l = exec.get(loss).data()[0];
//
// The executor holds node indices, never pointers into the graph. A graph changed after the
// executor was made (Graph::version) is refused by run() with a clear error: make a new executor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/graph/graph.hpp"

namespace unitscale {

// Which part of a training step a node belongs to: nodes that update a state in place are the
// update, nodes recorded by autodiff the backward pass, the rest the forward pass.
enum class Phase { kForward, kBackward, kUpdate };

// What an observer sees after each node: the node, its outputs (valid only during the call: the
// arena is reused by later nodes) and its phase.
struct NodeEvent {
  int node_index;  // into graph.nodes()
  const Node& node;
  Phase phase;
  std::span<const TensorView> outputs;  // absent outputs have null data
};
using Observer = std::function<void(const NodeEvent&)>;

// A value that holds arena space at the plan's fullest moment (Executor::peak_values).
struct ArenaValue {
  int value;  // a value id of the graph; -1: the workspace of the node that runs then
  std::size_t bytes;
};

// Time and output bytes of one op over the profiled runs.
struct OpProfile {
  std::string op;
  std::uint64_t calls = 0;
  double seconds = 0;
  std::uint64_t output_bytes = 0;
};

class Executor {
 public:
  Executor(Graph& graph, std::span<const Value> outputs);

  // Binds an input or parameter to caller memory that must stay valid while run() is used. The
  // shape must match exactly; errors name the value.
  void bind(Value v, ConstTensorView tensor);
  // State values (Graph::state) live in the executor across runs, zeros at first: set_state
  // copies a tensor in, state() shows the current value (after a run: as the updates left it).
  void set_state(Value v, ConstTensorView tensor);
  ConstTensorView state(Value v) const;
  // Whether `v` is a state value that the planned nodes use (and so has storage here).
  bool has_state(Value v) const;
  // Runs the planned nodes once, then advances the step counter.
  void run();
  // The step counter every kernel of the next run() sees (KernelContext::step): it starts at 0 and
  // run() increments it, so stochastic ops (dropout) draw a fresh mask each step. Set it to resume
  // a run reproducibly, e.g. after loading a checkpoint at step k.
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t step) { step_ = step; }
  // A requested output (valid until the next run()); throws if `v` was not requested.
  ConstTensorView get(Value v) const;

  // The exchange that the graph's gradient exchange nodes run through (data-parallel training,
  // distributed/gradient_exchange.hpp); it must outlive the runs. Null: none (such nodes throw).
  void set_gradient_exchange(GradientExchange* exchange) { gradient_exchange_ = exchange; }

  // Calls `observer` after every node of every following run(), in execution order. With none
  // registered, run() does no per-node work beyond the kernels.
  void add_observer(Observer observer) { observers_.push_back(std::move(observer)); }

  // Times every node of the following runs (steady clock around each kernel) until turned off.
  void set_profiling(bool on) { profiling_ = on; }
  // Per op, summed over the profiled runs, most time first; and the same as a table.
  std::vector<OpProfile> profile() const;
  std::string profile_table() const;

  // The arena: the values the nodes compute and, beside them, each node's workspace (the memory
  // its kernel needs only while it runs, OpDef::workspace: widened GEMM operands, fp32 copies of
  // scaled values), placed where the values leave room at that node's step.
  std::size_t peak_bytes() const { return arena_bytes_; }
  // The most workspace one node of the last run() took beyond what the plan set aside for it (0
  // when every op's estimate held): memory outside the arena.
  std::size_t workspace_beyond_plan() const { return workspace_beyond_plan_; }
  // The values in the arena just after the node at which the most bytes are live (their total is
  // at most peak_bytes(): the best-fit packing leaves holes), largest first: what to shrink, or
  // store narrower, to shrink the arena.
  const std::vector<ArenaValue>& peak_values() const { return peak_values_; }
  std::size_t planned_node_count() const { return steps_.size(); }

 private:
  struct Step {
    int node;  // index into graph_.nodes()
    std::vector<ConstTensorView> inputs = {};
    std::vector<TensorView> outputs = {};
    std::size_t workspace_bytes = 0;      // OpDef::workspace's estimate
    std::ptrdiff_t workspace_offset = 0;  // in the arena
  };
  // A node's views as OpDef::prepare and OpDef::workspace see them: shapes and dtypes, no data.
  struct Placeholders {
    std::vector<ConstTensorView> inputs;
    std::vector<TensorView> outputs;
  };
  Placeholders placeholders(const Node& node) const;
  void plan_updates();
  void plan_memory(const std::vector<int>& last_use);
  TensorView output_view(int id) const;
  int state_id(Value v, std::string_view caller) const;
  const Node& node_of(const Step& step) const {
    return graph_.nodes()[static_cast<std::size_t>(step.node)];
  }
  ConstTensorView view_of(int id) const;

  Graph& graph_;
  std::uint64_t graph_version_;
  std::vector<int> requested_;
  std::vector<Step> steps_;
  std::vector<std::ptrdiff_t> offset_;  // per value: arena offset in bytes, or -1
  std::vector<ConstTensorView> bound_;  // per value: the bound tensor of an input or parameter
  // Per value: a state's storage (empty for others). Mutable: the kernels write states through
  // the views that the const view lookups hand out.
  mutable std::vector<Tensor> states_;
  std::vector<int> state_of_;           // per value: the state an in-place output writes, or -1
  std::vector<Phase> phases_;           // per step
  std::size_t arena_bytes_ = 0;
  std::size_t workspace_beyond_plan_ = 0;
  std::vector<ArenaValue> peak_values_;
  std::unique_ptr<std::byte[], void (*)(std::byte*)> arena_{nullptr, nullptr};
  bool views_ready_ = false;
  std::uint64_t step_ = 0;
  std::vector<Observer> observers_;
  bool profiling_ = false;
  GradientExchange* gradient_exchange_ = nullptr;
  std::vector<std::chrono::steady_clock::duration> node_time_;  // per step, when profiling
  std::vector<std::uint64_t> node_calls_;
};

}  // namespace unitscale

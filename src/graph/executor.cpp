#include "unitscale/graph/executor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>

#include "graph/arena_plan.hpp"
#include "tensor/workspace.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr auto kAlignment = static_cast<std::ptrdiff_t>(kTensorAlignment);

// A value's bytes in the arena, rounded up to the alignment (at least one block, so that every
// value, even an empty one, has its own address).
std::ptrdiff_t aligned_size(const ValueInfo& value) {
  const auto bytes = std::max<std::ptrdiff_t>(
      static_cast<std::ptrdiff_t>(value.shape.numel()) *
          static_cast<std::ptrdiff_t>(dtype_size(value.dtype)),
      1);
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

}  // namespace

Executor::Executor(Graph& graph, std::span<const Value> outputs)
    : graph_(graph), graph_version_(graph.version()) {
  const auto value_count = static_cast<std::size_t>(graph.value_count());
  std::vector<bool> needed(value_count, false);
  for (const Value& v : outputs) {
    if (!v.present() || &v.graph() != &graph) throw Error("Executor: a requested value is absent or from another graph");
    if (graph.is_dead(v.id())) throw Error(fmt::format("Executor: requested value %{} was removed by a pass", v.id()));
    needed[static_cast<std::size_t>(v.id())] = true;
    requested_.push_back(v.id());
  }

  // Walk the execution order backwards to find the nodes the outputs depend on.
  const auto nodes = graph.nodes();
  const std::vector<int> execution_order = graph.execution_order();
  std::vector<int> order;
  for (auto it = execution_order.rbegin(); it != execution_order.rend(); ++it) {
    const int index = *it;
    const Node& node = nodes[static_cast<std::size_t>(index)];
    const bool run = std::any_of(node.outputs.begin(), node.outputs.end(),
                                 [&](int out) { return out >= 0 && needed[static_cast<std::size_t>(out)]; });
    if (!run) continue;
    order.push_back(index);
    for (const int in : node.inputs) {
      if (in >= 0) needed[static_cast<std::size_t>(in)] = true;
    }
  }
  std::reverse(order.begin(), order.end());

  // last_use[id]: index of the last step reading the value (requested outputs live forever).
  constexpr int kForever = std::numeric_limits<int>::max();
  std::vector<int> last_use(value_count, -1);
  for (std::size_t s = 0; s < order.size(); ++s) {
    for (const int in : nodes[static_cast<std::size_t>(order[s])].inputs) {
      if (in >= 0) last_use[static_cast<std::size_t>(in)] = static_cast<int>(s);
    }
  }
  for (const int id : requested_) last_use[static_cast<std::size_t>(id)] = kForever;

  for (const int index : order) {
    Step step{.node = index};
    const Node& node = nodes[static_cast<std::size_t>(index)];
    if (node.op->prepare != nullptr || node.op->workspace != nullptr) {
      const Placeholders views = placeholders(node);
      if (node.op->prepare != nullptr) node.op->prepare(views.inputs, views.outputs, node.attrs);
      if (node.op->workspace != nullptr) {
        step.workspace_bytes =
            node.op->workspace(views.inputs, views.outputs, node.attrs, *node.op);
      }
    }
    steps_.push_back(std::move(step));
  }
  bound_.resize(value_count);
  offset_.assign(value_count, -1);
  plan_updates();
  plan_memory(last_use);
}

// In-place outputs share their state's storage; the state's old value is gone once the update
// has run, so no later step may read it. States the plan touches start as zeros.
void Executor::plan_updates() {
  const auto value_count = static_cast<std::size_t>(graph_.value_count());
  state_of_.assign(value_count, -1);
  states_.resize(value_count);
  std::vector<int> updated_at(value_count, -1);  // per state: the step that overwrote it
  auto allocate = [&](int id) {
    Tensor& state = states_[static_cast<std::size_t>(id)];
    if (graph_.info(id).kind == ValueKind::kState && state.bytes() == nullptr) {
      state = Tensor(graph_.info(id).shape, graph_.info(id).dtype);
    }
  };
  for (const int id : requested_) allocate(id);
  phases_.clear();
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    const Node& node = node_of(steps_[s]);
    phases_.push_back(node.differentiates >= 0 ? Phase::kBackward : Phase::kForward);
    for (const int in : node.inputs) {
      if (in < 0) continue;
      allocate(in);
      if (updated_at[static_cast<std::size_t>(in)] >= 0) {
        throw Error(fmt::format("Executor: {} reads state '{}' (%{}) after {} updated it in place in "
                                "the same run; read the update's output instead",
                                node.op->name, graph_.info(in).name, in,
                                node_of(steps_[static_cast<std::size_t>(updated_at[static_cast<std::size_t>(in)])]).op->name));
      }
    }
    for (std::size_t o = 0; o < node.op->in_place.size() && o < node.outputs.size(); ++o) {
      const int out = node.outputs[o];
      const int input = node.op->in_place[o];
      if (out < 0 || input < 0) continue;
      const int target = node.inputs[static_cast<std::size_t>(input)];
      if (graph_.info(target).kind != ValueKind::kState) {
        throw Error(fmt::format("Executor: {} updates %{} in place, but only state values "
                                "(Graph::state) can be updated in place",
                                node.op->name, target));
      }
      state_of_[static_cast<std::size_t>(out)] = target;
      updated_at[static_cast<std::size_t>(target)] = static_cast<int>(s);
      phases_.back() = Phase::kUpdate;
    }
  }
}

Executor::Placeholders Executor::placeholders(const Node& node) const {
  Placeholders views;
  for (const int in : node.inputs) {
    views.inputs.push_back(in >= 0 ? ConstTensorView(prepare_placeholder(), graph_.info(in).shape,
                                                     graph_.info(in).dtype)
                                   : ConstTensorView{});
  }
  for (const int out : node.outputs) {
    views.outputs.push_back(
        out >= 0 ? TensorView(prepare_placeholder(), graph_.info(out).shape, graph_.info(out).dtype)
                 : TensorView{});
  }
  return views;
}

void Executor::plan_memory(const std::vector<int>& last_use) {
  // One buffer per value the nodes compute (from its step to its last reader's; requested outputs
  // to the end), and one per node workspace (its step alone). A node's outputs are live at its
  // step, as are its inputs, so no kernel's output aliases one of its inputs.
  std::vector<detail::ArenaBuffer> buffers;
  std::vector<int> value_of;  // per buffer: its value id, or -1 - step for a workspace
  const int last_step = static_cast<int>(steps_.size()) - 1;
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    const int step = static_cast<int>(s);
    for (const int out : node_of(steps_[s]).outputs) {
      if (out < 0 || state_of_[static_cast<std::size_t>(out)] >= 0) continue;
      const int last = last_use[static_cast<std::size_t>(out)];
      buffers.push_back({step,
                         last == std::numeric_limits<int>::max() ? last_step : std::max(last, step),
                         aligned_size(graph_.info(out))});
      value_of.push_back(out);
    }
    const auto workspace = static_cast<std::ptrdiff_t>(
        (steps_[s].workspace_bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment);
    if (workspace > 0) {
      buffers.push_back({step, step, workspace});
      value_of.push_back(-1 - step);
    }
  }
  const detail::ArenaPlan plan = detail::plan_arena(buffers);
  // Bytes live per step, as differences: +bytes at a buffer's first step, -bytes after its last.
  std::vector<std::ptrdiff_t> live(steps_.size() + 1, 0);
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    const int value = value_of[b];
    if (value >= 0)
      offset_[static_cast<std::size_t>(value)] = plan.offsets[b];
    else
      steps_[static_cast<std::size_t>(-1 - value)].workspace_offset = plan.offsets[b];
    live[static_cast<std::size_t>(buffers[b].first_step)] += buffers[b].bytes;
    live[static_cast<std::size_t>(buffers[b].last_step) + 1] -= buffers[b].bytes;
  }
  arena_bytes_ = static_cast<std::size_t>(plan.size);
  arena_ = allocate_aligned_bytes(arena_bytes_);

  // peak_values: what is live at the step with the most live bytes.
  int fullest_step = -1;
  std::ptrdiff_t running = 0, most_live = 0;
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    running += live[s];
    if (running > most_live) {
      most_live = running;
      fullest_step = static_cast<int>(s);
    }
  }
  peak_values_.clear();
  for (std::size_t b = 0; b < buffers.size(); ++b) {
    if (buffers[b].first_step <= fullest_step && fullest_step <= buffers[b].last_step) {
      peak_values_.push_back(
          {std::max(value_of[b], -1), static_cast<std::size_t>(buffers[b].bytes)});
    }
  }
  std::sort(peak_values_.begin(), peak_values_.end(),
            [](const ArenaValue& a, const ArenaValue& b) { return a.bytes > b.bytes; });
}

void Executor::bind(Value v, ConstTensorView tensor) {
  if (!v.present() || &v.graph() != &graph_) throw Error("Executor::bind: value is absent or from another graph");
  const ValueInfo& info = graph_.info(v.id());
  if (info.kind == ValueKind::kState) {
    throw Error(fmt::format("Executor::bind: '{}' (%{}) is a state, which the executor owns: "
                            "load it with set_state",
                            info.name, v.id()));
  }
  if (info.kind != ValueKind::kInput && info.kind != ValueKind::kParameter) {
    throw Error(fmt::format("Executor::bind: %{} is not an input or parameter", v.id()));
  }
  if (tensor.shape() != info.shape || tensor.dtype() != info.dtype) {
    throw Error(fmt::format("Executor::bind: '{}' (%{}) expects {} {}, got {} {}", info.name, v.id(),
                            info.shape.to_string(), dtype_name(info.dtype),
                            tensor.shape().to_string(), dtype_name(tensor.dtype())));
  }
  bound_[static_cast<std::size_t>(v.id())] = tensor;
  views_ready_ = false;
}

ConstTensorView Executor::view_of(int id) const {
  const ValueInfo& info = graph_.info(id);
  switch (info.kind) {
    case ValueKind::kInput:
    case ValueKind::kParameter: {
      const ConstTensorView& bound = bound_[static_cast<std::size_t>(id)];
      if (!present(bound)) {
        throw Error(fmt::format("Executor::run: {} '{}' (%{}) is not bound",
                                info.kind == ValueKind::kInput ? "input" : "parameter", info.name, id));
      }
      return bound;
    }
    case ValueKind::kConstant:
      return graph_.constant_value(id).view();
    case ValueKind::kState:
    case ValueKind::kNodeOutput:
      return output_view(id);
  }
  return {};
}

TensorView Executor::output_view(int id) const {
  const auto index = static_cast<std::size_t>(id);
  if (graph_.info(id).kind == ValueKind::kState) return states_[index].view();
  if (state_of_[index] >= 0) return states_[static_cast<std::size_t>(state_of_[index])].view();
  return {arena_.get() + offset_[index], graph_.info(id).shape, graph_.info(id).dtype};
}

int Executor::state_id(Value v, std::string_view caller) const {
  if (!v.present() || &v.graph() != &graph_ || graph_.info(v.id()).kind != ValueKind::kState) {
    throw Error(fmt::format("Executor::{}: %{} is not a state value of this graph", caller, v.id()));
  }
  if (states_[static_cast<std::size_t>(v.id())].bytes() == nullptr) {
    throw Error(fmt::format("Executor::{}: state '{}' (%{}) is not used by the planned nodes",
                            caller, graph_.info(v.id()).name, v.id()));
  }
  return v.id();
}

void Executor::set_state(Value v, ConstTensorView tensor) {
  Tensor& state = states_[static_cast<std::size_t>(state_id(v, "set_state"))];
  if (tensor.shape() != state.shape() || tensor.dtype() != state.dtype()) {
    throw Error(fmt::format("Executor::set_state: '{}' (%{}) is {} {}, got {} {}",
                            graph_.info(v.id()).name, v.id(), state.shape().to_string(),
                            dtype_name(state.dtype()), tensor.shape().to_string(),
                            dtype_name(tensor.dtype())));
  }
  if (state.byte_size() > 0) std::memcpy(state.bytes(), tensor.bytes(), state.byte_size());
}

bool Executor::has_state(Value v) const {
  return v.present() && &v.graph() == &graph_ && v.id() >= 0 && v.id() < graph_.value_count() &&
         graph_.info(v.id()).kind == ValueKind::kState &&
         states_[static_cast<std::size_t>(v.id())].bytes() != nullptr;
}

ConstTensorView Executor::state(Value v) const {
  return states_[static_cast<std::size_t>(state_id(v, "state"))].view();
}

void Executor::run() {
  if (graph_.version() != graph_version_) {
    throw Error(fmt::format("Executor::run: the graph changed after the executor was made "
                            "(version {} then, {} now); make a new executor",
                            graph_version_, graph_.version()));
  }
  if (!views_ready_) {
    for (Step& step : steps_) {
      step.inputs.clear();
      step.outputs.clear();
      const Node& node = node_of(step);
      for (const int in : node.inputs) step.inputs.push_back(in >= 0 ? view_of(in) : ConstTensorView{});
      for (const int out : node.outputs) {
        step.outputs.push_back(out >= 0 ? output_view(out)
                                        : TensorView{});
      }
    }
    views_ready_ = true;
  }
  KernelContext context{.step = step_, .gradient_exchange = gradient_exchange_};
  if (profiling_ && node_time_.size() != steps_.size()) {
    node_time_.assign(steps_.size(), {});
    node_calls_.assign(steps_.size(), 0);
  }
  // The executor's thread takes each node's workspace from the span its plan set aside (other
  // threads, and takes past the span, from their own memory).
  detail::Workspace& workspace = detail::Workspace::of_this_thread();
  struct Detach {
    detail::Workspace& workspace;
    ~Detach() { workspace.detach(); }  // also when a kernel throws
  };
  workspace_beyond_plan_ = 0;
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    const Step& step = steps_[s];
    const Node& node = node_of(step);
    context.op = node.op;
    workspace.attach({arena_.get() + step.workspace_offset, step.workspace_bytes});
    const Detach detach{workspace};
    if (profiling_) {
      const auto start = std::chrono::steady_clock::now();
      node.op->kernel(step.inputs, step.outputs, node.attrs, context);
      node_time_[s] += std::chrono::steady_clock::now() - start;
      ++node_calls_[s];
    } else {
      node.op->kernel(step.inputs, step.outputs, node.attrs, context);
    }
    workspace_beyond_plan_ = std::max(workspace_beyond_plan_, workspace.detach().beyond_plan);
    if (!observers_.empty()) {
      const NodeEvent event{step.node, node, phases_[s], step.outputs};
      for (const Observer& observer : observers_) observer(event);
    }
  }
  ++step_;
}

std::vector<OpProfile> Executor::profile() const {
  std::vector<OpProfile> ops;
  for (std::size_t s = 0; s < node_time_.size(); ++s) {
    const Node& node = node_of(steps_[s]);
    auto it = std::find_if(ops.begin(), ops.end(),
                           [&](const OpProfile& p) { return p.op == node.op->name; });
    if (it == ops.end()) it = ops.insert(ops.end(), OpProfile{std::string(node.op->name)});
    it->calls += node_calls_[s];
    it->seconds += std::chrono::duration<double>(node_time_[s]).count();
    for (const int out : node.outputs) {
      if (out >= 0) {
        it->output_bytes += node_calls_[s] *
                            static_cast<std::uint64_t>(graph_.info(out).shape.numel()) *
                            dtype_size(graph_.info(out).dtype);
      }
    }
  }
  std::sort(ops.begin(), ops.end(),
            [](const OpProfile& a, const OpProfile& b) { return a.seconds > b.seconds; });
  return ops;
}

std::string Executor::profile_table() const {
  const std::vector<OpProfile> ops = profile();
  double total = 0;
  for (const OpProfile& p : ops) total += p.seconds;
  std::string table = fmt::format("{:<40} {:>8} {:>12} {:>7} {:>12}\n", "op", "calls", "ms", "%",
                                  "MB written");
  for (const OpProfile& p : ops) {
    table += fmt::format("{:<40} {:>8} {:>12.3f} {:>6.1f}% {:>12.1f}\n", p.op, p.calls,
                         p.seconds * 1e3, total > 0 ? 100 * p.seconds / total : 0.0,
                         static_cast<double>(p.output_bytes) / 1e6);
  }
  return table;
}

ConstTensorView Executor::get(Value v) const {
  if (!v.present() || std::find(requested_.begin(), requested_.end(), v.id()) == requested_.end()) {
    throw Error(fmt::format("Executor::get: %{} was not requested when the executor was made", v.id()));
  }
  return view_of(v.id());
}

}  // namespace unitscale

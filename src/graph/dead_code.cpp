#include "unitscale/graph/dead_code.hpp"

#include <vector>

#include "unitscale/error.hpp"

namespace unitscale {

// The model every pass follows (docs/architecture.md, "Writing a pass"): read the graph through
// nodes() and execution_order(), decide, then edit in place with the rewriting primitives, which
// validate before they change anything.
int eliminate_dead_code(Graph& graph, std::span<const Value> keep) {
  std::vector<bool> live(static_cast<std::size_t>(graph.value_count()), false);
  for (const Value& v : keep) {
    if (!v.present() || &v.graph() != &graph) {
      throw Error("eliminate_dead_code: a kept value is absent or from another graph");
    }
    live[static_cast<std::size_t>(v.id())] = true;
  }
  // Walking the execution order backwards sees every reader of a value before its producer.
  const std::vector<int> order = graph.execution_order();
  std::vector<int> dead;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const Node& node = graph.nodes()[static_cast<std::size_t>(*it)];
    bool needed = false;
    for (const int out : node.outputs) needed = needed || (out >= 0 && live[static_cast<std::size_t>(out)]);
    if (!needed) {
      dead.push_back(*it);
      continue;
    }
    for (const int in : node.inputs) {
      if (in >= 0) live[static_cast<std::size_t>(in)] = true;
    }
  }
  graph.remove_nodes(dead);
  return static_cast<int>(dead.size());
}

}  // namespace unitscale

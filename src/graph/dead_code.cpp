#include "unitscale/graph/dead_code.hpp"

#include "unitscale/error.hpp"

namespace unitscale {

int eliminate_dead_code(Graph& graph, std::span<const Value> keep) {
  std::vector<bool> live(static_cast<std::size_t>(graph.value_count()), false);
  for (const Value& v : keep) {
    if (!v.present() || &v.graph() != &graph) throw Error("eliminate_dead_code: a kept value is absent or from another graph");
    live[static_cast<std::size_t>(v.id())] = true;
  }
  const auto nodes = graph.nodes();
  std::vector<bool> keep_node(nodes.size(), false);
  for (std::size_t n = nodes.size(); n-- > 0;) {
    for (const int out : nodes[n].outputs) keep_node[n] = keep_node[n] || (out >= 0 && live[static_cast<std::size_t>(out)]);
    if (!keep_node[n]) continue;
    for (const int in : nodes[n].inputs) {
      if (in >= 0) live[static_cast<std::size_t>(in)] = true;
    }
  }
  const int removed = static_cast<int>(std::count(keep_node.begin(), keep_node.end(), false));
  graph.retain_nodes(keep_node);
  return removed;
}

}  // namespace unitscale

#pragma once
// Dead-code elimination: removes every node that none of `keep` depends on. Value ids stay valid;
// values of removed nodes are marked dead and can no longer be used.

#include <span>

#include "unitscale/graph/graph.hpp"

namespace unitscale {

// Returns the number of nodes removed.
int eliminate_dead_code(Graph& graph, std::span<const Value> keep);

}  // namespace unitscale

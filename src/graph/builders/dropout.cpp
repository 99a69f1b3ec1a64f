#include "unitscale/graph/builders/dropout.hpp"

#include <string>

namespace unitscale {

Value dropout(Value x, const DropoutOptions& options) {
  Graph& graph = x.graph();
  const std::int64_t seed = options.seed.value_or(static_cast<std::int64_t>(graph.nodes().size()));
  const Value inputs[] = {x};
  return graph.apply1(
      kDropoutOp, inputs,
      {{"p", options.p}, {"seed", seed}, {"mode", std::string(dropout_mode_name(options.mode))}});
}

}  // namespace unitscale

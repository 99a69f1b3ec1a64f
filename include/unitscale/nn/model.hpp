#pragma once
// Model: the trained parameters of a graph, each with the ParameterRule its parametrization gives
// it. Modules (nn/modules.hpp) record their parameters through a Model and read their multipliers
// from the rules; optimizers (optim/optimizer.hpp) read the learning-rate factors and weight-decay
// modes; the initial values come from init_parameter, keyed by (seed, name).
//
//   Graph graph(parametrization.op_scaling());
//   Model model(graph, parametrization, {.seed = 42});
//   Linear up(model, "ffn.up", {.in = 64, .out = 128});
//   Value y = up(x);
//   Executor exec(graph, {loss});
//   model.initialize(exec);      // every parameter drawn from its rule
//   std::puts(model.summary().c_str());
//
// Parameters are state values (Graph::state) with their ParameterInfo, so the update ops of an
// optimizer change them in place and a checkpoint finds them by name.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

// A parameter of a model: its state value and its rule.
struct ModelParameter {
  Value value;
  ParameterRule rule;
};

struct ModelOptions {
  std::uint64_t seed = 0;  // keys init_parameter together with each parameter's name
};

class Model {
 public:
  // Throws unitscale::Error if the graph's scaling is not the parametrization's op_scaling() (a
  // u-μP model needs a unit-scaled graph, SP and μP an unscaled one). Both must outlive the model.
  Model(Graph& graph, const Parametrization& parametrization, ModelOptions options = {});
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  Graph& graph() const { return graph_; }
  const Parametrization& parametrization() const { return parametrization_; }
  std::uint64_t seed() const { return options_.seed; }

  // Records a trained parameter: a state value with `info`, whose rule the parametrization gives
  // at once (so a μP parameter without a base shape, or missing metadata, throws here, naming it).
  // Throws unitscale::Error if the name is already used.
  Value parameter(std::string name, Shape shape, ParameterInfo info);

  std::span<const ModelParameter> parameters() const { return parameters_; }
  // The rule of a parameter of this model; throws unitscale::Error for any other value.
  const ParameterRule& rule(Value parameter) const;
  std::int64_t parameter_count() const;  // total number of elements

  // The initial value of every parameter (init_parameter(seed, name, shape, rule)), loaded into
  // the executor's states.
  // With `scaled` (a graph rewritten by propagate_scales), each parameter is loaded as that graph
  // stores it (ScaledGraph::load_state: FP16 data and a scale, when the policy says so). The
  // values are made one parameter at a time in temporaries, whose memory is returned to the
  // system at the end (glibc keeps freed heap memory otherwise).
  void initialize(Executor& executor, const ScaledGraph* scaled = nullptr) const;

  // A table: one row per parameter (name, role, shape, init, multiplier, Adam and SGD LR factors,
  // weight-decay mode; ParameterRule::to_string), then the scheme and the total count.
  std::string summary() const;

 private:
  Graph& graph_;
  const Parametrization& parametrization_;
  ModelOptions options_;
  std::vector<ModelParameter> parameters_;
};

// μP's base shapes from a base model: `build_base` records the base-width model (same names) into
// a scratch graph, and each of its parameters' shapes becomes the base shape of that name in
// `parametrization` (idempotent: running it twice with the same base is a no-op). Does nothing
// for the other schemes' rules, but they accept it, so model code need not branch.
void set_base_shapes(Parametrization& parametrization,
                     const std::function<void(Model& base)>& build_base);

// The model's parameters under SP, μP and u-μP side by side: `build` records the model (the same
// code for every scheme), `build_base` its μP base-width version; one row per parameter with its
// role and shape, then for each scheme the init std, the forward multiplier and the Adam LR factor,
// and the total count. `options` is used for all three (u-μP's residual_blocks included).
std::string compare_parametrizations(const std::function<void(Model& model)>& build,
                                     const std::function<void(Model& base)>& build_base,
                                     const ParametrizationOptions& options = {});

// x multiplied by the parameter's forward multiplier where the graph does not apply it itself:
// in an unscaled graph (SP, μP) a multiplier m ≠ 1 records scale(x, m, m), the plain product
// whose gradient is m·g; in a unit-scaled graph (u-μP) the op's own unit scale is the multiplier
// and x is returned unchanged.
Value apply_multiplier(Value x, const ParameterRule& rule);

}  // namespace unitscale

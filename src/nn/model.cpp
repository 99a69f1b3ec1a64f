#include "unitscale/nn/model.hpp"

#include <fmt/format.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <utility>

#include "unitscale/error.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/ops/elementwise.hpp"

namespace unitscale {
namespace {

std::string_view scaling_name(Scaling scaling) {
  return scaling == Scaling::kUnit ? "unit-scaled" : "unscaled";
}

// Returns the heap memory freed so far to the system. glibc maps a large buffer on its own, but
// once such a buffer is freed it raises its mapping threshold to that size (up to 32 MiB) and
// serves later ones from its heap, whose freed memory it keeps. The initial values are such
// buffers, one parameter at a time (12 MiB for a 3072×1024 weight, and its encoding when scaled):
// kept, they would stay resident through training (15 to 45 MiB of a width-1024 decoder's peak,
// docs/performance.md).
void release_freed_heap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace

Model::Model(Graph& graph, const Parametrization& parametrization, ModelOptions options)
    : graph_(graph), parametrization_(parametrization), options_(options) {
  if (graph.scaling() != parametrization.op_scaling()) {
    throw Error(fmt::format(
        "Model: a {} model needs a {} graph, got a {} one (make the graph with "
        "Graph(parametrization.op_scaling()))",
        scheme_name(parametrization.scheme()), scaling_name(parametrization.op_scaling()),
        scaling_name(graph.scaling())));
  }
}

Value Model::parameter(std::string name, Shape shape, ParameterInfo info) {
  const bool taken = std::any_of(parameters_.begin(), parameters_.end(),
                                 [&](const ModelParameter& p) { return p.rule.name == name; });
  if (taken) throw Error(fmt::format("Model: parameter '{}' is defined twice", name));
  ParameterRule rule = parametrization_.rule(name, shape, info);
  const Value value = graph_.state(std::move(name), std::move(shape), std::move(info));
  parameters_.push_back({value, std::move(rule)});
  return value;
}

const ParameterRule& Model::rule(Value parameter) const {
  for (const ModelParameter& p : parameters_) {
    if (p.value == parameter) return p.rule;
  }
  throw Error(fmt::format("Model: value %{} is not a parameter of this model", parameter.id()));
}

std::int64_t Model::parameter_count() const {
  std::int64_t count = 0;
  for (const ModelParameter& p : parameters_) count += p.rule.shape.numel();
  return count;
}

void Model::initialize(Executor& executor, const ScaledGraph* scaled) const {
  for (const ModelParameter& p : parameters_) {
    // A parameter the executor's plan never reads (an executor for part of the model) has no
    // storage there and nothing to initialise.
    if (!executor.has_state(p.value)) continue;
    const Tensor initial = init_parameter(options_.seed, p.rule.name, p.rule.shape, p.rule);
    if (scaled != nullptr) {
      scaled->load_state(executor, p.value, initial.view());
    } else {
      executor.set_state(p.value, initial.view());
    }
  }
  release_freed_heap();
}

std::string Model::summary() const {
  std::string text;
  for (const ModelParameter& p : parameters_) {
    text += p.rule.to_string();
    text += '\n';
  }
  text += fmt::format("{} parameters ({} tensors), {}, seed {}\n", parameter_count(),
                      parameters_.size(), scheme_name(parametrization_.scheme()), options_.seed);
  return text;
}

void set_base_shapes(Parametrization& parametrization,
                     const std::function<void(Model& base)>& build_base) {
  // The base model is recorded under SP, which needs no base shapes, with μP's options (the same
  // metadata checks apply); only its parameters' names and shapes are kept.
  const Parametrization recording(Scheme::kSP, parametrization.options());
  Graph scratch(recording.op_scaling());
  Model base(scratch, recording);
  build_base(base);
  for (const ModelParameter& p : base.parameters()) {
    parametrization.set_base_shape(p.rule.name, p.rule.shape);
  }
}

std::string compare_parametrizations(const std::function<void(Model& model)>& build,
                                     const std::function<void(Model& base)>& build_base,
                                     const ParametrizationOptions& options) {
  constexpr Scheme kSchemes[] = {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP};
  std::vector<std::vector<ModelParameter>> parameters;
  std::int64_t count = 0;
  for (const Scheme scheme : kSchemes) {
    Parametrization policy(scheme, options);
    set_base_shapes(policy, build_base);
    Graph graph(policy.op_scaling());
    Model model(graph, policy);
    build(model);
    parameters.emplace_back(model.parameters().begin(), model.parameters().end());
    count = model.parameter_count();
  }
  std::string text = fmt::format("{:<32} {:<9} {:<12}", "parameter", "role", "shape");
  for (const Scheme scheme : kSchemes) {
    text += fmt::format(" | {:<6} {:>9} {:>9} {:>9}", scheme_name(scheme), "init std", "mult",
                        "adam lr");
  }
  text += '\n';
  for (std::size_t i = 0; i < parameters[0].size(); ++i) {
    const ParameterRule& first = parameters[0][i].rule;
    text += fmt::format("{:<32} {:<9} {:<12}", first.name,
                        first.role ? parameter_role_name(*first.role) : "(none)",
                        first.shape.to_string());
    for (const auto& scheme_parameters : parameters) {
      const ParameterRule& rule = scheme_parameters[i].rule;
      text += fmt::format(" | {:<6} {:>9.4g} {:>9.4g} {:>9.4g}", "", rule.initial_std(),
                          rule.multiplier, rule.adam_lr_factor);
    }
    text += '\n';
  }
  text += fmt::format("{} parameters ({} tensors)\n", count, parameters[0].size());
  return text;
}

Value apply_multiplier(Value x, const ParameterRule& rule) {
  if (x.graph().scaling() == Scaling::kUnit || rule.multiplier == 1.0) return x;
  return scale(x, rule.multiplier, rule.multiplier);
}

}  // namespace unitscale

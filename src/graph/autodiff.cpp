#include "unitscale/graph/autodiff.hpp"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "unitscale/error.hpp"
#include "unitscale/ops/elementwise.hpp"

namespace unitscale {
namespace {

std::vector<Shape> same_shape_as_first(std::span<const Shape* const> inputs, const Attributes&) {
  return {*inputs[0]};
}

void accumulate_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                       const Attributes&, const KernelContext&) {
  out[0].vector() = in[0].vector() + in[1].vector();
}

// y = a + b of two gradient contributions, independent terms: the L2 rule (a static zero drops
// out). No backward.
std::vector<Scale> accumulate_scale_rule(const ScaleRuleArgs& args) {
  return {args.l2({args.scale(0), args.scale(1)})};
}

// Sums two gradient contributions of the same value.
const OpDef kAccumulateGrad{
    .name = "accumulate_grad",
    .inputs = {"a", "b"},
    .infer_shapes = same_shape_as_first,
    .kernel = accumulate_kernel,
    .scale_propagation = accumulate_scale_rule,
    .pointwise = true,
};

std::vector<bool> depends_on(const Graph& graph, std::span<const int> order,
                             std::span<const Value> sources) {
  std::vector<bool> depends(static_cast<std::size_t>(graph.value_count()), false);
  for (const Value& v : sources) depends[static_cast<std::size_t>(v.id())] = true;
  for (const int n : order) {
    const Node& node = graph.nodes()[static_cast<std::size_t>(n)];
    bool any = false;
    for (const int in : node.inputs) any = any || (in >= 0 && depends[static_cast<std::size_t>(in)]);
    if (!any) continue;
    for (const int out : node.outputs) {
      if (out >= 0) depends[static_cast<std::size_t>(out)] = true;
    }
  }
  return depends;
}

// The gradient flowing into the loss: the given seed or ones, times the loss scale.
Value seed_of(Graph& graph, Value loss, const AutodiffOptions& options) {
  if (!std::isfinite(options.loss_scale) || options.loss_scale <= 0) {
    throw Error(fmt::format("autodiff: the loss scale must be finite and positive, got {}",
                            options.loss_scale));
  }
  if (!options.seed.present()) {
    if (loss.shape().numel() != 1) {
      throw Error("autodiff: without a seed the loss must have one element, got shape " +
                  loss.shape().to_string());
    }
    return graph.constant(Tensor::filled(loss.shape(), static_cast<float>(options.loss_scale)),
                          "grad_seed");
  }
  if (&options.seed.graph() != &graph || options.seed.shape() != loss.shape() ||
      options.seed.dtype() != DType::kF32) {
    throw Error(fmt::format("autodiff: the seed ({} {}) must belong to the graph and be f32 of the "
                            "loss's shape {}",
                            options.seed.shape().to_string(), dtype_name(options.seed.dtype()),
                            loss.shape().to_string()));
  }
  return options.loss_scale == 1.0 ? options.seed : scale_fwd(options.seed, options.loss_scale);
}

}  // namespace

std::vector<Value> autodiff(Graph& graph, Value loss, std::span<const Value> wrt,
                            const AutodiffOptions& options) {
  if (&loss.graph() != &graph) throw Error("autodiff: the loss belongs to a different graph");
  for (const Value& v : wrt) {
    if (!v.present() || &v.graph() != &graph) {
      throw Error("autodiff: every value to differentiate with respect to must belong to the graph");
    }
  }
  if (!is_floating(loss.dtype())) {
    throw Error(fmt::format("autodiff: the loss %{} has dtype {}, which has no gradient", loss.id(),
                            dtype_name(loss.dtype())));
  }
  // Only the forward nodes, in reverse execution order: the nodes recorded below are visited by
  // nobody.
  const std::vector<int> order = graph.execution_order();
  const std::vector<bool> needs_grad = depends_on(graph, order, wrt);

  // grads[id]: the gradient of value id accumulated so far (absent: none, i.e. zero).
  std::vector<Value> grads(static_cast<std::size_t>(graph.value_count()));
  auto add_grad = [&](int id, Value g) {
    Value& slot = grads[static_cast<std::size_t>(id)];
    if (!slot.present()) {
      slot = g;
      return;
    }
    const Value operands[] = {slot, g};
    const std::optional<Shape> shape[] = {graph.info(id).shape};
    slot = graph.apply_with_shapes(kAccumulateGrad, operands, {}, shape, id).at(0);
  };
  add_grad(loss.id(), seed_of(graph, loss, options));

  for (auto n = order.rbegin(); n != order.rend(); ++n) {
    const Node node = graph.nodes()[static_cast<std::size_t>(*n)];  // copy: apply() appends
    bool has_output_grad = false;
    for (const int out : node.outputs) {
      has_output_grad = has_output_grad || (out >= 0 && grads[static_cast<std::size_t>(out)].present());
    }
    // Integer values (ids, labels) have no gradient, whatever the op.
    auto wants_grad_of_input = [&](std::size_t i) {
      const int in = node.inputs[i];
      return in >= 0 && needs_grad[static_cast<std::size_t>(in)] &&
             is_floating(graph.info(in).dtype) &&
             ((node.op->nondifferentiable_inputs >> i) & 1) == 0;
    };
    bool wants_input_grad = false;
    for (std::size_t i = 0; i < node.inputs.size(); ++i) wants_input_grad = wants_input_grad || wants_grad_of_input(i);
    if (!has_output_grad || !wants_input_grad) continue;
    if (node.op->backward_kernel == nullptr) {
      throw Error(fmt::format("autodiff: op {} (producing %{}) is not differentiable", node.op->name,
                              node.outputs.empty() ? -1 : node.outputs[0]));
    }

    std::vector<Value> inputs;
    const std::size_t forward_values = node.inputs.size() + node.outputs.size();
    for (std::size_t i = 0; i < forward_values; ++i) {
      const int id = i < node.inputs.size() ? node.inputs[i] : node.outputs[i - node.inputs.size()];
      const bool read = (node.op->backward_reads >> i) & 1;
      inputs.push_back(read && id >= 0 ? graph.value(id) : Value{});
    }
    for (const int out : node.outputs) inputs.push_back(out >= 0 ? grads[static_cast<std::size_t>(out)] : Value{});

    std::vector<std::optional<Shape>> grad_shapes;
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      grad_shapes.push_back(wants_grad_of_input(i) ? std::optional<Shape>(graph.info(node.inputs[i]).shape)
                                                    : std::nullopt);
    }
    const std::vector<Value> input_grads =
        graph.apply_with_shapes(backward_of(*node.op), inputs, node.attrs, grad_shapes,
                                node.outputs.front());
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      if (input_grads[i].present()) add_grad(node.inputs[i], input_grads[i]);
    }
  }

  for (std::size_t id = 0; id < grads.size(); ++id) {
    if (grads[id].present()) graph.record_gradient(graph.value(static_cast<int>(id)), grads[id]);
  }
  std::vector<Value> result;
  for (const Value& v : wrt) result.push_back(grads[static_cast<std::size_t>(v.id())]);
  return result;
}

}  // namespace unitscale

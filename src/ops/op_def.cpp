#include "unitscale/ops/op_def.hpp"

#include <string>

#include "ops/derived_op.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::DerivedOp;

// In place: the string_views must point into `derived`'s own strings.
void derive_backward(const OpDef& forward, DerivedOp& derived) {
  OpDef& op = derived.op;
  op.name = derived.keep(std::string(forward.name) + "_backward");
  for (std::size_t i = 0; i < forward.inputs.size(); ++i) {
    op.inputs.push_back(derived.keep(std::string(forward.input_name(i)) + "?"));
  }
  for (const std::string_view output : forward.outputs) {
    op.inputs.push_back(derived.keep(std::string(output) + "?"));
  }
  for (const std::string_view output : forward.outputs) {
    op.inputs.push_back(derived.keep("grad_" + std::string(output) + "?"));
  }
  op.outputs.clear();
  for (std::size_t i = 0; i < forward.inputs.size(); ++i) {
    op.outputs.push_back(derived.keep("grad_" + std::string(forward.input_name(i))));
  }
  // The backward kernel reads the same resolved scales (β) as the forward node's attributes.
  op.attributes = forward.attributes;
  op.scales = forward.scales;
  op.kernel = forward.backward_kernel;
  op.scale_propagation = forward.backward_scale_propagation;
  op.derived_from = &forward;
  // A cast's gradient is the output gradient, cast: an op on the data, like the forward.
  op.runs_on_scaled_data = forward.runs_on_scaled_data;
  // A pointwise op's gradients at an index come from its inputs and output gradients there.
  op.pointwise = forward.pointwise;
  // A mover's gradient is moved back the same way, in the gradient's own dtype.
  if (forward.moves_values) {
    op.moves_values = true;
    op.input_dtypes.assign(op.inputs.size(), DTypeSet::all());
    op.infer_dtypes = [](std::span<const DType> inputs, const Attributes&) {
      return std::vector<DType>{inputs.back()};
    };
  }
  op.prepare = forward.backward_prepare;
}

}  // namespace

const OpDef& backward_of(const OpDef& op) {
  if (op.backward_kernel == nullptr) {
    throw Error("op " + std::string(op.name) + " is not differentiable (it has no backward kernel)");
  }
  return detail::derived_op<derive_backward>(op);
}

}  // namespace unitscale

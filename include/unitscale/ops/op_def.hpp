#pragma once
// OpDef: everything that defines an op, in one place: its inputs, shape inference, unit-scaling
// rule, forward kernel, the op that computes its vector-Jacobian product, and a slot for its
// scale-propagation rule. The graph layer interprets OpDefs; it has no op-specific code.
//
// Conventions every op follows:
// - Optional inputs (a bias) and gradients nobody asked for are *absent*: a null Shape pointer in
//   shape inference, a view whose data() is null in kernels.
// - Unit scales are attributes, usually "alpha" (forward output scale) and "beta_<input name>"
//   (gradient scales), resolved at record time by `unit_scale` when the graph is unit-scaled.
//   Kernels read them with a default of 1, which is how the same op runs unscaled (SP). `scales`
//   lists exactly the names its kernels read: Graph::set_scale accepts those and nothing else.
// - An op gives only its backward *kernel* (and GEMM preparation); the backward OpDef is derived
//   from the forward one (backward_of): named "<op>_backward", it takes (forward inputs...,
//   forward outputs..., "grad_<output>"...), all optional — the forward values it does not read
//   (see `backward_reads`) are passed absent so their memory can be freed early — and produces one
//   gradient per forward input, each absent when not requested (the kernel skips absent outputs).
//   Output gradients that are identically zero are absent too.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "unitscale/format/rounding.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/scale_rules.hpp"
#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

struct OpDef;
class GradientExchange;  // distributed/gradient_exchange.hpp

using InferShapesFn = std::vector<Shape> (*)(std::span<const Shape* const> inputs,
                                             const Attributes& attrs);
// The dtypes of an op's outputs from its inputs' dtypes (an absent input reads as f32) and its
// attributes; it may throw unitscale::Error for a combination the op does not support.
using InferDTypesFn = std::vector<DType> (*)(std::span<const DType> inputs,
                                             const Attributes& attrs);
using UnitScaleFn = void (*)(std::span<const Shape* const> inputs, Attributes& attrs);
// What a kernel may know about the run it is part of, beyond its inputs and attributes.
struct KernelContext {
  // How many times the executor has run before this run (0, 1, 2, ...). Stochastic ops (dropout)
  // mix it into their seed so that every training step draws a fresh mask, while the forward and
  // backward nodes of one step, which run with the same step, agree on it.
  std::uint64_t step = 0;
  // The op of the node being run, for kernels shared by derived ops (see OpDef::derived_from).
  const OpDef* op = nullptr;
  // Under scale propagation, for the kernels of ops with OpDef::gemm_operands_as_codes (and of
  // their backward ops): by input index, the dequantisation scale of each input that arrives as a
  // scaled value's stored codes (E4M3, E5M2, BF16 or FP16 data) rather than as fp32 values; 1 past
  // the end. Such a kernel hands the codes to the GEMM engine as they are, the scale folded into
  // the GEMM's output scale (ops/gemm_input_formats.hpp).
  std::span<const float> code_scales = {};
  float code_scale(std::size_t input) const {
    return input < code_scales.size() ? code_scales[input] : 1.0f;
  }
  // Under scale propagation, for outputs that the kernel writes straight as codes (OpDef::
  // gemm_coded_outputs, whose views then have their storage dtype rather than f32): by output
  // index, the factor (the reciprocal of the output's scale) the GEMM multiplies its result by
  // before encoding it, as `code_overflow` says; 1 past the end.
  std::span<const float> code_factors = {};
  Overflow code_overflow = Overflow::kNonFinite;
  float code_factor(std::size_t output) const {
    return output < code_factors.size() ? code_factors[output] : 1.0f;
  }
  // The exchange data-parallel training runs its gradients through (Executor::
  // set_gradient_exchange), for the exchange ops' kernels; null when the executor has none.
  GradientExchange* gradient_exchange = nullptr;
};

using KernelFn = void (*)(std::span<const ConstTensorView> inputs,
                          std::span<const TensorView> outputs, const Attributes& attrs,
                          const KernelContext& context);
// Scale propagation (Scalify, arXiv 2407.17353): the scales of an op's outputs, one per output,
// from its inputs' scales and shapes (ops/scale_rules.hpp says what a rule promises).
using ScalePropagationFn = std::vector<Scale> (*)(const ScaleRuleArgs& args);
// Called once when an executor plans a node, with the kernel's views except that their data is
// never read: a view's pointer only tells present from absent (see prepare_placeholder()). Ops
// whose kernels run GEMMs create them here (gemm_prepare), so no kernel call pays for it.
using PrepareFn = void (*)(std::span<const ConstTensorView> inputs,
                           std::span<const TensorView> outputs, const Attributes& attrs);

// The most workspace (bytes taken at once from the calling thread's detail::Workspace) one call
// of the op's kernel takes, from the views' shapes and dtypes alone (their data is never read, as
// for a PrepareFn): the executor sets that much aside for the node in its arena, at the node's
// step. `op` is the node's op (a derived op's kernel is shared).
using WorkspaceFn = std::size_t (*)(std::span<const ConstTensorView> inputs,
                                    std::span<const TensorView> outputs, const Attributes& attrs,
                                    const OpDef& op);

struct OpDef {
  std::string_view name;
  // One name per input, used in error messages, the printer and "beta_<name>"; a trailing '?'
  // marks an optional input.
  std::vector<std::string_view> inputs;
  // One name per output (the printer and the backward op's "grad_<name>" inputs).
  std::vector<std::string_view> outputs = {"y"};
  // The attributes the op takes besides its scales (Graph::apply rejects any other name).
  std::vector<AttributeSpec> attributes = {};
  // The unit scales the op's kernels (forward and backward) read; empty: the op has none.
  std::vector<std::string_view> scales = {};
  // input_dtypes[i]: the dtypes input i accepts (Graph::apply rejects others, naming the input).
  // Inputs past the end of the list, and all inputs when it is empty, accept f32 only.
  std::vector<DTypeSet> input_dtypes = {};
  // null: every output is f32.
  InferDTypesFn infer_dtypes = nullptr;
  // in_place[o]: the input whose storage output o overwrites (an update op: a state value, see
  // Graph::state), or -1; outputs past the end are not in place. The kernel then gets the same
  // memory as that input and output, and the executor keeps the result as the state's new value.
  // When that input is an absent optional one, the output is absent.
  std::vector<int> in_place = {};
  // Bit o set: output o is a state that no other op reads (an optimizer's moments). A scaled graph
  // stores it with the scale that puts its largest magnitude at the top of its format, where a
  // value other ops read gets a unit-rms scale (their scale rules assume data near 1).
  std::uint32_t private_states = 0;
  // Bit o set: private state o is a first moment, a running mean of the gradients (Adam's m, SGD's
  // momentum buffer), whose storage ScalePolicy::first_moment may narrow further.
  std::uint32_t first_moments = 0;
  InferShapesFn infer_shapes = nullptr;  // null only for derived backward ops and autodiff's own
  UnitScaleFn unit_scale = nullptr;      // null: the op has no scales of its own
  KernelFn kernel = nullptr;
  PrepareFn prepare = nullptr;  // null: nothing to prepare
  WorkspaceFn workspace = nullptr;  // null: its kernel takes no workspace worth planning
  // The vector-Jacobian product's kernel over the derived backward op's inputs (see the
  // conventions above); null: not differentiable.
  KernelFn backward_kernel = nullptr;
  PrepareFn backward_prepare = nullptr;
  // Bit i set: the backward op reads forward value i, counting inputs then outputs.
  std::uint32_t backward_reads = ~std::uint32_t{0};
  // Bit i set: forward input i has no gradient (token ids, labels, masks), so autodiff never
  // asks the backward op for it.
  std::uint32_t nondifferentiable_inputs = 0;
  // The scale rules of the op and of its derived backward op (ops/scale_rules.hpp); null: none,
  // and propagate_scales refuses a graph that uses the op.
  ScalePropagationFn scale_propagation = nullptr;
  ScalePropagationFn backward_scale_propagation = nullptr;
  // Under scale propagation the op applies to a scaled value's data and keeps its scale, as
  // Scalify's casts do (a cast does not rescale): casts and format rounding, whose result would
  // otherwise depend on where the scale puts the value. Such ops need no scale rule.
  bool runs_on_scaled_data = false;
  // The op only moves its input's elements (reshape, transpose, slice): its kernels, forward and
  // backward, take any dtype and produce the same one, so under scale propagation (with
  // runs_on_scaled_data) it moves the stored data as it is, without decoding it.
  bool moves_values = false;
  // Its backward op reads the forward values it saves through smooth, bounded functions (a norm's
  // statistics, an activation's derivative), so that 8-bit copies of them
  // (ScalePolicy::saved_activations) cost it about the precision the E5M2 gradients beside them
  // cost anyway. Not set where the backward turns small relative errors of its saved values into
  // large ones (softmax and cross entropy, whose inputs enter through exp).
  bool backward_tolerates_8_bit_saves = false;
  // For a derived op (a backward op, a scaled op): the op it was derived from.
  const OpDef* derived_from = nullptr;
  // The op's kernels read GemmInputFormats attributes (ops/gemm_input_formats.hpp): its inputs
  // other than a bias are GEMM operands (input 1 the weight, where there is one), rounded to the
  // input format, and output 0's gradient is rounded to the gradient format. simulate_format
  // rounds such ops.
  bool rounds_gemm_inputs = false;
  // With rounds_gemm_inputs: the kernels (forward and backward) also take their GEMM operands as
  // stored codes with scales (KernelContext::code_scales), so that a scaled graph's FP8 and BF16
  // operands reach the GEMM engine without being decoded to fp32 first.
  bool gemm_operands_as_codes = false;
  // With gemm_operands_as_codes: bit o set: output o of the op (gemm_coded_outputs) or of its
  // backward op (backward_gemm_coded_outputs) is one GEMM's result (with a bias at most), which
  // the kernel can have the GEMM engine encode panel by panel into the output's storage
  // (KernelContext::code_factors), so that no fp32 copy of it is made.
  std::uint32_t gemm_coded_outputs = 0;
  std::uint32_t backward_gemm_coded_outputs = 0;
  // With rounds_gemm_inputs: the op's GEMMs are attention's (q·kᵀ, then P·v after a softmax, and
  // their backward), whose kernels read a "probabilities_format" attribute. simulate_format
  // rounds them only when asked (attention_inputs); propagate_scales gives their operands
  // ScalePolicy::attention_inputs storage and their probabilities attention_probabilities.
  bool attention_gemms = false;
  // The executor runs the op's nodes as soon as their inputs are ready, before nodes recorded
  // earlier (Graph::execution_order): a gradient exchange starts while backward goes on.
  bool runs_early = false;
  // Every output element is a function of the inputs' elements at the same index alone (and of
  // the attributes, never of the index itself): relu, add, residual_add, their backward ops, ....
  // Where all inputs and outputs have as many elements (no broadcasting), the kernel may be run on
  // matching slices of them, as the scaled ops do to decode, compute and encode a cache-sized
  // chunk at a time. An in-place update (adam_update, sgd_update) may be pointwise too: its
  // one-element inputs that no output updates (the lr and gradient multipliers) are then passed
  // whole to every slice.
  bool pointwise = false;

  int output_count() const { return static_cast<int>(outputs.size()); }
  bool input_is_optional(std::size_t i) const { return inputs[i].ends_with('?'); }
  std::string_view input_name(std::size_t i) const {
    return input_is_optional(i) ? inputs[i].substr(0, inputs[i].size() - 1) : inputs[i];
  }
  DTypeSet accepted_dtypes(std::size_t i) const {
    return i < input_dtypes.size() ? input_dtypes[i] : DTypeSet{DType::kF32};
  }
};

// The backward op of a differentiable op (derived once, then cached; the reference stays valid for
// the program's life). Throws unitscale::Error naming the op if it has no backward kernel.
const OpDef& backward_of(const OpDef& op);

// A resolved unit scale of a node, 1 when the graph is unscaled.
inline float scale_of(const Attributes& attrs, std::string_view name) {
  return static_cast<float>(attrs.get_double("scale", name, 1.0));
}

// The data pointer of every present view a PrepareFn receives: a valid address that is never read.
inline float* prepare_placeholder() {
  static float placeholder = 0.0f;
  return &placeholder;
}

inline bool present(const ConstTensorView& t) { return t.present(); }
inline bool present(const TensorView& t) { return t.present(); }

}  // namespace unitscale

#pragma once
// Scale-propagation rules (Scalify, arXiv 2407.17353): what an op's output scales are, given its
// inputs' scales and shapes. Every op of the zoo has one (OpDef::scale_propagation) and every
// differentiable op one for its backward op (OpDef::backward_scale_propagation); the
// propagate_scales pass evaluates them at run time, on the scales the values actually have.
//
// What a rule promises. A value is data · scale. The scaled kernel materialises its inputs in fp32,
// runs the op and divides each output by the rule's scale before storing it in a narrow format, so
// the rule decides where the output's data sits, not what it is: a rule that tracks the output's
// magnitude keeps FP16 or FP8 data near 1, where those formats are accurate, whatever the inputs'
// scales are. The rules follow from how each op scales:
// - an output that is homogeneous in an input (linear in it, like a matmul in either operand, a
//   gradient in the output gradient, relu in x) carries that input's scale as a factor;
// - sums of independent terms combine scales by the L2 rule, √(s_a² + s_b²), and a contraction or
//   reduction over K terms gains √K (`fan_in`);
// - a unit-scaled op's own α or β multiplies in, so that on a unit-scaled graph the rule gives
//   scale ≈ 1 and the data is the op's output itself;
// - an output the inputs' scales do not reach (a normalisation, exp, a bounded activation) gets
//   scale 1: the op is unit-scaled, so its output is near 1 already; where an input's scale
//   changes the output's size without being a factor of it (softmax's temperature, log's ln s), the
//   rule works that size out (docs/scalify.md lists every op's rule).
// Constant factors are rounded to powers of two as the pass's policy says (ScaleRuleArgs::p2);
// products of power-of-two scales stay exact powers of two.

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string_view>

#include "unitscale/ops/attributes.hpp"
#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/shape.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

// A term of a weighted L2 rule: weight · scale.
struct WeightedScale {
  double weight;
  Scale scale;
};

struct ScaleRuleArgs {
  // Per input: its scale (1 for a plain tensor or an absent input) and shape (null when absent).
  // A backward op's inputs are the forward inputs, the forward outputs and the output gradients
  // (see op_def.hpp); those the backward kernel does not read are absent.
  std::span<const Scale> scales;
  std::span<const Shape* const> input_shapes;
  // Per output: its shape, null for an absent output, whose scale is ignored. A backward op's
  // outputs have the forward inputs' shapes, which is where its rules find them.
  std::span<const Shape* const> output_shapes;
  const Attributes& attrs;
  Pow2Rounding rounding = Pow2Rounding::kDown;
  // Per input: its stored data, not multiplied by its scale, for the rules that measure it (dynamic
  // rescaling); empty where the caller has no data, as when a rule is evaluated on shapes alone.
  std::span<const ConstTensorView> data = {};

  const Scale& scale(std::size_t input) const { return scales[input]; }
  bool has_input(std::size_t input) const { return input_shapes[input] != nullptr; }
  // The shape of a present input or output; throws unitscale::Error naming it when absent.
  const Shape& input_shape(std::size_t input) const;
  const Shape& output_shape(std::size_t output) const;
  bool has_output(std::size_t output) const { return output_shapes[output] != nullptr; }

  // A rule's constant factor (finite, > 0) rounded as the policy says (Scalify's p2). A factor
  // within 2^-50 (relative) of a power of two is taken as that power: (1/√K)·√K, or √(w_r² + w_s²)
  // of weights whose squares sum to 1, may come out 1 − 2^-53 in double, which rounding down would
  // halve, and a unit-scaled graph would lose its exact scales.
  Scale p2(double factor) const;
  // p2(multiplier · √count): the growth of a sum of `count` independent terms, e.g. a matmul's
  // output over its contracted dimension K (count 0 counts as 1: an empty sum has no growth).
  Scale fan_in(double count, double multiplier = 1.0) const;
  // The L2 rule for a sum of independent terms, p2(multiplier · √Σ tᵢ²), formed as max · √(1 +
  // Σ(tᵢ/max)²) so that it cannot overflow; zero terms drop out, and all-zero terms give zero.
  Scale l2(std::initializer_list<Scale> terms, double multiplier = 1.0) const;
  // The same for weighted terms, p2(√Σ(wᵢ·sᵢ)²), e.g. K products of scale s_x·s_W plus a bias:
  // weighted_l2({{α·√K, s_x·s_W}, {α, s_b}}).
  Scale weighted_l2(std::initializer_list<WeightedScale> terms) const;
  // √s kept a power of two when s is one (Scalify's odd-exponent rule): 2^⌊e/2⌋ for s = 2^e
  // (2^⌈e/2⌉ when the policy rounds up), the data absorbing the √2 of an odd e; a general scale
  // through p2; √0 = 0.
  Scale sqrt(const Scale& s) const;
  // A resolved unit scale of the node, as its kernels read it (1 when the graph is unscaled).
  double unit_scale(std::string_view name) const;
};

// The largest of some scales (Scalify's max / select / concatenate rule); zeros count as smallest.
Scale max_scale(std::initializer_list<Scale> terms);
Scale max_scale(std::span<const Scale> terms);

}  // namespace unitscale

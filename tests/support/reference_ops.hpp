#pragma once
// Plain-loop, double-precision reference implementations of the FORWARD of every op in
// forward_ops(), written from the formulas in the ops' header comments (include/unitscale/ops/*.hpp)
// and independent of the library's kernels: nothing here calls into src/ (no kernel, no shape
// inference, no unit-scaling rule, no Eigen), it only reads the node's Attributes, so the resolved
// unit scales (alpha, beta_*, alpha_residual, ...) and every op parameter (mult, axis, eps, ...)
// are taken exactly as a kernel would see them.
//
// reference_gradcheck.hpp differentiates these forwards by central finite differences in double
// and compares the result with the ops' FP32 backward kernels.
//
// Conventions shared with the library (op_def.hpp, docs/unit_scaling.md):
//   - a unit-scaled op computes y = α·f(x) and dx_i = β_i·J_iᵀ·g, where f is the op with every
//     scale attribute at 1; reference_scale_names() lists the scale attributes of each op and
//     reference_gradient_factors() gives the factor each input's gradient carries relative to the
//     true vector-Jacobian product of f (β_i for most ops; see the function for the exceptions:
//     residual_split, residual_add and the losses' "unit" gradient).
//   - Absent optional inputs (bias, affine weight) are std::nullopt.
//   - Integer inputs (embedding ids, cross_entropy labels, where's cond) are carried as doubles
//     holding the exact values; the references convert them.
//
// Dropout (the dropout op and attention's dropout) is specified as a pure function of
// (seed, element index, p); the references take that function from RefContext::keeps rather than
// re-implementing the hash, so the mask is an input of the reference, not something it checks.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "unitscale/ops/attributes.hpp"
#include "unitscale/tensor/shape.hpp"

namespace unitscale::testing {

// A dense row-major double tensor.
struct RefTensor {
  Shape shape;
  std::vector<double> v;

  RefTensor() = default;
  explicit RefTensor(Shape s);  // zero-filled
  RefTensor(Shape s, std::vector<double> values);  // throws std::invalid_argument on a size mismatch

  std::int64_t numel() const { return static_cast<std::int64_t>(v.size()); }
  double& operator[](std::int64_t i) { return v[static_cast<std::size_t>(i)]; }
  double operator[](std::int64_t i) const { return v[static_cast<std::size_t>(i)]; }
};

using RefInputs = std::vector<std::optional<RefTensor>>;

struct RefContext {
  // Whether dropout with `seed` keeps element `index` (flat, row-major) of the tensor it is
  // applied to, with drop probability p. Needed only for dropout with p > 0 in training mode and
  // for attention with dropout > 0; the references throw if it is empty then.
  std::function<bool(std::uint64_t seed, std::int64_t index, double p)> keeps;
};

// The op names that have a reference (every op of forward_ops() at the time of writing).
std::span<const std::string_view> reference_op_names();
bool has_reference(std::string_view op);

// The outputs of `op` on `inputs` with attributes `attrs` (including any resolved unit scales).
// Throws std::invalid_argument for an unknown op or inputs the formulas do not cover.
std::vector<RefTensor> reference_forward(std::string_view op, const RefInputs& inputs,
                                         const Attributes& attrs, const RefContext& context = {});

// The attributes that are unit scales of `op` (absent: 1). Removing them from the attributes gives
// the plain function f whose vector-Jacobian product the backward kernel scales.
std::span<const std::string_view> reference_scale_names(std::string_view op);

// attrs without the scale attributes of `op`.
Attributes without_scales(std::string_view op, const Attributes& attrs);

// factors[i][k]: the backward kernel's gradient of input i is Σ_k factors[i][k]·J_{k,i}ᵀ·g_k,
// where J_{k,i} is the Jacobian of output k of the plain function (without_scales(attrs)) with
// respect to input i and g_k the gradient of output k. `output_count` is the number of outputs.
std::vector<std::vector<double>> reference_gradient_factors(std::string_view op,
                                                            const RefInputs& inputs,
                                                            const Attributes& attrs,
                                                            int output_count);

}  // namespace unitscale::testing

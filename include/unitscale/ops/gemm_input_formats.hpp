#pragma once
// The formats a matmul-bearing op (linear, linear_readout, matmul, scaled_dot_product_attention)
// rounds its GEMM operands to: the FP8 training recipe of the unit-scaling papers (arXiv 2303.11257
// §5, 2407.17465 §4.4).
//
//   forward    y  = op(q_in(x), q_in(W))           x and W rounded to `inputs` (e.g. E4M3)
//   backward   g' = q_grad(∂L/∂y)                   the incoming gradient rounded to `gradients`
//              dx = op(g', q_in(W)),  dW = op(g', q_in(x))
//
// The rounded operands are never stored as fp32 values: they are encoded into codes of their
// format (1 byte for FP8) and handed to the GEMM engine, which decodes them to BF16 in its scratch
// and runs on the CPU's BF16 units where it has them (every E4M3 and E5M2 value is exact in BF16;
// see ops/gemm.hpp), and to fp32 elsewhere. Formats the GEMM does not take as codes (the FNUZ
// variants) are carried in BF16, which holds all their values exactly. A bias, and everything
// outside the GEMMs, stays fp32; the bias gradient sums the rounded gradient, as the GEMMs see it.
//
// The backward pass rounds x and W again rather than keeping the forward's codes (the graph saves
// the fp32 values for it anyway); rounding is deterministic, and stochastic rounding draws the
// same bits in both, so both passes see the same operands.
//
// Scaling. Off by default: unit-scaled tensors sit near 1 and are cast as they are, which is the
// papers' point. With `per_tensor_scaling`, each operand is divided by the power of two that
// brings its amax to at most the format's largest value (2^ceil(log2(amax / max)); amax 0 or
// non-finite: 1), and the GEMM multiplies it back exactly in its output scale: the per-tensor
// "current scaling" other FP8 libraries use for models that are not unit-scaled.
//
// These are node attributes, so autodiff hands them to the backward node with the others; the
// simulate_format pass (graph/simulate_format.hpp) sets them on a whole model.

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "unitscale/format/rounding.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/gemm.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

struct GemmInputFormats {
  DType inputs = DType::kF32;     // x and W in the forward and backward GEMMs; f32: not rounded
  DType gradients = DType::kF32;  // the gradient of the output; f32: not rounded
  Rounding rounding = Rounding::kNearestEven;           // of x and W
  Rounding gradient_rounding = Rounding::kNearestEven;  // of the gradient
  // Saturate (the FP8 recipes') clamps values beyond the format's range to its largest; non_finite
  // makes them ±Inf (NaN in formats without Inf), as real FP16 storage does. Of x and W, and of
  // the gradient: dynamic loss scaling needs the gradient's overflow to show as Inf.
  Overflow overflow = Overflow::kSaturate;
  Overflow gradient_overflow = Overflow::kSaturate;
  std::int64_t seed = 0;  // stochastic rounding's stream (mixed with the executor's step)
  bool per_tensor_scaling = false;

  bool rounds_inputs() const { return inputs != DType::kF32; }
  bool rounds_gradients() const { return gradients != DType::kF32; }

  // The attributes below, on a node of `op` (errors name it); absent ones keep the defaults.
  static GemmInputFormats of(const Attributes& attrs, std::string_view op);
  // Writes the attributes (all of them, so that a node's formats can be replaced).
  void record_in(Attributes& attrs) const;
  // The attribute declarations for an OpDef's `attributes`.
  static std::vector<AttributeSpec> attribute_specs();
};

// Checks that `format` can be a GEMM operand format (f32, f16, bf16 or an 8-bit float other than
// e8m0fnu) and throws unitscale::Error naming `op` and `what` otherwise.
void check_gemm_input_format(DType format, std::string_view op, std::string_view what);

namespace detail {

// Which operand of a node: its streams of random bits differ. kThird is a third input (attention's
// v after q and k).
enum class GemmOperandRole : std::uint8_t { kLeft = 0, kRight = 1, kGradient = 2, kThird = 3 };

// One GEMM operand as a node's formats give it: the fp32 tensor itself (format f32), or its codes
// in the format (owned here), with the dequantisation scale in the GemmMatrix.
class GemmOperand {
 public:
  GemmMatrix matrix(bool transposed = false) const {
    GemmMatrix m = matrix_;
    m.transposed = transposed;
    return m;
  }
  // Matrix `index` of the batch of `rows`-row matrices the operand holds (its rows split evenly):
  // a batched matmul's or an attention slice's operand.
  GemmMatrix block(std::int64_t index, std::int64_t rows, bool transposed = false) const;
  std::int64_t numel() const { return matrix_.rows * matrix_.cols; }
  // Decodes the operand into `out` (numel floats): its values as the GEMM sees them.
  void decode(float* out) const;
  // FP8 codes replaced by their BF16 codes (exact, same scale), in a buffer of the operand's own:
  // an op that multiplies the operand many times (attention, slice by slice, forward and again
  // in backward) converts it once instead of in every GEMM. Other types are left as they are.
  void widen_fp8_to_bf16();

 private:
  friend GemmOperand gemm_operand(const ConstTensorView&, DType, Rounding, Overflow, bool,
                                  std::uint64_t, bool);
  friend GemmOperand gemm_operand(const ConstTensorView&, const GemmInputFormats&, GemmOperandRole,
                                  const KernelContext&, std::size_t);
  std::unique_ptr<std::byte[]> codes_;
  GemmMatrix matrix_;
};

// The f32 tensor `x`, seen as a matrix (leading dims flattened into rows), rounded to `format`
// (f32: x as it is). `stream` keys stochastic rounding's bits. With `placeholder` nothing is read
// or written: only the matrix's type and shape are right, for gemm_prepare.
GemmOperand gemm_operand(const ConstTensorView& x, DType format, Rounding rounding,
                         Overflow overflow, bool per_tensor_scaling, std::uint64_t stream,
                         bool placeholder = false);

// An input (kLeft, kRight, kThird) rounded to formats.inputs, or the output's gradient (kGradient)
// to formats.gradients, with the stream of that operand at executor step `step`.
GemmOperand gemm_operand(const ConstTensorView& x, const GemmInputFormats& formats,
                         GemmOperandRole role, std::uint64_t step, bool placeholder = false);

// The two inputs of a two-operand GEMM op (linear's x and W, matmul's left and right), rounded.
struct GemmOperandPair {
  GemmOperand left, right;
};
GemmOperandPair gemm_operands(const ConstTensorView& left, const ConstTensorView& right,
                              const GemmInputFormats& formats, std::uint64_t step,
                              bool placeholder = false);

// Input `input` of a GEMM op's kernel as its operand: an f32 tensor as the overload above gives
// it; stored codes (a dtype the GEMM engine takes: e4m3fn, e5m2, bf16, f16) as they are, read in
// place, with context.code_scale(input) as their dequantisation scale.
GemmOperand gemm_operand(const ConstTensorView& x, const GemmInputFormats& formats,
                         GemmOperandRole role, const KernelContext& context, std::size_t input);
// Inputs 0 and 1 (linear's x and W, matmul's left and right) so.
GemmOperandPair gemm_operands(const ConstTensorView& left, const ConstTensorView& right,
                              const GemmInputFormats& formats, const KernelContext& context);
// Whether stored codes of `dtype` can be a GEMM operand as they are.
bool gemm_takes_codes(DType dtype);

// The GemmType that carries `format`'s codes: its own where the GEMM engine takes it, else BF16.
GemmType gemm_carrier_type(DType format);

// Output `output` of a GEMM op's kernel as the GEMM's result: fp32 values, or codes of the
// output's dtype (KernelContext::code_factors), which the caller's alpha must then include
// context.code_factor(output).
GemmOutput gemm_output(const TensorView& y, const KernelContext& context, std::size_t output);

}  // namespace detail
}  // namespace unitscale

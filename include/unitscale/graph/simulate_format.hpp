#pragma once
// simulate_format: trains a model in low precision by rewriting its graph, the FP8 recipe of the
// unit-scaling papers (arXiv 2303.11257 §5; u-μP, arXiv 2407.17465 §4.4, "FP8 out of the box").
//
//   Graph graph(parametrization.op_scaling());
//   ... Value loss = decoder.loss(ids, targets);
//   simulate_format(graph, SimulateFormatOptions::fp8());   // before or after autodiff
//   OptimizerStep step = record_training_step(model, loss, optimizer);
//
// Matmuls (linear, linear_readout and matmul: the ops with OpDef::rounds_gemm_inputs): x and W
// (or the two operands) are rounded to E4M3 in the forward pass, and the gradient flowing into the
// matmul to E5M2 before both backward GEMMs, which use the rounded operands
// (ops/gemm_input_formats.hpp). The rounded operands stay codes and run on the GEMM engine's
// low-precision path, on BF16 units where the CPU has them. No scaling by default: a unit-scaled
// model's tensors sit where the formats are accurate, which is the papers' claim; per-tensor
// scaling is an option for models that are not. Everything else (softmax, norms, residuals, loss,
// optimizer, master weights) stays fp32.
//
// Attention. With `attention_inputs`, scaled_dot_product_attention's q, k and v are rounded like
// matmul inputs and its output gradient like a matmul's, so QKᵀ and PV (and their backward GEMMs)
// take FP8 operands; the probabilities and their gradient stay fp32. Off by default, as in the
// u-μP paper's recipe, which casts the linear layers' operands only.
//
// Critical matmuls. The u-μP paper keeps the inputs of the attention output projection and the FFN
// down projection in higher precision, as the most sensitive matmuls: list their modules in
// `high_precision_modules` (critical_matmul_modules() gives the decoder's "attn.out" and
// "mlp.down"); a linear whose weight is "<module>.weight", or ends in ".<module>.weight", is left
// as it is.
//
// Whole-model FP16 / BF16 (`values`): every f32 value the forward graph computes or reads, and so
// every gradient flowing back through it, is rounded to the format (round_to_format nodes; overflow
// gives ±Inf as real FP16 storage would), and the matmuls take that format too. This needs the
// forward graph alone: the pass refuses a graph that already has a backward pass.
//
// Randomness: stochastic rounding draws its bits from (options seed, node, step, operand), so runs
// are reproducible and every step draws fresh bits.

#include <cstdint>
#include <string>
#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"

namespace unitscale {

struct SimulateFormatOptions {
  // How the matmuls' operands are rounded (the seed is mixed with each node's index); f32 inputs
  // and gradients leave the matmuls alone.
  GemmInputFormats matmuls = {.inputs = DType::kE4M3FN, .gradients = DType::kE5M2};
  // Also round attention's q, k, v and output gradient (see above).
  bool attention_inputs = false;
  // Modules whose matmuls keep fp32 operands, e.g. critical_matmul_modules().
  std::vector<std::string> high_precision_modules = {};
  // Rounds every forward value and its gradient to this format (f16, bf16); f32: none.
  DType values = DType::kF32;
  Overflow value_overflow = Overflow::kNonFinite;

  // The recipes: E4M3 matmul inputs and E5M2 gradients, optionally keeping the critical matmuls
  // in fp32; and the whole model in FP16 or BF16 (values and matmuls).
  static SimulateFormatOptions fp8(bool keep_critical_matmuls = false);
  static SimulateFormatOptions fp16();
  static SimulateFormatOptions bf16();
  // "fp8", "fp8-critical" (fp8 with the critical matmuls kept), "fp16", "bf16"; throws
  // unitscale::Error naming the valid names otherwise.
  static SimulateFormatOptions named(std::string_view recipe);
};

// The decoder's critical matmuls (nn/transformer.hpp's module names): the attention output and
// FFN down projections.
std::vector<std::string> critical_matmul_modules();

// What the pass did.
struct SimulateFormatReport {
  // By weight name (the right operand's), "node N" for an unnamed one, "attention (node N)".
  std::vector<std::string> rounded_matmuls;
  std::vector<std::string> kept_matmuls;     // left in fp32 by high_precision_modules
  int rounded_values = 0;                    // round_to_format nodes inserted
  std::string to_string() const;             // "simulate_format: 9 of 11 matmuls rounded ..."
};

// Rewrites `graph` as above. Throws unitscale::Error (changing nothing) for an invalid format,
// high-precision modules none of which has a matmul (a typo would silently keep nothing; a model
// without, say, an FFN may still keep its attention outputs), or whole-model rounding of a graph
// that already has a backward pass.
SimulateFormatReport simulate_format(Graph& graph, const SimulateFormatOptions& options);

}  // namespace unitscale

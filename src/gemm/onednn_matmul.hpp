#pragma once
// oneDNN matmul primitives for single (unbatched) FP32 and BF16 GEMMs, created once per problem
// and cached; see unitscale/ops/gemm.hpp for the contract.

#include <cstdint>
#include <string>

#include "unitscale/ops/gemm.hpp"

namespace unitscale::detail {

// A problem oneDNN runs: batch 1, operand types kF32 or kBF16 (both the same), and strides in
// elements as in GemmProblem (0 never: callers resolve packed strides first).
class OneDnnMatmul {
 public:
  // Creates the primitive (milliseconds); throws unitscale::Error if oneDNN cannot run it.
  explicit OneDnnMatmul(const GemmProblem& problem);
  ~OneDnnMatmul();
  OneDnnMatmul(const OneDnnMatmul&) = delete;
  OneDnnMatmul& operator=(const OneDnnMatmul&) = delete;

  // c = output_scale · (a · b) + bias (+ c when the problem accumulates). Safe to call from
  // several threads at once; inside an OpenMP parallel region it runs on the calling thread only.
  void run(const void* a, const void* b, float* c, const float* bias, float output_scale) const;

  // The implementation oneDNN chose, e.g. "gemm:jit" or "brg:avx512_core_amx".
  std::string implementation() const;
  // Whether that is oneDNN's reference (naive loop) kernel.
  bool is_reference() const { return implementation().starts_with("ref"); }

  struct State;

 private:
  State* state_;
};

// The instruction set oneDNN dispatches to, and whether it has native BF16 dot products.
std::string onednn_isa();
bool onednn_has_native_bf16();

}  // namespace unitscale::detail

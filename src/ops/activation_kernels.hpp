#pragma once
// The interface between the activation entry points (activation.cpp) and their SIMD kernels
// (activation_kernels.inl, compiled once per instruction set by
// activation_kernels_{generic,avx2,avx512}.cpp). Data only, like format/bulk_kernels.hpp: this
// header is included by translation units compiled with -mavx512f, where an inline function
// defined here could be instantiated and then shared by the linker with portable code.
//
// Each kernel processes `count` consecutive elements with the formulas of
// unitscale/ops/activation.hpp; m is the mult, the last arguments the op's scales.

#include <cstddef>

namespace unitscale::detail::activation {

struct KernelTable {
  // y = α·x·Φ(m·x); dx = β·g·(Φ(m·x) + m·x·φ(m·x)).
  void (*gelu_forward)(const float* x, float* y, std::size_t count, float mult, float alpha);
  void (*gelu_backward)(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                        float mult, float beta);
  // The tanh approximation of gelu.
  void (*gelu_tanh_forward)(const float* x, float* y, std::size_t count, float mult, float alpha);
  void (*gelu_tanh_backward)(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                             float mult, float beta);
  void (*silu_forward)(const float* x, float* y, std::size_t count, float mult, float alpha);
  void (*silu_backward)(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                        float mult, float beta);
  void (*silu_glu_forward)(const float* x, const float* gate, float* y, std::size_t count,
                           float mult, float alpha);
  // grad_x or grad_gate may be null (not wanted); x may be null when grad_gate is.
  void (*silu_glu_backward)(const float* grad_y, const float* x, const float* gate, float* grad_x,
                            float* grad_gate, std::size_t count, float mult, float beta_x,
                            float beta_gate);
};

extern const KernelTable kGenericKernels;
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;

}  // namespace unitscale::detail::activation

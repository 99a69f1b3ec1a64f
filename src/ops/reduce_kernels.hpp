#pragma once
// Float-to-double accumulation loops for the reductions of sum/mean (primitives.cpp) and of
// broadcast gradients (elementwise.cpp), which accumulate in double.
//
// Widening floats to doubles is what bounds these loops: SSE2 converts two floats per instruction,
// AVX2 four, so the loops exist once per level (reduce_kernels.inl, compiled by
// reduce_kernels.cpp for the baseline and by reduce_kernels_avx2.cpp) and reduce_kernels() picks
// one after checking the CPU. Every level gives bit-identical results: the sums keep kSumLanes
// partial sums in a fixed lane order, whatever the vector width, and a product of two floats is
// exact in double, so contracting it into an FMA changes nothing.

#include <cstdint>

namespace unitscale::detail {

// sum and dot add element i into partial sum i mod kSumLanes, then add the partial sums pairwise.
inline constexpr int kSumLanes = 16;

struct ReduceKernels {
  double (*sum)(const float* x, std::int64_t n);                  // Σ x
  double (*dot)(const float* x, const float* y, std::int64_t n);  // Σ x·y
  void (*accumulate)(double* acc, const float* x, std::int64_t n);  // acc += x
  void (*accumulate_scaled)(double* acc, const float* x, double s, std::int64_t n);  // acc += x·s
  void (*accumulate_product)(double* acc, const float* x, const float* y,
                             std::int64_t n);  // acc += x·y
  // acc += x and y = s·x in one loop (a bias gradient and the other operand's, from one read of x)
  void (*accumulate_and_scale)(double* acc, const float* x, float* y, float s, std::int64_t n);
};

// The kernels for the best level this CPU supports.
const ReduceKernels& reduce_kernels();

// The tables of each level; reduce_kernels.cpp chooses between them.
extern const ReduceKernels kGenericReduceKernels;
extern const ReduceKernels kAvx2ReduceKernels;

}  // namespace unitscale::detail

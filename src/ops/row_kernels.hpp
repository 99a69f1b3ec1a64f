#pragma once
// The interface between the row-wise ops (softmax, cross_entropy / mse_loss, layer_norm /
// rms_norm, attention's inner softmax) and their SIMD kernels: row_kernels.inl, compiled once per
// instruction set by row_kernels_{generic,avx2,avx512}.cpp. The ops keep the OpenMP loops over
// rows and call one kernel per row (or per chunk), so a kernel never sees a tensor, only a
// contiguous run of floats.
//
// The kernels run on the instruction set of detail::active_simd_level(), like the bulk format
// conversions: the best one the CPU supports unless a test or benchmark forced another. Every
// level computes the same formulas; results may differ between levels by a few float ulps
// (reductions add in a different order, and AVX2 contracts multiply-adds).
//
// Sums are accumulated in float lanes within blocks of a few hundred elements and in double across
// blocks, so a sum of n same-sign terms is accurate to a few tens of ulps for any n. This header
// holds data and declarations only (see format/bulk_kernels.hpp for why).

#include <cstdint>

namespace unitscale::detail::rows {

// Sums over a row for the normalisation statistics, in double. With c = (x − mean_hi) − mean_lo
// (x centred on the caller's estimate of the mean, given as a float pair) and ĝ = g·w:
struct CentredSums {
  double c = 0;     // Σ c
  double c2 = 0;    // Σ c²
  double gh = 0;    // Σ ĝ     (0 without g)
  double gh_c = 0;  // Σ ĝ·c   (0 without g)
};

// y = ((x − mean_hi) − mean_lo)·scale·w + bias_scale·b, w and b optional.
struct NormForwardRow {
  float mean_hi = 0, mean_lo = 0;  // the row mean as an unevaluated float sum
  float scale = 1;                 // rstd·α
  float bias_scale = 1;            // α
};

// With x̂ = ((x − mean_hi) − mean_lo)·rstd and ĝ = g·w:
//   dx = dx_scale·(ĝ − mean_gh − x̂·mean_gh_xh),   dw += g·x̂,   db += g   (each optional)
struct NormBackwardRow {
  float mean_hi = 0, mean_lo = 0;
  float rstd = 1;
  float dx_scale = 1;  // β_x·rstd
  float mean_gh = 0;
  float mean_gh_xh = 0;
};

struct KernelTable {
  // The largest / smallest element (n >= 1); NaNs may or may not be ignored.
  float (*max)(const float* x, std::int64_t n);
  float (*min)(const float* x, std::int64_t n);
  // out[j] = exp(mult·(x[j] − shift)) and returns the sum of those values. out may be x (in
  // place) or null (the sum only). exp is computed in float to about 1 ulp, subnormal results
  // included (simd_lanes.inl); the callers shift by the largest m·x so that arguments are ≤ 0.
  double (*exp_sum)(const float* x, float* out, std::int64_t n, float mult, float shift);
  // x[j] *= factor.
  void (*scale)(float* x, std::int64_t n, float factor);
  // Σ a[j]·b[j].
  double (*dot)(const float* a, const float* b, std::int64_t n);
  // out[j] = factor·y[j]·(g[j] − shift), the softmax vector-Jacobian product; out may be g.
  void (*softmax_vjp)(const float* y, const float* g, float* out, std::int64_t n, float factor,
                      float shift);
  // Σ (a[j] − b[j])².
  double (*squared_distance)(const float* a, const float* b, std::int64_t n);
  // Σ (x[j] − shift).
  double (*shifted_sum)(const float* x, std::int64_t n, float shift);
  // The sums of CentredSums; g and w may be null (w null means w = 1).
  CentredSums (*centred_sums)(const float* x, const float* g, const float* w, std::int64_t n,
                              float mean_hi, float mean_lo);
  // One row of norm forward; w and b may be null.
  void (*norm_forward)(const float* x, const float* w, const float* b, float* y, std::int64_t n,
                       const NormForwardRow& row);
  // One row of norm backward; w, dx, dw and db may be null. dw and db accumulate (+=).
  void (*norm_backward)(const float* x, const float* g, const float* w, float* dx, float* dw,
                        float* db, std::int64_t n, const NormBackwardRow& row);
};

extern const KernelTable kGenericKernels;  // 4 lanes, baseline x86-64 (SSE2)
extern const KernelTable kAvx2Kernels;     // 8 lanes, AVX2 + FMA
extern const KernelTable kAvx512Kernels;   // 16 lanes, AVX-512

// The table for detail::active_simd_level().
const KernelTable& kernels();

}  // namespace unitscale::detail::rows

// The row kernels of row_kernels.hpp, written once with GCC vector extensions for kLanes float
// lanes.
//
// Included by row_kernels_generic.cpp (4 lanes, baseline x86-64), row_kernels_avx2.cpp (8) and
// row_kernels_avx512.cpp (16), each compiled for its instruction set, after defining
// UNITSCALE_SIMD_LANES; the lane types and helpers, the vector exp, and the ODR rules the kernels
// follow (anonymous namespace, no inline library functions) are in simd_lanes.inl.
//
// A row is processed in whole vectors plus, for the last n mod kLanes elements, one vector padded
// through a small buffer, so every element goes through the same arithmetic wherever it sits.

#include <cstddef>
#include <cstdint>

#include "ops/row_kernels.hpp"
#include "ops/simd_lanes.inl"

namespace unitscale::detail::rows {
namespace {

using namespace simd;

// Elements per block of a sum. Within a block each float lane adds at most kBlock / (2·kLanes)
// terms (32 with 4 lanes); block totals are added in double. So the float part of any sum of
// same-sign terms is accurate to ~32 ulps however long the row.
constexpr std::int64_t kBlock = 256;

// All ones in the first `count` lanes.
UNITSCALE_SIMD_INLINE I32 first_lanes(std::int64_t count) {
  return lane_index() < static_cast<std::int32_t>(count);
}

// step(j, count) for the vectors of [0, n): count == kLanes but for a last partial vector.
template <class Step>
UNITSCALE_SIMD_INLINE void for_each_vector(std::int64_t n, Step&& step) {
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) step(j, std::int64_t{kLanes});
  if (j < n) step(j, n - j);
}

// total[k] = Σ over [0, n) of the k-th per-element term, where terms(j, count, t) sets t[k] to the
// terms of the elements j .. j + count − 1 (lanes past count are ignored). Two accumulators per sum
// hide the latency of the adds; see kBlock for the precision.
template <int K, class Terms>
UNITSCALE_SIMD_INLINE void sum_terms(std::int64_t n, double (&total)[K], Terms&& terms) {
  for (int k = 0; k < K; ++k) total[k] = 0;
  for (std::int64_t begin = 0; begin < n; begin += kBlock) {
    const std::int64_t end = n - begin < kBlock ? n : begin + kBlock;
    F32 even[K] = {}, odd[K] = {}, t[K], u[K];
    std::int64_t j = begin;
    for (; j + 2 * kLanes <= end; j += 2 * kLanes) {
      terms(j, std::int64_t{kLanes}, t);
      terms(j + kLanes, std::int64_t{kLanes}, u);
      for (int k = 0; k < K; ++k) {
        even[k] += t[k];
        odd[k] += u[k];
      }
    }
    for (; j < end; j += kLanes) {
      const std::int64_t count = end - j < kLanes ? end - j : kLanes;
      terms(j, count, t);
      const I32 valid = first_lanes(count);
      for (int k = 0; k < K; ++k) even[k] += valid ? t[k] : F32{};
    }
    for (int k = 0; k < K; ++k) {
      const F32 block = even[k] + odd[k];
      for (int l = 0; l < kLanes; ++l) total[k] += static_cast<double>(block[l]);
    }
  }
}

// ---- reductions and row maps ----

template <bool kLargest>
float extremum(const float* x, std::int64_t n) {
  constexpr float kFill = kLargest ? -__builtin_inff() : __builtin_inff();
  F32 a = splat(kFill), b = a;
  auto pick = [](F32 best, F32 v) {
    if constexpr (kLargest) {
      return v > best ? v : best;
    } else {
      return v < best ? v : best;
    }
  };
  std::int64_t j = 0;
  for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
    a = pick(a, load_n(x + j, kLanes));
    b = pick(b, load_n(x + j + kLanes, kLanes));
  }
  for (; j < n; j += kLanes) a = pick(a, load_n(x + j, n - j < kLanes ? n - j : kLanes, kFill));
  a = pick(a, b);
  float best = a[0];
  for (int l = 1; l < kLanes; ++l) best = (kLargest ? a[l] > best : a[l] < best) ? a[l] : best;
  return best;
}

float row_max(const float* x, std::int64_t n) { return extremum<true>(x, n); }
float row_min(const float* x, std::int64_t n) { return extremum<false>(x, n); }

// The clamp keeps exp's argument in its range; beyond it e^x is 0 or +inf anyway, and NaN stays
// NaN.
template <bool kStore>
double exp_sum_impl(const float* x, float* out, std::int64_t n, float mult, float shift) {
  double total[1];
  sum_terms<1>(n, total, [&](std::int64_t j, std::int64_t count, F32(&t)[1]) {
    t[0] = exp(clamp(mult * (load_n(x + j, count) - shift), -kExpMaxArgument, kExpMaxArgument));
    if constexpr (kStore) store_n(out + j, t[0], count);
  });
  return total[0];
}

double exp_sum(const float* x, float* out, std::int64_t n, float mult, float shift) {
  return out != nullptr ? exp_sum_impl<true>(x, out, n, mult, shift)
                        : exp_sum_impl<false>(x, out, n, mult, shift);
}

void scale(float* x, std::int64_t n, float factor) {
  for_each_vector(n, [&](std::int64_t j, std::int64_t count) {
    store_n(x + j, factor * load_n(x + j, count), count);
  });
}

double dot(const float* a, const float* b, std::int64_t n) {
  double total[1];
  sum_terms<1>(n, total, [&](std::int64_t j, std::int64_t count, F32(&t)[1]) {
    t[0] = load_n(a + j, count) * load_n(b + j, count);
  });
  return total[0];
}

void softmax_vjp(const float* y, const float* g, float* out, std::int64_t n, float factor,
                 float shift) {
  for_each_vector(n, [&](std::int64_t j, std::int64_t count) {
    store_n(out + j, factor * load_n(y + j, count) * (load_n(g + j, count) - shift), count);
  });
}

double squared_distance(const float* a, const float* b, std::int64_t n) {
  double total[1];
  sum_terms<1>(n, total, [&](std::int64_t j, std::int64_t count, F32(&t)[1]) {
    const F32 d = load_n(a + j, count) - load_n(b + j, count);
    t[0] = d * d;
  });
  return total[0];
}

double shifted_sum(const float* x, std::int64_t n, float shift) {
  double total[1];
  sum_terms<1>(n, total, [&](std::int64_t j, std::int64_t count, F32(&t)[1]) {
    t[0] = load_n(x + j, count) - shift;
  });
  return total[0];
}

// ---- normalisation rows ----

// (x − mean_hi) − mean_lo: the first difference is exact when x is near the mean (Sterbenz), so a
// row with a large common offset keeps its full float precision after centring.
UNITSCALE_SIMD_INLINE F32 centre(F32 x, float mean_hi, float mean_lo) {
  return (x - mean_hi) - mean_lo;
}

template <bool kGrad, bool kWeight>
CentredSums centred_sums_impl(const float* x, const float* g, const float* w, std::int64_t n,
                              float mean_hi, float mean_lo) {
  constexpr int kSums = kGrad ? 4 : 2;
  double total[kSums];
  sum_terms<kSums>(n, total, [&](std::int64_t j, std::int64_t count, F32(&t)[kSums]) {
    const F32 c = centre(load_n(x + j, count), mean_hi, mean_lo);
    t[0] = c;
    t[1] = c * c;
    if constexpr (kGrad) {
      F32 gh = load_n(g + j, count);
      if constexpr (kWeight) gh *= load_n(w + j, count);
      t[2] = gh;
      t[3] = gh * c;
    }
  });
  CentredSums sums;
  sums.c = total[0];
  sums.c2 = total[1];
  if constexpr (kGrad) {
    sums.gh = total[kSums - 2];
    sums.gh_c = total[kSums - 1];
  }
  return sums;
}

CentredSums centred_sums(const float* x, const float* g, const float* w, std::int64_t n,
                         float mean_hi, float mean_lo) {
  if (g == nullptr) return centred_sums_impl<false, false>(x, g, w, n, mean_hi, mean_lo);
  if (w == nullptr) return centred_sums_impl<true, false>(x, g, w, n, mean_hi, mean_lo);
  return centred_sums_impl<true, true>(x, g, w, n, mean_hi, mean_lo);
}

template <bool kWeight, bool kBias>
void norm_forward_impl(const float* x, const float* w, const float* b, float* y, std::int64_t n,
                       const NormForwardRow& row) {
  const NormForwardRow p = row;  // a local copy: the stores below cannot alias it
  for_each_vector(n, [&](std::int64_t j, std::int64_t count) {
    F32 v = centre(load_n(x + j, count), p.mean_hi, p.mean_lo) * p.scale;
    if constexpr (kWeight) v *= load_n(w + j, count);
    if constexpr (kBias) v += p.bias_scale * load_n(b + j, count);
    store_n(y + j, v, count);
  });
}

void norm_forward(const float* x, const float* w, const float* b, float* y, std::int64_t n,
                  const NormForwardRow& row) {
  if (w != nullptr && b != nullptr) return norm_forward_impl<true, true>(x, w, b, y, n, row);
  if (w != nullptr) return norm_forward_impl<true, false>(x, w, b, y, n, row);
  if (b != nullptr) return norm_forward_impl<false, true>(x, w, b, y, n, row);
  norm_forward_impl<false, false>(x, w, b, y, n, row);
}

// The optional outputs are tested per vector; those branches always go the same way and cost
// little beside the loads and stores.
template <bool kWeight>
void norm_backward_impl(const float* x, const float* g, const float* w, float* dx, float* dw,
                        float* db, std::int64_t n, const NormBackwardRow& row) {
  const NormBackwardRow p = row;
  for_each_vector(n, [&](std::int64_t j, std::int64_t count) {
    const F32 x_hat = centre(load_n(x + j, count), p.mean_hi, p.mean_lo) * p.rstd;
    const F32 grad = load_n(g + j, count);
    if (dx != nullptr) {
      F32 g_hat = grad;
      if constexpr (kWeight) g_hat *= load_n(w + j, count);
      store_n(dx + j, p.dx_scale * ((g_hat - p.mean_gh) - x_hat * p.mean_gh_xh), count);
    }
    if (dw != nullptr) store_n(dw + j, load_n(dw + j, count) + grad * x_hat, count);
    if (db != nullptr) store_n(db + j, load_n(db + j, count) + grad, count);
  });
}

void norm_backward(const float* x, const float* g, const float* w, float* dx, float* dw, float* db,
                   std::int64_t n, const NormBackwardRow& row) {
  if (w != nullptr) return norm_backward_impl<true>(x, g, w, dx, dw, db, n, row);
  norm_backward_impl<false>(x, g, w, dx, dw, db, n, row);
}

constexpr KernelTable kKernels{row_max,      row_min,      exp_sum,          scale,
                               dot,          softmax_vjp,  squared_distance, shifted_sum,
                               centred_sums, norm_forward, norm_backward};

}  // namespace
}  // namespace unitscale::detail::rows

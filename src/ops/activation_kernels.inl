// The gelu / silu / silu_glu kernels, written once with GCC vector extensions for kLanes lanes.
//
// Included by activation_kernels_generic.cpp (4 lanes, baseline x86-64),
// activation_kernels_avx2.cpp (8) and activation_kernels_avx512.cpp (16), each compiled for its
// instruction set, after defining UNITSCALE_SIMD_LANES; the lane types and helpers, and the ODR
// rules the kernels follow, are in simd_lanes.inl.
//
// libm's expf and erfcf are scalar calls that cost more than the memory traffic of these ops, so
// the kernels use the vector exp of simd_lanes.inl and their own normal tail function, branch-free
// so that every lane does the same work. GCC contracts a·b + c into FMAs where the instruction set
// has them (its default for C++), which makes the AVX2 and AVX-512 kernels about 30% faster; the
// instruction sets therefore agree to rounding, not bit for bit. The accuracy of every level (a
// few ulps, including the tails) is checked against double precision in
// tests/ops/activation_test.cpp.

#include <cstddef>
#include <cstdint>

#include "ops/activation_kernels.hpp"
#include "ops/simd_lanes.inl"

namespace unitscale::detail::activation {
namespace {

using namespace simd;

// ---- the standard normal distribution ----

constexpr float kInvSqrt2Pi = 0.398942280f;  // 1/√(2π)

// The upper tail Q(a) = 1 − Φ(a) for a ≥ 0 is written as e^(−a²/2)·G(a), where G = Q·e^(a²/2) falls
// smoothly from ½ at 0 to about 1/(a√(2π)); G is a relative-error minimax rational fit of degree
// 4/5 on [0, 13.2] (5e-9; Q is subnormal beyond). Keeping the Gaussian factor exact gives Q to a
// few ulps relative deep into the tail, where 1 − (something near 1) would lose everything.
constexpr float kTailP0 = 0.5f, kTailP1 = 4.354522500e-1f, kTailP2 = 1.811343509e-1f,
                kTailP3 = 3.992630333e-2f, kTailP4 = 4.011659837e-3f;
constexpr float kTailR1 = 1.668789414f, kTailR2 = 1.193765929f, kTailR3 = 4.639253325e-1f,
                kTailR4 = 1.000878704e-1f, kTailR5 = 1.005559449e-2f;
// Beyond 14.5 e^(−a²/2) underflows to 0; clamping |z| there keeps a² and z·φ(z) finite.
constexpr float kNormalClamp = 16.0f;

struct Normal {
  F32 cdf;        // Φ(z)
  F32 z_density;  // z·φ(z); 0, the limit, for z = ±inf
};

UNITSCALE_SIMD_INLINE Normal normal(F32 z) {
  const U32 sign = as_u32(z) & 0x80000000u;
  const F32 a = min(kNormalClamp, abs(z));
  // a²/2 as the exact sum half_sq + half_sq_lo: a = a_hi + a_lo with 12-bit halves, whose products
  // are exact. Rounding a²/2 instead would cost up to a²·2^-24 relative (40 ulps at a = 13).
  const F32 a_hi = as_f32(as_u32(a) & 0xFFFFF000u);
  const F32 a_lo = a - a_hi;
  const F32 half_sq = 0.5f * a_hi * a_hi;
  const F32 half_sq_lo = a_hi * a_lo + 0.5f * a_lo * a_lo;
  const F32 gauss = exp(-half_sq, -half_sq_lo);  // e^(−a²/2)
  // The two polynomials are independent chains, which keeps more of the pipeline busy.
  F32 p = splat(kTailP4), r = splat(kTailR5);
  p = p * a + kTailP3;
  r = r * a + kTailR4;
  p = p * a + kTailP2;
  r = r * a + kTailR3;
  p = p * a + kTailP1;
  r = r * a + kTailR2;
  p = p * a + kTailP0;
  r = r * a + kTailR1;
  r = r * a + 1.0f;
  const F32 q = gauss * (p / r);
  const F32 signed_a = as_f32(as_u32(a) | sign);  // z with the clamp
  return {z > 0.0f ? 1.0f - q : q, kInvSqrt2Pi * signed_a * gauss};
}

// ---- the logistic sigmoid ----

// Beyond ±105, σ is exactly 0 or 1 in float (e^-105 rounds to 0).
constexpr float kSigmoidClamp = 105.0f;

struct Sigmoid {
  F32 s;           // σ(z)
  F32 complement;  // 1 − σ(z) = σ(−z)
};

// With e = e^−|z| ≤ 1 (no overflow), σ(|z|) = 1/(1 + e) and σ(−|z|) = e/(1 + e): both keep their
// relative accuracy, including σ of large negative z and 1 − σ of large positive z.
UNITSCALE_SIMD_INLINE Sigmoid sigmoid(F32 z) {
  const F32 e = exp(-min(kSigmoidClamp, abs(z)));
  const F32 upper = 1.0f / (1.0f + e);
  const F32 lower = e * upper;
  const auto non_negative = z >= 0.0f;  // false for NaN, whose upper and lower are NaN
  return {non_negative ? upper : lower, non_negative ? lower : upper};
}

// ---- the loop ----

// r = lane(v) for every kLanes-wide slice of the In input and Out output arrays; the tail runs as
// one more slice through zero-padded copies. A null output is not written. The loops over the
// arrays are unrolled so that the slices stay in registers.
template <int In, int Out, class Lane>
UNITSCALE_SIMD_INLINE void map_lanes(const float* const (&in)[In], float* const (&out)[Out],
                                     std::size_t count, Lane lane) {
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    F32 v[In], r[Out];
#pragma GCC unroll 4
    for (int k = 0; k < In; ++k) v[k] = load(in[k] + i);
    lane(v, r);
#pragma GCC unroll 4
    for (int k = 0; k < Out; ++k) {
      if (out[k] != nullptr) store(out[k] + i, r[k]);
    }
  }
  if (i == count) return;
  const auto rest = static_cast<std::int64_t>(count - i);
  F32 v[In], r[Out];
  for (int k = 0; k < In; ++k) v[k] = load_n(in[k] + i, rest);
  lane(v, r);
  for (int k = 0; k < Out; ++k) {
    if (out[k] != nullptr) store_n(out[k] + i, r[k], rest);
  }
}

// ---- the kernels (formulas in unitscale/ops/activation.hpp) ----

void gelu_forward(const float* x, float* y, std::size_t count, float mult, float alpha) {
  map_lanes<1, 1>({x}, {y}, count,
                  [=](const F32* v, F32* r) { r[0] = alpha * v[0] * normal(mult * v[0]).cdf; });
}

void gelu_backward(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                   float mult, float beta) {
  map_lanes<2, 1>({grad_y, x}, {grad_x}, count, [=](const F32* v, F32* r) {
    const Normal n = normal(mult * v[1]);
    r[0] = beta * v[0] * (n.cdf + n.z_density);
  });
}

// The tanh form through ½(1 + tanh u) = σ(2u) and ½(1 − tanh² u) = 2σ(2u)(1 − σ(2u)), which keep
// their relative accuracy where tanh u is near ±1. With z = m·x, ½x(1 − tanh² u)·du/dx of the
// header is 2σ(1 − σ)·√(2/π)·z·(1 + 3·0.044715·z²).
constexpr float kGeluCubic = 0.044715f;
constexpr float kTwoSqrt2OverPi = 1.595769122f;  // 2·√(2/π)

// Beyond |z| = 12, 2u > 142 and σ(2u) is exactly 0 or 1 in float; clamping z there keeps z³ and
// the derivative's polynomial finite (so a huge x gives the limits, not inf·0).
constexpr float kGeluTanhClamp = 12.0f;

static_assert(kSigmoidClamp <= kExpMaxArgument);
static_assert(kNormalClamp * kNormalClamp / 2 <= kExpMaxArgument);
static_assert(kTwoSqrt2OverPi * (kGeluTanhClamp +
                                 kGeluCubic * kGeluTanhClamp * kGeluTanhClamp * kGeluTanhClamp) <=
              kExpMaxArgument);

void gelu_tanh_forward(const float* x, float* y, std::size_t count, float mult, float alpha) {
  map_lanes<1, 1>({x}, {y}, count, [=](const F32* v, F32* r) {
    const F32 z = clamp(mult * v[0], -kGeluTanhClamp, kGeluTanhClamp);
    const F32 two_u = kTwoSqrt2OverPi * (z + kGeluCubic * z * z * z);
    r[0] = alpha * v[0] * sigmoid(two_u).s;
  });
}

void gelu_tanh_backward(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                        float mult, float beta) {
  map_lanes<2, 1>({grad_y, x}, {grad_x}, count, [=](const F32* v, F32* r) {
    const F32 z = clamp(mult * v[1], -kGeluTanhClamp, kGeluTanhClamp);
    const F32 z_sq = z * z;
    const Sigmoid sg = sigmoid(kTwoSqrt2OverPi * (z + kGeluCubic * z_sq * z));
    const F32 slope = kTwoSqrt2OverPi * z * (1.0f + 3.0f * kGeluCubic * z_sq);
    r[0] = beta * v[0] * (sg.s + sg.s * sg.complement * slope);
  });
}

void silu_forward(const float* x, float* y, std::size_t count, float mult, float alpha) {
  map_lanes<1, 1>({x}, {y}, count,
                  [=](const F32* v, F32* r) { r[0] = alpha * v[0] * sigmoid(mult * v[0]).s; });
}

// The backward kernels clamp z where σ saturates, so that z·(1 − σ(z)) is 0 rather than inf·0 at
// z = ±inf and the gradient takes its limit.
void silu_backward(const float* grad_y, const float* x, float* grad_x, std::size_t count,
                   float mult, float beta) {
  map_lanes<2, 1>({grad_y, x}, {grad_x}, count, [=](const F32* v, F32* r) {
    const F32 z = clamp(mult * v[1], -kSigmoidClamp, kSigmoidClamp);
    const Sigmoid sg = sigmoid(z);
    r[0] = beta * v[0] * sg.s * (1.0f + z * sg.complement);
  });
}

// silu(gate) = gate·σ(m·gate) is formed first: x·gate could overflow where σ(m·gate) is 0.
void silu_glu_forward(const float* x, const float* gate, float* y, std::size_t count, float mult,
                      float alpha) {
  map_lanes<2, 1>({x, gate}, {y}, count, [=](const F32* v, F32* r) {
    r[0] = alpha * v[0] * (v[1] * sigmoid(mult * v[1]).s);
  });
}

void silu_glu_backward(const float* grad_y, const float* x, const float* gate, float* grad_x,
                       float* grad_gate, std::size_t count, float mult, float beta_x,
                       float beta_gate) {
  if (grad_gate == nullptr) x = gate;  // x only feeds grad_gate, so it may be absent without it
  map_lanes<3, 2>({grad_y, x, gate}, {grad_x, grad_gate}, count, [=](const F32* v, F32* r) {
    const F32 z = clamp(mult * v[2], -kSigmoidClamp, kSigmoidClamp);
    const Sigmoid sg = sigmoid(z);
    r[0] = beta_x * v[0] * (v[2] * sg.s);
    r[1] = beta_gate * v[0] * v[1] * sg.s * (1.0f + z * sg.complement);
  });
}

constexpr KernelTable kKernels{
    .gelu_forward = gelu_forward,
    .gelu_backward = gelu_backward,
    .gelu_tanh_forward = gelu_tanh_forward,
    .gelu_tanh_backward = gelu_tanh_backward,
    .silu_forward = silu_forward,
    .silu_backward = silu_backward,
    .silu_glu_forward = silu_glu_forward,
    .silu_glu_backward = silu_glu_backward,
};

}  // namespace
}  // namespace unitscale::detail::activation

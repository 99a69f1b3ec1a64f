// The lane types and helpers shared by the op kernels written with GCC vector extensions
// (activation_kernels.inl, row_kernels.inl, dropout_kernels.inl): kLanes float / int lanes, bit
// casts, min / max / clamp / abs, whole and partial loads and stores, and a vectorised exp.
//
// Each family's *_generic.cpp (4 lanes, baseline x86-64), *_avx2.cpp (8) and *_avx512.cpp (16)
// defines UNITSCALE_SIMD_LANES and includes its family's .inl, which includes this file; each is
// compiled for its instruction set. Everything here lives in an anonymous namespace and calls no
// inline library function (std::max, std::array, ...), so that no code compiled for AVX2 or
// AVX-512 can be picked by the linker for portable code. The families bring these names into their
// own anonymous namespace with `using namespace simd;`.

// UNITSCALE_X86_SIMD (set by CMake) is 0 in portable builds: then no intrinsic is used and the
// plain vector-extension forms below serve every architecture (and every lane count).
#if UNITSCALE_X86_SIMD && defined(__SSE2__)
#include <immintrin.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

#ifndef UNITSCALE_SIMD_LANES
#error "define UNITSCALE_SIMD_LANES before including an op kernel .inl"
#endif

namespace unitscale::detail::simd {
namespace {

constexpr int kLanes = UNITSCALE_SIMD_LANES;

typedef float F32 __attribute__((vector_size(4 * kLanes)));
typedef std::int32_t I32 __attribute__((vector_size(4 * kLanes)));
typedef std::uint32_t U32 __attribute__((vector_size(4 * kLanes)));

// The lane helpers are inlined into the loops so that their constants are hoisted out of them.
#define UNITSCALE_SIMD_INLINE [[gnu::always_inline]] inline

// Same-size vector casts reinterpret the bits.
UNITSCALE_SIMD_INLINE F32 as_f32(I32 v) { return (F32)v; }
UNITSCALE_SIMD_INLINE F32 as_f32(U32 v) { return (F32)v; }
UNITSCALE_SIMD_INLINE I32 as_i32(F32 v) { return (I32)v; }
UNITSCALE_SIMD_INLINE U32 as_u32(F32 v) { return (U32)v; }

UNITSCALE_SIMD_INLINE F32 splat(float v) { return F32{} + v; }

// {0, 1, …, kLanes − 1}.
UNITSCALE_SIMD_INLINE I32 lane_index() {
  I32 index;
  for (int l = 0; l < kLanes; ++l) index[l] = l;
  return index;
}

// min(bound, v) and max(bound, v) with NaN v giving NaN: the x86 instructions return their second
// operand when either is NaN. (GCC keeps a compare and a blend for the equivalent v > b ? b : v.)
// The AVX-512 forms are the zero-masking ones with every lane selected: the plain ones start from
// an undefined register, which GCC 12 reports as maybe-uninitialized.
UNITSCALE_SIMD_INLINE F32 min(float bound, F32 v) {
#if UNITSCALE_SIMD_LANES == 16 && UNITSCALE_X86_SIMD && defined(__AVX512F__)
  return _mm512_maskz_min_ps(0xFFFF, splat(bound), v);
#elif UNITSCALE_SIMD_LANES == 8 && UNITSCALE_X86_SIMD && defined(__AVX__)
  return _mm256_min_ps(splat(bound), v);
#elif UNITSCALE_SIMD_LANES == 4 && UNITSCALE_X86_SIMD && defined(__SSE2__)
  return _mm_min_ps(splat(bound), v);
#else
  return splat(bound) < v ? splat(bound) : v;  // false for NaN v: v
#endif
}

UNITSCALE_SIMD_INLINE F32 max(float bound, F32 v) {
#if UNITSCALE_SIMD_LANES == 16 && UNITSCALE_X86_SIMD && defined(__AVX512F__)
  return _mm512_maskz_max_ps(0xFFFF, splat(bound), v);
#elif UNITSCALE_SIMD_LANES == 8 && UNITSCALE_X86_SIMD && defined(__AVX__)
  return _mm256_max_ps(splat(bound), v);
#elif UNITSCALE_SIMD_LANES == 4 && UNITSCALE_X86_SIMD && defined(__SSE2__)
  return _mm_max_ps(splat(bound), v);
#else
  return splat(bound) > v ? splat(bound) : v;  // false for NaN v: v
#endif
}

// v limited to [lo, hi]; NaN stays NaN.
UNITSCALE_SIMD_INLINE F32 clamp(F32 v, float lo, float hi) { return min(hi, max(lo, v)); }

UNITSCALE_SIMD_INLINE F32 abs(F32 v) { return as_f32(as_u32(v) & 0x7FFFFFFFu); }

// ---- loads and stores ----

// Whole vectors, unaligned.
UNITSCALE_SIMD_INLINE F32 load(const float* p) {
  F32 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

UNITSCALE_SIMD_INLINE void store(float* p, F32 v) { std::memcpy(p, &v, sizeof v); }

// Loads and stores of `count` (1..kLanes) elements; a partial vector goes through a buffer whose
// other lanes hold `fill`, so nothing past the end is touched.
UNITSCALE_SIMD_INLINE F32 load_n(const float* p, std::int64_t count, float fill = 0.0f) {
  if (count == kLanes) return load(p);
  float lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = fill;
  std::memcpy(lanes, p, static_cast<std::size_t>(count) * sizeof(float));
  return load(lanes);
}

UNITSCALE_SIMD_INLINE void store_n(float* p, F32 v, std::int64_t count) {
  if (count == kLanes) {
    store(p, v);
  } else {
    std::memcpy(p, &v, static_cast<std::size_t>(count) * sizeof(float));
  }
}

// ---- exp ----

// x = n·ln2 + r with n = round(x / ln2), |r| ≤ ~ln2/2, and e^x = 2^n·e^r (Cody-Waite). ln 2 is
// split as kLn2Hi + kLn2Lo, kLn2Hi with 9 significant bits so that n·kLn2Hi and x − n·kLn2Hi are
// exact for |n| < 2^15: r is exact to float precision.
constexpr float kLog2E = 0x1.715476p+0f;
constexpr float kLn2Hi = 0x1.63p-1f;
constexpr float kLn2Lo = -0x1.bd0106p-13f;  // ln 2 − kLn2Hi
// Adding 1.5·2^23 to |v| < 2^22 rounds v to an integer held in the low bits of the mantissa.
constexpr float kRoundShift = 0x1.8p+23f;
// e^r ≈ 1 + (r + r²·(c2 + c3·r + … + c6·r⁴)) on |r| ≤ ln2/2: a relative-error minimax fit, 3e-9.
// Adding the 1 last keeps the rounding of the small terms small: the result is within 1.01 ulps
// of e^x with or without FMA contraction (checked against double for every third float whose
// e^x is a normal float), and within 0.75 ulp of the subnormal spacing for subnormal results.
constexpr float kExpC2 = 4.999999305e-1f, kExpC3 = 1.666651479e-1f, kExpC4 = 4.166845679e-2f,
                kExpC5 = 8.369418836e-3f, kExpC6 = 1.381314450e-3f;
// The largest |x| the exp functions accept: 2^n is built as two factors 2^⌊n/2⌋·2^⌈n/2⌉, each a
// normal float for |n| ≤ 2·126, so results from subnormal (e^-105 rounds to 0) to +inf (above
// 88.72) come out right. Callers clamp their arguments, which most need anyway for their limits.
constexpr float kExpMaxArgument = 150.0f;

// e^r·2^n from n, `shifted` (n again, in its low mantissa bits) and the reduced argument r.
UNITSCALE_SIMD_INLINE F32 exp_reconstruct(F32 shifted, F32 n, F32 r) {
  F32 q = splat(kExpC6);
  q = q * r + kExpC5;
  q = q * r + kExpC4;
  q = q * r + kExpC3;
  q = q * r + kExpC2;
  const F32 p = (r + r * r * q) + 1.0f;
#if UNITSCALE_SIMD_LANES == 16 && UNITSCALE_X86_SIMD && defined(__AVX512F__)
  // AVX-512 scales by 2^n in one instruction, rounding once like the two factors below.
  static_cast<void>(shifted);
  return _mm512_maskz_scalef_ps(0xFFFF, p, n);
#else
  // The biased exponents of the two factors (see kExpMaxArgument) from n + 254 in one subtraction:
  // a = 127 + ⌊n/2⌋ and (n + 254) − a = 127 + ⌈n/2⌉.
  static_cast<void>(n);
  const I32 biased = as_i32(shifted) - (as_i32(splat(kRoundShift)) - 254);
  const I32 a = biased >> 1;
  return p * as_f32(a << 23) * as_f32((biased - a) << 23);
#endif
}

// e^x for |x| ≤ kExpMaxArgument. NaN in, NaN out.
UNITSCALE_SIMD_INLINE F32 exp(F32 x) {
  const F32 shifted = x * kLog2E + kRoundShift;
  const F32 n = shifted - kRoundShift;
  return exp_reconstruct(shifted, n, (x - n * kLn2Hi) - n * kLn2Lo);
}

// e^(x + x_lo) for an argument held as a two-float sum, |x_lo| ≪ 1.
UNITSCALE_SIMD_INLINE F32 exp(F32 x, F32 x_lo) {
  const F32 shifted = (x + x_lo) * kLog2E + kRoundShift;
  const F32 n = shifted - kRoundShift;
  return exp_reconstruct(shifted, n, (x - n * kLn2Hi) - n * kLn2Lo + x_lo);
}

}  // namespace
}  // namespace unitscale::detail::simd

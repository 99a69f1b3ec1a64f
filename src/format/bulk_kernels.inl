// The bulk conversion kernels, written once with GCC vector extensions for kLanes lanes of 32 bits.
//
// Included by bulk_kernels_generic.cpp (4 lanes, baseline x86-64), bulk_kernels_avx2.cpp (8) and
// bulk_kernels_avx512.cpp (16), each compiled for its instruction set, after defining
// UNITSCALE_BULK_LANES. Everything here lives in an anonymous namespace so that no function
// compiled with AVX-512 can be picked by the linker for portable code.
//
// Encoding follows docs/formats.md: NaN and Inf are recognised before any integer arithmetic,
// FP32 subnormals are normalised with an exact int -> float conversion where they can matter
// (never FP32 subnormal arithmetic, so FTZ/DAZ cannot change a result), the target exponent is
// rebiased by one integer add, and one rounding shift produces the code with the mantissa carry
// already in the exponent. Every lane does the same work; special inputs are patched in with
// selects at the end. The results equal detail::encode_bits / detail::decode_bits bit for bit
// (tests/format/bulk_test.cpp).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "format/bulk_kernels.hpp"

// UNITSCALE_X86_SIMD (set by CMake) is 0 in portable builds: then no intrinsic is used at all and
// the vector-extension fallbacks below serve every architecture.
#if UNITSCALE_X86_SIMD && defined(__SSE2__)
#include <immintrin.h>
#endif

#ifndef UNITSCALE_BULK_LANES
#error "define UNITSCALE_BULK_LANES before including bulk_kernels.inl"
#endif

namespace unitscale::detail::bulk {
namespace {

constexpr int kLanes = UNITSCALE_BULK_LANES;

typedef std::uint32_t U32 __attribute__((vector_size(4 * kLanes)));
typedef std::int32_t I32 __attribute__((vector_size(4 * kLanes)));
typedef float F32 __attribute__((vector_size(4 * kLanes)));
typedef std::uint16_t U16 __attribute__((vector_size(2 * kLanes)));
typedef std::uint8_t U8 __attribute__((vector_size(kLanes)));

constexpr std::uint32_t kMagnitudeMask = 0x7FFFFFFFu;
constexpr std::uint32_t kInfinityBits = 0x7F800000u;
constexpr std::uint32_t kQuietNanBits = 0x7FC00000u;
constexpr std::uint32_t kSignBit = 0x80000000u;
constexpr std::uint32_t kImplicitBit = 0x00800000u;
constexpr std::uint32_t kFractionMask = 0x007FFFFFu;
constexpr int kMantissaBits = 23;
// Biased exponent of the FP32 value 1, minus that of the smallest subnormal 2^-149.
constexpr int kSubnormalRebase = 149;

// The lane helpers are inlined into the loops so that their constants are hoisted out of them.
#define UNITSCALE_BULK_INLINE [[gnu::always_inline]] inline

// Same-size vector casts reinterpret the bits; __builtin_convertvector converts values.
UNITSCALE_BULK_INLINE U32 as_u32(I32 v) { return (U32)v; }
UNITSCALE_BULK_INLINE U32 as_u32(F32 v) { return (U32)v; }
UNITSCALE_BULK_INLINE I32 as_i32(U32 v) { return (I32)v; }
UNITSCALE_BULK_INLINE I32 as_i32(F32 v) { return (I32)v; }
UNITSCALE_BULK_INLINE F32 as_f32(U32 v) { return (F32)v; }

UNITSCALE_BULK_INLINE U32 splat(std::uint32_t x) { return U32{} + x; }
UNITSCALE_BULK_INLINE I32 splat(std::int32_t x) { return I32{} + x; }

UNITSCALE_BULK_INLINE U32 min(U32 a, U32 b) { return a < b ? a : b; }
UNITSCALE_BULK_INLINE I32 max(I32 a, I32 b) { return a > b ? a : b; }

// The per-sign constant pair[kNegative] where `negative`, pair[kPositive] elsewhere.
UNITSCALE_BULK_INLINE U32 by_sign(I32 negative, const std::uint32_t (&pair)[2]) {
  return negative ? splat(pair[kNegative]) : splat(pair[kPositive]);
}

template <class V, class T>
V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class V, class T>
void store(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// Stores the codes (each below 2^16, or 2^8 for byte codes) narrowed to the storage width. GCC 12
// scalarises __builtin_convertvector for these narrowings without AVX-512, hence the intrinsics.
UNITSCALE_BULK_INLINE void store_codes(std::uint8_t* out, U32 codes) {
#if UNITSCALE_BULK_LANES == 8 && defined(__AVX2__)
  const __m256i v = (__m256i)codes;
  const __m128i halves =
      _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(halves, halves));
#elif UNITSCALE_BULK_LANES == 4 && UNITSCALE_X86_SIMD && defined(__SSE2__)
  const __m128i halves = _mm_packs_epi32((__m128i)codes, (__m128i)codes);  // exact below 2^15
  const int bytes = _mm_cvtsi128_si32(_mm_packus_epi16(halves, halves));
  std::memcpy(out, &bytes, 4);
#else
  store(out, __builtin_convertvector(codes, U8));
#endif
}

UNITSCALE_BULK_INLINE void store_codes(std::uint16_t* out, U32 codes) {
#if UNITSCALE_BULK_LANES == 8 && defined(__AVX2__)
  const __m256i v = (__m256i)codes;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
#elif UNITSCALE_BULK_LANES == 4 && UNITSCALE_X86_SIMD && defined(__SSE2__)
  // SSE2 packs with signed saturation only: shift the codes into the int16 range and back.
  const __m128i centred = _mm_sub_epi32((__m128i)codes, _mm_set1_epi32(0x8000));
  const __m128i halves = _mm_add_epi16(_mm_packs_epi32(centred, centred), _mm_set1_epi16(-0x8000));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), halves);
#else
  store(out, __builtin_convertvector(codes, U16));
#endif
}

std::uint32_t horizontal_max(I32 v) {
  std::int32_t m = 0;
  for (int lane = 0; lane < kLanes; ++lane) m = v[lane] > m ? v[lane] : m;
  return static_cast<std::uint32_t>(m);
}

// x / scale as the caller would compute it in FP32.
UNITSCALE_BULK_INLINE F32 apply_scale(const EncodeParams& p, F32 x) {
  switch (p.scale_step) {
    case ScaleStep::kNone:
      return x;
    case ScaleStep::kMultiply:
      return x * p.inverse_scale;
    case ScaleStep::kDivide:
      return x / p.scale;
  }
  return x;
}

// ---- encode ----

// Rounds the magnitude m right by `shift` bits (any shift >= 0) per kMode. For shifts above 31, m
// is a 24-bit significand and rounds to 0 or 1, which a shift of 31 reproduces exactly.
template <Rounding kMode>
UNITSCALE_BULK_INLINE U32 round_right(U32 m, I32 shift, I32 negative, U32 random,
                                      const EncodeParams& p) {
  const U32 clamped = min(as_u32(shift), splat(31u));  // shift >= 0
  const U32 one = splat(1u);
  const U32 below = (one << clamped) - 1u;  // mask of the discarded bits
  const U32 kept = m >> clamped;
  if constexpr (kMode == Rounding::kTowardZero) {
    return kept;
  } else if constexpr (kMode == Rounding::kNearestEven) {
    // spec §5: add half an ulp minus one plus the bit that becomes the LSB; a shift of 0 adds 0.
    const U32 lsb = kept & min(clamped, one);
    return (m + (below >> 1) + lsb) >> clamped;
  } else if constexpr (kMode == Rounding::kNearestAway) {
    return (m + ((one << clamped) >> 1)) >> clamped;
  } else if constexpr (kMode == Rounding::kUp || kMode == Rounding::kDown) {
    const I32 away = kMode == Rounding::kUp ? ~negative : negative;
    return (m + (below & as_u32(away))) >> clamped;
  } else {
    static_assert(kMode == Rounding::kStochastic);
    // spec §6 and detail::stochastic_rounds_away: with r = shift discarded bits t and R random
    // bits, t_R = t << (R - r) if R >= r, else RNE(t >> (r - R)); round away iff
    // t_R + rho >= 2^R, i.e. t_R > (2^R - 1) - rho = ~rho & (2^R - 1).
    const U32 discarded = m & below;
    const U32 r = as_u32(shift);
    const U32 bits_used = p.random_bit_count != 0 ? splat(p.random_bit_count) : min(r, splat(32u));
    const U32 used = bits_used > 0u ? bits_used : one;  // r == 0 leaves nothing to round
    const U32 widened = discarded << min(used - r, splat(31u));
    // Shifts of 25 or more leave 0 from a discarded part below 2^24, as 25 does.
    const U32 narrow = min(r - used, splat(25u));
    const U32 narrowed =
        (discarded + (((one << narrow) >> 1) - 1u) + ((discarded >> narrow) & one)) >> narrow;
    const U32 t = used >= r ? widened : narrowed;
    const U32 limit = ~random & (((one << (used - 1u)) << 1u) - 1u);
    return kept + (as_u32(t > limit) & one);
  }
}

// FP32 bits of x / scale -> code, one lane per element.
template <Rounding kMode, bool kSaturate>
UNITSCALE_BULK_INLINE U32 encode_lanes(const EncodeParams& p, U32 bits, U32 random) {
  const I32 negative = as_i32(bits) < 0;
  const U32 input_magnitude = bits & kMagnitudeMask;
  const I32 is_nan = input_magnitude > kInfinityBits;
  const I32 is_zero = input_magnitude == 0u;
  // Saturation is a clamp to the largest finite value, which also maps ±Inf to ±max; NaN lanes
  // are replaced at the end.
  const U32 magnitude =
      kSaturate ? min(input_magnitude, splat(p.saturation_bits)) : input_magnitude;

  // ((E + 127) << 23) | fraction, with FP32 subnormals normalised (E < -126 there).
  I32 extended = as_i32(magnitude);
  if (p.normalise_subnormals) {
    const I32 normalised =
        as_i32(__builtin_convertvector(extended, F32)) - (kSubnormalRebase << kMantissaBits);
    extended = magnitude < kImplicitBit ? normalised : extended;
  }
  const I32 biased_exponent = extended >> kMantissaBits;

  const I32 target_normal = extended >= p.min_normal_bits;
  // Unsigned: the sum wraps harmlessly in lanes that do not use it.
  const U32 packed = as_u32(extended) + static_cast<std::uint32_t>(p.exponent_rebias);
  const U32 significand =
      ((as_u32(extended) & kFractionMask) | kImplicitBit) & p.subnormal_significand_mask;
  const U32 m = target_normal ? packed : significand;
  const I32 shift = max(splat(p.normal_shift), p.subnormal_shift_base - biased_exponent);
  const U32 code = round_right<kMode>(m, shift, negative, random, p);

  U32 sign = as_u32(negative) & p.sign_mask;
  if (p.zero_is_unsigned) sign &= as_u32(code != 0u);  // fnuz: what rounds to zero is +0
  U32 result = code | sign;
  if constexpr (kMode == Rounding::kUp || kMode == Rounding::kDown) {
    result = is_zero ? by_sign(negative, p.zero_code) : result;  // ±0 stays put in every mode
  }
  if constexpr (!kSaturate) {
    result = code > p.max_magnitude_code ? by_sign(negative, p.overflow_code) : result;
    result = input_magnitude == kInfinityBits ? by_sign(negative, p.infinity_code) : result;
  }
  if (p.is_unsigned) {
    const I32 invalid = negative | (is_zero & (p.zero_is_invalid ? -1 : 0));
    result = invalid ? splat(p.invalid_code) : result;
  }
  return is_nan ? by_sign(negative, p.nan_code) : result;
}

// ---- decode ----

UNITSCALE_BULK_INLINE U32 decode_lanes(const DecodeParams& d, U32 code) {
  const U32 magnitude = code & d.magnitude_mask;
  const U32 sign = (code & d.sign_mask) << d.sign_shift;
  const U32 nonzero_field = (magnitude << d.mantissa_shift) + as_u32(splat(d.exponent_rebias));

  // Exponent field 0: n · 2^k, built from the exact float(n) by an exponent add when the result
  // is an FP32 normal, else directly as FP32 subnormal bits.
  U32 value = nonzero_field;
  if (d.field0 != Field0::kLikeTheRest) {
    const U32 n = magnitude | d.field0_implicit_bit;
    const I32 n_bits = as_i32(__builtin_convertvector(as_i32(n), F32));
    const U32 scaled = as_u32(n_bits + (d.field0_exponent << kMantissaBits));
    U32 field0 = scaled & as_u32(n_bits != 0);
    if (d.field0 == Field0::kGeneral) {
      const I32 fp32_normal = (n_bits >> kMantissaBits) + d.field0_exponent >= 1;
      field0 = fp32_normal ? field0 : n << d.field0_subnormal_shift;
    }
    value = magnitude < d.field0_limit ? field0 : value;
  }

  U32 result = value | sign;
  result = magnitude == d.infinity_magnitude ? (sign | kInfinityBits) : result;
  const I32 is_nan = ((code & d.nan_test_mask) - d.nan_low) <= d.nan_span;
  return is_nan ? (sign & d.nan_sign_mask) | kQuietNanBits : result;
}

UNITSCALE_BULK_INLINE F32 decode_scale(const DecodeParams& d, U32 bits) {
  return d.multiply_by_scale ? as_f32(bits) * d.scale : as_f32(bits);
}

// ---- loops ----
//
// A loop runs whole vectors, then pads the last partial vector into a local buffer (zeros: they
// do not change amax) so that the tail goes through exactly the same lane code.

// The random words of element i; only stochastic rounding has any (`random` is null otherwise).
template <Rounding kMode>
const std::uint32_t* random_at(const std::uint32_t* random, std::size_t i) {
  return kMode == Rounding::kStochastic ? random + i : nullptr;
}

template <Rounding kMode, bool kSaturate, class Code>
std::uint32_t encode_loop(const EncodeParams& params, const float* in, Code* out,
                          const std::uint32_t* random, std::size_t count) {
  const EncodeParams p = params;  // a local copy: the stores below cannot alias it
  I32 amax{};
  auto step = [&](const float* x, const std::uint32_t* words, Code* codes) {
    const F32 value = load<F32>(x);
    amax = max(amax, as_i32(as_u32(value) & kMagnitudeMask));
    U32 random_words{};
    if constexpr (kMode == Rounding::kStochastic) random_words = load<U32>(words);
    const U32 code = encode_lanes<kMode, kSaturate>(p, as_u32(apply_scale(p, value)), random_words);
    store_codes(codes, code);
  };
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) step(in + i, random_at<kMode>(random, i), out + i);
  if (i < count) {
    const std::size_t rest = count - i;
    float x[kLanes] = {};
    std::uint32_t words[kLanes] = {};
    Code codes[kLanes];
    std::memcpy(x, in + i, rest * sizeof(float));
    if (kMode == Rounding::kStochastic)
      std::memcpy(words, random + i, rest * sizeof(std::uint32_t));
    step(x, words, codes);
    std::memcpy(out + i, codes, rest * sizeof(Code));
  }
  return horizontal_max(amax);
}

template <Rounding kMode, bool kSaturate>
std::uint32_t fake_quantize_loop(const EncodeParams& encode_params,
                                 const DecodeParams& decode_params, const float* in, float* out,
                                 const std::uint32_t* random, std::size_t count) {
  const EncodeParams p = encode_params;  // local copies: the stores below cannot alias them
  const DecodeParams d = decode_params;
  I32 amax{};
  auto step = [&](const float* x, const std::uint32_t* words, float* y) {
    const F32 value = load<F32>(x);
    amax = max(amax, as_i32(as_u32(value) & kMagnitudeMask));
    U32 random_words{};
    if constexpr (kMode == Rounding::kStochastic) random_words = load<U32>(words);
    const U32 code = encode_lanes<kMode, kSaturate>(p, as_u32(apply_scale(p, value)), random_words);
    store(y, decode_scale(d, decode_lanes(d, code)));
  };
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) step(in + i, random_at<kMode>(random, i), out + i);
  if (i < count) {
    const std::size_t rest = count - i;
    float x[kLanes] = {};
    std::uint32_t words[kLanes] = {};
    float y[kLanes];
    std::memcpy(x, in + i, rest * sizeof(float));
    if (kMode == Rounding::kStochastic)
      std::memcpy(words, random + i, rest * sizeof(std::uint32_t));
    step(x, words, y);
    std::memcpy(out + i, y, rest * sizeof(float));
  }
  return horizontal_max(amax);
}

// Picks the instantiation for the call's policies; the branch is taken once per chunk.
template <template <Rounding, bool> class Kernel, class... Args>
std::uint32_t dispatch_policies(const EncodeParams& p, Args... args) {
  auto run = [&]<Rounding kMode>() {
    return p.saturate ? Kernel<kMode, true>::run(p, args...)
                      : Kernel<kMode, false>::run(p, args...);
  };
  switch (p.rounding) {
    case Rounding::kNearestEven:
      return run.template operator()<Rounding::kNearestEven>();
    case Rounding::kNearestAway:
      return run.template operator()<Rounding::kNearestAway>();
    case Rounding::kTowardZero:
      return run.template operator()<Rounding::kTowardZero>();
    case Rounding::kUp:
      return run.template operator()<Rounding::kUp>();
    case Rounding::kDown:
      return run.template operator()<Rounding::kDown>();
    case Rounding::kStochastic:
      return run.template operator()<Rounding::kStochastic>();
  }
  return 0;
}

template <Rounding kMode, bool kSaturate>
struct Encode8 {
  static std::uint32_t run(const EncodeParams& p, const float* in, std::uint8_t* out,
                           const std::uint32_t* random, std::size_t count) {
    return encode_loop<kMode, kSaturate, std::uint8_t>(p, in, out, random, count);
  }
};

template <Rounding kMode, bool kSaturate>
struct Encode16 {
  static std::uint32_t run(const EncodeParams& p, const float* in, std::uint16_t* out,
                           const std::uint32_t* random, std::size_t count) {
    return encode_loop<kMode, kSaturate, std::uint16_t>(p, in, out, random, count);
  }
};

template <Rounding kMode, bool kSaturate>
struct FakeQuantize {
  static std::uint32_t run(const EncodeParams& p, const DecodeParams* d, const float* in,
                           float* out, const std::uint32_t* random, std::size_t count) {
    return fake_quantize_loop<kMode, kSaturate>(p, *d, in, out, random, count);
  }
};

std::uint32_t encode_8(const EncodeParams& p, const float* in, std::uint8_t* out,
                       const std::uint32_t* random, std::size_t count) {
  return dispatch_policies<Encode8>(p, in, out, random, count);
}

#if UNITSCALE_X86_SIMD && defined(__F16C__) && \
    ((UNITSCALE_BULK_LANES == 16 && defined(__AVX512F__)) || UNITSCALE_BULK_LANES == 8)
#define UNITSCALE_BULK_F16C 1
// FP16 with round-to-nearest-even and non-saturating overflow is what the F16C conversions
// compute: VCVTPS2PH rounds to nearest even and overflows to Inf, VCVTPH2PS is exact, and neither
// depends on FTZ/DAZ here (every FP32 subnormal rounds to ±0 in FP16, and every FP16 value is an
// FP32 normal). Only NaNs differ: the instructions keep a NaN's payload where the codec gives its
// canonical NaN, which the loops restore. The lanes that are not a whole vector go through the
// generic loops.
#if UNITSCALE_BULK_LANES == 16
// The masked forms avoid GCC 12's spurious -Wmaybe-uninitialized on the unmasked ones.
using NativeF32 = __m512;
UNITSCALE_BULK_INLINE void store_half(std::uint16_t* out, __m512 v) {
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(out),
      _mm512_maskz_cvtps_ph(0xFFFF, v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
UNITSCALE_BULK_INLINE __m512 load_half(const std::uint16_t* in) {
  return _mm512_maskz_cvtph_ps(0xFFFF,
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in)));
}
#else
using NativeF32 = __m256;
UNITSCALE_BULK_INLINE void store_half(std::uint16_t* out, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
UNITSCALE_BULK_INLINE __m256 load_half(const std::uint16_t* in) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
}
#endif

std::uint32_t encode_half_f16c(const EncodeParams& params, const float* in, std::uint16_t* out,
                               std::size_t count) {
  const EncodeParams p = params;
  I32 amax{};
  I32 any_nan{};  // a NaN anywhere: fixed afterwards (rare, and a per-vector test costs more)
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const F32 value = load<F32>(in + i);
    amax = max(amax, as_i32(as_u32(value) & kMagnitudeMask));
    const F32 scaled = apply_scale(p, value);
    store_half(out + i, (NativeF32)scaled);
    any_nan |= (as_u32(scaled) & kMagnitudeMask) > kInfinityBits;
  }
  const std::size_t vectors = i;
  if (horizontal_max(any_nan & 1) != 0) {
    // The scaled value is NaN exactly when the input is: a finite positive scale keeps NaN and
    // makes none.
    for (std::size_t k = 0; k < vectors; ++k) {
      std::uint32_t bits;
      std::memcpy(&bits, in + k, sizeof bits);
      if ((bits & kMagnitudeMask) > kInfinityBits) {
        out[k] = static_cast<std::uint16_t>(
            p.nan_code[(bits & kSignBit) != 0 ? kNegative : kPositive]);
      }
    }
  }
  std::uint32_t largest = horizontal_max(amax);
  if (i < count) {
    largest = std::max(largest, encode_loop<Rounding::kNearestEven, false, std::uint16_t>(
                                    p, in + i, out + i, nullptr, count - i));
  }
  return largest;
}

void decode_half_f16c(const DecodeParams& params, const std::uint16_t* in, float* out,
                      std::size_t count) {
  const DecodeParams d = params;
  I32 any_nan{};
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    F32 value = (F32)load_half(in + i);
    if (d.multiply_by_scale) value = value * d.scale;
    store(out + i, value);
    any_nan |= (as_u32(value) & kMagnitudeMask) > kInfinityBits;
  }
  if (horizontal_max(any_nan & 1) != 0) {
    for (std::size_t k = 0; k < i; ++k) {
      std::uint32_t bits;
      std::memcpy(&bits, out + k, sizeof bits);
      if ((bits & kMagnitudeMask) > kInfinityBits) {
        bits = ((bits & kSignBit) & d.nan_sign_mask) | kQuietNanBits;
        std::memcpy(out + k, &bits, sizeof bits);
      }
    }
  }
  if (i < count) {
    const std::size_t rest = count - i;
    std::uint16_t padded[kLanes] = {};
    float y[kLanes];
    std::memcpy(padded, in + i, rest * sizeof(std::uint16_t));
    store(y, decode_scale(d, decode_lanes(d, __builtin_convertvector(load<U16>(padded), U32))));
    std::memcpy(out + i, y, rest * sizeof(float));
  }
}
#endif

#if UNITSCALE_BULK_F16C
// BF16 with round-to-nearest-even and non-saturating overflow in integer arithmetic: BF16 is the
// top half of FP32, so adding 0x7FFF plus the lowest kept bit to the bits and keeping the top
// half rounds every finite value as the codec does, FP32 subnormals included (they are BF16's),
// and carries the values beyond BF16's largest into ±Inf. NaNs get the codec's NaN codes after
// the loop, as in encode_half_f16c.
std::uint32_t encode_bf16_nearest(const EncodeParams& params, const float* in, std::uint16_t* out,
                                  std::size_t count) {
  const EncodeParams p = params;
  I32 amax{};
  I32 any_nan{};
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    const F32 value = load<F32>(in + i);
    amax = max(amax, as_i32(as_u32(value) & kMagnitudeMask));
    const U32 bits = as_u32(apply_scale(p, value));
    store_codes(out + i, (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    any_nan |= (bits & kMagnitudeMask) > kInfinityBits;
  }
  const std::size_t vectors = i;
  if (horizontal_max(any_nan & 1) != 0) {
    for (std::size_t k = 0; k < vectors; ++k) {
      std::uint32_t bits;
      std::memcpy(&bits, in + k, sizeof bits);
      if ((bits & kMagnitudeMask) > kInfinityBits) {
        out[k] = static_cast<std::uint16_t>(
            p.nan_code[(bits & kSignBit) != 0 ? kNegative : kPositive]);
      }
    }
  }
  std::uint32_t largest = horizontal_max(amax);
  if (i < count) {
    largest = std::max(largest, encode_loop<Rounding::kNearestEven, false, std::uint16_t>(
                                    p, in + i, out + i, nullptr, count - i));
  }
  return largest;
}

// FP16 codes to E5M2 codes, rounded to nearest even as encode_8 rounds their values: E5M2 is
// FP16's top byte (the same sign, exponent field and bias), so adding 0x7F plus the lowest kept bit
// to the magnitude and keeping the top byte rounds every finite value, subnormals included, and
// carries what lies beyond E5M2's largest into the Inf code. Saturation clamps the magnitude to
// the largest (0x7B00, 57344) first, as encode_lanes does; the overflow, Inf and NaN codes are the
// encoder's own.
void f16_to_e5m2_nearest(const EncodeParams& p, const std::uint16_t* in, std::uint8_t* out,
                         std::size_t count) {
  constexpr std::uint32_t kHalfMagnitude = 0x7FFF, kHalfInfinity = 0x7C00, kLargest = 0x7B00;
  const U32 sign_mask = splat(0x8000u);
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
#if UNITSCALE_BULK_LANES == 16
    const auto h = (U32)_mm512_maskz_cvtepu16_epi32(
        0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
#else
    const auto h = (U32)_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
#endif
    const I32 negative = (h & sign_mask) != 0u;
    const U32 magnitude = h & kHalfMagnitude;
    const U32 clamped = p.saturate ? min(magnitude, splat(kLargest)) : magnitude;
    const U32 code = (clamped + 0x7Fu + ((clamped >> 8) & 1u)) >> 8;
    U32 result = code | ((h & sign_mask) >> 8);
    if (!p.saturate) {
      result = code > p.max_magnitude_code ? by_sign(negative, p.overflow_code) : result;
      result = magnitude == kHalfInfinity ? by_sign(negative, p.infinity_code) : result;
    }
    result = magnitude > kHalfInfinity ? by_sign(negative, p.nan_code) : result;
    store_codes(out + i, result);
  }
  for (; i < count; ++i) {  // the same, one element at a time
    const std::uint32_t h = in[i], magnitude = h & kHalfMagnitude;
    const int sign = (h & 0x8000u) != 0 ? kNegative : kPositive;
    const std::uint32_t clamped = p.saturate ? std::min(magnitude, kLargest) : magnitude;
    const std::uint32_t code = (clamped + 0x7Fu + ((clamped >> 8) & 1u)) >> 8;
    std::uint32_t result = code | ((h & 0x8000u) >> 8);
    if (!p.saturate && code > p.max_magnitude_code) result = p.overflow_code[sign];
    if (!p.saturate && magnitude == kHalfInfinity) result = p.infinity_code[sign];
    if (magnitude > kHalfInfinity) result = p.nan_code[sign];
    out[i] = static_cast<std::uint8_t>(result);
  }
}

// FP16 codes to any 8-bit format's codes with round-to-nearest-even: each vector is decoded by
// F16C (exactly) and encoded in registers, with no FP32 buffer in between.
template <Rounding kMode, bool kSaturate>
struct F16To8 {
  static std::uint32_t run(const EncodeParams& p, const std::uint16_t* in, std::uint8_t* out,
                           const std::uint32_t*, std::size_t count) {
    std::size_t i = 0;
    for (; i + kLanes <= count; i += kLanes) {
      const auto value = (F32)load_half(in + i);
      store_codes(out + i, encode_lanes<kMode, kSaturate>(p, as_u32(value), U32{}));
    }
    if (i < count) {
      const std::size_t rest = count - i;
      std::uint16_t padded[kLanes] = {};
      std::uint8_t codes[kLanes];
      std::memcpy(padded, in + i, rest * sizeof(std::uint16_t));
      const auto value = (F32)load_half(padded);
      store_codes(codes, encode_lanes<kMode, kSaturate>(p, as_u32(value), U32{}));
      std::memcpy(out + i, codes, rest);
    }
    return 0;
  }
};

void f16_to_8bit_nearest(const EncodeParams& p, const std::uint16_t* in, std::uint8_t* out,
                         std::size_t count) {
  if (p.saturate) {
    F16To8<Rounding::kNearestEven, true>::run(p, in, out, nullptr, count);
  } else {
    F16To8<Rounding::kNearestEven, false>::run(p, in, out, nullptr, count);
  }
}
#endif

std::uint32_t encode_16(const EncodeParams& p, const float* in, std::uint16_t* out,
                        const std::uint32_t* random, std::size_t count) {
#if UNITSCALE_BULK_F16C
  if (p.ieee_half && p.rounding == Rounding::kNearestEven && !p.saturate) {
    return encode_half_f16c(p, in, out, count);
  }
  if (p.brain_float && p.rounding == Rounding::kNearestEven && !p.saturate) {
    return encode_bf16_nearest(p, in, out, count);
  }
#endif
  return dispatch_policies<Encode16>(p, in, out, random, count);
}

std::uint32_t fake_quantize(const EncodeParams& p, const DecodeParams& d, const float* in,
                            float* out, const std::uint32_t* random, std::size_t count) {
  return dispatch_policies<FakeQuantize>(p, &d, in, out, random, count);
}

// ---- decode loops ----

// One byte per lane -> 32 bits per lane (GCC 12 scalarises __builtin_convertvector for this).
UNITSCALE_BULK_INLINE U32 widen_bytes(const std::uint8_t* bytes) {
#if UNITSCALE_BULK_LANES == 16 && defined(__AVX512F__)
  // The masked form avoids GCC's spurious -Wmaybe-uninitialized on _mm512_cvtepu8_epi32.
  return (U32)_mm512_maskz_cvtepu8_epi32(0xFFFF,
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
#elif UNITSCALE_BULK_LANES == 8 && defined(__AVX2__)
  return (U32)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
#else
  return __builtin_convertvector(load<U8>(bytes), U32);
#endif
}

// Pads the last partial vector of codes so the tail goes through the same lookup.
template <class Lookup>
void decode_8_loop(const std::uint8_t* in, float* out, std::size_t count, const Lookup& lookup) {
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    store(out + i, lookup(widen_bytes(in + i)));
  }
  if (i < count) {
    const std::size_t rest = count - i;
    std::uint8_t codes[kLanes] = {};
    float y[kLanes];
    std::memcpy(codes, in + i, rest);
    store(y, lookup(widen_bytes(codes)));
    std::memcpy(out + i, y, rest * sizeof(float));
  }
}

#if UNITSCALE_BULK_LANES == 16 && defined(__AVX512F__)
// The table lives in registers, 16 entries each. A format of k <= 8 bits needs only its first
// 2^k entries (decode ignores the bits above), so FP4 is one permute; wider codes take one
// two-register permute per 32 entries (code bits 0-4), then a round of blends per further bit.
template <int kCodeBits>
void decode_8_permute(const float* table, const std::uint8_t* in, float* out, std::size_t count) {
  constexpr int kRegisters = kCodeBits <= 4 ? 1 : 1 << (kCodeBits - 4);
  __m512 t[kRegisters];
  for (int k = 0; k < kRegisters; ++k) t[k] = _mm512_loadu_ps(table + 16 * k);
  decode_8_loop(in, out, count, [&](U32 codes) {
    const auto index = (__m512i)codes;
    if constexpr (kRegisters == 1) {
      return (F32)_mm512_maskz_permutexvar_ps(0xFFFF, index, t[0]);  // masked: see widen_bytes
    } else {
      __m512 level[kRegisters / 2];
      for (int k = 0; k < kRegisters / 2; ++k) {
        level[k] = _mm512_permutex2var_ps(t[2 * k], index, t[2 * k + 1]);
      }
      for (int bit = 5, n = kRegisters / 2; n > 1; ++bit, n /= 2) {
        const __mmask16 upper = _mm512_test_epi32_mask(index, _mm512_set1_epi32(1 << bit));
        for (int k = 0; k < n / 2; ++k)
          level[k] = _mm512_mask_blend_ps(upper, level[2 * k], level[2 * k + 1]);
      }
      return (F32)level[0];
    }
  });
}

void decode_8(const float* table, int code_bits, const std::uint8_t* in, float* out,
              std::size_t count) {
  switch (code_bits) {
    case 1:
    case 2:
    case 3:
    case 4:
      return decode_8_permute<4>(table, in, out, count);
    case 5:
      return decode_8_permute<5>(table, in, out, count);
    case 6:
      return decode_8_permute<6>(table, in, out, count);
    case 7:
      return decode_8_permute<7>(table, in, out, count);
    default:
      return decode_8_permute<8>(table, in, out, count);
  }
}
#elif UNITSCALE_BULK_LANES == 8 && defined(__AVX2__)
void decode_8(const float* table, int, const std::uint8_t* in, float* out, std::size_t count) {
  decode_8_loop(in, out, count,
                [&](U32 codes) { return (F32)_mm256_i32gather_ps(table, (__m256i)codes, 4); });
}
#else
void decode_8(const float* table, int, const std::uint8_t* in, float* out, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) out[i] = table[in[i]];
}
#endif

void decode_16(const DecodeParams& params, const std::uint16_t* in, float* out, std::size_t count) {
#if UNITSCALE_BULK_F16C
  if (params.ieee_half) return decode_half_f16c(params, in, out, count);
#endif
  const DecodeParams d = params;  // a local copy: the stores below cannot alias it
  auto step = [&](const std::uint16_t* codes, float* y) {
    store(y, decode_scale(d, decode_lanes(d, __builtin_convertvector(load<U16>(codes), U32))));
  };
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) step(in + i, out + i);
  if (i < count) {
    const std::size_t rest = count - i;
    std::uint16_t codes[kLanes] = {};
    float y[kLanes];
    std::memcpy(codes, in + i, rest * sizeof(std::uint16_t));
    step(codes, y);
    std::memcpy(out + i, y, rest * sizeof(float));
  }
}

std::uint32_t amax(const float* in, std::size_t count) {
  I32 result{};
  std::size_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    result = max(result, as_i32(load<U32>(in + i) & kMagnitudeMask));
  }
  std::uint32_t tail = 0;
  for (; i < count; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, in + i, sizeof bits);
    bits &= kMagnitudeMask;
    tail = bits > tail ? bits : tail;
  }
  const std::uint32_t vector_max = horizontal_max(result);
  return vector_max > tail ? vector_max : tail;
}

#if UNITSCALE_BULK_F16C
constexpr KernelTable kKernels{encode_8,  encode_16, fake_quantize,       decode_8,
                               decode_16, amax,      f16_to_e5m2_nearest, f16_to_8bit_nearest};
#else
constexpr KernelTable kKernels{encode_8, encode_16, fake_quantize, decode_8, decode_16, amax,
                               nullptr,  nullptr};
#endif

}  // namespace
}  // namespace unitscale::detail::bulk

#undef UNITSCALE_BULK_INLINE

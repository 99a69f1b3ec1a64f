// The FP8 decoding kernel, written once with GCC vector extensions for UNITSCALE_SIMD_LANES lanes
// of 32 bits; included by fp8_decode_kernels_{generic,avx2,avx512}.cpp, each compiled for its
// instruction set. Everything is in an anonymous namespace and calls no inline library function,
// so the linker cannot hand portable code a copy compiled for AVX-512 (see CMakeLists.txt).
//
// The BF16 bits come from arithmetic on the code rather than a table lookup (x86 has no byte
// gather before AVX-512 VBMI). With x the code's magnitude bits (7 of them) and m the mantissa
// width (3 for E4M3, 2 for E5M2):
//   normal codes:     (x << (7 − m)) + (bias' << 7), moving exponent and mantissa into BF16's
//                     fields and rebiasing the exponent (bias' = 127 − format bias: 120 or 112);
//   subnormal codes:  x · 2^(1 − bias − m), an exact int-to-float conversion and scaling whose
//                     result is a normal FP32 (at least 2^-16), so FTZ/DAZ cannot touch it;
//   the top codes:    NaN (E4M3's 0x7F; E5M2's 0x7D-0x7F) and E5M2's infinity 0x7C, by selects;
// then the sign bit moved from bit 7 to bit 15. The bytes are widened to 32-bit lanes and the
// results narrowed to 16 bits with intrinsics: GCC 12 turns __builtin_convertvector between 8- and
// 32-bit lanes into one scalar extract per byte, which ran at a tenth of this speed.

// UNITSCALE_X86_SIMD (set by CMake) is 0 in portable builds: no intrinsics then, on any processor.
#if UNITSCALE_X86_SIMD && defined(__SSE2__)
#include <immintrin.h>
#endif

#include <cstdint>
#include <cstring>

#include "gemm/fp8_decode_kernels.hpp"

#ifndef UNITSCALE_SIMD_LANES
#error "define UNITSCALE_SIMD_LANES before including fp8_decode_kernels.inl"
#endif

namespace unitscale::detail::fp8_decode {
namespace {

constexpr int kLanes = UNITSCALE_SIMD_LANES;
typedef std::uint32_t U32 __attribute__((vector_size(4 * kLanes)));
typedef std::int32_t I32 __attribute__((vector_size(4 * kLanes)));
typedef float F32 __attribute__((vector_size(4 * kLanes)));

// kLanes codes widened to 32-bit lanes, and 32-bit lanes (each < 2^16) stored as 16 bits.
#if UNITSCALE_SIMD_LANES == 16 && UNITSCALE_X86_SIMD && defined(__AVX512F__)
[[gnu::always_inline]] inline U32 load_codes(const std::uint8_t* p) {
  // The zero-masked form: GCC 12 warns that the plain one reads an uninitialised register.
  return (U32)_mm512_maskz_cvtepu8_epi32(0xFFFF,
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
[[gnu::always_inline]] inline void store_u16(std::uint16_t* p, U32 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_maskz_cvtepi32_epi16(0xFFFF, (__m512i)v));
}
#elif UNITSCALE_SIMD_LANES == 8 && UNITSCALE_X86_SIMD && defined(__AVX2__)
[[gnu::always_inline]] inline U32 load_codes(const std::uint8_t* p) {
  return (U32)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
[[gnu::always_inline]] inline void store_u16(std::uint16_t* p, U32 v) {
  // packus works within 128-bit halves; the permute gathers the two packed quarters.
  const __m256i packed = _mm256_packus_epi32((__m256i)v, (__m256i)v);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0b1000)));
}
#elif UNITSCALE_SIMD_LANES == 4 && UNITSCALE_X86_SIMD && defined(__SSE2__)
[[gnu::always_inline]] inline U32 load_codes(const std::uint8_t* p) {
  int word;
  std::memcpy(&word, p, sizeof word);
  const __m128i zero = _mm_setzero_si128();
  return (U32)_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), zero), zero);
}
[[gnu::always_inline]] inline void store_u16(std::uint16_t* p, U32 v) {
  // SSE2 packs with signed saturation only: shift [0, 2^16) to [-2^15, 2^15) and back.
  const __m128i bias = _mm_set1_epi32(0x8000);
  const __m128i packed = _mm_packs_epi32(_mm_sub_epi32((__m128i)v, bias), _mm_setzero_si128());
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_xor_si128(packed, _mm_set1_epi16(-0x8000)));
}
#else
// Portable: GCC lowers these conversions for any target (on x86 it scalarises them, which is why
// the intrinsic forms above exist).
typedef std::uint8_t U8 __attribute__((vector_size(kLanes)));
typedef std::uint16_t U16 __attribute__((vector_size(2 * kLanes)));
[[gnu::always_inline]] inline U32 load_codes(const std::uint8_t* p) {
  U8 bytes;
  std::memcpy(&bytes, p, sizeof bytes);
  return __builtin_convertvector(bytes, U32);
}
[[gnu::always_inline]] inline void store_u16(std::uint16_t* p, U32 v) {
  const U16 narrow = __builtin_convertvector(v, U16);
  std::memcpy(p, &narrow, sizeof narrow);
}
#endif

// BF16 bits of the canonical quiet NaN and of +∞.
constexpr std::uint32_t kNaN = 0x7FC0, kInfinity = 0x7F80;

template <Fp8 F, class U, class I, class F32V>
[[gnu::always_inline]] inline U bf16_bits(U code) {
  constexpr bool e4m3 = F == Fp8::kE4M3;
  constexpr std::uint32_t mantissa_bits = e4m3 ? 3 : 2;
  constexpr std::uint32_t rebias = e4m3 ? 120 : 112;
  constexpr float subnormal_unit = e4m3 ? 0x1p-9f : 0x1p-16f;
  const U x = code & 0x7Fu;
  const U normal = (x << (7 - mantissa_bits)) + (rebias << 7);
  F32V sub_value = __builtin_convertvector((I)x, F32V) * subnormal_unit;
  U subnormal;
  std::memcpy(&subnormal, &sub_value, sizeof subnormal);
  const U nan = U{} + kNaN;
  U magnitude = x < (1u << mantissa_bits) ? subnormal >> 16 : normal;
  if constexpr (e4m3) {
    magnitude = x == 0x7Fu ? nan : magnitude;
  } else {
    magnitude = x >= 0x7Cu ? (x == 0x7Cu ? U{} + kInfinity : nan) : magnitude;
  }
  return magnitude | ((code & 0x80u) << 8);
}

// One scalar code: the vector kernel on one lane, so the tails match the vectors bit for bit.
template <Fp8 F>
std::uint32_t bf16_bits_one(std::uint8_t code) {
  typedef std::uint32_t U1 __attribute__((vector_size(4)));
  typedef std::int32_t I1 __attribute__((vector_size(4)));
  typedef float F1 __attribute__((vector_size(4)));
  return bf16_bits<F, U1, I1, F1>(U1{code})[0];
}

template <Fp8 F>
void decode_to_bf16(const std::uint8_t* codes, std::uint16_t* out, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    store_u16(out + i, bf16_bits<F, U32, I32, F32>(load_codes(codes + i)));
  }
  for (; i < n; ++i) out[i] = static_cast<std::uint16_t>(bf16_bits_one<F>(codes[i]));
}

template <Fp8 F>
void decode_to_f32(const std::uint8_t* codes, float* out, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const U32 bits = bf16_bits<F, U32, I32, F32>(load_codes(codes + i)) << 16;
    std::memcpy(out + i, &bits, sizeof bits);
  }
  for (; i < n; ++i) {
    const std::uint32_t bits = bf16_bits_one<F>(codes[i]) << 16;
    std::memcpy(out + i, &bits, sizeof bits);
  }
}

void to_bf16(const std::uint8_t* codes, std::uint16_t* out, std::int64_t n, Fp8 format) {
  if (format == Fp8::kE4M3) decode_to_bf16<Fp8::kE4M3>(codes, out, n);
  else decode_to_bf16<Fp8::kE5M2>(codes, out, n);
}

void to_f32(const std::uint8_t* codes, float* out, std::int64_t n, Fp8 format) {
  if (format == Fp8::kE4M3) decode_to_f32<Fp8::kE4M3>(codes, out, n);
  else decode_to_f32<Fp8::kE5M2>(codes, out, n);
}

constexpr KernelTable kKernels{.to_bf16 = to_bf16, .to_f32 = to_f32};

}  // namespace
}  // namespace unitscale::detail::fp8_decode

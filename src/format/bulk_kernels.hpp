#pragma once
// The interface between the bulk entry points (bulk.cpp) and the SIMD kernels (bulk_kernels.inl,
// compiled once per instruction set by bulk_kernels_{generic,avx2,avx512}.cpp).
//
// bulk.cpp turns a FormatSpec and the policies into the plain numbers below once per call; the
// kernels only see these numbers, never a FormatSpec, so one kernel serves every format, including
// descriptors chosen at run time. This header holds data only: it is included by translation units
// compiled with -mavx512f, and an inline function defined here could be instantiated there and
// then shared by the linker with portable code.

#include <cstddef>
#include <cstdint>

#include "unitscale/format/rounding.hpp"

namespace unitscale::detail::bulk {

// How x / scale is computed. kMultiply is used only when scale is a power of two whose reciprocal
// is a normal float, where x · (1 / scale) equals x / scale for every x. kNone (scale == 1) keeps
// FP32 subnormal inputs intact even when denormals are flushed.
enum class ScaleStep : std::uint8_t { kNone, kMultiply, kDivide };

// Index of the per-sign special codes below.
inline constexpr int kPositive = 0;
inline constexpr int kNegative = 1;

// FP32 -> code. The names describe FP32 bit fields: a finite FP32 magnitude u with biased exponent
// field e32 is extended to ((E + 127) << 23) | fraction, E its true exponent, which also covers
// FP32 subnormals once they are normalised (docs/formats.md).
struct EncodeParams {
  ScaleStep scale_step = ScaleStep::kNone;
  float scale = 1.0f;          // the divisor (kDivide), also the decode factor of fake_quantize
  float inverse_scale = 1.0f;  // the factor (kMultiply)
  Rounding rounding = Rounding::kNearestEven;
  bool saturate = true;

  // Adding (bias - 127) << 23 to the extended FP32 bits gives the target's packed exponent and
  // fraction, so that rounding the low bits away leaves the code with any carry already applied.
  std::int32_t exponent_rebias = 0;
  // min_normal_exponent + 127, shifted to the exponent field: extended bits below it fall into the
  // target's subnormal range (or below the smallest value of a format without subnormals).
  std::int32_t min_normal_bits = 0;
  std::int32_t normal_shift = 0;          // 23 - M: bits dropped from a target-normal value
  std::int32_t subnormal_shift_base = 0;  // normal_shift + min_normal_exponent + 127
  // False when every FP32 subnormal lies so far below the format's smallest subnormal that it
  // rounds the same whether or not it is normalised first: then all its bits, and even the 32
  // random bits of stochastic rounding pre-rounded from them, fall below half the smallest code.
  bool normalise_subnormals = true;
  // All ones if the format has subnormals; 0 otherwise, so that values below its smallest normal
  // round to code 0 in every mode, as the reference codec does.
  std::uint32_t subnormal_significand_mask = 0;
  std::uint32_t saturation_bits = 0;  // FP32 bits of the largest finite value
  std::uint32_t max_magnitude_code = 0;
  std::uint32_t sign_mask = 0;

  // A signed format without -0 (fnuz): a negative value that rounds to zero gives +0.
  bool zero_is_unsigned = false;

  // Special results, indexed by kPositive / kNegative (docs/formats.md).
  std::uint32_t zero_code[2] = {};      // ±0 input under kUp / kDown, which would move it
  std::uint32_t overflow_code[2] = {};  // finite overflow under Overflow::kNonFinite
  std::uint32_t infinity_code[2] = {};  // ±Inf input under Overflow::kNonFinite
  std::uint32_t nan_code[2] = {};
  // Unsigned formats: every negative input, and +0 when the format has no zero, gives this.
  bool is_unsigned = false;
  bool zero_is_invalid = false;
  std::uint32_t invalid_code = 0;

  // Rounding::kStochastic: how many random bits to use, 0 for "as many as are discarded".
  std::uint32_t random_bit_count = 0;

  // The target is IEEE binary16 (FP16): kernels with F16C may use its conversion instructions.
  bool ieee_half = false;
  // The target is BF16, the top half of FP32: the AVX2 and AVX-512 kernels round in integers.
  bool brain_float = false;
};

// How the codes with exponent field 0 (zero, subnormals, or E8M0's lowest binade) decode.
enum class Field0 : std::uint8_t {
  kLikeTheRest,  // bias 127 with subnormals (BF16): the other codes' formula gives FP32 subnormals
  kFp32Normal,   // every non-zero such value is an FP32 normal (FP16, FP8 but E8M0, FP6, FP4)
  kGeneral,      // some are FP32 subnormals
};

// Code -> FP32 by bit manipulation: 16-bit codes, fake_quantize, and the table for 8-bit codes.
struct DecodeParams {
  std::uint32_t magnitude_mask = 0;
  std::uint32_t sign_mask = 0;
  std::uint32_t sign_shift = 0;      // moves the code's sign bit to bit 31
  std::uint32_t mantissa_shift = 0;  // 23 - M
  // (127 - bias) << 23: with the magnitude shifted up by mantissa_shift, gives the FP32 bits of
  // every code whose exponent field is not 0.
  std::int32_t exponent_rebias = 0;
  // Codes below field0_limit (1 << M) have exponent field 0. Their value is n · 2^field0_exponent
  // with n = magnitude | field0_implicit_bit (the implicit bit exists only in formats without
  // subnormals); it may be an FP32 subnormal, whose bits are n << field0_subnormal_shift.
  Field0 field0 = Field0::kGeneral;
  std::uint32_t field0_limit = 0;
  std::uint32_t field0_implicit_bit = 0;
  std::int32_t field0_exponent = 0;
  std::uint32_t field0_subnormal_shift = 0;
  // A code c is NaN iff (c & nan_test_mask) - nan_low <= nan_span (unsigned arithmetic).
  std::uint32_t nan_test_mask = 0;
  std::uint32_t nan_low = 0;
  std::uint32_t nan_span = 0;
  std::uint32_t nan_sign_mask = 0;       // 1 << 31 if a NaN keeps the code's sign
  std::uint32_t infinity_magnitude = 0;  // magnitude of the Inf codes; ~0 if there are none
  bool multiply_by_scale = false;        // out = decode(code) · scale unless scale == 1
  float scale = 1.0f;
  bool ieee_half = false;  // the codes are IEEE binary16 (FP16)
};

// One instruction set's kernels. Each processes `count` consecutive elements of its arguments and
// returns, where it reads FP32 input, the largest (bits & 0x7FFFFFFF) seen: as integers these order
// like |x|, with NaNs above +Inf.
struct KernelTable {
  std::uint32_t (*encode_8)(const EncodeParams&, const float* in, std::uint8_t* out,
                            const std::uint32_t* random, std::size_t count);
  std::uint32_t (*encode_16)(const EncodeParams&, const float* in, std::uint16_t* out,
                             const std::uint32_t* random, std::size_t count);
  // In place is allowed (in == out).
  std::uint32_t (*fake_quantize)(const EncodeParams&, const DecodeParams&, const float* in,
                                 float* out, const std::uint32_t* random, std::size_t count);
  // `table` holds decode(c) · scale for all 256 codes; a format of code_bits bits ignores the
  // bits above them, so its table repeats with period 2^code_bits.
  void (*decode_8)(const float* table, int code_bits, const std::uint8_t* in, float* out,
                   std::size_t count);
  void (*decode_16)(const DecodeParams&, const std::uint16_t* in, float* out, std::size_t count);
  std::uint32_t (*amax)(const float* in, std::size_t count);
  // FP16 codes to E5M2 codes (in integers), or to any 8-bit format's codes (F16C, then the
  // encoder in registers), under the target's round-to-nearest-even EncodeParams without a scale
  // (the levels with AVX2 or AVX-512; null elsewhere).
  void (*f16_to_e5m2)(const EncodeParams&, const std::uint16_t* in, std::uint8_t* out,
                      std::size_t count);
  void (*f16_to_8bit)(const EncodeParams&, const std::uint16_t* in, std::uint8_t* out,
                      std::size_t count);
};

extern const KernelTable kGenericKernels;
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;

}  // namespace unitscale::detail::bulk

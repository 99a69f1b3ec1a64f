#pragma once
// Bulk conversion over spans: the fast path every tensor-level quantiser goes through.
//
//   float amax = encode(std::span<const float>(x), std::span<float8_e4m3fn>(q), {.scale = s});
//   decode(std::span<const float8_e4m3fn>(q), std::span<float>(y), s);     // y = decode(q) · s
//   fake_quantize(std::span<float>(x), kFloat8E5M2, {.scale = s});       // x = decode(q(x/s)) · s
//
// Semantics: element i is stored as convert<T>(x[i] / scale) with the given policies, computed in
// float (x / scale is one correctly rounded FP32 division, exact when scale is a power of two, so
// power-of-two scales round exactly once; scale 1 does no FP32 arithmetic at all, so results do
// not change when denormals are flushed). Results are bit-identical to the scalar convert<>() for
// every input, on every instruction set (scalar, generic SSE2, AVX2, AVX-512, chosen at run time;
// see detail/simd_level.hpp), and independent of the thread count. Spans above 64K elements are
// split over the OpenMP threads.
//
// Training quantisers default to round-to-nearest-even with saturation (docs/formats.md).

#include <cstdint>
#include <span>

#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/format_traits.hpp"
#include "unitscale/format/rounding.hpp"

namespace unitscale {

struct Quantization {
  float scale = 1.0f;  // dequantisation scale: finite and > 0
  Rounding rounding = Rounding::kNearestEven;
  Overflow overflow = Overflow::kSaturate;
  // Rounding::kStochastic only: one uniformly random word per element, and how many of its low bits
  // to use (0: as many as are discarded, up to 32; see RandomBits).
  std::span<const std::uint32_t> random_bits = {};
  int random_bit_count = 0;
};

// max |x| over the span: +0 for an empty span, and the canonical quiet NaN (bits 0x7FC00000) if
// any element is NaN. Exact: computed on the bit patterns, whatever the FTZ/DAZ modes.
float amax(std::span<const float> x);

namespace detail {
// Type-erased cores; `codes` holds code_count codes of code_bytes (1 or 2) bytes each. They check
// that the sizes match and throw unitscale::Error naming both otherwise.
float encode_codes(std::span<const float> in, void* codes, std::size_t code_count, int code_bytes,
                   const FormatSpec& format, const Quantization& q);
void decode_codes(const void* codes, std::size_t code_count, int code_bytes, std::span<float> out,
                  const FormatSpec& format, float scale);
// FP16 codes to the codes of an 8-bit format: encode_codes of their values, with no FP32 buffer
// (E5M2 is FP16's top byte: a rounding in integers; the others decoded by F16C and encoded in
// registers). Only round-to-nearest-even without a scale, on CPUs with AVX2 or AVX-512; returns
// false, writing nothing, otherwise.
bool transcode_f16_to_8bit(const std::uint16_t* in, std::uint8_t* out, std::size_t count,
                           const FormatSpec& format, const Quantization& q);
}  // namespace detail

// Quantises `in` into `out` (same length) and returns amax(in), computed in the same pass.
template <LowPrecisionFloat T>
float encode(std::span<const float> in, std::span<T> out, const Quantization& q = {}) {
  static_assert(sizeof(T) == sizeof(typename FormatTraits<T>::Bits));
  return detail::encode_codes(in, out.data(), out.size(), static_cast<int>(sizeof(T)),
                              FormatTraits<T>::kSpec, q);
}

// out[i] = float(in[i]) · scale, one FP32 multiplication (exact for power-of-two scales unless it
// under- or overflows FP32; none for scale 1).
template <LowPrecisionFloat T>
void decode(std::span<const T> in, std::span<float> out, float scale = 1.0f) {
  static_assert(sizeof(T) == sizeof(typename FormatTraits<T>::Bits));
  detail::decode_codes(in.data(), in.size(), static_cast<int>(sizeof(T)), out,
                       FormatTraits<T>::kSpec, scale);
}

// In place: x = decode(convert(x / scale)) · scale, for any valid FormatSpec chosen at run time
// (including simulated ones such as e5m10 or e4m3b11). Returns amax of the input.
float fake_quantize(std::span<float> x, const FormatSpec& format, const Quantization& q = {});

}  // namespace unitscale

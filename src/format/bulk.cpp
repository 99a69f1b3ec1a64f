// The bulk conversion entry points: argument checks, the per-call kernel parameters derived from
// the FormatSpec, OpenMP splitting, and the run-time choice of instruction set. The kernels
// themselves are in bulk_kernels.inl.

#include "unitscale/format/bulk.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#if UNITSCALE_X86_SIMD
#include <cpuid.h>
#endif

#include "format/bulk_kernels.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/detail/simd_level.hpp"

namespace unitscale {
namespace detail {
namespace {

// ---- instruction set ----

// Portable builds (UNITSCALE_X86_SIMD = 0, any processor) run the generic kernels only.
#if UNITSCALE_X86_SIMD
// F16C through CPUID (leaf 1, ECX bit 29): clang before 16 rejects __builtin_cpu_supports("f16c").
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
         __builtin_cpu_supports("bmi2");
}

bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd");
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }
#endif

struct SupportedLevels {
  std::array<SimdLevel, 4> levels{};
  std::size_t count = 0;
};

const SupportedLevels& supported_levels() {
  static const SupportedLevels supported = [] {
#if UNITSCALE_X86_SIMD
    __builtin_cpu_init();  // needed if this first runs from another static initialiser
#endif
    SupportedLevels s;
    s.levels[s.count++] = SimdLevel::kScalar;
    s.levels[s.count++] = SimdLevel::kGeneric;
    if (cpu_has_avx2()) s.levels[s.count++] = SimdLevel::kAvx2;
    if (cpu_has_avx512()) s.levels[s.count++] = SimdLevel::kAvx512;
    return s;
  }();
  return supported;
}

std::atomic<SimdLevel>& active_level() {
  static std::atomic<SimdLevel> level{best_simd_level()};
  return level;
}

// The scalar level runs the reference codec directly and needs no kernels.
const bulk::KernelTable& kernels_for(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512:
      return bulk::kAvx512Kernels;
    case SimdLevel::kAvx2:
      return bulk::kAvx2Kernels;
    case SimdLevel::kGeneric:
    case SimdLevel::kScalar:
      break;
  }
  return bulk::kGenericKernels;
}

// ---- splitting over threads ----

// Large enough that a chunk amortises the thread hand-off, small enough to balance two cores.
constexpr std::size_t kChunkElements = std::size_t{1} << 16;

// Runs chunk(begin, count) over [0, n) and returns the largest value it returned. Every element is
// converted independently and max is order-free, so the result is the same for any thread count.
template <class Chunk>
std::uint32_t for_each_chunk(std::size_t n, const Chunk& chunk) {
  if (n <= kChunkElements) return chunk(std::size_t{0}, n);
  const auto chunks = static_cast<std::ptrdiff_t>((n + kChunkElements - 1) / kChunkElements);
  std::uint32_t result = 0;
#pragma omp parallel for schedule(static) reduction(max : result)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const std::size_t begin = static_cast<std::size_t>(c) * kChunkElements;
    result = std::max(result, chunk(begin, std::min(kChunkElements, n - begin)));
  }
  return result;
}

// The kernels' amax result (max of |x| as FP32 bits) as a float: any NaN becomes the canonical
// quiet NaN, so the value does not depend on which NaN a chunk saw first.
float amax_from_bits(std::uint32_t bits) {
  return bits > 0x7F800000u ? std::bit_cast<float>(0x7FC00000u) : std::bit_cast<float>(bits);
}

std::uint32_t magnitude_bits(float x) { return std::bit_cast<std::uint32_t>(x) & 0x7FFFFFFFu; }

// ---- argument checks ----

void check_sizes(const char* function, std::size_t in, std::size_t out) {
  if (in != out) {
    throw Error(
        fmt::format("unitscale::{}: input has {} elements but output has {}", function, in, out));
  }
}

void check_scale(const char* function, float scale) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) {
    throw Error(
        fmt::format("unitscale::{}: scale must be finite and > 0, got {}", function, scale));
  }
}

void check_format(const char* function, const FormatSpec& format, int storage_bits) {
  if (!format.is_valid()) {
    throw Error(fmt::format("unitscale::{}: {} is not a valid format descriptor", function,
                            format_name(format)));
  }
  if (format.total_bits() > storage_bits) {
    throw Error(fmt::format("unitscale::{}: format {} has {} bits, more than its {}-bit storage",
                            function, format_name(format), format.total_bits(), storage_bits));
  }
}

void check_code_bytes(const char* function, int code_bytes) {
  if (code_bytes != 1 && code_bytes != 2) {
    throw Error(fmt::format("unitscale::{}: codes of {} bytes are not supported (1 or 2)", function,
                            code_bytes));
  }
}

void check_quantization(const char* function, const Quantization& q, std::size_t n) {
  check_scale(function, q.scale);
  if (q.random_bit_count < 0 || q.random_bit_count > 32) {
    throw Error(fmt::format("unitscale::{}: random_bit_count must be in 0..32, got {}", function,
                            q.random_bit_count));
  }
  if (q.rounding == Rounding::kStochastic && q.random_bits.size() != n) {
    throw Error(fmt::format(
        "unitscale::{}: Rounding::kStochastic needs one random word per element: {} elements "
        "but {} random words",
        function, n, q.random_bits.size()));
  }
}

// ---- kernel parameters ----

// x / scale in FP32; the multiplication is used only where it gives the same float.
bulk::ScaleStep scale_step(float scale) {
  if (scale == 1.0f) return bulk::ScaleStep::kNone;
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(scale);
  const std::uint32_t exponent_field = bits >> 23;
  // A power of two 2^k whose reciprocal 2^-k is a normal float: k in [-126, 126].
  const bool power_of_two = (bits & 0x7FFFFFu) == 0 && exponent_field >= 1 && exponent_field <= 253;
  return power_of_two ? bulk::ScaleStep::kMultiply : bulk::ScaleStep::kDivide;
}

// The scalar forms of the FP32 scale steps. Skipping them for scale 1 keeps FP32 subnormals intact
// under DAZ, as the kernels do.
float divide_by_scale(float x, float scale) { return scale == 1.0f ? x : x / scale; }
float multiply_by_scale(float x, float scale) { return scale == 1.0f ? x : x * scale; }

bulk::EncodeParams encode_params(const FormatSpec& f, const Quantization& q) {
  bulk::EncodeParams p;
  p.scale_step = scale_step(q.scale);
  p.scale = q.scale;
  p.inverse_scale = 1.0f / q.scale;
  p.rounding = q.rounding;
  p.saturate = q.overflow == Overflow::kSaturate;

  constexpr int kFieldUnit = 1 << 23;
  const int min_normal_field = f.min_normal_exponent() + 127;  // >= 0 for every valid format
  p.exponent_rebias = (f.bias - 127) * kFieldUnit;
  p.min_normal_bits = min_normal_field * kFieldUnit;
  p.normal_shift = 23 - f.mantissa_bits;
  p.subnormal_shift_base = p.normal_shift + min_normal_field;
  // An FP32 subnormal has a 24-bit significand at most and is shifted right by at least
  // subnormal_shift_base; from 57 = 24 + 32 + 1 on, nothing of it reaches half a code, even
  // after stochastic rounding widens the discarded bits to 32 random bits.
  p.normalise_subnormals = f.has_subnormals() ? p.subnormal_shift_base < 57 : true;
  p.subnormal_significand_mask = f.has_subnormals() ? ~std::uint32_t{0} : 0;
  p.saturation_bits = std::bit_cast<std::uint32_t>(decode_bits(f.max_magnitude_code(), f));
  p.max_magnitude_code = f.max_magnitude_code();
  p.sign_mask = f.sign_mask();
  p.zero_is_unsigned = f.is_signed && !f.has_negative_zero();
  for (const int sign : {bulk::kPositive, bulk::kNegative}) {
    const bool negative = sign == bulk::kNegative;
    p.zero_code[sign] = zero_code(f, negative);
    p.overflow_code[sign] = overflow_code(f, negative, q.rounding, q.overflow);
    p.infinity_code[sign] = non_finite_code(f, negative);
    p.nan_code[sign] = nan_input_code(f, negative);
  }
  p.is_unsigned = !f.is_signed;
  p.zero_is_invalid = f.zero == ZeroEncoding::kNone;
  p.invalid_code = q.overflow == Overflow::kNonFinite ? f.nan_code() : 0;
  p.random_bit_count = static_cast<std::uint32_t>(q.random_bit_count);
  p.ieee_half = f == kFloat16;
  p.brain_float = f == kBFloat16;
  return p;
}

bulk::DecodeParams decode_params(const FormatSpec& f, float scale) {
  bulk::DecodeParams d;
  d.ieee_half = f == kFloat16;
  const int m = f.mantissa_bits;
  d.magnitude_mask = f.magnitude_mask();
  d.sign_mask = f.sign_mask();
  d.sign_shift = f.is_signed ? static_cast<std::uint32_t>(31 - f.exponent_bits - m) : 0;
  d.mantissa_shift = static_cast<std::uint32_t>(23 - m);
  d.exponent_rebias = (127 - f.bias) * (1 << 23);
  d.field0_limit = std::uint32_t{1} << m;
  d.field0_implicit_bit = f.has_subnormals() ? 0 : std::uint32_t{1} << m;
  d.field0_exponent = (f.has_subnormals() ? 1 : 0) - f.bias - m;
  d.field0_subnormal_shift = static_cast<std::uint32_t>(std::clamp(d.field0_exponent + 149, 0, 31));
  if (f.has_subnormals() && f.bias == 127) {
    d.field0 = bulk::Field0::kLikeTheRest;
  } else {
    // The smallest non-zero field-0 value is 2^field0_exponent.
    d.field0 = d.field0_exponent >= -126 ? bulk::Field0::kFp32Normal : bulk::Field0::kGeneral;
  }
  const std::uint32_t all_bits = ~std::uint32_t{0};  // the reference compares whole codes
  switch (f.non_finite) {
    case NonFiniteEncoding::kIeee:
      d.nan_test_mask = f.magnitude_mask();
      d.nan_low = f.infinity_code() + 1;
      d.nan_span = f.magnitude_mask() - d.nan_low;
      break;
    case NonFiniteEncoding::kNanAllOnes:
      d.nan_test_mask = f.magnitude_mask();
      d.nan_low = f.magnitude_mask();
      break;
    case NonFiniteEncoding::kNanNegZero:
    case NonFiniteEncoding::kNanTopCode:
      d.nan_test_mask = all_bits;
      d.nan_low = f.nan_code();
      break;
    case NonFiniteEncoding::kNone:
      d.nan_low = 1;  // (c & 0) - 1 is never <= 0
      break;
  }
  d.nan_sign_mask =
      f.non_finite == NonFiniteEncoding::kIeee || f.non_finite == NonFiniteEncoding::kNanAllOnes
          ? 0x80000000u
          : 0;
  d.infinity_magnitude = f.has_infinity() ? f.infinity_code() : all_bits;
  d.multiply_by_scale = scale != 1.0f;
  d.scale = scale;
  return d;
}

// ---- the scalar level: the reference codec, one element at a time ----

template <class Code>
std::uint32_t encode_scalar(const FormatSpec& f, const Quantization& q, const float* in, Code* out,
                            const std::uint32_t* random, std::size_t count) {
  std::uint32_t amax_bits = 0;
  for (std::size_t i = 0; i < count; ++i) {
    amax_bits = std::max(amax_bits, magnitude_bits(in[i]));
    const RandomBits bits{random != nullptr ? random[i] : 0, q.random_bit_count};
    out[i] = static_cast<Code>(
        encode_bits(divide_by_scale(in[i], q.scale), f, q.rounding, q.overflow, bits));
  }
  return amax_bits;
}

std::uint32_t fake_quantize_scalar(const FormatSpec& f, const Quantization& q, float* x,
                                   const std::uint32_t* random, std::size_t count) {
  std::uint32_t amax_bits = 0;
  for (std::size_t i = 0; i < count; ++i) {
    amax_bits = std::max(amax_bits, magnitude_bits(x[i]));
    const RandomBits bits{random != nullptr ? random[i] : 0, q.random_bit_count};
    const std::uint32_t code =
        encode_bits(divide_by_scale(x[i], q.scale), f, q.rounding, q.overflow, bits);
    x[i] = multiply_by_scale(decode_bits(code, f), q.scale);
  }
  return amax_bits;
}

}  // namespace

// ---- SIMD level ----

std::string_view simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "scalar";
    case SimdLevel::kGeneric:
      return "generic";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::span<const SimdLevel> supported_simd_levels() {
  const SupportedLevels& s = supported_levels();
  return {s.levels.data(), s.count};
}

SimdLevel best_simd_level() { return supported_simd_levels().back(); }

SimdLevel active_simd_level() { return active_level().load(std::memory_order_relaxed); }

void force_simd_level(SimdLevel level) {
  const auto levels = supported_simd_levels();
  if (std::find(levels.begin(), levels.end(), level) == levels.end()) {
    throw Error(fmt::format("unitscale::force_simd_level: this CPU does not support {}",
                            simd_level_name(level)));
  }
  active_level().store(level, std::memory_order_relaxed);
}

// ---- entry points ----

float encode_codes(std::span<const float> in, void* codes, std::size_t code_count, int code_bytes,
                   const FormatSpec& format, const Quantization& q) {
  constexpr const char* kFunction = "encode";
  check_code_bytes(kFunction, code_bytes);
  check_sizes(kFunction, in.size(), code_count);
  check_format(kFunction, format, 8 * code_bytes);
  check_quantization(kFunction, q, in.size());

  const SimdLevel level = active_simd_level();
  const bulk::KernelTable& kernels = kernels_for(level);
  const bulk::EncodeParams params = encode_params(format, q);
  const bool stochastic = q.rounding == Rounding::kStochastic;
  auto* bytes = static_cast<std::uint8_t*>(codes);
  auto* halves = static_cast<std::uint16_t*>(codes);
  return amax_from_bits(for_each_chunk(in.size(), [&](std::size_t begin, std::size_t count) {
    const float* x = in.data() + begin;
    const std::uint32_t* random = stochastic ? q.random_bits.data() + begin : nullptr;
    if (level == SimdLevel::kScalar) {
      return code_bytes == 1 ? encode_scalar(format, q, x, bytes + begin, random, count)
                             : encode_scalar(format, q, x, halves + begin, random, count);
    }
    return code_bytes == 1 ? kernels.encode_8(params, x, bytes + begin, random, count)
                           : kernels.encode_16(params, x, halves + begin, random, count);
  }));
}

bool transcode_f16_to_8bit(const std::uint16_t* in, std::uint8_t* out, std::size_t count,
                           const FormatSpec& format, const Quantization& q) {
  const SimdLevel level = active_simd_level();
  if (q.rounding != Rounding::kNearestEven || q.scale != 1.0f || level == SimdLevel::kScalar) {
    return false;
  }
  check_format("transcode", format, 8);
  const bulk::KernelTable& kernels = kernels_for(level);
  const auto kernel = format == kFloat8E5M2 ? kernels.f16_to_e5m2 : kernels.f16_to_8bit;
  if (kernel == nullptr) return false;
  const bulk::EncodeParams params = encode_params(format, q);
  for_each_chunk(count, [&](std::size_t begin, std::size_t n) {
    kernel(params, in + begin, out + begin, n);
    return std::uint32_t{0};
  });
  return true;
}

void decode_codes(const void* codes, std::size_t code_count, int code_bytes, std::span<float> out,
                  const FormatSpec& format, float scale) {
  constexpr const char* kFunction = "decode";
  check_code_bytes(kFunction, code_bytes);
  check_sizes(kFunction, code_count, out.size());
  check_format(kFunction, format, 8 * code_bytes);
  check_scale(kFunction, scale);

  const SimdLevel level = active_simd_level();
  const bulk::KernelTable& kernels = kernels_for(level);
  const auto* bytes = static_cast<const std::uint8_t*>(codes);
  const auto* halves = static_cast<const std::uint16_t*>(codes);
  if (level == SimdLevel::kScalar) {
    for (std::size_t i = 0; i < code_count; ++i) {
      const std::uint32_t code = code_bytes == 1 ? bytes[i] : halves[i];
      out[i] = multiply_by_scale(decode_bits(code, format), scale);
    }
    return;
  }
  // One-byte codes go through a table with the scale folded in, decoded by the 16-bit kernel.
  const bulk::DecodeParams params = decode_params(format, scale);
  std::array<float, 256> table{};
  if (code_bytes == 1) {
    static constexpr std::array<std::uint16_t, 256> kEveryByte = [] {
      std::array<std::uint16_t, 256> every_byte{};
      for (std::size_t c = 0; c < every_byte.size(); ++c) {
        every_byte[c] = static_cast<std::uint16_t>(c);
      }
      return every_byte;
    }();
    kernels.decode_16(params, kEveryByte.data(), table.data(), table.size());
  }
  for_each_chunk(code_count, [&](std::size_t begin, std::size_t count) {
    if (code_bytes == 1) {
      kernels.decode_8(table.data(), format.total_bits(), bytes + begin, out.data() + begin, count);
    } else {
      kernels.decode_16(params, halves + begin, out.data() + begin, count);
    }
    return std::uint32_t{0};
  });
}

}  // namespace detail

float amax(std::span<const float> x) {
  const detail::SimdLevel level = detail::active_simd_level();
  const detail::bulk::KernelTable& kernels = detail::kernels_for(level);
  return detail::amax_from_bits(
      detail::for_each_chunk(x.size(), [&](std::size_t begin, std::size_t count) {
        if (level == detail::SimdLevel::kScalar) {
          std::uint32_t bits = 0;
          for (const float v : x.subspan(begin, count))
            bits = std::max(bits, detail::magnitude_bits(v));
          return bits;
        }
        return kernels.amax(x.data() + begin, count);
      }));
}

float fake_quantize(std::span<float> x, const FormatSpec& format, const Quantization& q) {
  constexpr const char* kFunction = "fake_quantize";
  detail::check_format(kFunction, format, 32);  // FP32 holds every valid format
  detail::check_quantization(kFunction, q, x.size());

  const detail::SimdLevel level = detail::active_simd_level();
  const detail::bulk::KernelTable& kernels = detail::kernels_for(level);
  const detail::bulk::EncodeParams encode = detail::encode_params(format, q);
  const detail::bulk::DecodeParams decode = detail::decode_params(format, q.scale);
  const bool stochastic = q.rounding == Rounding::kStochastic;
  return detail::amax_from_bits(
      detail::for_each_chunk(x.size(), [&](std::size_t begin, std::size_t count) {
        float* values = x.data() + begin;
        const std::uint32_t* random = stochastic ? q.random_bits.data() + begin : nullptr;
        if (level == detail::SimdLevel::kScalar) {
          return detail::fake_quantize_scalar(format, q, values, random, count);
        }
        return kernels.fake_quantize(encode, decode, values, values, random, count);
      }));
}

}  // namespace unitscale

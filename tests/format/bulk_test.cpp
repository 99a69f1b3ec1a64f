// Bulk conversions (format/bulk.hpp) against the scalar reference codec, bit for bit.
//
// Every check runs on every instruction-set level this CPU supports (scalar, generic, AVX2,
// AVX-512), and expects exactly what detail::encode_bits / detail::decode_bits give element by
// element; the reference itself is tested exhaustively against exact rational arithmetic in
// convert_exhaustive_test.cpp. The inputs mix uniformly random FP32 bit patterns (every class:
// NaN payloads, ±Inf, subnormals) with values placed on, between and just beside the codes of the
// target format (so ties are hit, including the one at the top of the range).

#include "unitscale/format/bulk.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace us = unitscale;
using ::testing::HasSubstr;
using us::Overflow;
using us::Quantization;
using us::Rounding;
using us::detail::SimdLevel;

namespace {

// Powers of two (exact scaling) and not (one FP32 division per element).
constexpr float kScales[] = {1.0f, 0x1p-7f, 3.0f, 1e-3f};
constexpr Rounding kDeterministicRoundings[] = {Rounding::kNearestEven, Rounding::kNearestAway,
                                                Rounding::kTowardZero, Rounding::kUp,
                                                Rounding::kDown};
constexpr Overflow kOverflows[] = {Overflow::kSaturate, Overflow::kNonFinite};

std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }

std::string describe(const Quantization& q) {
  static constexpr const char* kRoundingNames[] = {"NearestEven", "NearestAway", "TowardZero",
                                                   "Up",          "Down",        "Stochastic"};
  return fmt::format("scale {} rounding {} overflow {} random bits {}", q.scale,
                     kRoundingNames[static_cast<int>(q.rounding)],
                     q.overflow == Overflow::kSaturate ? "Saturate" : "NonFinite",
                     q.random_bit_count);
}

// Runs the rest of the scope with a forced instruction set, restoring the best one afterwards.
class ForcedSimdLevel {
 public:
  explicit ForcedSimdLevel(SimdLevel level)
      : trace_(__FILE__, __LINE__, std::string(us::detail::simd_level_name(level))) {
    us::detail::force_simd_level(level);
  }
  ~ForcedSimdLevel() { us::detail::force_simd_level(us::detail::best_simd_level()); }
  ForcedSimdLevel(const ForcedSimdLevel&) = delete;
  ForcedSimdLevel& operator=(const ForcedSimdLevel&) = delete;

 private:
  ::testing::ScopedTrace trace_;
};

// ---- inputs ----

std::vector<float> random_bit_patterns(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  for (float& v : x) v = from_bits(static_cast<std::uint32_t>(rng()));
  return x;
}

// Values on, halfway between and one FP32 ulp beside neighbouring codes of `f` (times `scale`,
// so that x / scale lands there), every special FP32 class, and values just outside the range.
std::vector<float> interesting_inputs(const us::FormatSpec& f, float scale, std::size_t n,
                                      std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x;
  x.reserve(n + 64);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (const std::uint32_t special :
       {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
        0x7F800001u, 0xFF800001u, 0x7FBFFFFFu, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA5A5A5u,
        0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu, 0x00400000u, 0x00600000u,
        0x00800000u, 0x80800000u, 0x7F7FFFFFu, 0xFF7FFFFFu}) {
    x.push_back(from_bits(special));
  }
  const std::uint32_t max_code = f.max_magnitude_code();
  const double top_ulp = std::ldexp(1.0, f.max_exponent() - f.mantissa_bits);
  std::uniform_int_distribution<std::uint32_t> pick_code(0, max_code);
  std::uniform_real_distribution<double> fraction(0.0, 1.0);
  while (x.size() < n) {
    const std::uint32_t c = pick_code(rng);
    const double v0 = us::detail::decode_bits(c, f);
    // The next value up; past max, the value the format would have with an unbounded exponent.
    const double v1 =
        c < max_code ? static_cast<double>(us::detail::decode_bits(c + 1, f)) : v0 + top_ulp;
    const double sign = (rng() & 1) != 0 ? -1.0 : 1.0;
    double candidates[] = {v0, (v0 + v1) / 2, v0 + fraction(rng) * (v1 - v0), v1 * 2, v0 / 4};
    for (const double v : candidates) {
      const auto value = static_cast<float>(sign * v * scale);
      x.push_back(value);
      x.push_back(std::nextafter(value, kInf));
      x.push_back(std::nextafter(value, -kInf));
    }
    // An FP32 subnormal with a random mantissa, and a random FP32 value near the format's range.
    x.push_back(from_bits((static_cast<std::uint32_t>(rng()) & 0x807FFFFFu)));
    const int exponent =
        static_cast<int>(rng() % 40) + f.min_normal_exponent() - f.mantissa_bits - 8;
    x.push_back(static_cast<float>(sign * std::ldexp(1.0 + fraction(rng), exponent) * scale));
  }
  x.resize(n);
  return x;
}

std::vector<std::uint32_t> random_words(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint32_t> words(n);
  for (auto& w : words) w = static_cast<std::uint32_t>(rng());
  return words;
}

// ---- the reference, element by element ----

std::uint32_t reference_amax_bits(std::span<const float> x) {
  std::uint32_t m = 0;
  for (const float v : x) m = std::max(m, bits_of(v) & 0x7FFFFFFFu);
  return m > 0x7F800000u ? 0x7FC00000u : m;
}

us::RandomBits random_bits_at(const Quantization& q, std::size_t i) {
  return {q.rounding == Rounding::kStochastic ? q.random_bits[i] : 0, q.random_bit_count};
}

std::vector<std::uint32_t> reference_encode(std::span<const float> x, const us::FormatSpec& f,
                                            const Quantization& q) {
  std::vector<std::uint32_t> codes(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    codes[i] =
        us::detail::encode_bits(x[i] / q.scale, f, q.rounding, q.overflow, random_bits_at(q, i));
  }
  return codes;
}

std::vector<std::uint32_t> reference_fake_quantize(std::span<const float> x,
                                                   const us::FormatSpec& f, const Quantization& q) {
  const std::vector<std::uint32_t> codes = reference_encode(x, f, q);
  std::vector<std::uint32_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    out[i] = bits_of(us::detail::decode_bits(codes[i], f) * q.scale);
  }
  return out;
}

// ---- comparison ----

::testing::AssertionResult same_bits(std::span<const float> inputs,
                                     const std::vector<std::uint32_t>& expected,
                                     const std::vector<std::uint32_t>& actual) {
  if (expected.size() != actual.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: " << expected.size() << " vs " << actual.size();
  }
  std::size_t mismatches = 0;
  std::string report;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] == actual[i]) continue;
    if (++mismatches <= 8) {
      report += fmt::format("\n  [{}] input {:#010x} ({}): expected {:#x}, got {:#x}", i,
                            i < inputs.size() ? bits_of(inputs[i]) : 0u,
                            i < inputs.size() ? inputs[i] : 0.0f, expected[i], actual[i]);
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << mismatches << " of " << expected.size() << " differ:" << report;
}

// ---- the bulk API on a storage type, returning plain codes ----

struct Encoded {
  std::vector<std::uint32_t> codes;
  std::uint32_t amax_bits;
};

template <class T>
Encoded bulk_encode(std::span<const float> x, const Quantization& q) {
  std::vector<T> out(x.size());
  const float amax = us::encode(x, std::span<T>(out), q);
  Encoded result{std::vector<std::uint32_t>(x.size()), bits_of(amax)};
  for (std::size_t i = 0; i < x.size(); ++i) result.codes[i] = us::FormatTraits<T>::to_bits(out[i]);
  return result;
}

struct FakeQuantized {
  std::vector<std::uint32_t> values;
  std::uint32_t amax_bits;
};

FakeQuantized bulk_fake_quantize(std::span<const float> x, const us::FormatSpec& f,
                                 const Quantization& q) {
  std::vector<float> y(x.begin(), x.end());
  const float amax = us::fake_quantize(std::span<float>(y), f, q);
  FakeQuantized result{std::vector<std::uint32_t>(x.size()), bits_of(amax)};
  for (std::size_t i = 0; i < y.size(); ++i) result.values[i] = bits_of(y[i]);
  return result;
}

// Checks encode and fake_quantize of `x` under `q` on every SIMD level.
template <class T>
void expect_matches_reference(std::span<const float> x, const Quantization& q) {
  constexpr us::FormatSpec kSpec = us::FormatTraits<T>::kSpec;
  SCOPED_TRACE(describe(q));
  const std::vector<std::uint32_t> codes = reference_encode(x, kSpec, q);
  const std::vector<std::uint32_t> fake = reference_fake_quantize(x, kSpec, q);
  const std::uint32_t amax_bits = reference_amax_bits(x);
  for (const SimdLevel level : us::detail::supported_simd_levels()) {
    ForcedSimdLevel forced(level);
    const Encoded encoded = bulk_encode<T>(x, q);
    EXPECT_TRUE(same_bits(x, codes, encoded.codes)) << "encode";
    EXPECT_EQ(encoded.amax_bits, amax_bits) << "encode amax";
    const FakeQuantized quantized = bulk_fake_quantize(x, kSpec, q);
    EXPECT_TRUE(same_bits(x, fake, quantized.values)) << "fake_quantize";
    EXPECT_EQ(quantized.amax_bits, amax_bits) << "fake_quantize amax";
  }
}

// ---- typed over every catalogue format ----

template <class T>
class BulkTest : public ::testing::Test {
 protected:
  static constexpr us::FormatSpec kSpec = us::FormatTraits<T>::kSpec;
};

struct FormatNameGenerator {
  template <class T>
  static std::string GetName(int) {
    return us::format_name(us::FormatTraits<T>::kSpec);
  }
};

using Formats = ::testing::Types<us::float8_e4m3fn, us::float8_e5m2, us::float8_e4m3fnuz,
                                 us::float8_e5m2fnuz, us::float8_e8m0fnu, us::float6_e2m3fn,
                                 us::float6_e3m2fn, us::float4_e2m1fn, us::float16, us::bfloat16>;
TYPED_TEST_SUITE(BulkTest, Formats, FormatNameGenerator);

// The training default (RNE, saturating) on a million random bit patterns per scale.
TYPED_TEST(BulkTest, EncodeMatchesReferenceOnRandomBitPatterns) {
  std::uint32_t seed = 1;
  for (const float scale : kScales) {
    const std::vector<float> x = random_bit_patterns(std::size_t{1} << 20, seed++);
    expect_matches_reference<TypeParam>(x, {.scale = scale});
  }
}

TYPED_TEST(BulkTest, EncodeMatchesReferenceForEveryRoundingAndOverflow) {
  for (const float scale : kScales) {
    std::vector<float> x = interesting_inputs(this->kSpec, scale, 1 << 16, 2);
    const std::vector<float> patterns = random_bit_patterns(1 << 14, 30);
    x.insert(x.end(), patterns.begin(), patterns.end());
    for (const Rounding rounding : kDeterministicRoundings) {
      for (const Overflow overflow : kOverflows) {
        expect_matches_reference<TypeParam>(
            x, {.scale = scale, .rounding = rounding, .overflow = overflow});
      }
    }
  }
}

TYPED_TEST(BulkTest, StochasticRoundingMatchesReference) {
  for (const float scale : {1.0f, 3.0f}) {
    std::vector<float> x = interesting_inputs(this->kSpec, scale, 1 << 15, 4);
    const std::vector<float> patterns = random_bit_patterns(1 << 12, 5);
    x.insert(x.end(), patterns.begin(), patterns.end());
    const std::vector<std::uint32_t> words = random_words(x.size(), 6);
    for (const int random_bit_count : {0, 3, 8, 9, 16, 32}) {
      for (const Overflow overflow : kOverflows) {
        expect_matches_reference<TypeParam>(x, {.scale = scale,
                                                .rounding = Rounding::kStochastic,
                                                .overflow = overflow,
                                                .random_bits = words,
                                                .random_bit_count = random_bit_count});
      }
    }
  }
}

TYPED_TEST(BulkTest, DecodeMatchesReferenceOnEveryCode) {
  using Bits = typename us::FormatTraits<TypeParam>::Bits;
  // Every value of the storage type, including bytes whose bits above a narrow format's width are
  // set (decode ignores them, as decode_bits does).
  const std::size_t count = std::size_t{1} << (8 * sizeof(Bits));
  std::vector<Bits> raw(count);
  std::vector<TypeParam> codes(count);
  for (std::size_t c = 0; c < count; ++c) {
    raw[c] = static_cast<Bits>(c);
    codes[c] = us::FormatTraits<TypeParam>::from_bits(raw[c]);
  }
  for (const float scale : kScales) {
    SCOPED_TRACE(fmt::format("scale {}", scale));
    std::vector<std::uint32_t> expected(count), expected_raw(count);
    for (std::size_t c = 0; c < count; ++c) {
      expected[c] = bits_of(
          us::detail::decode_bits(us::FormatTraits<TypeParam>::to_bits(codes[c]), this->kSpec) *
          scale);
      expected_raw[c] = bits_of(us::detail::decode_bits(raw[c], this->kSpec) * scale);
    }
    for (const SimdLevel level : us::detail::supported_simd_levels()) {
      ForcedSimdLevel forced(level);
      std::vector<float> out(count);
      us::decode(std::span<const TypeParam>(codes), std::span<float>(out), scale);
      std::vector<std::uint32_t> actual(count);
      for (std::size_t c = 0; c < count; ++c) actual[c] = bits_of(out[c]);
      EXPECT_TRUE(same_bits({}, expected, actual));

      us::detail::decode_codes(raw.data(), count, sizeof(Bits), std::span<float>(out), this->kSpec,
                               scale);
      for (std::size_t c = 0; c < count; ++c) actual[c] = bits_of(out[c]);
      EXPECT_TRUE(same_bits({}, expected_raw, actual)) << "raw codes";
    }
  }
}

// Every length up to a few vectors and a few long ones, starting at unaligned addresses: the tail
// of a span goes through the same lane code as its body.
TYPED_TEST(BulkTest, SpansOfAnyLengthAndAlignment) {
  const std::vector<float> pool = interesting_inputs(this->kSpec, 3.0f, 4096, 7);
  const std::vector<std::uint32_t> words = random_words(pool.size(), 8);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 70; ++n) lengths.push_back(n);
  for (const std::size_t n : {127, 128, 129, 1000, 1001, 4000}) lengths.push_back(n);
  for (const std::size_t n : lengths) {
    for (const std::size_t offset : {0, 1, 3}) {
      if (offset + n > pool.size()) continue;
      SCOPED_TRACE(fmt::format("length {} offset {}", n, offset));
      const auto x = std::span<const float>(pool).subspan(offset, n);
      const auto w = std::span<const std::uint32_t>(words).subspan(offset, n);
      expect_matches_reference<TypeParam>(x, {.scale = 3.0f});
      expect_matches_reference<TypeParam>(
          x, {.scale = 3.0f, .rounding = Rounding::kStochastic, .random_bits = w});

      // Neither encode nor decode writes past the end of its output.
      const TypeParam sentinel = us::FormatTraits<TypeParam>::from_bits(0x5A);
      std::vector<TypeParam> codes(n + 1, sentinel);
      us::encode(x, std::span<TypeParam>(codes).first(n));
      EXPECT_EQ(us::FormatTraits<TypeParam>::to_bits(codes[n]),
                us::FormatTraits<TypeParam>::to_bits(sentinel));
      std::vector<float> expected(n);
      for (std::size_t i = 0; i < n; ++i)
        expected[i] =
            us::detail::decode_bits(us::FormatTraits<TypeParam>::to_bits(codes[i]), this->kSpec) *
            0.5f;
      for (const SimdLevel level : us::detail::supported_simd_levels()) {
        ForcedSimdLevel forced(level);
        std::vector<float> out(n + 1, 42.0f);  // the element past the end must stay untouched
        us::decode(std::span<const TypeParam>(codes).first(n), std::span<float>(out).first(n),
                   0.5f);
        for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(bits_of(out[i]), bits_of(expected[i])) << i;
        EXPECT_EQ(out[n], 42.0f);
      }
    }
  }
}

// Spans long enough to be split into chunks over OpenMP threads give the same codes and amax for
// one thread and for two.
TYPED_TEST(BulkTest, ThreadCountDoesNotChangeResults) {
  std::vector<float> x = interesting_inputs(this->kSpec, 3.0f, 200'000, 9);
  const std::vector<float> patterns = random_bit_patterns(100'001, 10);
  x.insert(x.end(), patterns.begin(), patterns.end());
  const std::vector<std::uint32_t> words = random_words(x.size(), 11);
  const int threads_before = omp_get_max_threads();
  for (const Quantization& q :
       {Quantization{.scale = 3.0f},
        Quantization{.scale = 0x1p-7f, .rounding = Rounding::kStochastic, .random_bits = words}}) {
    SCOPED_TRACE(describe(q));
    const std::vector<std::uint32_t> expected = reference_encode(x, this->kSpec, q);
    const std::vector<std::uint32_t> expected_fake = reference_fake_quantize(x, this->kSpec, q);
    for (const SimdLevel level : us::detail::supported_simd_levels()) {
      ForcedSimdLevel forced(level);
      for (const int threads : {1, 2}) {
        SCOPED_TRACE(fmt::format("{} threads", threads));
        omp_set_num_threads(threads);
        const Encoded encoded = bulk_encode<TypeParam>(x, q);
        EXPECT_TRUE(same_bits(x, expected, encoded.codes));
        EXPECT_EQ(encoded.amax_bits, reference_amax_bits(x));
        const FakeQuantized quantized = bulk_fake_quantize(x, this->kSpec, q);
        EXPECT_TRUE(same_bits(x, expected_fake, quantized.values));
        EXPECT_EQ(bits_of(us::amax(x)), reference_amax_bits(x));
        // The first half alone (no NaN there) checks amax on a finite tensor too.
        const auto half = std::span<const float>(x).first(x.size() / 2);
        EXPECT_EQ(bits_of(us::amax(half)), reference_amax_bits(half));
      }
    }
  }
  omp_set_num_threads(threads_before);
}

#if defined(__SSE2__)
// Denormals flushed to zero (FTZ) or treated as zero on input (DAZ), as fast-math code and some
// BLAS threads leave them: conversions never rely on FP32 subnormal arithmetic, so with scale 1
// (no FP32 arithmetic at all) the results do not change.
TYPED_TEST(BulkTest, FlushToZeroModesDoNotChangeResults) {
  const std::vector<float> x = interesting_inputs(this->kSpec, 1.0f, 1 << 14, 12);
  const std::vector<float> subnormals = [] {
    std::vector<float> s;
    for (std::uint32_t m = 1; m < 0x800000u; m = m * 3 + 1) {
      s.push_back(from_bits(m));
      s.push_back(from_bits(0x80000000u | m));
    }
    return s;
  }();
  std::vector<float> inputs = x;
  inputs.insert(inputs.end(), subnormals.begin(), subnormals.end());
  const Quantization q{};
  const std::vector<std::uint32_t> expected = reference_encode(inputs, this->kSpec, q);
  const std::vector<std::uint32_t> expected_fake = reference_fake_quantize(inputs, this->kSpec, q);
  // Decoding every code: BF16 subnormals, for one, are FP32 subnormals.
  std::vector<TypeParam> codes(us::FormatTraits<TypeParam>::kSpec.code_count());
  std::vector<std::uint32_t> expected_decoded(codes.size());
  for (std::size_t c = 0; c < codes.size(); ++c) {
    codes[c] = us::FormatTraits<TypeParam>::from_bits(
        static_cast<typename us::FormatTraits<TypeParam>::Bits>(c));
    expected_decoded[c] =
        bits_of(us::detail::decode_bits(static_cast<std::uint32_t>(c), this->kSpec));
  }

  // The spans are short enough to stay on this thread, whose MXCSR is the one changed here.
  const unsigned int csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
  for (const SimdLevel level : us::detail::supported_simd_levels()) {
    ForcedSimdLevel forced(level);
    const Encoded encoded = bulk_encode<TypeParam>(inputs, q);
    EXPECT_TRUE(same_bits(inputs, expected, encoded.codes));
    const FakeQuantized quantized = bulk_fake_quantize(inputs, this->kSpec, q);
    EXPECT_TRUE(same_bits(inputs, expected_fake, quantized.values));
    std::vector<float> decoded(codes.size());
    us::decode(std::span<const TypeParam>(codes), std::span<float>(decoded));
    std::vector<std::uint32_t> decoded_bits(codes.size());
    for (std::size_t c = 0; c < codes.size(); ++c) decoded_bits[c] = bits_of(decoded[c]);
    EXPECT_TRUE(same_bits({}, expected_decoded, decoded_bits)) << "decode";
  }
  _mm_setcsr(csr);
}
#endif

// ---- fake_quantize with descriptors chosen at run time ----

TEST(BulkFakeQuantize, RuntimeFormatsMatchReference) {
  std::vector<us::FormatSpec> formats;
  for (const char* name :
       {"e5m10", "e4m3b11", "e3m4", "e2m5", "e6m9", "e8m7", "e5m2b10", "e2m1b0"}) {
    formats.push_back(us::parse_format(name));
  }
  // Unusual but valid descriptors: FP32 itself (nothing to round), an unsigned IEEE-like format,
  // fnuz with a low bias, an E8M0 lookalike with fewer exponent bits, an IEEE format whose
  // subnormals are FP32 subnormals, and a format far above 1.
  formats.push_back({8, 23, 127, true, us::NonFiniteEncoding::kIeee, us::ZeroEncoding::kSigned});
  formats.push_back({4, 3, 7, false, us::NonFiniteEncoding::kIeee, us::ZeroEncoding::kSigned});
  formats.push_back(
      {4, 3, 6, true, us::NonFiniteEncoding::kNanNegZero, us::ZeroEncoding::kUnsigned});
  formats.push_back({5, 0, 20, false, us::NonFiniteEncoding::kNanTopCode, us::ZeroEncoding::kNone});
  formats.push_back({7, 8, 120, true, us::NonFiniteEncoding::kIeee, us::ZeroEncoding::kSigned});
  formats.push_back({3, 2, -100, true, us::NonFiniteEncoding::kNone, us::ZeroEncoding::kSigned});
  for (const us::FormatSpec& f : formats) {
    ASSERT_TRUE(f.is_valid()) << us::format_name(f);
    SCOPED_TRACE(us::format_name(f));
    for (const float scale : kScales) {
      std::vector<float> x = interesting_inputs(f, scale, 1 << 14, 13);
      const std::vector<float> patterns = random_bit_patterns(1 << 14, 14);
      x.insert(x.end(), patterns.begin(), patterns.end());
      const std::vector<std::uint32_t> words = random_words(x.size(), 15);
      std::vector<Quantization> policies;
      for (const Rounding rounding : kDeterministicRoundings) {
        for (const Overflow overflow : kOverflows) {
          policies.push_back({.scale = scale, .rounding = rounding, .overflow = overflow});
        }
      }
      for (const int r : {0, 3, 8, 9, 16, 32}) {
        policies.push_back({.scale = scale,
                            .rounding = Rounding::kStochastic,
                            .random_bits = words,
                            .random_bit_count = r});
      }
      for (const Quantization& q : policies) {
        SCOPED_TRACE(describe(q));
        const std::vector<std::uint32_t> expected = reference_fake_quantize(x, f, q);
        for (const SimdLevel level : us::detail::supported_simd_levels()) {
          ForcedSimdLevel forced(level);
          const FakeQuantized quantized = bulk_fake_quantize(x, f, q);
          EXPECT_TRUE(same_bits(x, expected, quantized.values));
          EXPECT_EQ(quantized.amax_bits, reference_amax_bits(x));
        }
      }
    }
  }
}

// ---- amax ----

TEST(BulkAmax, SpecialValues) {
  for (const SimdLevel level : us::detail::supported_simd_levels()) {
    ForcedSimdLevel forced(level);
    EXPECT_EQ(bits_of(us::amax({})), 0u);
    const std::vector<float> zeros{-0.0f, 0.0f, -0.0f};
    EXPECT_EQ(bits_of(us::amax(zeros)), 0u);  // +0, never -0
    const std::vector<float> mixed{1.0f, -3.5f, 0x1p-149f, 2.0f};
    EXPECT_EQ(us::amax(mixed), 3.5f);
    const std::vector<float> with_inf{1.0f, -std::numeric_limits<float>::infinity(), 2.0f};
    EXPECT_EQ(us::amax(with_inf), std::numeric_limits<float>::infinity());
    // Any NaN, whatever its sign or payload, gives the canonical quiet NaN.
    std::vector<float> with_nan(100, 1.0f);
    with_nan[37] = from_bits(0xFF800001u);
    with_nan[90] = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(bits_of(us::amax(with_nan)), 0x7FC00000u);
  }
}

// ---- errors ----

template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const us::Error& e) {
    return e.what();
  }
  return "(no unitscale::Error thrown)";
}

TEST(BulkErrors, SizeMismatch) {
  std::vector<float> x(10), y(9);
  std::vector<us::float8_e4m3fn> q8(9);
  EXPECT_THAT(error_message(
                  [&] { us::encode(std::span<const float>(x), std::span<us::float8_e4m3fn>(q8)); }),
              AllOf(HasSubstr("encode"), HasSubstr("10"), HasSubstr("9")));
  std::vector<us::float16> h(10);
  EXPECT_THAT(
      error_message([&] { us::decode(std::span<const us::float16>(h), std::span<float>(y)); }),
      AllOf(HasSubstr("decode"), HasSubstr("10"), HasSubstr("9")));
}

TEST(BulkErrors, BadScale) {
  std::vector<float> x(4);
  std::vector<us::float8_e5m2> q(4);
  for (const float scale : {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()}) {
    SCOPED_TRACE(scale);
    EXPECT_THAT(error_message([&] {
                  us::encode(std::span<const float>(x), std::span<us::float8_e5m2>(q),
                             {.scale = scale});
                }),
                AllOf(HasSubstr("encode"), HasSubstr("scale")));
    EXPECT_THAT(error_message([&] {
                  us::decode(std::span<const us::float8_e5m2>(q), std::span<float>(x), scale);
                }),
                AllOf(HasSubstr("decode"), HasSubstr("scale")));
    EXPECT_THAT(error_message([&] {
                  us::fake_quantize(std::span<float>(x), us::kFloat8E4M3FN, {.scale = scale});
                }),
                AllOf(HasSubstr("fake_quantize"), HasSubstr("scale")));
  }
}

TEST(BulkErrors, StochasticRoundingNeedsOneWordPerElement) {
  std::vector<float> x(8);
  std::vector<us::bfloat16> q(8);
  const std::vector<std::uint32_t> words(7);
  EXPECT_THAT(error_message([&] {
                us::encode(std::span<const float>(x), std::span<us::bfloat16>(q),
                           {.rounding = Rounding::kStochastic, .random_bits = words});
              }),
              AllOf(HasSubstr("encode"), HasSubstr("8 elements"), HasSubstr("7 random words")));
  EXPECT_THAT(error_message([&] {
                us::fake_quantize(std::span<float>(x), us::kFloat8E5M2,
                                  {.rounding = Rounding::kStochastic});
              }),
              AllOf(HasSubstr("fake_quantize"), HasSubstr("0 random words")));
}

TEST(BulkErrors, RandomBitCountOutOfRange) {
  std::vector<float> x(8);
  std::vector<us::float8_e4m3fn> q(8);
  const std::vector<std::uint32_t> words(8);
  for (const int count : {-1, 33}) {
    EXPECT_THAT(
        error_message([&] {
          us::encode(
              std::span<const float>(x), std::span<us::float8_e4m3fn>(q),
              {.rounding = Rounding::kStochastic, .random_bits = words, .random_bit_count = count});
        }),
        AllOf(HasSubstr("encode"), HasSubstr("random_bit_count"),
              HasSubstr(std::to_string(count))));
    EXPECT_THAT(
        error_message([&] {
          us::fake_quantize(
              std::span<float>(x), us::kFloat8E4M3FN,
              {.rounding = Rounding::kStochastic, .random_bits = words, .random_bit_count = count});
        }),
        AllOf(HasSubstr("fake_quantize"), HasSubstr("random_bit_count")));
  }
}

TEST(BulkErrors, InvalidOrTooWideFormat) {
  std::vector<float> x(4);
  std::vector<std::uint8_t> codes(4);
  const us::FormatSpec invalid{
      9, 3, 7, true, us::NonFiniteEncoding::kIeee, us::ZeroEncoding::kSigned};
  EXPECT_THAT(error_message([&] { us::fake_quantize(std::span<float>(x), invalid); }),
              AllOf(HasSubstr("fake_quantize"), HasSubstr(us::format_name(invalid))));
  EXPECT_THAT(error_message(
                  [&] { us::detail::encode_codes(x, codes.data(), codes.size(), 1, invalid, {}); }),
              AllOf(HasSubstr("encode"), HasSubstr(us::format_name(invalid))));
  EXPECT_THAT(error_message([&] {
                us::detail::encode_codes(x, codes.data(), codes.size(), 1, us::kFloat16, {});
              }),
              AllOf(HasSubstr("encode"), HasSubstr("float16")));
  EXPECT_THAT(error_message([&] {
                us::detail::decode_codes(codes.data(), codes.size(), 1, std::span<float>(x),
                                         us::kBFloat16, 1.0f);
              }),
              AllOf(HasSubstr("decode"), HasSubstr("bfloat16")));
  EXPECT_THAT(error_message([&] {
                us::detail::encode_codes(x, codes.data(), codes.size(), 3, us::kFloat8E5M2, {});
              }),
              AllOf(HasSubstr("encode"), HasSubstr("3 bytes")));
}

// ---- instruction-set levels ----

TEST(SimdLevel, SupportedLevelsStartWithScalarAndEndWithTheBest) {
  const auto levels = us::detail::supported_simd_levels();
  ASSERT_GE(levels.size(), 2u);
  EXPECT_EQ(levels.front(), SimdLevel::kScalar);
  EXPECT_EQ(levels[1], SimdLevel::kGeneric);
  EXPECT_EQ(levels.back(), us::detail::best_simd_level());
  EXPECT_EQ(us::detail::active_simd_level(), us::detail::best_simd_level());
  for (const SimdLevel level : levels) {
    ForcedSimdLevel forced(level);
    EXPECT_EQ(us::detail::active_simd_level(), level);
  }
  if (levels.back() != SimdLevel::kAvx512) {
    EXPECT_THAT(error_message([] { us::detail::force_simd_level(SimdLevel::kAvx512); }),
                HasSubstr("force_simd_level"));
  }
}

}  // namespace

// ---- FP16 to 8-bit formats without an FP32 buffer ----

// Every FP16 code, transcoded, gives the scalar codec's code for its value in every 8-bit
// catalogue format (E5M2 in integers, the others through F16C and the encoder in registers),
// under both overflow policies and on every SIMD level that has the kernels (AVX2, AVX-512); the
// others (and a rounding other than nearest even, or a scale) decline and write nothing. Counts
// that leave a partial vector go through the kernels' tails.
TEST(BulkTranscode, Fp16To8BitFormatsMatchesTheCodecForEveryCode) {
  std::vector<std::uint16_t> every(65536 + 5);
  for (std::size_t c = 0; c < every.size(); ++c) every[c] = static_cast<std::uint16_t>(c % 65536);
  for (const us::FormatSpec& format :
       {us::kFloat8E5M2, us::kFloat8E4M3FN, us::kFloat8E4M3FNUZ, us::kFloat8E5M2FNUZ,
        us::kFloat8E8M0FNU, us::kFloat6E2M3FN, us::kFloat6E3M2FN, us::kFloat4E2M1FN}) {
    for (const us::Overflow overflow : {us::Overflow::kSaturate, us::Overflow::kNonFinite}) {
      const Quantization q{.overflow = overflow};
      SCOPED_TRACE(fmt::format("{}, {}", us::format_name(format), describe(q)));
      std::vector<std::uint8_t> expected(every.size());
      for (std::size_t c = 0; c < every.size(); ++c) {
        const float value = us::detail::decode_bits(every[c], us::kFloat16);
        expected[c] = static_cast<std::uint8_t>(
            us::detail::encode_bits(value, format, us::Rounding::kNearestEven, overflow));
      }
      for (const SimdLevel level : us::detail::supported_simd_levels()) {
        ForcedSimdLevel forced(level);
        std::vector<std::uint8_t> got(every.size(), 0xAB);
        const bool done =
            us::detail::transcode_f16_to_8bit(every.data(), got.data(), got.size(), format, q);
        const bool has_kernel = level == SimdLevel::kAvx2 || level == SimdLevel::kAvx512;
        ASSERT_EQ(done, has_kernel) << us::detail::simd_level_name(level);
        if (!done) {
          EXPECT_EQ(got, std::vector<std::uint8_t>(every.size(), 0xAB)) << "wrote while declining";
          continue;
        }
        for (std::size_t c = 0; c < every.size(); ++c) {
          ASSERT_EQ(got[c], expected[c]) << fmt::format("FP16 code {:#06x} on {}", every[c],
                                                        us::detail::simd_level_name(level));
        }
        for (const Quantization declined :
             {Quantization{.rounding = us::Rounding::kTowardZero, .overflow = overflow},
              Quantization{.scale = 2.0f, .overflow = overflow}}) {
          EXPECT_FALSE(
              us::detail::transcode_f16_to_8bit(every.data(), got.data(), 8, format, declined));
        }
      }
    }
  }
}

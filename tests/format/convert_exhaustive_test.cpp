// Exhaustive FP32 -> low-precision conversion test (docs/formats.md): every one of the 2^32
// float32 bit patterns is converted by the library and compared with an independent reference.
//
// The reference never uses the library's bit tricks. From the spec's §3 decoding formula it lists
// the representable non-negative values of a format as exact dyadic rationals n·2^k and builds the
// sorted table of rounding boundaries:
//   - round to nearest even: the midpoint of every pair of neighbouring values, where the tie goes
//     to the value with the even code, plus the overflow threshold max + ½ulp(max) (§4.2), where
//     the tie overflows iff max's code is odd;
//   - toward zero: the representable values themselves.
// Each boundary is turned into the first float32 bit pattern at which the result changes, by a
// binary search over all float32 magnitudes with exact comparisons (so a boundary that float32
// could not represent would still be handled; the test also asserts they all are representable).
// The sweep then walks the magnitudes 0 .. 2^31-1 in increasing order, advancing a cursor through
// that table, so the expected result costs O(1) per input. Signs, zeros, Inf, NaN and overflow are
// mapped to codes by an explicit copy of the truth table of §4.1 (`expected_code` below).
//
// The library is checked through the bulk API on every input (both policies, both rounding modes,
// and the amax it returns) and through the scalar codec detail::encode_bits on every input for the
// configurations marked in kFp8Configs / kFullConfigs. The sweep runs on all OpenMP threads: the
// magnitudes are split into contiguous ranges that the threads take in turn; each range finds its
// starting boundary by binary search and is walked in chunks that are bulk-encoded and compared.
// Mismatches are counted exactly and reported as the first few runs of consecutive inputs.
//
// Label `exhaustive`. In a Release build all sweeps take about 160 CPU-seconds (~85 s on 2 cores).

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "unitscale/format/bulk.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace unitscale {
namespace {

// The bulk kernels (src/format/bulk*.cpp) are what this test is for. While they were being
// written the scalar codec stood in for them; flipping this back to false restores that.
constexpr bool kUseBulkEncode = true;

// Unoptimised code is 10-30 times slower, far past the per-test timeout: the 2^32-input sweeps
// only run in optimised builds (the release preset); the reference checks always run.
#ifdef __OPTIMIZE__
constexpr bool kOptimisedBuild = true;
#else
constexpr bool kOptimisedBuild = false;
#endif

// ---------------------------------------------------------------------------------------------
// Independent description of the formats, from the tables of spec §1 (not from FormatSpec).
// ---------------------------------------------------------------------------------------------

enum class Scheme { kFn, kIeee, kFnuz, kE8m0, kMx };

struct Desc {
  const char* name;
  int bits;  // total width
  int e;     // exponent bits
  int m;     // mantissa bits
  int bias;
  Scheme scheme;
  std::uint32_t max_code;       // spec §1 "useful codes"
  std::uint32_t canonical_nan;  // positive canonical NaN code (IEEE and FN keep the sign)
  std::uint32_t inf_code;       // positive Inf code (IEEE only)

  bool is_signed() const { return scheme != Scheme::kE8m0; }
  std::uint32_t sign_mask() const { return is_signed() ? std::uint32_t{1} << (bits - 1) : 0; }
};

constexpr Desc kE4M3FN{"float8_e4m3fn", 8, 4, 3, 7, Scheme::kFn, 0x7E, 0x7F, 0};
constexpr Desc kE5M2{"float8_e5m2", 8, 5, 2, 15, Scheme::kIeee, 0x7B, 0x7E, 0x7C};
constexpr Desc kE4M3FNUZ{"float8_e4m3fnuz", 8, 4, 3, 8, Scheme::kFnuz, 0x7F, 0x80, 0};
constexpr Desc kE5M2FNUZ{"float8_e5m2fnuz", 8, 5, 2, 16, Scheme::kFnuz, 0x7F, 0x80, 0};
constexpr Desc kE8M0FNU{"float8_e8m0fnu", 8, 8, 0, 127, Scheme::kE8m0, 0xFE, 0xFF, 0};
constexpr Desc kE2M3FN{"float6_e2m3fn", 6, 2, 3, 1, Scheme::kMx, 0x1F, 0, 0};
constexpr Desc kE3M2FN{"float6_e3m2fn", 6, 3, 2, 3, Scheme::kMx, 0x1F, 0, 0};
constexpr Desc kE2M1FN{"float4_e2m1fn", 4, 2, 1, 1, Scheme::kMx, 0x7, 0, 0};
constexpr Desc kF16{"float16", 16, 5, 10, 15, Scheme::kIeee, 0x7BFF, 0x7E00, 0x7C00};
constexpr Desc kBF16{"bfloat16", 16, 8, 7, 127, Scheme::kIeee, 0x7F7F, 0x7FC0, 0x7F80};

// ---------------------------------------------------------------------------------------------
// Exact dyadic rationals n·2^k.
// ---------------------------------------------------------------------------------------------

struct Dyadic {
  std::uint64_t n = 0;
  int k = 0;
};

int compare(Dyadic a, Dyadic b) {
  if (a.n == 0 || b.n == 0) return static_cast<int>(a.n != 0) - static_cast<int>(b.n != 0);
  const int top_a = static_cast<int>(std::bit_width(a.n)) - 1 + a.k;
  const int top_b = static_cast<int>(std::bit_width(b.n)) - 1 + b.k;
  if (top_a != top_b) return top_a < top_b ? -1 : 1;
  // Same leading bit position, so after aligning both fit in max(bit_width) <= 64 bits.
  const int k = std::min(a.k, b.k);
  const std::uint64_t an = a.n << (a.k - k);
  const std::uint64_t bn = b.n << (b.k - k);
  return an < bn ? -1 : (an > bn ? 1 : 0);
}

// a + b for values within a few binades of each other (neighbours, or value plus half an ulp).
Dyadic add(Dyadic a, Dyadic b) {
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  const int k = std::min(a.k, b.k);
  EXPECT_LT(std::max(a.k, b.k) - k, 40);
  return {(a.n << (a.k - k)) + (b.n << (b.k - k)), k};
}

Dyadic halve(Dyadic a) { return {a.n, a.k - 1}; }

// The exact value of a non-negative float32 magnitude bit pattern (finite).
Dyadic float_value(std::uint32_t bits) {
  const std::uint32_t field = bits >> 23;
  const std::uint32_t fraction = bits & 0x7FFFFFu;
  if (field == 0) return {fraction, -149};
  return {fraction | 0x800000u, static_cast<int>(field) - 150};
}

// ---------------------------------------------------------------------------------------------
// The rational decoder of spec §3.
// ---------------------------------------------------------------------------------------------

enum class Kind : std::uint8_t { kZero, kFinite, kOverflow, kInf, kNaN };

struct Decoded {
  Kind kind;  // kFinite (including zeros), kInf or kNaN
  bool negative;
  Dyadic value;  // magnitude, for kFinite
};

Decoded decode_rational(const Desc& d, std::uint32_t code) {
  const bool negative = d.is_signed() && ((code >> (d.bits - 1)) & 1u) != 0;
  const std::uint32_t e = (code >> d.m) & ((1u << d.e) - 1);
  const std::uint32_t f = code & ((1u << d.m) - 1);
  const std::uint32_t e_all_ones = (1u << d.e) - 1;
  switch (d.scheme) {
    case Scheme::kIeee:
      if (e == e_all_ones) return {f == 0 ? Kind::kInf : Kind::kNaN, negative, {}};
      break;
    case Scheme::kFn:
      if (e == e_all_ones && f == (1u << d.m) - 1) return {Kind::kNaN, negative, {}};
      break;
    case Scheme::kFnuz:
      if (code == 1u << (d.bits - 1)) return {Kind::kNaN, false, {}};
      break;
    case Scheme::kE8m0:
      if (code == 0xFF) return {Kind::kNaN, false, {}};
      return {Kind::kFinite, false, {1, static_cast<int>(code) - 127}};
    case Scheme::kMx:
      break;
  }
  if (e == 0) return {Kind::kFinite, negative, {f, 1 - d.bias - d.m}};
  return {Kind::kFinite, negative, {(1u << d.m) + f, static_cast<int>(e) - d.bias - d.m}};
}

struct Representable {
  Dyadic value;  // as decoded: for normal values n = 2^M + f, so ulp = 2^k
  std::uint32_t code;
};

// The finite non-negative values of a format (+0 once), sorted by value.
std::vector<Representable> representable_values(const Desc& d) {
  std::vector<Representable> values;
  const std::uint32_t codes = 1u << d.bits;
  for (std::uint32_t c = 0; c < codes; ++c) {
    const Decoded x = decode_rational(d, c);
    if (x.kind == Kind::kFinite && !x.negative) values.push_back({x.value, c});
  }
  std::sort(values.begin(), values.end(), [](const Representable& a, const Representable& b) {
    return compare(a.value, b.value) < 0;
  });
  return values;
}

// ---------------------------------------------------------------------------------------------
// The truth table of spec §4.1, written out per scheme.
// ---------------------------------------------------------------------------------------------

// The code for an input with magnitude class `kind` (for kFinite: the magnitude code the value
// rounds to, possibly 0) and the given sign. kZero is an input that is exactly ±0.
std::uint32_t expected_code(const Desc& d, Kind kind, std::uint32_t magnitude_code, bool negative,
                            Rounding rounding, Overflow overflow) {
  const bool non_finite = overflow == Overflow::kNonFinite;
  const std::uint32_t sign = negative ? d.sign_mask() : 0;
  if (d.scheme == Scheme::kE8m0) {
    if (kind == Kind::kNaN) return 0xFF;
    // No sign and no zero: zero and every negative input (including -Inf) is NaN or the lowest.
    if (negative || kind == Kind::kZero) return non_finite ? 0xFF : 0x00;
    switch (kind) {
      case Kind::kFinite:
        return magnitude_code;
      case Kind::kOverflow:
        return rounding == Rounding::kTowardZero || !non_finite ? 0xFE : 0xFF;
      case Kind::kInf:
        return non_finite ? 0xFF : 0xFE;
      default:
        break;
    }
    ADD_FAILURE() << "unreachable";
    return 0;
  }
  switch (kind) {
    case Kind::kZero:
    case Kind::kFinite:
      if (magnitude_code == 0 && d.scheme == Scheme::kFnuz) return 0x00;  // never -0, never NaN
      return sign | magnitude_code;
    case Kind::kOverflow:
      if (rounding == Rounding::kTowardZero) return sign | d.max_code;  // IEEE directed rule
      [[fallthrough]];
    case Kind::kInf:
      if (!non_finite || d.scheme == Scheme::kMx) return sign | d.max_code;
      switch (d.scheme) {
        case Scheme::kFn:
          return sign | d.canonical_nan;
        case Scheme::kIeee:
          return sign | d.inf_code;
        case Scheme::kFnuz:
          return d.canonical_nan;
        default:
          break;
      }
      break;
    case Kind::kNaN:
      switch (d.scheme) {
        case Scheme::kFn:
        case Scheme::kIeee:
          return sign | d.canonical_nan;  // sign kept, payload dropped
        case Scheme::kFnuz:
          return d.canonical_nan;
        case Scheme::kMx:
          return d.sign_mask();  // the -0 code, whatever the NaN's sign
        default:
          break;
      }
      break;
  }
  ADD_FAILURE() << "unreachable";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The boundary table.
// ---------------------------------------------------------------------------------------------

constexpr std::uint32_t kInfBits = 0x7F800000u;
constexpr std::uint64_t kMagnitudes = std::uint64_t{1} << 31;

// Float32 magnitudes in [start, next start) give `kind` / `code`.
struct Interval {
  std::uint32_t start;
  Kind kind;
  std::uint32_t code;
};

struct Reference {
  std::vector<Interval> intervals;  // sorted by start; a last sentinel starts at 2^31
  int boundaries = 0;
  int inexact_boundaries = 0;  // boundaries that are not float32 values

  // Index of the interval holding magnitude `bits` (the last one if several are empty).
  std::size_t index_of(std::uint32_t bits) const {
    const auto it =
        std::upper_bound(intervals.begin(), intervals.end(), bits,
                         [](std::uint32_t b, const Interval& iv) { return b < iv.start; });
    return static_cast<std::size_t>(it - intervals.begin()) - 1;
  }
  const Interval& at(std::uint32_t bits) const { return intervals[index_of(bits)]; }
};

// The first float32 magnitude whose value is above `boundary`, or equal to it if `tie_up`.
// Binary search with exact comparisons, so it also handles boundaries that are not floats.
std::uint32_t first_bits_above(Dyadic boundary, bool tie_up, bool* exact) {
  std::uint32_t lo = 0, hi = kInfBits;  // invariant: the answer is in [lo, hi]; Inf is "above"
  while (lo < hi) {
    const std::uint32_t mid = lo + (hi - lo) / 2;
    const int c = compare(float_value(mid), boundary);
    if (c > 0 || (c == 0 && tie_up)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  *exact = false;
  for (const std::uint32_t candidate : {lo, lo - 1}) {
    if (candidate < kInfBits && compare(float_value(candidate), boundary) == 0) *exact = true;
  }
  return lo;
}

Reference build_reference(const Desc& d, Rounding rounding) {
  const std::vector<Representable> values = representable_values(d);
  Reference ref;
  auto boundary = [&](Dyadic b, bool tie_up, Kind kind, std::uint32_t code) {
    bool exact = false;
    const std::uint32_t start = first_bits_above(b, tie_up, &exact);
    ++ref.boundaries;
    if (!exact) ++ref.inexact_boundaries;
    EXPECT_GE(start, ref.intervals.back().start) << d.name << ": boundaries out of order";
    ref.intervals.push_back({start, kind, code});
  };

  // Exactly ±0, then the non-zero values below the first boundary: they round to the smallest
  // value, which is 0 - or 2^-127 in E8M0, where no smaller value exists.
  ref.intervals.push_back({0, Kind::kZero, values.front().code});
  ref.intervals.push_back({1, Kind::kFinite, values.front().code});
  for (std::size_t i = 0; i + 1 < values.size(); ++i) {
    const Representable& lower = values[i];
    const Representable& upper = values[i + 1];
    if (rounding == Rounding::kTowardZero) {
      boundary(upper.value, /*tie_up=*/true, Kind::kFinite, upper.code);
    } else {
      EXPECT_NE(lower.code % 2, upper.code % 2) << d.name << ": neighbours need one even code";
      boundary(halve(add(lower.value, upper.value)), /*tie_up=*/upper.code % 2 == 0, Kind::kFinite,
               upper.code);
    }
  }
  if (rounding == Rounding::kNearestEven) {
    // §4.2: round as if the exponent range were unbounded; the next value would be max + ulp(max),
    // and at the threshold max + ½ulp(max) the even code wins.
    const Representable& max = values.back();
    const Dyadic threshold = add(max.value, Dyadic{1, max.value.k - 1});
    boundary(threshold, /*tie_up=*/max.code % 2 == 1, Kind::kOverflow, max.code);
  }
  ref.intervals.push_back({kInfBits, Kind::kInf, 0});
  ref.intervals.push_back({kInfBits + 1, Kind::kNaN, 0});
  ref.intervals.push_back({static_cast<std::uint32_t>(kMagnitudes), Kind::kNaN, 0});  // sentinel
  return ref;
}

float float_from_bits(std::uint32_t bits) { return std::bit_cast<float>(bits); }
std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }

// ---------------------------------------------------------------------------------------------
// The reference itself is checked by hand first, so that a broken reference cannot silently agree
// with a broken library.
// ---------------------------------------------------------------------------------------------

struct Expectation {
  float input;  // positive
  Kind kind;
  std::uint32_t code;  // for kFinite
};

void expect_reference(const Desc& d, Rounding rounding, std::initializer_list<Expectation> cases) {
  const Reference ref = build_reference(d, rounding);
  EXPECT_EQ(ref.inexact_boundaries, 0) << d.name;
  for (const Expectation& e : cases) {
    const Interval& iv = ref.at(bits_of(e.input));
    EXPECT_EQ(iv.kind, e.kind) << d.name << " " << e.input;
    if (e.kind == Kind::kFinite) {
      EXPECT_EQ(iv.code, e.code) << d.name << " " << e.input << " -> 0x" << std::hex << iv.code;
    }
  }
}

float above(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
float below(float x) { return std::nextafter(x, 0.0f); }

TEST(ConvertExhaustiveReference, HandCheckedNearestEven) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect_reference(kE4M3FN, Rounding::kNearestEven,
                   {{464.0f, Kind::kFinite, 0x7E},  // §4.2: the top tie goes to 448 (even)
                    {above(464.0f), Kind::kOverflow, 0},
                    {465.0f, Kind::kOverflow, 0},
                    {448.0f, Kind::kFinite, 0x7E},
                    {below(448.0f), Kind::kFinite, 0x7E},
                    {432.0f, Kind::kFinite, 0x7E},  // tie 416|448: 0x7E even
                    {below(432.0f), Kind::kFinite, 0x7D},
                    {std::ldexp(1.0f, -10), Kind::kFinite, 0x00},  // ½ min subnormal: tie to 0
                    {above(std::ldexp(1.0f, -10)), Kind::kFinite, 0x01},
                    {std::ldexp(1.5f, -10), Kind::kFinite, 0x01},
                    {std::ldexp(1.0f, -9), Kind::kFinite, 0x01},
                    {std::ldexp(1.5f, -9), Kind::kFinite, 0x02},  // tie 1|2 -> 2
                    {std::ldexp(2.5f, -9), Kind::kFinite, 0x02},  // tie 2|3 -> 2
                    {std::ldexp(7.5f, -9), Kind::kFinite, 0x08},  // tie subnormal max | min normal
                    {1.0f, Kind::kFinite, 0x38},
                    {1.1875f, Kind::kFinite, 0x3A},  // tie 1.125|1.25 -> 1.25 (§8 pitfall 3)
                    {4.25f, Kind::kFinite, 0x48},    // tie 4|4.5 -> 4 (ml_dtypes #221)
                    {4.75f, Kind::kFinite, 0x4A},    // tie 4.5|5 -> 5
                    {1e-30f, Kind::kFinite, 0x00},
                    {std::numeric_limits<float>::denorm_min(), Kind::kFinite, 0x00},
                    {0.0f, Kind::kZero, 0x00},
                    {3e38f, Kind::kOverflow, 0},
                    {inf, Kind::kInf, 0},
                    {nan, Kind::kNaN, 0}});
  expect_reference(kE5M2, Rounding::kNearestEven,
                   {{57344.0f, Kind::kFinite, 0x7B},
                    {below(61440.0f), Kind::kFinite, 0x7B},
                    {61440.0f, Kind::kOverflow, 0},  // max's code 0x7B is odd: the tie overflows
                    {std::ldexp(1.0f, -17), Kind::kFinite, 0x00},
                    {std::ldexp(1.5f, -17), Kind::kFinite, 0x01},
                    {1.0f, Kind::kFinite, 0x3C},
                    {1.125f, Kind::kFinite, 0x3C},  // tie 1|1.25 -> 1
                    {1.375f, Kind::kFinite, 0x3E}});
  expect_reference(kE4M3FNUZ, Rounding::kNearestEven,
                   {{240.0f, Kind::kFinite, 0x7F},
                    {below(248.0f), Kind::kFinite, 0x7F},
                    {248.0f, Kind::kOverflow, 0},
                    {std::ldexp(1.0f, -11), Kind::kFinite, 0x00},
                    {std::ldexp(1.5f, -11), Kind::kFinite, 0x01},
                    {1.0f, Kind::kFinite, 0x40}});
  expect_reference(kE5M2FNUZ, Rounding::kNearestEven,
                   {{below(61440.0f), Kind::kFinite, 0x7F},
                    {61440.0f, Kind::kOverflow, 0},
                    {std::ldexp(1.0f, -18), Kind::kFinite, 0x00},
                    {std::ldexp(1.0f, -17), Kind::kFinite, 0x01},
                    {1.0f, Kind::kFinite, 0x40}});
  expect_reference(kE8M0FNU, Rounding::kNearestEven,
                   {{1.0f, Kind::kFinite, 0x7F},
                    {1.5f, Kind::kFinite, 0x80},  // §4.4: ties to the even code
                    {3.0f, Kind::kFinite, 0x80},
                    {6.0f, Kind::kFinite, 0x82},
                    {above(3.0f), Kind::kFinite, 0x81},
                    {below(1.5f), Kind::kFinite, 0x7F},
                    {std::ldexp(1.0f, -127), Kind::kFinite, 0x00},
                    {std::ldexp(1.5f, -127), Kind::kFinite, 0x00},  // tie 0x00|0x01 -> 0x00
                    {above(std::ldexp(1.5f, -127)), Kind::kFinite, 0x01},
                    {std::numeric_limits<float>::denorm_min(), Kind::kFinite, 0x00},
                    {std::ldexp(1.0f, 127), Kind::kFinite, 0xFE},
                    {std::ldexp(1.5f, 127), Kind::kFinite, 0xFE},  // the top tie stays at 2^127
                    {above(std::ldexp(1.5f, 127)), Kind::kOverflow, 0},
                    {0.0f, Kind::kZero, 0x00}});
  expect_reference(kE2M1FN, Rounding::kNearestEven,
                   {{0.25f, Kind::kFinite, 0x0},
                    {0.75f, Kind::kFinite, 0x2},
                    {1.25f, Kind::kFinite, 0x2},
                    {2.5f, Kind::kFinite, 0x4},
                    {3.5f, Kind::kFinite, 0x6},
                    {5.0f, Kind::kFinite, 0x6},
                    {below(7.0f), Kind::kFinite, 0x7},
                    {7.0f, Kind::kOverflow, 0}});
  expect_reference(kE2M3FN, Rounding::kNearestEven,
                   {{7.5f, Kind::kFinite, 0x1F},
                    {below(7.75f), Kind::kFinite, 0x1F},
                    {7.75f, Kind::kOverflow, 0},
                    {0.0625f, Kind::kFinite, 0x00},
                    {0.1875f, Kind::kFinite, 0x02}});
  expect_reference(kE3M2FN, Rounding::kNearestEven,
                   {{28.0f, Kind::kFinite, 0x1F},
                    {below(30.0f), Kind::kFinite, 0x1F},
                    {30.0f, Kind::kOverflow, 0},
                    {0.03125f, Kind::kFinite, 0x00},
                    {0.09375f, Kind::kFinite, 0x02}});
  expect_reference(kF16, Rounding::kNearestEven,
                   {{65504.0f, Kind::kFinite, 0x7BFF},
                    {below(65520.0f), Kind::kFinite, 0x7BFF},
                    {65520.0f, Kind::kOverflow, 0},
                    {std::ldexp(1.0f, -25), Kind::kFinite, 0x0000},
                    {above(std::ldexp(1.0f, -25)), Kind::kFinite, 0x0001},
                    {1.0f, Kind::kFinite, 0x3C00},
                    {1.0f + std::ldexp(1.0f, -11), Kind::kFinite, 0x3C00},
                    {1.0f + std::ldexp(3.0f, -11), Kind::kFinite, 0x3C02}});
  expect_reference(kBF16, Rounding::kNearestEven,
                   {{std::ldexp(255.0f, 120), Kind::kFinite, 0x7F7F},
                    {below(std::ldexp(511.0f, 119)), Kind::kFinite, 0x7F7F},
                    {std::ldexp(511.0f, 119), Kind::kOverflow, 0},
                    {std::ldexp(1.0f, -134), Kind::kFinite, 0x0000},
                    {std::ldexp(3.0f, -134), Kind::kFinite, 0x0002},
                    {1.0f, Kind::kFinite, 0x3F80},
                    {std::bit_cast<float>(0x3F808000u), Kind::kFinite, 0x3F80},
                    {std::bit_cast<float>(0x3F818000u), Kind::kFinite, 0x3F82},
                    {std::bit_cast<float>(0x7F7FFFFFu), Kind::kOverflow, 0}});
}

TEST(ConvertExhaustiveReference, HandCheckedTowardZero) {
  expect_reference(kE4M3FN, Rounding::kTowardZero,
                   {{500.0f, Kind::kFinite, 0x7E},  // IEEE semantics: 448, not NaN (§4.1)
                    {3e38f, Kind::kFinite, 0x7E},
                    {below(448.0f), Kind::kFinite, 0x7D},
                    {1.1875f, Kind::kFinite, 0x39},
                    {below(1.0f), Kind::kFinite, 0x37},
                    {below(std::ldexp(1.0f, -9)), Kind::kFinite, 0x00},
                    {std::ldexp(1.0f, -9), Kind::kFinite, 0x01}});
  expect_reference(kE8M0FNU, Rounding::kTowardZero,
                   {{3.999f, Kind::kFinite, 0x80},
                    {4.0f, Kind::kFinite, 0x81},
                    {std::ldexp(1.0f, -130), Kind::kFinite, 0x00},
                    {3e38f, Kind::kFinite, 0xFE}});
  expect_reference(
      kE2M1FN, Rounding::kTowardZero,
      {{5.99f, Kind::kFinite, 0x6}, {0.49f, Kind::kFinite, 0x0}, {1e6f, Kind::kFinite, 0x7}});
}

TEST(ConvertExhaustiveReference, HandCheckedTruthTable) {
  const auto n = Overflow::kNonFinite;
  const auto s = Overflow::kSaturate;
  const auto rne = Rounding::kNearestEven;
  const auto rtz = Rounding::kTowardZero;
  // Overflow: e4m3fn 465 -> NaN (N) / 448 (S); toward zero -> 448 in both.
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kOverflow, 0, false, rne, n), 0x7Fu);
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kOverflow, 0, true, rne, n), 0xFFu);
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kOverflow, 0, true, rne, s), 0xFEu);
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kOverflow, 0, false, rtz, n), 0x7Eu);
  EXPECT_EQ(expected_code(kE5M2, Kind::kOverflow, 0, true, rne, n), 0xFCu);
  EXPECT_EQ(expected_code(kE5M2, Kind::kInf, 0, true, rtz, n), 0xFCu);  // Inf ignores the mode
  EXPECT_EQ(expected_code(kE5M2, Kind::kInf, 0, true, rne, s), 0xFBu);
  EXPECT_EQ(expected_code(kE4M3FNUZ, Kind::kOverflow, 0, true, rne, n), 0x80u);
  EXPECT_EQ(expected_code(kE4M3FNUZ, Kind::kInf, 0, true, rne, s), 0xFFu);
  EXPECT_EQ(expected_code(kE2M1FN, Kind::kInf, 0, true, rne, n), 0xFu);
  EXPECT_EQ(expected_code(kF16, Kind::kOverflow, 0, false, rne, n), 0x7C00u);
  EXPECT_EQ(expected_code(kBF16, Kind::kOverflow, 0, true, rne, s), 0xFF7Fu);
  // NaN: sign kept for IEEE and FN, the single NaN for FNUZ and E8M0, the -0 code for MX.
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kNaN, 0, true, rne, s), 0xFFu);
  EXPECT_EQ(expected_code(kE5M2, Kind::kNaN, 0, true, rne, s), 0xFEu);
  EXPECT_EQ(expected_code(kF16, Kind::kNaN, 0, false, rne, s), 0x7E00u);
  EXPECT_EQ(expected_code(kBF16, Kind::kNaN, 0, true, rne, n), 0xFFC0u);
  EXPECT_EQ(expected_code(kE5M2FNUZ, Kind::kNaN, 0, true, rne, s), 0x80u);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kNaN, 0, false, rne, s), 0xFFu);
  EXPECT_EQ(expected_code(kE2M3FN, Kind::kNaN, 0, false, rne, n), 0x20u);
  EXPECT_EQ(expected_code(kE2M1FN, Kind::kNaN, 0, false, rne, s), 0x8u);
  // Zeros.
  EXPECT_EQ(expected_code(kE4M3FN, Kind::kZero, 0, true, rne, s), 0x80u);
  EXPECT_EQ(expected_code(kE4M3FNUZ, Kind::kZero, 0, true, rne, n), 0x00u);
  EXPECT_EQ(expected_code(kE4M3FNUZ, Kind::kFinite, 0, true, rne, n), 0x00u);
  EXPECT_EQ(expected_code(kE4M3FNUZ, Kind::kFinite, 0x38, true, rne, n), 0xB8u);
  EXPECT_EQ(expected_code(kE2M1FN, Kind::kFinite, 0, true, rne, n), 0x8u);
  // E8M0: zero, negatives, Inf.
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kZero, 0, false, rne, n), 0xFFu);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kZero, 0, true, rne, s), 0x00u);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kFinite, 0x80, true, rne, n), 0xFFu);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kFinite, 0x80, true, rne, s), 0x00u);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kInf, 0, false, rne, s), 0xFEu);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kInf, 0, true, rne, s), 0x00u);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kInf, 0, false, rne, n), 0xFFu);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kOverflow, 0, false, rne, s), 0xFEu);
  EXPECT_EQ(expected_code(kE8M0FNU, Kind::kOverflow, 0, false, rne, n), 0xFFu);
}

// Every boundary of every table is a float32 value, so the ties of §4.2-§4.4 are all exercised.
TEST(ConvertExhaustiveReference, BoundariesAreFloat32Values) {
  for (const Desc* d : {&kE4M3FN, &kE5M2, &kE4M3FNUZ, &kE5M2FNUZ, &kE8M0FNU, &kE2M3FN, &kE3M2FN,
                        &kE2M1FN, &kF16, &kBF16}) {
    for (const Rounding r : {Rounding::kNearestEven, Rounding::kTowardZero}) {
      const Reference ref = build_reference(*d, r);
      EXPECT_EQ(ref.inexact_boundaries, 0) << d->name;
      const std::vector<Representable> values = representable_values(*d);
      EXPECT_EQ(values.back().code, d->max_code) << d->name;
      // One boundary between each pair of neighbours, plus the overflow threshold under RNE.
      EXPECT_EQ(ref.boundaries,
                static_cast<int>(values.size()) - 1 + (r == Rounding::kNearestEven ? 1 : 0));
      for (std::size_t i = 1; i < ref.intervals.size(); ++i) {
        EXPECT_LT(ref.intervals[i - 1].start, ref.intervals[i].start) << d->name << " " << i;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The sweep.
// ---------------------------------------------------------------------------------------------

struct Config {
  Rounding rounding;
  Overflow overflow;
  bool scalar;  // also check detail::encode_bits on every input
};

const char* name_of(Rounding r) { return r == Rounding::kNearestEven ? "RNE" : "TowardZero"; }
const char* name_of(Overflow o) { return o == Overflow::kSaturate ? "Saturate" : "NonFinite"; }

// Consecutive mismatching inputs with the same expected and actual codes, reported as one line.
struct MismatchRun {
  std::uint32_t first, last;
  std::uint32_t expected, got;
};

// The mismatches of one path (bulk or scalar) for one sign within one work range, in input order.
// Everything is counted; only the first few runs are kept.
struct MismatchLog {
  static constexpr std::size_t kKeep = 4;
  std::uint64_t count = 0;
  std::vector<MismatchRun> runs;

  void add(std::uint32_t input, std::uint32_t expected, std::uint32_t got) {
    ++count;
    if (!runs.empty()) {
      MismatchRun& run = runs.back();
      if (run.last + 1 == input && run.expected == expected && run.got == got) {
        run.last = input;
        return;
      }
    }
    if (runs.size() < kKeep) runs.push_back({input, input, expected, got});
  }
};

enum Path { kBulkPositive, kBulkNegative, kScalarPositive, kScalarNegative, kPaths };
constexpr const char* kPathNames[kPaths] = {
    "bulk encode, positive inputs", "bulk encode, negative inputs", "encode_bits, positive inputs",
    "encode_bits, negative inputs"};

// The magnitudes 0 .. 2^31-1 are split into contiguous work ranges, which the threads take
// dynamically (the scalar codec's cost varies along the range); each range is walked in chunks of
// positive magnitudes followed by the same magnitudes negated, sized to stay in L2.
constexpr std::uint32_t kChunk = 1u << 16;
constexpr std::uint64_t kRange = std::uint64_t{1} << 25;
constexpr std::size_t kRanges = kMagnitudes / kRange;

// One configuration of one sweep: the expected codes per interval and what went wrong. Each work
// range has its own logs, so the threads never share one.
struct Check {
  Config config;
  const Reference* ref = nullptr;
  std::vector<std::uint32_t> expected_positive, expected_negative;  // per interval
  std::vector<std::array<MismatchLog, kPaths>> logs =
      std::vector<std::array<MismatchLog, kPaths>>(kRanges);
  std::vector<std::uint64_t> amax_mismatches = std::vector<std::uint64_t>(kRanges);
};

template <class T>
using BitsOf = typename FormatTraits<T>::Bits;

template <class T>
float library_encode(std::span<const float> in, std::span<T> out, Rounding rounding,
                     Overflow overflow) {
  if constexpr (kUseBulkEncode) {
    return encode<T>(in, out,
                     Quantization{.scale = 1.0f, .rounding = rounding, .overflow = overflow});
  } else {
    for (std::size_t i = 0; i < in.size(); ++i) {
      out[i] = FormatTraits<T>::from_bits(static_cast<BitsOf<T>>(
          detail::encode_bits(in[i], FormatTraits<T>::kSpec, rounding, overflow)));
    }
    return 0.0f;
  }
}

// Compares out[0, n), the codes of the inputs first_input_bits + i, with one expected code.
template <class T>
void compare_run(MismatchLog& log, const T* out, std::size_t n, std::uint32_t expected,
                 std::uint32_t first_input_bits) {
  using Bits = BitsOf<T>;
  Bits bad = 0;
  const auto want = static_cast<Bits>(expected);
  for (std::size_t i = 0; i < n; ++i) {
    bad = static_cast<Bits>(bad | (FormatTraits<T>::to_bits(out[i]) ^ want));
  }
  if (bad == 0) return;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t got = FormatTraits<T>::to_bits(out[i]);
    if (got != expected) log.add(first_input_bits + static_cast<std::uint32_t>(i), expected, got);
  }
}

// The format is a template argument, as in convert<T>() and the storage types' constructors, and
// the codec is inlined (flatten), so the compiler specialises it for the format: about twice as
// fast, which keeps the exhaustive label within its time budget.
template <FormatSpec kSpec>
[[gnu::flatten]] void compare_scalar(MismatchLog& log, const Config& config, std::uint32_t begin,
                                     std::uint32_t end, std::uint32_t sign_bit,
                                     std::uint32_t expected) {
  for (std::uint32_t b = begin; b != end; ++b) {
    const std::uint32_t input = b | sign_bit;
    const std::uint32_t got =
        detail::encode_bits(float_from_bits(input), kSpec, config.rounding, config.overflow);
    if (got != expected) log.add(input, expected, got);
  }
}

// The amax the bulk API must return for a chunk whose largest magnitude is `last_magnitude`: that
// value, or NaN if any element of the chunk is NaN.
bool amax_matches(float got, std::uint32_t last_magnitude) {
  if (last_magnitude > kInfBits) return std::isnan(got);
  return bits_of(got) == last_magnitude;
}

std::string describe(const MismatchRun& run, int code_digits) {
  char line[256];
  const auto first = static_cast<double>(float_from_bits(run.first));
  if (run.first == run.last) {
    std::snprintf(line, sizeof line, "\n    input 0x%08X (%.9g): expected 0x%0*X, got 0x%0*X",
                  run.first, first, code_digits, run.expected, code_digits, run.got);
  } else {
    std::snprintf(
        line, sizeof line,
        "\n    inputs 0x%08X (%.9g) .. 0x%08X (%.9g), %u inputs: expected 0x%0*X, got 0x%0*X",
        run.first, first, run.last, static_cast<double>(float_from_bits(run.last)),
        run.last - run.first + 1, code_digits, run.expected, code_digits, run.got);
  }
  return line;
}

void report(const Desc& d, const Check& check) {
  const std::string what = std::string(d.name) + " " + name_of(check.config.rounding) + " " +
                           name_of(check.config.overflow);
  std::uint64_t amax_mismatches = 0;
  for (const std::uint64_t n : check.amax_mismatches) amax_mismatches += n;
  EXPECT_EQ(amax_mismatches, 0u) << what << ": chunks for which bulk encode returned a wrong amax";
  std::string text;
  for (int path = 0; path < kPaths; ++path) {
    std::uint64_t count = 0;
    std::vector<MismatchRun> runs;  // merged over the work ranges, which are in input order
    for (const auto& logs : check.logs) {
      const MismatchLog& log = logs[static_cast<std::size_t>(path)];
      count += log.count;
      for (const MismatchRun& run : log.runs) {
        if (!runs.empty() && runs.back().last + 1 == run.first &&
            runs.back().expected == run.expected && runs.back().got == run.got) {
          runs.back().last = run.last;
        } else if (runs.size() < MismatchLog::kKeep) {
          runs.push_back(run);
        }
      }
    }
    if (count == 0) continue;
    text += "\n  " + std::string(kPathNames[path]) + ": " + std::to_string(count) +
            " mismatches, first:";
    for (const MismatchRun& run : runs) text += describe(run, d.bits > 8 ? 4 : 2);
  }
  if (!text.empty()) ADD_FAILURE() << what << text;
}

Check make_check(const Desc& d, const Config& config, const Reference& ref) {
  Check check;
  check.config = config;
  check.ref = &ref;
  for (const Interval& iv : ref.intervals) {
    check.expected_positive.push_back(
        expected_code(d, iv.kind, iv.code, false, config.rounding, config.overflow));
    check.expected_negative.push_back(
        expected_code(d, iv.kind, iv.code, true, config.rounding, config.overflow));
  }
  return check;
}

void expect_spec_matches(const Desc& d, const FormatSpec& spec) {
  EXPECT_EQ(spec.total_bits(), d.bits) << d.name;
  EXPECT_EQ(spec.exponent_bits, d.e) << d.name;
  EXPECT_EQ(spec.mantissa_bits, d.m) << d.name;
  EXPECT_EQ(spec.bias, d.bias) << d.name;
}

template <class T>
void sweep(const Desc& d, std::span<const Config> configs) {
  if (!kOptimisedBuild)
    GTEST_SKIP() << "the 2^32-input sweeps need an optimised build (release preset)";
  constexpr FormatSpec kSpec = FormatTraits<T>::kSpec;
  expect_spec_matches(d, kSpec);

  const Reference rne = build_reference(d, Rounding::kNearestEven);
  const Reference rtz = build_reference(d, Rounding::kTowardZero);
  std::vector<Check> checks;
  for (const Config& config : configs) {
    checks.push_back(make_check(d, config, config.rounding == Rounding::kNearestEven ? rne : rtz));
  }

  const auto start_time = std::chrono::steady_clock::now();
  int threads_used = 0;
#pragma omp parallel
  {
#pragma omp single
    threads_used = omp_get_num_threads();
    std::vector<float> in(2 * kChunk);
    std::vector<T> out(2 * kChunk);

#pragma omp for schedule(dynamic, 1)
    for (std::size_t range = 0; range < kRanges; ++range) {
      const std::uint64_t lo = range * kRange;
      std::vector<std::size_t> cursor(checks.size());
      for (std::size_t c = 0; c < checks.size(); ++c) {
        cursor[c] = checks[c].ref->index_of(static_cast<std::uint32_t>(lo));
      }
      for (std::uint64_t chunk = lo; chunk < lo + kRange; chunk += kChunk) {
        const auto base = static_cast<std::uint32_t>(chunk);
        for (std::uint32_t i = 0; i < kChunk; ++i) {
          in[i] = float_from_bits(base + i);
          in[kChunk + i] = float_from_bits((base + i) | 0x80000000u);
        }
        for (std::size_t c = 0; c < checks.size(); ++c) {
          Check& check = checks[c];
          auto& logs = check.logs[range];
          const float amax =
              library_encode<T>(in, out, check.config.rounding, check.config.overflow);
          if (kUseBulkEncode && !amax_matches(amax, base + kChunk - 1))
            ++check.amax_mismatches[range];
          const std::vector<Interval>& iv = check.ref->intervals;
          std::size_t j = cursor[c];
          std::uint32_t pos = base;
          const std::uint32_t end = base + kChunk;
          while (pos < end) {
            while (iv[j + 1].start <= pos) ++j;
            const std::uint32_t run_end = std::min(end, iv[j + 1].start);
            const std::size_t offset = pos - base;
            const std::size_t n = run_end - pos;
            compare_run(logs[kBulkPositive], out.data() + offset, n, check.expected_positive[j],
                        pos);
            compare_run(logs[kBulkNegative], out.data() + kChunk + offset, n,
                        check.expected_negative[j], pos | 0x80000000u);
            if (check.config.scalar) {
              compare_scalar<kSpec>(logs[kScalarPositive], check.config, pos, run_end, 0,
                                    check.expected_positive[j]);
              compare_scalar<kSpec>(logs[kScalarNegative], check.config, pos, run_end, 0x80000000u,
                                    check.expected_negative[j]);
            }
            pos = run_end;
          }
          cursor[c] = j;
        }
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  std::printf("[ sweep    ] %s: %zu configurations x 2^32 inputs on %d threads in %.1f s\n", d.name,
              configs.size(), threads_used, seconds);
  for (const Check& check : checks) report(d, check);
}

// The sweep calls the bulk API from inside its own parallel region, where the API runs on the
// calling thread. This checks its own split over all threads: one call on a large span (2^21
// magnitudes spread over the whole range with varied low bits, then the same negated).
template <class T>
void bulk_across_threads(const Desc& d, Config config, std::span<const float> in) {
  const std::size_t count = in.size() / 2;
  const Reference ref = build_reference(d, config.rounding);
  Check check = make_check(d, config, ref);
  std::vector<T> out(in.size());
  const float amax = library_encode<T>(in, out, config.rounding, config.overflow);
  EXPECT_TRUE(std::isnan(amax)) << d.name << ": the span holds NaNs, amax " << amax;
  auto& logs = check.logs[0];
  std::size_t j = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t bits = bits_of(in[i]);
    while (ref.intervals[j + 1].start <= bits) ++j;
    compare_run(logs[kBulkPositive], &out[i], 1, check.expected_positive[j], bits);
    compare_run(logs[kBulkNegative], &out[count + i], 1, check.expected_negative[j],
                bits | 0x80000000u);
  }
  report(d, check);
}

constexpr Rounding kRne = Rounding::kNearestEven;
constexpr Rounding kRtz = Rounding::kTowardZero;
constexpr Overflow kSat = Overflow::kSaturate;
constexpr Overflow kNonFin = Overflow::kNonFinite;

// RNE and toward zero under both policies through the bulk API, on every input. The scalar codec
// costs about four times as much per input as the bulk API plus the comparison, so it is checked
// on every input under RNE with both policies for the FP8 formats (RNE+NonFinite is what their
// constructors and convert<>() do by default), and under RNE+Saturate for the others: the whole
// exhaustive label has a 5-minute budget on 2 cores.
constexpr Config kFp8Configs[] = {
    {kRne, kSat, true}, {kRne, kNonFin, true}, {kRtz, kSat, false}, {kRtz, kNonFin, false}};
constexpr Config kFullConfigs[] = {
    {kRne, kSat, true}, {kRne, kNonFin, false}, {kRtz, kSat, false}, {kRtz, kNonFin, false}};

TEST(ConvertExhaustive, Float8E4M3FN) { sweep<float8_e4m3fn>(kE4M3FN, kFp8Configs); }
TEST(ConvertExhaustive, Float8E5M2) { sweep<float8_e5m2>(kE5M2, kFp8Configs); }
TEST(ConvertExhaustive, Float8E4M3FNUZ) { sweep<float8_e4m3fnuz>(kE4M3FNUZ, kFp8Configs); }
TEST(ConvertExhaustive, Float8E5M2FNUZ) { sweep<float8_e5m2fnuz>(kE5M2FNUZ, kFp8Configs); }
TEST(ConvertExhaustive, Float8E8M0FNU) { sweep<float8_e8m0fnu>(kE8M0FNU, kFullConfigs); }
TEST(ConvertExhaustive, Float6E2M3FN) { sweep<float6_e2m3fn>(kE2M3FN, kFullConfigs); }
TEST(ConvertExhaustive, Float6E3M2FN) { sweep<float6_e3m2fn>(kE3M2FN, kFullConfigs); }
TEST(ConvertExhaustive, Float4E2M1FN) { sweep<float4_e2m1fn>(kE2M1FN, kFullConfigs); }
TEST(ConvertExhaustive, Float16) { sweep<float16>(kF16, kFullConfigs); }
TEST(ConvertExhaustive, BFloat16) { sweep<bfloat16>(kBF16, kFullConfigs); }

TEST(ConvertExhaustive, BulkAcrossThreads) {
  if (!kUseBulkEncode) GTEST_SKIP() << "the bulk API is not linked yet";
  constexpr std::uint32_t kCount = 1u << 21;
  std::vector<float> in(2 * kCount);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    const std::uint32_t bits = i * 1024 + (i * 37) % 1024;  // increasing
    in[i] = float_from_bits(bits);
    in[kCount + i] = float_from_bits(bits | 0x80000000u);
  }
  for (const Config& config : kFullConfigs) {
    bulk_across_threads<float8_e4m3fn>(kE4M3FN, config, in);
    bulk_across_threads<float8_e5m2>(kE5M2, config, in);
    bulk_across_threads<float8_e4m3fnuz>(kE4M3FNUZ, config, in);
    bulk_across_threads<float8_e5m2fnuz>(kE5M2FNUZ, config, in);
    bulk_across_threads<float8_e8m0fnu>(kE8M0FNU, config, in);
    bulk_across_threads<float6_e2m3fn>(kE2M3FN, config, in);
    bulk_across_threads<float6_e3m2fn>(kE3M2FN, config, in);
    bulk_across_threads<float4_e2m1fn>(kE2M1FN, config, in);
    bulk_across_threads<float16>(kF16, config, in);
    bulk_across_threads<bfloat16>(kBF16, config, in);
  }
}

}  // namespace
}  // namespace unitscale

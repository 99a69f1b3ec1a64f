#pragma once
// Rounding and overflow policies of every conversion (docs/formats.md).
//
// Conversions never fail: every (input, rounding, overflow) triple has one documented result,
// tabulated in docs/formats.md. Policies are explicit per call, never global state.

#include <cstdint>
#include <string_view>

namespace unitscale {

enum class Rounding : std::uint8_t {
  kNearestEven,  // IEEE roundTiesToEven; the default everywhere
  kNearestAway,  // ties away from zero (IEEE roundTiesToAway)
  kTowardZero,   // truncate the magnitude
  kUp,           // toward +infinity
  kDown,         // toward -infinity
  kStochastic,   // away from zero with probability equal to the discarded fraction (needs RandomBits)
};

enum class Overflow : std::uint8_t {
  kSaturate,   // clamp to ±max (also ±Inf inputs); what every FP8 training recipe uses
  kNonFinite,  // ±Inf where the format has Inf, NaN otherwise (OCP non-saturating mode)
};

// Names for configs, attributes and messages: "nearest_even", "nearest_away", "toward_zero", "up",
// "down", "stochastic"; "saturate", "non_finite". The parsers throw unitscale::Error listing the
// valid names.
std::string_view rounding_name(Rounding rounding);
Rounding rounding_from_name(std::string_view name);
std::string_view overflow_name(Overflow overflow);
Overflow overflow_from_name(std::string_view name);

// Caller-supplied randomness for Rounding::kStochastic, so results are reproducible.
// `word` should be uniformly random; only its low `count` bits are used. count == 0 means "as many
// bits as are discarded, up to 32", which makes the rounding exactly unbiased for in-range inputs.
struct RandomBits {
  std::uint32_t word = 0;
  int count = 0;
};

}  // namespace unitscale

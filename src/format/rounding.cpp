#include "unitscale/format/rounding.hpp"

#include <array>
#include <string>
#include <utility>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr std::array<std::pair<Rounding, std::string_view>, 6> kRoundings{{
    {Rounding::kNearestEven, "nearest_even"},
    {Rounding::kNearestAway, "nearest_away"},
    {Rounding::kTowardZero, "toward_zero"},
    {Rounding::kUp, "up"},
    {Rounding::kDown, "down"},
    {Rounding::kStochastic, "stochastic"},
}};

constexpr std::array<std::pair<Overflow, std::string_view>, 2> kOverflows{{
    {Overflow::kSaturate, "saturate"},
    {Overflow::kNonFinite, "non_finite"},
}};

template <class Enum, std::size_t N>
std::string_view name_of(const std::array<std::pair<Enum, std::string_view>, N>& table, Enum e) {
  for (const auto& [value, name] : table) {
    if (value == e) return name;
  }
  return "?";
}

template <class Enum, std::size_t N>
Enum parse(const std::array<std::pair<Enum, std::string_view>, N>& table, std::string_view kind,
           std::string_view name) {
  std::string valid;
  for (const auto& [value, candidate] : table) {
    if (candidate == name) return value;
    valid += (valid.empty() ? "" : ", ") + std::string(candidate);
  }
  throw Error("unknown " + std::string(kind) + " '" + std::string(name) + "'; valid names: " + valid);
}

}  // namespace

std::string_view rounding_name(Rounding rounding) { return name_of(kRoundings, rounding); }
Rounding rounding_from_name(std::string_view name) { return parse(kRoundings, "rounding", name); }
std::string_view overflow_name(Overflow overflow) { return name_of(kOverflows, overflow); }
Overflow overflow_from_name(std::string_view name) { return parse(kOverflows, "overflow", name); }

}  // namespace unitscale

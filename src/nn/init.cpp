#include "unitscale/nn/init.hpp"

#include <fmt/format.h>

#include <cmath>
#include <numbers>

#include "../ops/counter_hash.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using detail::splitmix64;

// FNV-1a: a stable 64-bit hash of the name's bytes (std::hash may differ between libraries).
std::uint64_t name_hash(std::string_view name) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

std::uint64_t stream_key(std::uint64_t seed, std::string_view name) {
  return splitmix64(splitmix64(seed) ^ name_hash(name));
}

// Word i of a stream: hashing the index first keeps streams of nearby keys from overlapping.
std::uint64_t stream_word(std::uint64_t key, std::uint64_t index) {
  return splitmix64(key ^ splitmix64(index));
}

constexpr double kTwoPow32 = 4294967296.0;

// (hi + ½)/2³²: never 0 or 1, so ln u is finite.
double open_unit(std::uint64_t word) { return (static_cast<double>(word >> 32) + 0.5) / kTwoPow32; }
double half_open_unit(std::uint64_t word) {
  return static_cast<double>(word & 0xFFFFFFFFull) / kTwoPow32;
}

double normal_of(std::uint64_t word) {
  const double radius = std::sqrt(-2.0 * std::log(open_unit(word)));
  return radius * std::cos(2.0 * std::numbers::pi * half_open_unit(word));
}

}  // namespace

double counter_normal(std::uint64_t seed, std::string_view name, std::uint64_t index) {
  return normal_of(stream_word(stream_key(seed, name), index));
}

double counter_uniform(std::uint64_t seed, std::string_view name, std::uint64_t index) {
  return open_unit(stream_word(stream_key(seed, name), index));
}

Tensor init_parameter(std::uint64_t seed, std::string_view name, const Shape& shape,
                      const ParameterRule& rule) {
  const auto fail = [&](const std::string& what) {
    return Error(fmt::format("init_parameter '{}' {}: {}", name, shape.to_string(), what));
  };
  if (!rule.name.empty() && (rule.name != name || rule.shape != shape)) {
    throw fail(fmt::format("the rule is for parameter '{}' {}", rule.name, rule.shape.to_string()));
  }
  if (rule.init == InitDistribution::kConstant) {
    if (!std::isfinite(rule.init_value)) throw fail("the constant init value is not finite");
    return Tensor::filled(shape, static_cast<float>(rule.init_value));
  }
  if (!std::isfinite(rule.init_std) || rule.init_std < 0) {
    throw fail(fmt::format("init std must be finite and non-negative, got {}", rule.init_std));
  }

  Tensor values(shape);
  std::span<float> out = values.span();
  const std::uint64_t key = stream_key(seed, name);
  if (rule.init == InitDistribution::kNormal) {
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<float>(rule.init_std * normal_of(stream_word(key, i)));
    }
  } else {
    const double bound = std::sqrt(3.0) * rule.init_std;
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<float>(bound * (2.0 * open_unit(stream_word(key, i)) - 1.0));
    }
  }
  return values;
}

}  // namespace unitscale

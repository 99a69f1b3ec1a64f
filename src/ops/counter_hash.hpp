#pragma once
// splitmix64's output function: a bijection on 64-bit words with good avalanche, the counter-based
// hash behind the library's reproducible randomness (dropout's keys and step seeds, cast's
// stochastic-rounding bits): a random word is a pure function of (key, index), so results do not
// depend on threads or instruction sets.

#include <cstdint>

namespace unitscale::detail {

inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace unitscale::detail

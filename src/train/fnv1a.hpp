#pragma once
// FNV-1a, 64 bits: the train layer's cheap fingerprint of bytes (a corpus in a checkpoint's
// config, the ranks' parameters in data-parallel training). Not for anything adversarial.

#include <cstddef>
#include <cstdint>
#include <span>

namespace unitscale::detail {

inline std::uint64_t fnv1a(std::span<const std::byte> bytes) {
  std::uint64_t h = 14695981039346656037ull;
  for (const std::byte b : bytes) h = (h ^ static_cast<std::uint64_t>(b)) * 1099511628211ull;
  return h;
}

}  // namespace unitscale::detail

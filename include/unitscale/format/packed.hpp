#pragma once
// PackedArray<S>: dense storage for the sub-byte MX element formats (FP4 and FP6).
//
// The elements form one little-endian bit stream: element i occupies bits [k·i, k·i + k) of it,
// where bit b of the stream is bit (b mod 8) of byte b / 8 and k is the format's width.
//
//   FP4 (float4_e2m1fn), two values per byte:
//       byte j = v[2j] | v[2j+1] << 4            element 2j in bits 0-3, 2j+1 in bits 4-7
//   FP6 (float6_e2m3fn, float6_e3m2fn), four values per three bytes:
//       the 24-bit group g = v0 | v1 << 6 | v2 << 12 | v3 << 18 is stored little-endian:
//       byte 3j = g & 0xFF, byte 3j+1 = (g >> 8) & 0xFF, byte 3j+2 = g >> 16
//
// A size that is not a multiple of 2 (FP4) or 4 (FP6) ends in a partial byte/group; the storage
// is ceil(k·n / 8) bytes and the unused high bits of the last byte are kept zero (they are cleared
// when an array is built from external bytes), so bytes() is canonical.
//
// This bit order is a library choice (it matches the "low nibble first" convention of most FP4
// kernels, but the MX spec does not fix one). Check it against any external kernel or file
// format before exchanging packed data with it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/minifloat.hpp"

namespace unitscale {

template <FormatSpec S>
class PackedArray {
  static_assert(S.total_bits() == 4 || S.total_bits() == 6,
                "PackedArray is for the sub-byte formats (4 or 6 bits)");

 public:
  using value_type = MiniFloat<S>;
  static constexpr FormatSpec kSpec = S;
  static constexpr int kBits = S.total_bits();

  // Bytes needed for n elements.
  static constexpr std::size_t byte_size_for(std::size_t n) {
    return (n * static_cast<std::size_t>(kBits) + 7) / 8;
  }

  PackedArray() = default;
  // n elements, all +0.
  explicit PackedArray(std::size_t n) : size_(n), bytes_(byte_size_for(n), 0) {}
  // n elements copied from packed bytes; `bytes` must hold exactly byte_size_for(n) bytes.
  PackedArray(std::size_t n, std::span<const std::uint8_t> bytes) : size_(n) {
    if (bytes.size() != byte_size_for(n)) {
      throw Error("PackedArray<" + format_name(S) + ">: " + std::to_string(n) +
                  " elements need " + std::to_string(byte_size_for(n)) + " bytes, got " +
                  std::to_string(bytes.size()));
    }
    bytes_.assign(bytes.begin(), bytes.end());
    clear_padding();
  }
  // Packs `values`.
  explicit PackedArray(std::span<const value_type> values) : PackedArray(values.size()) {
    pack(values);
  }

  std::size_t size() const { return size_; }
  std::size_t byte_size() const { return bytes_.size(); }
  bool empty() const { return size_ == 0; }
  std::span<const std::uint8_t> bytes() const { return bytes_; }

  value_type get(std::size_t i) const {
    check_index(i, "get");
    return value_type::from_bits(load(i));
  }
  void set(std::size_t i, value_type value) {
    check_index(i, "set");
    store(i, value.bits());
  }

  // Overwrites every element; values.size() must equal size().
  void pack(std::span<const value_type> values) {
    check_length(values.size(), "pack");
    // Whole bytes (FP4) or groups (FP6) first; the loops are bounded by the storage too, which
    // costs nothing and lets the compiler see that every access is in range.
    std::size_t i = 0;
    std::uint8_t* out = bytes_.data();
    const std::size_t n_bytes = bytes_.size();
    if constexpr (kBits == 4) {
      for (std::size_t b = 0; b < n_bytes && i + 2 <= size_; ++b, i += 2) {
        out[b] = static_cast<std::uint8_t>(values[i].bits() | values[i + 1].bits() << 4);
      }
    } else {
      for (std::size_t b = 0; b + 3 <= n_bytes && i + 4 <= size_; b += 3, i += 4) {
        const std::uint32_t group = std::uint32_t{values[i].bits()} |
                                    std::uint32_t{values[i + 1].bits()} << 6 |
                                    std::uint32_t{values[i + 2].bits()} << 12 |
                                    std::uint32_t{values[i + 3].bits()} << 18;
        out[b] = static_cast<std::uint8_t>(group);
        out[b + 1] = static_cast<std::uint8_t>(group >> 8);
        out[b + 2] = static_cast<std::uint8_t>(group >> 16);
      }
    }
    for (; i < size_; ++i) store(i, values[i].bits());
  }

  // Writes every element into `out`; out.size() must equal size().
  void unpack(std::span<value_type> out) const {
    check_length(out.size(), "unpack");
    std::size_t i = 0;
    const std::uint8_t* in = bytes_.data();
    const std::size_t n_bytes = bytes_.size();
    if constexpr (kBits == 4) {
      for (std::size_t b = 0; b < n_bytes && i + 2 <= size_; ++b, i += 2) {
        out[i] = value_type::from_bits(static_cast<std::uint8_t>(in[b] & 0x0F));
        out[i + 1] = value_type::from_bits(static_cast<std::uint8_t>(in[b] >> 4));
      }
    } else {
      for (std::size_t b = 0; b + 3 <= n_bytes && i + 4 <= size_; b += 3, i += 4) {
        const std::uint32_t group = std::uint32_t{in[b]} | std::uint32_t{in[b + 1]} << 8 |
                                    std::uint32_t{in[b + 2]} << 16;
        for (std::size_t j = 0; j < 4; ++j) {
          out[i + j] = value_type::from_bits(static_cast<std::uint8_t>((group >> (6 * j)) & 0x3F));
        }
      }
    }
    for (; i < size_; ++i) out[i] = value_type::from_bits(load(i));
  }
  std::vector<value_type> unpack() const {
    std::vector<value_type> out(size_);
    unpack(out);
    return out;
  }

  friend bool operator==(const PackedArray&, const PackedArray&) = default;

 private:
  static constexpr std::uint32_t kMask = (std::uint32_t{1} << kBits) - 1;

  // An element never straddles more than two bytes, so a 16-bit window holds it.
  std::uint8_t load(std::size_t i) const {
    const std::size_t bit = i * static_cast<std::size_t>(kBits);
    const std::size_t byte = bit / 8;
    UNITSCALE_ASSERT(byte < bytes_.size());
    std::uint32_t window = bytes_[byte];
    if (byte + 1 < bytes_.size()) window |= std::uint32_t{bytes_[byte + 1]} << 8;
    return static_cast<std::uint8_t>((window >> (bit % 8)) & kMask);
  }
  void store(std::size_t i, std::uint8_t code) {
    const std::size_t bit = i * static_cast<std::size_t>(kBits);
    const std::size_t byte = bit / 8;
    const unsigned shift = static_cast<unsigned>(bit % 8);
    UNITSCALE_ASSERT(byte + (shift + kBits > 8 ? 1 : 0) < bytes_.size());
    const std::uint32_t mask = kMask << shift;
    const std::uint32_t value = (std::uint32_t{code} & kMask) << shift;
    bytes_[byte] = static_cast<std::uint8_t>((bytes_[byte] & ~mask) | (value & 0xFF));
    if (mask > 0xFF) {
      bytes_[byte + 1] = static_cast<std::uint8_t>((bytes_[byte + 1] & ~(mask >> 8)) | (value >> 8));
    }
  }
  void clear_padding() {
    const std::size_t used_bits = size_ * static_cast<std::size_t>(kBits) % 8;
    if (used_bits != 0) bytes_.back() &= static_cast<std::uint8_t>((1u << used_bits) - 1);
  }
  void check_index(std::size_t i, const char* op) const {
    if (i >= size_) {
      throw Error("PackedArray<" + format_name(S) + ">::" + op + ": index " + std::to_string(i) +
                  " out of range for size " + std::to_string(size_));
    }
  }
  void check_length(std::size_t n, const char* op) const {
    if (n != size_) {
      throw Error("PackedArray<" + format_name(S) + ">::" + op + ": span has " + std::to_string(n) +
                  " elements, the array has " + std::to_string(size_));
    }
  }

  std::size_t size_ = 0;
  std::vector<std::uint8_t> bytes_;
};

using packed_float4_e2m1fn = PackedArray<kFloat4E2M1FN>;
using packed_float6_e2m3fn = PackedArray<kFloat6E2M3FN>;
using packed_float6_e3m2fn = PackedArray<kFloat6E3M2FN>;

}  // namespace unitscale

// Packed FP4/FP6 containers: bit layout (element 2i in bits 0-3 for FP4; little-endian 24-bit
// groups v0 | v1<<6 | v2<<12 | v3<<18 for FP6), round trips, odd sizes and error handling.

#include "unitscale/format/packed.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "unitscale/error.hpp"

namespace us = unitscale;

namespace {

template <class P>
using Value = typename P::value_type;

template <class P>
std::vector<Value<P>> from_codes(const std::vector<int>& codes) {
  std::vector<Value<P>> v;
  for (int c : codes) v.push_back(Value<P>::from_bits(static_cast<std::uint8_t>(c)));
  return v;
}

template <class P>
std::vector<int> codes_of(const P& p) {
  std::vector<int> out;
  for (auto v : p.unpack()) out.push_back(v.bits());
  return out;
}

std::vector<int> bytes_of(std::span<const std::uint8_t> b) { return {b.begin(), b.end()}; }

// Independent reference packer: writes element i at bit offset k·i of a little-endian bit stream,
// one bit at a time.
std::vector<int> reference_pack(const std::vector<int>& codes, int k) {
  std::vector<int> bytes((codes.size() * static_cast<std::size_t>(k) + 7) / 8, 0);
  for (std::size_t i = 0; i < codes.size(); ++i) {
    for (int b = 0; b < k; ++b) {
      if ((codes[i] >> b) & 1) {
        const std::size_t bit = i * static_cast<std::size_t>(k) + static_cast<std::size_t>(b);
        bytes[bit / 8] |= 1 << (bit % 8);
      }
    }
  }
  return bytes;
}

// A deterministic pseudo-random code sequence (LCG), independent of the library.
std::vector<int> pseudo_random_codes(std::size_t n, int k, std::uint32_t seed) {
  std::vector<int> codes(n);
  std::uint32_t s = seed;
  for (auto& c : codes) {
    s = s * 1664525u + 1013904223u;
    c = static_cast<int>((s >> 24) & ((1u << k) - 1));
  }
  return codes;
}

template <class P>
class PackedTest : public ::testing::Test {};
using PackedTypes =
    ::testing::Types<us::packed_float4_e2m1fn, us::packed_float6_e2m3fn, us::packed_float6_e3m2fn>;
TYPED_TEST_SUITE(PackedTest, PackedTypes);

TYPED_TEST(PackedTest, ByteSizeIsCeilOfBits) {
  using P = TypeParam;
  constexpr int k = P::kBits;
  for (std::size_t n = 0; n < 40; ++n) {
    EXPECT_EQ(P::byte_size_for(n), (n * k + 7) / 8) << n;
    P p(n);
    EXPECT_EQ(p.size(), n);
    EXPECT_EQ(p.byte_size(), (n * k + 7) / 8);
    EXPECT_EQ(p.bytes().size(), p.byte_size());
    for (auto b : p.bytes()) EXPECT_EQ(b, 0);
  }
}

TYPED_TEST(PackedTest, RoundTripOfEveryCodeAtEveryPosition) {
  using P = TypeParam;
  constexpr int k = P::kBits;
  constexpr int count = 1 << k;
  // Every code, then every code shifted by one position, etc., so each code lands at every
  // in-byte offset (FP6 has four distinct offsets).
  for (int offset = 0; offset < 4; ++offset) {
    std::vector<int> codes;
    for (int j = 0; j < offset; ++j) codes.push_back(count - 1);
    for (int c = 0; c < count; ++c) codes.push_back(c);
    const auto values = from_codes<P>(codes);
    P p(values);
    EXPECT_EQ(bytes_of(p.bytes()), reference_pack(codes, k)) << "offset " << offset;
    EXPECT_EQ(codes_of(p), codes);
    for (std::size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(p.get(i).bits(), codes[i]) << i;
    // Rebuilding from the bytes gives the same array.
    P q(codes.size(), p.bytes());
    EXPECT_EQ(q, p);
    EXPECT_EQ(codes_of(q), codes);
  }
}

TYPED_TEST(PackedTest, OddSizesMatchReferenceBitStream) {
  using P = TypeParam;
  constexpr int k = P::kBits;
  for (std::size_t n = 0; n <= 37; ++n) {
    const auto codes = pseudo_random_codes(n, k, static_cast<std::uint32_t>(n + 1));
    const auto values = from_codes<P>(codes);
    P p(n);
    p.pack(values);
    EXPECT_EQ(bytes_of(p.bytes()), reference_pack(codes, k)) << "n=" << n;
    std::vector<Value<P>> out(n);
    p.unpack(out);
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(out[i].bits(), codes[i]) << n << " " << i;
    // Element-wise set gives identical bytes, in any order.
    P s(n);
    for (std::size_t i = n; i-- > 0;) s.set(i, values[i]);
    EXPECT_EQ(bytes_of(s.bytes()), bytes_of(p.bytes())) << "n=" << n;
  }
}

TYPED_TEST(PackedTest, SetOverwritesOnlyItsOwnBits) {
  using P = TypeParam;
  constexpr int k = P::kBits;
  constexpr int all_ones = (1 << k) - 1;
  for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u}) {
    for (std::size_t i = 0; i < n; ++i) {
      // Start from all ones, clear element i: only bits [k·i, k·i + k) become zero.
      P p(from_codes<P>(std::vector<int>(n, all_ones)));
      p.set(i, Value<P>::from_bits(0));
      std::vector<int> expected(n, all_ones);
      expected[i] = 0;
      EXPECT_EQ(bytes_of(p.bytes()), reference_pack(expected, k)) << n << " " << i;
      // And back.
      p.set(i, Value<P>::from_bits(static_cast<std::uint8_t>(all_ones)));
      EXPECT_EQ(bytes_of(p.bytes()), reference_pack(std::vector<int>(n, all_ones), k));
    }
  }
}

TYPED_TEST(PackedTest, PaddingBitsFromExternalBytesAreCleared) {
  using P = TypeParam;
  constexpr int k = P::kBits;
  const std::size_t n = 3;  // FP4: 12 bits in 2 bytes; FP6: 18 bits in 3 bytes
  std::vector<std::uint8_t> raw(P::byte_size_for(n), 0xFF);
  P p(n, raw);
  const std::vector<int> ones(n, (1 << k) - 1);
  EXPECT_EQ(codes_of(p), ones);
  EXPECT_EQ(bytes_of(p.bytes()), reference_pack(ones, k));
  EXPECT_NE(bytes_of(p.bytes()).back(), 0xFF);
}

TYPED_TEST(PackedTest, SizeErrorsNameBothSizes) {
  using P = TypeParam;
  const std::size_t n = 5;
  const std::size_t need = P::byte_size_for(n);
  std::vector<std::uint8_t> too_many(need + 1), too_few(need - 1);
  for (const auto* raw : {&too_many, &too_few}) {
    try {
      P p(n, *raw);
      FAIL() << "expected unitscale::Error";
    } catch (const us::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(need)), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(raw->size())), std::string::npos) << msg;
    }
  }
  P p(n);
  std::vector<Value<P>> four(4), six(6);
  for (auto* v : {&four, &six}) {
    try {
      p.pack(*v);
      FAIL() << "expected unitscale::Error from pack";
    } catch (const us::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(v->size())), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(n)), std::string::npos) << msg;
    }
    try {
      p.unpack(*v);
      FAIL() << "expected unitscale::Error from unpack";
    } catch (const us::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(v->size())), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(n)), std::string::npos) << msg;
    }
  }
  // A failed pack leaves the array untouched.
  for (auto b : p.bytes()) EXPECT_EQ(b, 0);
}

TYPED_TEST(PackedTest, IndexOutOfRangeThrows) {
  using P = TypeParam;
  P p(5);
  EXPECT_NO_THROW(p.get(4));
  EXPECT_THROW(p.get(5), us::Error);
  EXPECT_THROW(p.get(1000), us::Error);
  EXPECT_THROW(p.set(5, Value<P>::from_bits(1)), us::Error);
  P empty;
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.byte_size(), 0u);
  EXPECT_THROW(empty.get(0), us::Error);
  EXPECT_NO_THROW(empty.unpack(std::span<Value<P>>{}));
}

// ---- hand-made layouts ----

TEST(PackedFloat4, LowNibbleFirst) {
  // 1.0 = 0x2, -6 = 0xF, 0.5 = 0x1, 3 = 0x5, -0 = 0x8
  const std::vector<us::float4_e2m1fn> v{us::float4_e2m1fn(1.0f), us::float4_e2m1fn(-6.0f),
                                         us::float4_e2m1fn(0.5f), us::float4_e2m1fn(3.0f),
                                         us::float4_e2m1fn(-0.0f)};
  us::packed_float4_e2m1fn p(v);
  EXPECT_EQ(bytes_of(p.bytes()), (std::vector<int>{0xF2, 0x51, 0x08}));
  EXPECT_EQ(p.get(1).to_float(), -6.0f);
  EXPECT_EQ(p.get(3).to_float(), 3.0f);
  EXPECT_EQ(p.get(4).bits(), 0x8);

  const std::vector<std::uint8_t> raw{0x3C, 0xA7};
  us::packed_float4_e2m1fn q(4, raw);
  // 0x3C: element 0 = 0xC (-2), element 1 = 0x3 (1.5); 0xA7: element 2 = 0x7 (6), 3 = 0xA (-1)
  EXPECT_EQ(q.get(0).to_float(), -2.0f);
  EXPECT_EQ(q.get(1).to_float(), 1.5f);
  EXPECT_EQ(q.get(2).to_float(), 6.0f);
  EXPECT_EQ(q.get(3).to_float(), -1.0f);
}

TEST(PackedFloat6, LittleEndian24BitGroups) {
  // Codes 0x01, 0x02, 0x03, 0x3F: group = 0x01 | 0x02<<6 | 0x03<<12 | 0x3F<<18
  //   = 0x000001 | 0x000080 | 0x003000 | 0xFC0000 = 0xFC3081 -> bytes 81 30 FC.
  const auto v = from_codes<us::packed_float6_e2m3fn>({0x01, 0x02, 0x03, 0x3F});
  us::packed_float6_e2m3fn p(v);
  EXPECT_EQ(bytes_of(p.bytes()), (std::vector<int>{0x81, 0x30, 0xFC}));

  // Values: e2m3fn 1.0 = 0x08, 7.5 = 0x1F, -0.125 = 0x21, 2.0 = 0x10, then a fifth element 0.5
  // (0x04) in a partial group. group0 = 0x08 | 0x1F<<6 | 0x21<<12 | 0x10<<18
  //   = 0x000008 | 0x0007C0 | 0x021000 | 0x400000 = 0x4217C8 -> C8 17 42; then 0x04 alone.
  const std::vector<us::float6_e2m3fn> w{us::float6_e2m3fn(1.0f), us::float6_e2m3fn(7.5f),
                                         us::float6_e2m3fn(-0.125f), us::float6_e2m3fn(2.0f),
                                         us::float6_e2m3fn(0.5f)};
  us::packed_float6_e2m3fn q(w);
  EXPECT_EQ(q.byte_size(), 4u);
  EXPECT_EQ(bytes_of(q.bytes()), (std::vector<int>{0xC8, 0x17, 0x42, 0x04}));
  EXPECT_EQ(q.get(2).to_float(), -0.125f);

  // e3m2fn from raw bytes: 0xFF 0xFF 0xFF is four times code 0x3F = -28.
  const std::vector<std::uint8_t> raw{0xFF, 0xFF, 0xFF};
  us::packed_float6_e3m2fn r(4, raw);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(r.get(i).to_float(), -28.0f);
  // Setting element 1 to +0 clears bits 6..11: bytes 3F F0 FF.
  r.set(1, us::float6_e3m2fn(0.0f));
  EXPECT_EQ(bytes_of(r.bytes()), (std::vector<int>{0x3F, 0xF0, 0xFF}));
  // Setting element 2 to 0.0625 (code 0x01) puts a 1 at bit 12 and clears 13..17: 3F 10 FC.
  r.set(2, us::float6_e3m2fn(0.0625f));
  EXPECT_EQ(bytes_of(r.bytes()), (std::vector<int>{0x3F, 0x10, 0xFC}));
  EXPECT_EQ(r.get(2).to_float(), 0.0625f);
}

}  // namespace

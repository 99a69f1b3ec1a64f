// cast between every pair of dtypes: bit for bit the format layer's scalar conversion (exhaustive
// over every 8- and 16-bit source code, sampled for f32), i32 beyond 2^24, the integer roundings,
// errors, and cast inside graphs (dtype checks, the straight-through gradient, the byte arena).

#include "unitscale/ops/cast.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace testing;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr FormatSpec kF32Spec{8, 23, 127, true, NonFiniteEncoding::kIeee, ZeroEncoding::kSigned};
constexpr Rounding kDeterministicRoundings[] = {Rounding::kNearestEven, Rounding::kNearestAway,
                                                Rounding::kTowardZero, Rounding::kUp,
                                                Rounding::kDown};
constexpr Overflow kOverflows[] = {Overflow::kSaturate, Overflow::kNonFinite};

std::uint32_t code_at(ConstTensorView t, std::int64_t i) {
  std::uint32_t code = 0;
  const std::size_t size = dtype_size(t.dtype());
  std::memcpy(&code, t.bytes() + i * static_cast<std::int64_t>(size), size);
  return code;
}

void set_code(Tensor& t, std::int64_t i, std::uint32_t code) {
  const std::size_t size = dtype_size(t.dtype());
  std::memcpy(t.bytes() + i * static_cast<std::int64_t>(size), &code, size);
}

// The source tensors: every code of an 8- or 16-bit dtype; for f32, special values, values around
// every FP8/FP16 boundary region and random bit patterns.
Tensor every_value_of(DType dtype) {
  if (dtype == DType::kF32) {
    std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, 464.0f, 57344.0f, 65504.0f,
                                 65520.0f, 1e-10f, -1e-40f,
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(),
                                 std::numeric_limits<float>::quiet_NaN(),
                                 std::numeric_limits<float>::denorm_min()};
    std::mt19937 rng(5);
    std::uniform_int_distribution<std::uint32_t> bits;
    std::uniform_real_distribution<float> exponent(-30.0f, 20.0f);
    for (int i = 0; i < 20000; ++i) values.push_back(std::bit_cast<float>(bits(rng)));
    for (int i = 0; i < 20000; ++i) {
      values.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(exponent(rng)));
    }
    return Tensor({static_cast<std::int64_t>(values.size())}, values);
  }
  const auto count = std::int64_t{1} << (8 * dtype_size(dtype));
  Tensor t({count}, dtype);
  for (std::int64_t i = 0; i < count; ++i) set_code(t, i, static_cast<std::uint32_t>(i));
  return t;
}

float value_at(ConstTensorView t, std::int64_t i) {
  if (t.dtype() == DType::kF32) return t.data()[i];
  return detail::decode_bits(code_at(t, i), *dtype_format(t.dtype()));
}

Attributes cast_attrs(DType to, Rounding rounding, Overflow overflow, double scale = 1.0) {
  return {{"dtype", to}, {"rounding", rounding}, {"overflow", overflow}, {"scale", scale}};
}

Tensor run_cast(const Tensor& x, const Attributes& attrs, DType to, std::uint64_t step = 0) {
  Tensor y(x.shape(), to);
  cast_forward(x, y, attrs, step);
  return y;
}

// Every floating pair, every deterministic rounding and both overflow modes: the bulk cast equals
// the format layer's scalar conversion of the exactly decoded value, bit for bit (into f32: the
// exact decode, to_float).
TEST(Cast, EveryFloatingPairEqualsTheScalarConversionBitForBit) {
  for (const DType from : all_dtypes()) {
    if (from == DType::kI32) continue;
    const Tensor x = every_value_of(from);
    for (const DType to : all_dtypes()) {
      if (to == DType::kI32) continue;
      for (const Rounding rounding : kDeterministicRoundings) {
        for (const Overflow overflow : kOverflows) {
          SCOPED_TRACE(fmt::format("{} -> {}, {}, {}", dtype_name(from), dtype_name(to),
                                   rounding_name(rounding), overflow_name(overflow)));
          const Tensor y = run_cast(x, cast_attrs(to, rounding, overflow), to);
          const FormatSpec spec = dtype_format(to).value_or(kF32Spec);
          std::int64_t mismatches = 0;
          for (std::int64_t i = 0; i < x.numel(); ++i) {
            // Into f32 the conversion is the exact widening to_float (nothing to round or
            // saturate); otherwise the scalar encoder with the policies.
            const std::uint32_t expected =
                to == DType::kF32 ? std::bit_cast<std::uint32_t>(value_at(x, i))
                                  : detail::encode_bits(value_at(x, i), spec, rounding, overflow);
            const std::uint32_t got = code_at(y, i);
            // f32 → f32 keeps NaN payloads; every other path produces the canonical NaN.
            const bool both_nan = std::isnan(value_at(x, i)) && std::isnan(value_at(y, i));
            if (got != expected && !(to == DType::kF32 && both_nan)) {
              if (++mismatches <= 3) {
                ADD_FAILURE() << "element " << i << " (" << value_at(x, i) << "): got 0x"
                              << std::hex << got << ", expected 0x" << expected;
              }
            }
          }
          EXPECT_EQ(mismatches, 0);
        }
      }
    }
  }
}

// A power-of-two scale multiplies exactly before the single rounding: cast(x, e4m3, scale 2^-4)
// equals the scalar conversion of x/16.
TEST(Cast, PowerOfTwoScaleIsExact) {
  const Tensor x = every_value_of(DType::kBF16);
  const Tensor y = run_cast(x, cast_attrs(DType::kE4M3FN, Rounding::kNearestEven,
                                          Overflow::kSaturate, 0.0625),
                            DType::kE4M3FN);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(code_at(y, i), detail::encode_bits(value_at(x, i) / 16.0f, kFloat8E4M3FN,
                                                 Rounding::kNearestEven, Overflow::kSaturate))
        << i;
  }
}

// i32 → f32 at and beyond 2^24, where consecutive ints stop being floats: rounded once, by each
// mode, from the exact value (expected values worked out by hand).
TEST(Cast, Int32ToF32RoundsOnceBeyondTwoToThe24) {
  const std::vector<std::int32_t> ids = {16777216, 16777217, 16777219, -16777217, 2147483647,
                                         -2147483647 - 1};
  const Tensor x({6}, std::span<const std::int32_t>(ids));
  struct Case {
    Rounding rounding;
    std::vector<float> expected;
  };
  const Case cases[] = {
      {Rounding::kNearestEven,
       {16777216.0f, 16777216.0f, 16777220.0f, -16777216.0f, 2147483648.0f, -2147483648.0f}},
      {Rounding::kNearestAway,
       {16777216.0f, 16777218.0f, 16777220.0f, -16777218.0f, 2147483648.0f, -2147483648.0f}},
      {Rounding::kTowardZero,
       {16777216.0f, 16777216.0f, 16777218.0f, -16777216.0f, 2147483520.0f, -2147483648.0f}},
      {Rounding::kUp,
       {16777216.0f, 16777218.0f, 16777220.0f, -16777216.0f, 2147483648.0f, -2147483648.0f}},
      {Rounding::kDown,
       {16777216.0f, 16777216.0f, 16777218.0f, -16777218.0f, 2147483520.0f, -2147483648.0f}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(rounding_name(c.rounding));
    const Tensor y = run_cast(x, cast_attrs(DType::kF32, c.rounding, Overflow::kSaturate),
                              DType::kF32);
    EXPECT_THAT(y.span(), ElementsAreArray(c.expected));
  }
}

// i32 → i32 keeps every id exactly, including those floats cannot hold.
TEST(Cast, Int32RoundTripIsExact) {
  const std::vector<std::int32_t> ids = {0, 16777217, 2147483647, -2147483647 - 1, -5};
  const Tensor x({5}, std::span<const std::int32_t>(ids));
  const Tensor y = run_cast(x, cast_attrs(DType::kI32, Rounding::kNearestEven,
                                          Overflow::kSaturate),
                            DType::kI32);
  EXPECT_THAT(y.span_as<std::int32_t>(), ElementsAreArray(ids));
}

// i32 → low precision: the exact integer rounded once (2049 is a tie in f16: even is 2048).
TEST(Cast, Int32ToLowPrecisionRoundsOnceAndSaturates) {
  const std::vector<std::int32_t> ids = {2049, 2051, 70000, -70000};
  const Tensor x({4}, std::span<const std::int32_t>(ids));
  const Tensor sat = run_cast(x, cast_attrs(DType::kF16, Rounding::kNearestEven,
                                            Overflow::kSaturate),
                              DType::kF16);
  const Tensor inf = run_cast(x, cast_attrs(DType::kF16, Rounding::kNearestEven,
                                            Overflow::kNonFinite),
                              DType::kF16);
  const float expected_sat[] = {2048.0f, 2052.0f, 65504.0f, -65504.0f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(value_at(sat, i), expected_sat[i]) << i;
  EXPECT_EQ(value_at(inf, 2), std::numeric_limits<float>::infinity());
  EXPECT_EQ(value_at(inf, 3), -std::numeric_limits<float>::infinity());
}

// Float → i32 under every rounding mode, saturation, and the errors.
TEST(Cast, FloatToInt32RoundsByTheModeAndSaturates) {
  const std::vector<float> values = {2.5f, 3.5f, -2.5f, -2.7f, 2.1f, -2.1f, 0.5f, 3e9f, -3e9f};
  const Tensor x({9}, values);
  struct Case {
    Rounding rounding;
    std::vector<std::int32_t> expected;
  };
  constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();
  constexpr std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
  const Case cases[] = {
      {Rounding::kNearestEven, {2, 4, -2, -3, 2, -2, 0, kMax, kMin}},
      {Rounding::kNearestAway, {3, 4, -3, -3, 2, -2, 1, kMax, kMin}},
      {Rounding::kTowardZero, {2, 3, -2, -2, 2, -2, 0, kMax, kMin}},
      {Rounding::kUp, {3, 4, -2, -2, 3, -2, 1, kMax, kMin}},
      {Rounding::kDown, {2, 3, -3, -3, 2, -3, 0, kMax, kMin}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(rounding_name(c.rounding));
    const Tensor y = run_cast(x, cast_attrs(DType::kI32, c.rounding, Overflow::kSaturate),
                              DType::kI32);
    EXPECT_THAT(y.span_as<std::int32_t>(), ElementsAreArray(c.expected));
  }
  EXPECT_THAT([&] { run_cast(x, cast_attrs(DType::kI32, Rounding::kNearestEven,
                                           Overflow::kNonFinite), DType::kI32); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cast"), HasSubstr("element 7"),
                                         HasSubstr("outside the i32 range"))));
  const Tensor nan({2}, std::vector<float>{1.0f, std::nanf("")});
  EXPECT_THAT([&] { run_cast(nan, cast_attrs(DType::kI32, Rounding::kNearestEven,
                                             Overflow::kSaturate), DType::kI32); },
              ThrowsMessage<Error>(AllOf(HasSubstr("element 1"), HasSubstr("NaN"))));
}

// Stochastic rounding: each result is one of the two neighbours, the rate of rounding up matches
// the discarded fraction, the same step reproduces, another step draws fresh bits.
TEST(Cast, StochasticRoundingIsUnbiasedAndReproducible) {
  constexpr std::int64_t n = 100000;
  // 1 + 1/32 lies a quarter of the way from 1 to the next E4M3 value 1.125.
  const Tensor x = Tensor::filled({n}, 1.03125f);
  Attributes attrs = cast_attrs(DType::kE4M3FN, Rounding::kStochastic, Overflow::kSaturate);
  attrs.set("seed", std::int64_t{11});
  const Tensor a = run_cast(x, attrs, DType::kE4M3FN, 3);
  const Tensor b = run_cast(x, attrs, DType::kE4M3FN, 3);
  const Tensor c = run_cast(x, attrs, DType::kE4M3FN, 4);
  std::int64_t up = 0, differ = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = value_at(a, i);
    ASSERT_TRUE(v == 1.0f || v == 1.125f) << v;
    up += v == 1.125f;
    ASSERT_EQ(code_at(a, i), code_at(b, i));
    differ += code_at(a, i) != code_at(c, i);
  }
  // Binomial(n, 1/4): std ≈ 137; 5 std either side.
  EXPECT_NEAR(static_cast<double>(up), 0.25 * n, 700.0);
  EXPECT_GT(differ, n / 4);
}

TEST(CastGraph, RecordTimeErrorsNameTheOpTheInputAndTheDtypes) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value q = cast(x, DType::kBF16);
  EXPECT_EQ(q.dtype(), DType::kBF16);
  EXPECT_THAT([&] { relu(q); },
              ThrowsMessage<Error>(AllOf(HasSubstr("relu"), HasSubstr("input 'x'"),
                                         HasSubstr("has dtype bf16, expected f32"))));
  EXPECT_THAT([&] { cast(x, DType::kI32, {.rounding = Rounding::kStochastic}); },
              ThrowsMessage<Error>(HasSubstr("cast: stochastic rounding into i32")));
  EXPECT_THAT([&] { cast(x, DType::kE5M2, {.scale = 0.0}); },
              ThrowsMessage<Error>(HasSubstr("cast: scale must be finite and positive")));
  const Value inputs[] = {x};
  EXPECT_THAT([&] { g.apply1(kCastOp, inputs, {{"dtype", std::string("e3m4")}}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("cast: attribute 'dtype': unknown dtype 'e3m4'"),
                                         HasSubstr("e4m3fn"))));
  EXPECT_THAT(g.to_string(), HasSubstr(": [4, 8] bf16"));
}

// x → e4m3 (scale 1/4) → f32 (scale 4) → sum: forward is the quantised value; the gradient is the
// straight-through one, 4 · 1/4 = 1 per element; an i32 input is never differentiated.
TEST(CastGraph, RunsInAGraphWithTheStraightThroughGradient) {
  Graph g(Scaling::kUnscaled);
  const Value x = g.input("x", {3});
  const Value q = cast(x, DType::kE4M3FN, {.scale = 0.25});
  const Value d = cast(q, DType::kF32, {.scale = 4.0});
  const Value loss = sum(d);
  const Value grad = autodiff(g, loss, std::array{x}).at(0);
  const Value ids = g.input("ids", {2}, DType::kI32);
  const Value ids_f = cast(ids, DType::kF32);
  EXPECT_FALSE(autodiff(g, sum(ids_f), std::array{ids}).at(0).present());

  Executor exec(g, std::array{d, grad, q, ids_f});
  const Tensor xs({3}, std::vector<float>{1.0f, 1.1f, -500.0f});
  const std::vector<std::int32_t> id_values = {16777217, -3};
  const Tensor id_tensor({2}, std::span<const std::int32_t>(id_values));
  exec.bind(x, xs);
  exec.bind(ids, id_tensor);
  EXPECT_THAT([&] { exec.bind(ids, xs.view()); },
              ThrowsMessage<Error>(HasSubstr("expects [2] i32, got [3] f32")));
  exec.run();
  // 1.1/4 = 0.275 rounds to 0.28125 (E4M3 spacing 1/32 in [1/4, 1/2)); -500/4 = -125 rounds to
  // -128 (spacing 8 in [64, 128)).
  EXPECT_THAT(exec.get(d).span(), ElementsAre(1.0f, 1.125f, -512.0f));
  EXPECT_EQ(exec.get(q).dtype(), DType::kE4M3FN);
  EXPECT_THAT(exec.get(grad).span(), ElementsAre(1.0f, 1.0f, 1.0f));
  EXPECT_THAT(exec.get(ids_f).span(), ElementsAre(16777216.0f, -3.0f));
}

// The arena is planned in bytes: a chain of FP8 values needs a quarter of the f32 chain's memory.
TEST(CastGraph, ArenaIsPlannedInBytes) {
  auto peak = [](DType dtype) {
    Graph g(Scaling::kUnscaled);
    Value v = g.input("x", {1024});
    Value out = cast(v, dtype);
    for (int i = 0; i < 4; ++i) out = cast(out, dtype);
    Executor exec(g, std::array{out});
    return exec.peak_bytes();
  };
  EXPECT_EQ(peak(DType::kF32), 2 * 4096u);
  EXPECT_EQ(peak(DType::kE4M3FN), 2 * 1024u);
  EXPECT_EQ(peak(DType::kBF16), 2 * 2048u);
}

}  // namespace
}  // namespace unitscale

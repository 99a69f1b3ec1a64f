// ScaledTensor: quantisation at every granularity against hand-quantised values (the format
// layer's scalar conversion and the scale policies' closed forms), dequantisation in fp32, exact
// power-of-two rescaling that never passes through fp32 values, static zeros, casts, and errors.

#include "unitscale/tensor/scaled_tensor.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// The scalar conversion ScaledTensor's encoder must agree with: nearest even, saturating.
double e4m3(double v) {
  return static_cast<float>(
      convert<float8_e4m3fn>(static_cast<float>(v), Rounding::kNearestEven, Overflow::kSaturate));
}

// Rows whose magnitudes differ by 2^10 from one to the next: one scale cannot serve them all.
Tensor spread_rows(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor t(Shape{rows, cols});
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      t[r * cols + c] = std::ldexp(normal(rng), static_cast<int>(10 * r - 20));
    }
  }
  return t;
}

double amax_of(const float* x, std::int64_t n) {
  double a = 0;
  for (std::int64_t i = 0; i < n; ++i) a = std::max(a, std::abs(double(x[i])));
  return a;
}

TEST(ScaledTensor, PerTensorQuantisationIsTheHandQuantisedValue) {
  const Tensor x = spread_rows(1, 100, 1);
  const ScaledTensor q = ScaledTensor::quantize(x, {.format = DType::kE4M3FN});
  EXPECT_EQ(q.dtype(), DType::kE4M3FN);
  EXPECT_EQ(q.granularity(), ScaleGranularity::kTensor);
  // s = 2^⌈log2(amax / 448)⌉
  const double s = std::exp2(std::ceil(std::log2(amax_of(x.data(), 100) / 448)));
  EXPECT_EQ(q.scale(), Scale::of(s));
  const Tensor back = q.dequantize();
  for (std::int64_t i = 0; i < 100; ++i) EXPECT_EQ(back[i], e4m3(x[i] / s) * s) << i;
  EXPECT_EQ(q.byte_size(), 100u + 4u);  // one byte per element and one f32 scale
}

TEST(ScaledTensor, PerRowScalesFollowEachRowsAmax) {
  const Tensor x = spread_rows(4, 50, 2);
  const ScaledTensor q =
      ScaledTensor::quantize(x, {.format = DType::kE4M3FN, .granularity = ScaleGranularity::kRow});
  ASSERT_EQ(q.scales().shape(), Shape({4}));
  const Tensor back = q.dequantize();
  for (std::int64_t r = 0; r < 4; ++r) {
    const double s = std::exp2(std::ceil(std::log2(amax_of(x.data() + r * 50, 50) / 448)));
    EXPECT_EQ(q.scales()[r], static_cast<float>(s)) << r;
    for (std::int64_t c = 0; c < 50; ++c) {
      EXPECT_EQ(back[r * 50 + c], e4m3(x[r * 50 + c] / s) * s) << r << "," << c;
    }
  }
  // One per-tensor scale for the same rows flushes the small ones to zero.
  const Tensor flat = ScaledTensor::quantize(x, {.format = DType::kE4M3FN}).dequantize();
  int zeros = 0;
  for (std::int64_t c = 0; c < 50; ++c) zeros += flat[c] == 0.0f ? 1 : 0;
  EXPECT_EQ(zeros, 50);
}

// MX: E8M0 block scales by RCEIL over 32 elements along the last axis, with a short tail block.
TEST(ScaledTensor, MxBlocksHaveE8M0ScalesAndATailBlock) {
  Tensor x = spread_rows(2, 70, 3);  // blocks of 32, 32 and 6 per row
  x[40] = 500.0f;                    // block (0, 1): the OCP example's amax
  const ScaledTensor q = ScaledTensor::quantize(
      x, {.format = DType::kE4M3FN, .granularity = ScaleGranularity::kBlock});
  ASSERT_EQ(q.scales().shape(), Shape({2, 3}));
  ASSERT_EQ(q.scales().dtype(), DType::kE8M0FNU);
  EXPECT_EQ(static_cast<int>(q.scales().bytes()[1]), 128);  // X = 2: 500 -> 250 -> 256 -> 512
  const Tensor back = q.dequantize();
  EXPECT_EQ(back[40], 512.0f);
  for (std::int64_t r = 0; r < 2; ++r) {
    for (std::int64_t b = 0; b < 3; ++b) {
      const std::int64_t begin = r * 70 + b * 32,
                         end = r * 70 + std::min<std::int64_t>(70, (b + 1) * 32);
      const int code = static_cast<int>(q.scales().bytes()[r * 3 + b]);
      EXPECT_EQ(code, mx_scale_code(static_cast<float>(amax_of(x.data() + begin, end - begin)),
                                    kFloat8E4M3FN));
      const double scale = std::ldexp(1.0, code - 127);
      for (std::int64_t i = begin; i < end; ++i)
        EXPECT_EQ(back[i], e4m3(x[i] / scale) * scale) << i;
    }
  }
  // FLOOR on the same block: X = 1 and 500 saturates to 448.
  const ScaledTensor floor = ScaledTensor::quantize(x, {.format = DType::kE4M3FN,
                                                        .granularity = ScaleGranularity::kBlock,
                                                        .mx_rule = MxScaleRule::kFloor});
  EXPECT_EQ(floor.dequantize()[40], 448.0f);
  // A NaN makes its block NaN, and only its block.
  x[3] = std::numeric_limits<float>::quiet_NaN();
  const Tensor with_nan =
      ScaledTensor::quantize(x, {.format = DType::kE4M3FN, .granularity = ScaleGranularity::kBlock})
          .dequantize();
  for (std::int64_t i = 0; i < 32; ++i) EXPECT_TRUE(std::isnan(with_nan[i])) << i;
  EXPECT_EQ(with_nan[40], 512.0f);
}

// data · scale is formed in fp32, not in the data's dtype: 60000 (FP16) times 2^10 is 6.1e7, where
// an FP16 product would be Inf.
TEST(ScaledTensor, DequantisesInFp32) {
  Tensor data(Shape{1}, DType::kF16);
  data.data_as<Eigen::half>()[0] = Eigen::half(60000.0f);
  const ScaledTensor q(std::move(data), Scale::power_of_two(10));
  EXPECT_EQ(q.dequantize()[0], 60000.0f * 1024.0f);
}

// Rebalancing by a power of two is exact, even where the values are far below fp32's normal
// range: (1 + 2^-10) · 2^-140 needs a bit fp32 does not have there, FP16 data with its scale does.
TEST(ScaledTensor, PowerOfTwoRescalingIsExactAndNeverPassesThroughFp32Values) {
  Tensor data(Shape{3}, DType::kF16);
  const float values[] = {1.0f + std::ldexp(1.0f, -10), -3.0f, 0.25f};
  for (int i = 0; i < 3; ++i) data.data_as<Eigen::half>()[i] = Eigen::half(values[i]);
  const ScaledTensor q(std::move(data), Scale::power_of_two(-140));
  const ScaledTensor r = q.with_scale(Scale::power_of_two(-139));
  EXPECT_EQ(r.scale(), Scale::power_of_two(-139));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(static_cast<float>(r.data().data_as<Eigen::half>()[i]), values[i] / 2) << i;
  }
  // Back up by 2^5: the data is multiplied by 32, still exact in FP16.
  const ScaledTensor up = r.with_scale(Scale::power_of_two(-144));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(static_cast<float>(up.data().data_as<Eigen::half>()[i]), values[i] * 16) << i;
  }
  // Rescaling out of the data's range saturates, or flushes to zero.
  const ScaledTensor big = q.with_scale(Scale::power_of_two(-149));  // data · 2^9
  EXPECT_EQ(static_cast<float>(big.data().data_as<Eigen::half>()[1]), -1536.0f);
  Tensor wide(Shape{2}, DType::kF16);
  wide.data_as<Eigen::half>()[0] = Eigen::half(1000.0f);
  wide.data_as<Eigen::half>()[1] = Eigen::half(0.25f);
  const ScaledTensor w(std::move(wide), Scale());
  const ScaledTensor saturated = w.with_scale(Scale::power_of_two(-7));  // 128000 > 65504
  EXPECT_EQ(static_cast<float>(saturated.data().data_as<Eigen::half>()[0]), 65504.0f);
  const ScaledTensor flushed = w.with_scale(Scale::power_of_two(30));  // 2^-32 < 2^-24
  EXPECT_EQ(static_cast<float>(flushed.data().data_as<Eigen::half>()[1]), 0.0f);
  // Per-row scales become one scale.
  const ScaledTensor rows = ScaledTensor::quantize(
      spread_rows(2, 8, 4), {.format = DType::kF16, .granularity = ScaleGranularity::kRow});
  const ScaledTensor one = rows.with_scale(Scale::power_of_two(-10));  // row 1 is ~2^-10
  EXPECT_EQ(one.granularity(), ScaleGranularity::kTensor);
  const Tensor before = rows.dequantize(), after = one.dequantize();
  for (std::int64_t i = 8; i < 16; ++i) EXPECT_EQ(after[i], before[i]) << i;
}

TEST(ScaledTensor, StaticZeroAndCasts) {
  const Tensor x = spread_rows(1, 16, 5);
  const ScaledTensor q = ScaledTensor::quantize(x, {.format = DType::kF16});
  const ScaledTensor zero = q.with_scale(Scale::zero());
  EXPECT_TRUE(zero.scale().is_zero());
  const Tensor zeros = zero.dequantize();
  for (const float v : zeros.span()) EXPECT_EQ(v, 0.0f);
  // A cast converts the data only: the scale stays, so values move by the cast's rounding alone.
  const ScaledTensor fp8 = q.astype(DType::kE4M3FN);
  EXPECT_EQ(fp8.dtype(), DType::kE4M3FN);
  EXPECT_EQ(fp8.scale(), q.scale());
  const double s = q.scale().value();
  const Tensor values = fp8.dequantize();
  for (std::int64_t i = 0; i < 16; ++i) {
    const double data = static_cast<float>(q.data().data_as<Eigen::half>()[i]);
    EXPECT_EQ(values[i], static_cast<float>(e4m3(data) * s)) << i;
  }
}

TEST(ScaledTensor, ErrorsNameWhatWasWrong) {
  EXPECT_THAT(
      [] {
        ScaledTensor(Tensor(Shape{4, 8}), Tensor(Shape{3}), ScaleGranularity::kRow);
      },
      ThrowsMessage<Error>(HasSubstr("row scales for data [4, 8] must be f32 [4], got f32 [3]")));
  EXPECT_THAT(
      [] {
        ScaledTensor(Tensor(Shape{4, 40}), Tensor(Shape{4, 2}), ScaleGranularity::kBlock);
      },
      ThrowsMessage<Error>(
          HasSubstr("block scales for data [4, 40] must be e8m0fnu [4, 2], got f32")));
  EXPECT_THAT([] { ScaledTensor(Tensor(Shape{2}, DType::kE8M0FNU), Scale()); },
              ThrowsMessage<Error>(HasSubstr("data dtype e8m0fnu cannot hold data")));
  EXPECT_THAT([] { ScaledTensor(Tensor(Shape{2}), Scale::power_of_two(200)); },
              ThrowsMessage<Error>(HasSubstr("scale 2^200 is outside float's range")));
  EXPECT_THAT(
      [] {
        ScaledTensor(Tensor(Shape{2}), Tensor(Shape{}, std::vector<float>{-1.0f}),
                     ScaleGranularity::kTensor);
      },
      ThrowsMessage<Error>(HasSubstr("finite and positive, or 0, got -1")));
  EXPECT_THAT(
      [] {
        ScaledTensor::quantize(spread_rows(2, 4, 1), {.granularity = ScaleGranularity::kRow})
            .scale();
      },
      ThrowsMessage<Error>(HasSubstr("the tensor has row scales [2], not one")));
  EXPECT_THAT([] { ScaledTensor::quantize(Tensor(Shape{2}, DType::kF16)); },
              ThrowsMessage<Error>(HasSubstr("expected f32 values, got f16 [2]")));
}

}  // namespace
}  // namespace unitscale

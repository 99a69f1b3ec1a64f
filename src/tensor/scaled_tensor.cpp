#include "unitscale/tensor/scaled_tensor.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"

namespace unitscale {

namespace {

// The elements sharing one scale: segment (r, b) is elements [r·cols + b·length, + count) of the
// data, with scale index r·per_row + b.
struct Segments {
  std::int64_t rows = 1, cols = 0, per_row = 1, length = 0;

  std::int64_t count() const { return rows * per_row; }
  std::int64_t begin(std::int64_t s) const { return (s / per_row) * cols + (s % per_row) * length; }
  std::int64_t size(std::int64_t s) const {
    return std::min(length, cols - (s % per_row) * length);
  }
};

Segments segments_of(const Shape& shape, ScaleGranularity granularity, std::int64_t block) {
  switch (granularity) {
    case ScaleGranularity::kTensor:
      return {1, shape.numel(), 1, shape.numel()};
    case ScaleGranularity::kRow:
      return {shape.rank() == 0 ? 1 : shape.outer(), shape.rank() == 0 ? 1 : shape.inner(), 1,
              shape.rank() == 0 ? 1 : shape.inner()};
    case ScaleGranularity::kBlock: {
      const std::int64_t rows = shape.rank() == 0 ? 1 : shape.outer();
      const std::int64_t cols = shape.rank() == 0 ? 1 : shape.inner();
      return {rows, cols, cols == 0 ? 0 : (cols + block - 1) / block, block};
    }
  }
  return {};
}

Shape scales_shape(const Segments& s, ScaleGranularity granularity) {
  switch (granularity) {
    case ScaleGranularity::kTensor:
      return Shape{};
    case ScaleGranularity::kRow:
      return Shape{s.rows};
    case ScaleGranularity::kBlock:
      return Shape{s.rows, s.per_row};
  }
  return Shape{};
}

DType scales_dtype(ScaleGranularity granularity) {
  return granularity == ScaleGranularity::kBlock ? DType::kE8M0FNU : DType::kF32;
}

// The value of scale `s`: f32 as stored, or an E8M0 code's 2^(code − 127) (NaN for 0xFF).
float scale_value(const Tensor& scales, std::int64_t s) {
  if (scales.dtype() == DType::kF32) return scales.data()[s];
  const auto code = static_cast<std::uint8_t>(scales.bytes()[s]);
  return code == 0xFF ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, code - 127);
}

void check_data_format(DType format, std::string_view what) {
  if (!is_floating(format) || format == DType::kE8M0FNU) {
    throw Error(
        fmt::format("ScaledTensor: {} {} cannot hold data (expected f32, f16, bf16 or an "
                    "8-bit float with a sign)",
                    what, dtype_name(format)));
  }
}

// Writes `values` (count floats) as data elements [begin, begin + count) of `data`, each divided
// by `scale`. A zero or NaN scale (a static zero, an MX block holding NaN) stores the values
// unscaled: the scale alone decides what they mean.
void encode_segment(std::span<const float> values, Tensor& data, std::int64_t begin, float scale,
                    Rounding rounding, Overflow overflow) {
  const float divisor = scale > 0 && std::isfinite(scale) ? scale : 1.0f;
  if (data.dtype() == DType::kF32) {
    float* out = data.data() + begin;
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i] / divisor;
    return;
  }
  const auto bytes = static_cast<int>(dtype_size(data.dtype()));
  detail::encode_codes(values, data.bytes() + begin * bytes, values.size(), bytes,
                       *dtype_format(data.dtype()),
                       {.scale = divisor, .rounding = rounding, .overflow = overflow});
}

// Data elements [begin, begin + out.size()) times `scale`, in fp32.
void decode_segment(const Tensor& data, std::int64_t begin, float scale, std::span<float> out) {
  if (data.dtype() == DType::kF32) {
    const float* in = data.data() + begin;
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = in[i] * scale;
    return;
  }
  const auto bytes = static_cast<int>(dtype_size(data.dtype()));
  if (!(scale > 0) || !std::isfinite(scale)) {  // a static zero, or an MX block holding NaN
    detail::decode_codes(data.bytes() + begin * bytes, out.size(), bytes, out,
                         *dtype_format(data.dtype()), 1.0f);
    for (float& v : out) v *= scale;
    return;
  }
  detail::decode_codes(data.bytes() + begin * bytes, out.size(), bytes, out,
                       *dtype_format(data.dtype()), scale);
}

float checked_scale(const Scale& scale) {
  const double v = scale.value();
  if (!scale.is_zero() &&
      !(v >= std::numeric_limits<float>::denorm_min() && v <= std::numeric_limits<float>::max())) {
    throw Error(
        fmt::format("ScaledTensor: scale {} is outside float's range (scales are stored as "
                    "f32)",
                    scale.to_string()));
  }
  return static_cast<float>(v);
}

}  // namespace

std::string_view scale_granularity_name(ScaleGranularity granularity) {
  switch (granularity) {
    case ScaleGranularity::kTensor:
      return "tensor";
    case ScaleGranularity::kRow:
      return "row";
    case ScaleGranularity::kBlock:
      return "block";
  }
  return "?";
}

ScaledTensor::ScaledTensor(Tensor data, Scale scale)
    : ScaledTensor(std::move(data), Tensor(Shape{}, std::vector<float>{checked_scale(scale)}),
                   ScaleGranularity::kTensor) {}

ScaledTensor::ScaledTensor(Tensor data, Tensor scales, ScaleGranularity granularity,
                           std::int64_t block_size)
    : data_(std::move(data)),
      scales_(std::move(scales)),
      granularity_(granularity),
      block_size_(block_size) {
  check_data_format(data_.dtype(), "data dtype");
  if (granularity == ScaleGranularity::kBlock && block_size < 1) {
    throw Error(fmt::format("ScaledTensor: block_size must be >= 1, got {}", block_size));
  }
  const Segments segments = segments_of(data_.shape(), granularity, block_size);
  const Shape expected = scales_shape(segments, granularity);
  const DType expected_dtype = scales_dtype(granularity);
  if (scales_.shape() != expected || scales_.dtype() != expected_dtype) {
    throw Error(fmt::format("ScaledTensor: {} scales for data {} must be {} {}, got {} {}",
                            scale_granularity_name(granularity), data_.shape().to_string(),
                            dtype_name(expected_dtype), expected.to_string(),
                            dtype_name(scales_.dtype()), scales_.shape().to_string()));
  }
  if (scales_.dtype() == DType::kF32) {
    for (const float s : scales_.span()) {
      if (!(s >= 0) || !std::isfinite(s)) {
        throw Error(
            fmt::format("ScaledTensor: scales must be finite and positive, or 0, got {}", s));
      }
    }
  }
}

ScaledTensor ScaledTensor::quantize(ConstTensorView x, const QuantizeOptions& options) {
  check_data_format(options.format, "format");
  if (x.dtype() != DType::kF32) {
    throw Error(fmt::format("ScaledTensor::quantize: expected f32 values, got {} {}",
                            dtype_name(x.dtype()), x.shape().to_string()));
  }
  if (options.rounding == Rounding::kStochastic) {
    throw Error(
        "ScaledTensor::quantize: stochastic rounding is not offered (it needs random bits "
        "per element; use the format layer's encode with Quantization::random_bits)");
  }
  if (options.granularity == ScaleGranularity::kBlock && options.block_size < 1) {
    throw Error(
        fmt::format("ScaledTensor::quantize: block_size must be >= 1, got {}", options.block_size));
  }
  const Segments segments = segments_of(x.shape(), options.granularity, options.block_size);
  Tensor data(x.shape(), options.format);
  Tensor scales(scales_shape(segments, options.granularity), scales_dtype(options.granularity));
  const FormatSpec spec = *dtype_format(options.format);
  const std::span<const float> values(x.data_as<float>(), static_cast<std::size_t>(x.numel()));
#pragma omp parallel for schedule(static) if (segments.count() > 64 && x.numel() > 65536)
  for (std::int64_t s = 0; s < segments.count(); ++s) {
    const auto part = values.subspan(static_cast<std::size_t>(segments.begin(s)),
                                     static_cast<std::size_t>(segments.size(s)));
    const float a = amax(part);
    float scale = 1.0f;
    if (options.granularity == ScaleGranularity::kBlock) {
      const std::uint8_t code = mx_scale_code(a, spec, options.mx_rule);
      scales.bytes()[s] = static_cast<std::byte>(code);
      scale = scale_value(scales, s);
    } else {
      scale = static_cast<float>(amax_scale(a, spec, options.amax).scale.value());
      scales.data()[s] = scale;
    }
    encode_segment(
        part, data, segments.begin(s), scale, options.rounding,
        options.granularity == ScaleGranularity::kBlock ? Overflow::kSaturate : options.overflow);
  }
  return ScaledTensor(std::move(data), std::move(scales), options.granularity, options.block_size);
}

Scale ScaledTensor::scale() const {
  if (granularity_ != ScaleGranularity::kTensor) {
    throw Error(fmt::format("ScaledTensor::scale: the tensor has {} scales {}, not one",
                            scale_granularity_name(granularity_), scales_.shape().to_string()));
  }
  const float s = scales_.data()[0];
  return s == 0.0f ? Scale::zero() : Scale::of(s);
}

Tensor ScaledTensor::dequantize() const {
  const Segments segments = segments_of(shape(), granularity_, block_size_);
  Tensor out(shape());
#pragma omp parallel for schedule(static) if (segments.count() > 64 && out.numel() > 65536)
  for (std::int64_t s = 0; s < segments.count(); ++s) {
    decode_segment(data_, segments.begin(s), scale_value(scales_, s),
                   out.span().subspan(static_cast<std::size_t>(segments.begin(s)),
                                      static_cast<std::size_t>(segments.size(s))));
  }
  return out;
}

ScaledTensor ScaledTensor::with_scale(Scale scale) const {
  const float new_scale = checked_scale(scale);
  Tensor data(shape(), dtype());  // all zeros: the data of a static zero
  if (new_scale == 0.0f) return ScaledTensor(std::move(data), scale);
  // data · (old / new) per segment, formed in double from the exactly decoded data: the ratio of
  // two powers of two is exact there, so the data is rounded once, by the encoder, and never
  // passes through fp32 values that could under- or overflow where the data would not.
  Tensor values(shape());
  decode_segment(data_, 0, 1.0f, values.span());
  const Segments segments = segments_of(shape(), granularity_, block_size_);
  for (std::int64_t s = 0; s < segments.count(); ++s) {
    const double ratio = static_cast<double>(scale_value(scales_, s)) / new_scale;
    float* v = values.data() + segments.begin(s);
    for (std::int64_t i = 0; i < segments.size(s); ++i) {
      const double shifted = static_cast<double>(v[i]) * ratio;
      v[i] = std::abs(shifted) > std::numeric_limits<float>::max()
                 ? std::copysign(std::numeric_limits<float>::infinity(), static_cast<float>(v[i]))
                 : static_cast<float>(shifted);
    }
  }
  encode_segment(values.span(), data, 0, 1.0f, Rounding::kNearestEven, Overflow::kSaturate);
  return ScaledTensor(std::move(data), scale);
}

ScaledTensor ScaledTensor::astype(DType format, Rounding rounding, Overflow overflow) const {
  check_data_format(format, "format");
  Tensor values(shape());
  const auto n = static_cast<std::size_t>(values.numel());
  decode_segment(data_, 0, 1.0f, values.span());
  Tensor data(shape(), format);
  encode_segment({values.data(), n}, data, 0, 1.0f, rounding, overflow);
  return ScaledTensor(std::move(data), scales_, granularity_, block_size_);
}

}  // namespace unitscale

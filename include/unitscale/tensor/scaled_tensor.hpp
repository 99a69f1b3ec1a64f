#pragma once
// ScaledTensor: a tensor stored as low-precision data times a scale, value = data · scale, the
// type scale propagation (Scalify, arXiv 2407.17353; docs/scalify.md) carries through a graph.
//
//   ScaledTensor x = ScaledTensor::quantize(values, {.format = DType::kE4M3FN});  // amax-scaled
//   Tensor back = x.dequantize();                      // fp32, data · scale formed in fp32
//   ScaledTensor y = x.with_scale(Scale::power_of_two(3));  // same values, data re-encoded
//
// The data is a Tensor of any floating dtype (FP8, FP16, BF16 or fp32). The scales are a Tensor of
// their own, independent of the data's dtype:
//
//   granularity  scales                         element (r, c) of the data as a matrix
//   kTensor      f32 []                         scale[]
//   kRow         f32 [rows]                     scale[r]            (rows: leading dims flattened)
//   kBlock       e8m0fnu [rows, ⌈cols/block⌉]   scale[r, c / block] (OCP MX blocks along the last
//                                                                    axis; a short tail block is
//                                                                    allowed)
//
// Scales are finite and positive, or 0 (Scalify's "static zero": the tensor is all zeros whatever
// its data). Dequantisation always multiplies in fp32, never in the data's dtype (an FP16 datum
// times a scale of 2^10 would overflow there). With power-of-two scales every rescale is exact,
// unless the data under- or overflows its format.

#include <cstdint>
#include <string_view>

#include "unitscale/format/rounding.hpp"
#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/scale_policy.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

enum class ScaleGranularity : std::uint8_t { kTensor, kRow, kBlock };
std::string_view scale_granularity_name(ScaleGranularity granularity);  // "tensor", "row", "block"

struct QuantizeOptions {
  DType format = DType::kF16;  // the data's dtype: any floating dtype but e8m0fnu
  ScaleGranularity granularity = ScaleGranularity::kTensor;
  std::int64_t block_size = 32;  // kBlock: elements per block along the last axis
  AmaxScaling amax = {};         // kTensor, kRow: how each scale follows its elements' amax
  MxScaleRule mx_rule = MxScaleRule::kRceil;   // kBlock
  Rounding rounding = Rounding::kNearestEven;  // stochastic rounding is not offered here
  Overflow overflow = Overflow::kSaturate;
};

class ScaledTensor {
 public:
  ScaledTensor() = default;
  // `data` with one scale, which must be finite and positive or zero, and within float's range.
  ScaledTensor(Tensor data, Scale scale);
  // `data` with `scales` laid out as the table above says for `granularity`; kBlock takes
  // `block_size`. Throws unitscale::Error naming the shapes and dtypes if they do not match.
  ScaledTensor(Tensor data, Tensor scales, ScaleGranularity granularity,
               std::int64_t block_size = 32);

  // `x` (f32) stored in options.format, each scale chosen from its elements' amax: current amax
  // scaling for tensor and row scales, the MX rule for blocks.
  static ScaledTensor quantize(ConstTensorView x, const QuantizeOptions& options = {});

  const Tensor& data() const { return data_; }
  const Tensor& scales() const { return scales_; }
  const Shape& shape() const { return data_.shape(); }
  DType dtype() const { return data_.dtype(); }
  ScaleGranularity granularity() const { return granularity_; }
  std::int64_t block_size() const { return block_size_; }
  // The one scale of a per-tensor ScaledTensor; throws unitscale::Error for the others.
  Scale scale() const;
  // Bytes of data and scales together.
  std::size_t byte_size() const { return data_.byte_size() + scales_.byte_size(); }

  // The values in fp32 (formed as decode(data) · scale in fp32).
  Tensor dequantize() const;
  // The same values with one new scale (Scalify's set_scaling; rebalancing by n is
  // with_scale(scale() · n)): the data is re-encoded in its format as value / new scale, rounded to
  // nearest even and saturating. A zero scale gives a static zero. Per-row and block tensors are
  // requantised to the one scale.
  ScaledTensor with_scale(Scale scale) const;
  // The same values with the data converted to `format` (the scales stay: a cast does not
  // rescale).
  ScaledTensor astype(DType format, Rounding rounding = Rounding::kNearestEven,
                      Overflow overflow = Overflow::kSaturate) const;

 private:
  Tensor data_;
  Tensor scales_ = Tensor(Shape{}, std::vector<float>{1.0f});
  ScaleGranularity granularity_ = ScaleGranularity::kTensor;
  std::int64_t block_size_ = 32;
};

}  // namespace unitscale

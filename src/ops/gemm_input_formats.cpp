#include "unitscale/ops/gemm_input_formats.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "gemm/fp8_decode_kernels.hpp"
#include "ops/counter_hash.hpp"
#include "ops/pointwise_common.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {

namespace {

constexpr std::string_view kInputFormat = "input_format";
constexpr std::string_view kGradientFormat = "gradient_format";
constexpr std::string_view kInputRounding = "input_rounding";
constexpr std::string_view kGradientRounding = "gradient_rounding";
constexpr std::string_view kOverflow = "overflow";
constexpr std::string_view kGradientOverflow = "gradient_overflow";
constexpr std::string_view kRoundingSeed = "rounding_seed";
constexpr std::string_view kPerTensorScaling = "per_tensor_scaling";

// Elements rounded per pass through the stack buffers of the chunked path.
constexpr std::int64_t kChunk = 1024;

DType dtype_of_carrier(GemmType type) {
  switch (type) {
    case GemmType::kF32: return DType::kF32;
    case GemmType::kBF16: return DType::kBF16;
    case GemmType::kF16: return DType::kF16;
    case GemmType::kE4M3: return DType::kE4M3FN;
    case GemmType::kE5M2: return DType::kE5M2;
  }
  return DType::kF32;
}

// The power of two s with amax / s at most the format's largest value and as large as it can be:
// 2^ceil(log2(amax / max)). 1 for an amax of 0, Inf or NaN (nothing to scale by).
float per_tensor_scale(std::span<const float> x, const FormatSpec& format) {
  return static_cast<float>(amax_scale(amax(x), format).scale.value());
}

}  // namespace

void check_gemm_input_format(DType format, std::string_view op, std::string_view what) {
  switch (format) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kE4M3FN:
    case DType::kE5M2:
    case DType::kE4M3FNUZ:
    case DType::kE5M2FNUZ:
      return;
    case DType::kE8M0FNU:
    case DType::kI32:
      break;
  }
  throw Error(fmt::format("{}: {} {} cannot be a GEMM operand format (expected f32, f16, bf16, "
                          "e4m3fn, e5m2, e4m3fnuz or e5m2fnuz)",
                          op, what, dtype_name(format)));
}

GemmInputFormats GemmInputFormats::of(const Attributes& attrs, std::string_view op) {
  GemmInputFormats f;
  f.inputs = attrs.get_enum<DType>(op, kInputFormat, DType::kF32);
  f.gradients = attrs.get_enum<DType>(op, kGradientFormat, DType::kF32);
  f.rounding = attrs.get_enum<Rounding>(op, kInputRounding, Rounding::kNearestEven);
  f.gradient_rounding = attrs.get_enum<Rounding>(op, kGradientRounding, Rounding::kNearestEven);
  f.overflow = attrs.get_enum<Overflow>(op, kOverflow, Overflow::kSaturate);
  f.gradient_overflow = attrs.get_enum<Overflow>(op, kGradientOverflow, f.overflow);
  f.seed = attrs.get_int(op, kRoundingSeed, 0);
  f.per_tensor_scaling = attrs.get_int(op, kPerTensorScaling, 0) != 0;
  check_gemm_input_format(f.inputs, op, "input_format");
  check_gemm_input_format(f.gradients, op, "gradient_format");
  return f;
}

void GemmInputFormats::record_in(Attributes& attrs) const {
  attrs.set(kInputFormat, inputs)
      .set(kGradientFormat, gradients)
      .set(kInputRounding, rounding)
      .set(kGradientRounding, gradient_rounding)
      .set(kOverflow, overflow)
      .set(kGradientOverflow, gradient_overflow)
      .set(kRoundingSeed, seed)
      .set(kPerTensorScaling, std::int64_t{per_tensor_scaling ? 1 : 0});
}

std::vector<AttributeSpec> GemmInputFormats::attribute_specs() {
  return {AttributeSpec::enumeration<DType>(kInputFormat),
          AttributeSpec::enumeration<DType>(kGradientFormat),
          AttributeSpec::enumeration<Rounding>(kInputRounding),
          AttributeSpec::enumeration<Rounding>(kGradientRounding),
          AttributeSpec::enumeration<Overflow>(kOverflow),
          AttributeSpec::enumeration<Overflow>(kGradientOverflow),
          AttributeSpec::integer(kRoundingSeed),
          AttributeSpec::integer(kPerTensorScaling)};
}

namespace detail {

GemmType gemm_carrier_type(DType format) {
  switch (format) {
    case DType::kF32: return GemmType::kF32;
    case DType::kF16: return GemmType::kF16;
    case DType::kBF16: return GemmType::kBF16;
    case DType::kE4M3FN: return GemmType::kE4M3;
    case DType::kE5M2: return GemmType::kE5M2;
    // Every FNUZ value is exact in BF16 (3 or 2 mantissa bits, exponents within BF16's range).
    case DType::kE4M3FNUZ:
    case DType::kE5M2FNUZ: return GemmType::kBF16;
    case DType::kE8M0FNU:
    case DType::kI32: break;
  }
  check_gemm_input_format(format, "gemm", "format");
  return GemmType::kF32;
}

void GemmOperand::decode(float* out) const {
  const std::int64_t n = numel();
  if (matrix_.type == GemmType::kF32) {
    const auto* in = static_cast<const float*>(matrix_.data);
    for (std::int64_t i = 0; i < n; ++i) out[i] = in[i] * matrix_.scale;
    return;
  }
  const DType carrier = dtype_of_carrier(matrix_.type);
  decode_codes(matrix_.data, static_cast<std::size_t>(n), static_cast<int>(dtype_size(carrier)),
               {out, static_cast<std::size_t>(n)}, *dtype_format(carrier), matrix_.scale);
}

GemmMatrix GemmOperand::block(std::int64_t index, std::int64_t rows, bool transposed) const {
  GemmMatrix m = matrix(transposed);
  m.rows = rows;
  if (m.data != prepare_placeholder()) {  // a placeholder has no data to index
    m.data =
        static_cast<const std::byte*>(m.data) + index * rows * m.cols * gemm_type_bytes(m.type);
  }
  return m;
}

void GemmOperand::widen_fp8_to_bf16() {
  using fp8_decode::Fp8;
  if (matrix_.type != GemmType::kE4M3 && matrix_.type != GemmType::kE5M2) return;
  if (matrix_.data == prepare_placeholder()) {  // only the type matters
    matrix_.type = GemmType::kBF16;
    return;
  }
  const std::int64_t n = numel();
  auto widened = std::make_unique_for_overwrite<std::byte[]>(static_cast<std::size_t>(2 * n));
  const Fp8 format = matrix_.type == GemmType::kE4M3 ? Fp8::kE4M3 : Fp8::kE5M2;
  const auto* codes = static_cast<const std::uint8_t*>(matrix_.data);
  auto* out = reinterpret_cast<std::uint16_t*>(widened.get());
  const fp8_decode::KernelTable& kernels = fp8_decode::kernels();
  for_each_share(n, [&](std::int64_t first, std::int64_t count) {
    kernels.to_bf16(codes + first, out + first, count, format);
  });
  codes_ = std::move(widened);
  matrix_.data = codes_.get();
  matrix_.type = GemmType::kBF16;
}

GemmOperand gemm_operand(const ConstTensorView& x, DType format, Rounding rounding,
                         Overflow overflow, bool per_tensor_scaling, std::uint64_t stream,
                         bool placeholder) {
  GemmOperand operand;
  const std::int64_t rows = x.shape().outer(), cols = x.shape().inner(), n = rows * cols;
  if (format == DType::kF32) {
    operand.matrix_ = gemm_matrix(x);
    return operand;
  }
  const GemmType carrier = gemm_carrier_type(format);
  const DType carrier_dtype = dtype_of_carrier(carrier);
  const int code_bytes = gemm_type_bytes(carrier);
  operand.matrix_ = {.data = prepare_placeholder(), .type = carrier, .rows = rows, .cols = cols};
  if (placeholder) return operand;

  operand.codes_ = std::make_unique_for_overwrite<std::byte[]>(static_cast<std::size_t>(n * code_bytes));
  std::byte* codes = operand.codes_.get();
  operand.matrix_.data = codes;
  const FormatSpec spec = *dtype_format(format);
  const std::span<const float> values(x.data(), static_cast<std::size_t>(n));
  const float scale = per_tensor_scaling ? per_tensor_scale(values, spec) : 1.0f;
  operand.matrix_.scale = scale;
  const Quantization round{.scale = scale, .rounding = rounding, .overflow = overflow};

  if (carrier_dtype == format && rounding != Rounding::kStochastic) {
    encode_codes(values, codes, static_cast<std::size_t>(n), code_bytes, spec, round);  // parallel
    return operand;
  }
  // Chunks: stochastic rounding's bits, or rounding to a format carried in BF16.
  const FormatSpec carrier_spec = *dtype_format(carrier_dtype);
  for_each_share(n, [&](std::int64_t first, std::int64_t share) {
    alignas(64) float buffer[kChunk];
    std::uint32_t bits[kChunk];
    for (std::int64_t begin = first; begin < first + share; begin += kChunk) {
      const std::int64_t count = std::min(kChunk, first + share - begin);
      const auto size = static_cast<std::size_t>(count);
      Quantization q = round;
      if (rounding == Rounding::kStochastic) {
        for (std::int64_t i = 0; i < count; ++i) {
          bits[i] = static_cast<std::uint32_t>(
              splitmix64(stream + static_cast<std::uint64_t>(begin + i)) >> 32);
        }
        q.random_bits = {bits, size};
      }
      std::byte* out = codes + begin * code_bytes;
      if (carrier_dtype == format) {
        encode_codes(values.subspan(static_cast<std::size_t>(begin), size), out, size, code_bytes,
                     spec, q);
        continue;
      }
      // Round in the format, then store exactly in the carrier: x / scale is exact there.
      std::memcpy(buffer, x.data() + begin, size * sizeof(float));
      fake_quantize({buffer, size}, spec, q);
      encode_codes({buffer, size}, out, size, code_bytes, carrier_spec,
                   {.scale = scale, .overflow = overflow});
    }
  });
  return operand;
}

GemmOperand gemm_operand(const ConstTensorView& x, const GemmInputFormats& formats,
                         GemmOperandRole role, std::uint64_t step, bool placeholder) {
  const bool gradient = role == GemmOperandRole::kGradient;
  const std::uint64_t stream = splitmix64(
      splitmix64(static_cast<std::uint64_t>(formats.seed) ^
                 (static_cast<std::uint64_t>(role) * 0x9E3779B97F4A7C15ull)) ^
      step);
  return gemm_operand(x, gradient ? formats.gradients : formats.inputs,
                      gradient ? formats.gradient_rounding : formats.rounding,
                      gradient ? formats.gradient_overflow : formats.overflow,
                      formats.per_tensor_scaling, stream, placeholder);
}

GemmOperandPair gemm_operands(const ConstTensorView& left, const ConstTensorView& right,
                              const GemmInputFormats& formats, std::uint64_t step,
                              bool placeholder) {
  return {gemm_operand(left, formats, GemmOperandRole::kLeft, step, placeholder),
          gemm_operand(right, formats, GemmOperandRole::kRight, step, placeholder)};
}

GemmOutput gemm_output(const TensorView& y, const KernelContext& context, std::size_t output) {
  GemmOutput c{.data = y.bytes(), .rows = y.shape().outer(), .cols = y.shape().inner()};
  if (y.dtype() == DType::kF32) return c;
  if (!gemm_takes_codes(y.dtype()) || output >= context.code_factors.size()) {
    throw Error(fmt::format(
        "{}: output {} is {}, which its GEMM can only write as codes under "
        "scale propagation (e4m3fn, e5m2, bf16, f16)",
        context.op != nullptr ? context.op->name : "gemm", output, dtype_name(y.dtype())));
  }
  c.type = gemm_carrier_type(y.dtype());
  c.overflow = context.code_overflow;
  return c;
}

bool gemm_takes_codes(DType dtype) {
  return dtype == DType::kE4M3FN || dtype == DType::kE5M2 || dtype == DType::kBF16 ||
         dtype == DType::kF16;
}

GemmOperand gemm_operand(const ConstTensorView& x, const GemmInputFormats& formats,
                         GemmOperandRole role, const KernelContext& context, std::size_t input) {
  if (x.dtype() == DType::kF32) return gemm_operand(x, formats, role, context.step);
  if (!gemm_takes_codes(x.dtype())) {
    throw Error(fmt::format(
        "{}: input {} holds {} codes, which a GEMM cannot take (e4m3fn, e5m2, "
        "bf16 or f16)",
        context.op != nullptr ? context.op->name : "gemm", input, dtype_name(x.dtype())));
  }
  GemmOperand operand;
  operand.matrix_ = {.data = x.bytes(),
                     .type = gemm_carrier_type(x.dtype()),
                     .rows = x.shape().outer(),
                     .cols = x.shape().inner(),
                     .scale = context.code_scale(input)};
  return operand;
}

GemmOperandPair gemm_operands(const ConstTensorView& left, const ConstTensorView& right,
                              const GemmInputFormats& formats, const KernelContext& context) {
  return {gemm_operand(left, formats, GemmOperandRole::kLeft, context, 0),
          gemm_operand(right, formats, GemmOperandRole::kRight, context, 1)};
}

}  // namespace detail
}  // namespace unitscale

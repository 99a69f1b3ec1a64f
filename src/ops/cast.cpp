#include "unitscale/ops/cast.hpp"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/counter_hash.hpp"
#include "ops/pointwise_common.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/detail/codec.hpp"
#include <string>

namespace unitscale {
namespace {

// fp32 as a format-layer descriptor, so that i32 → f32 rounds through the same encoder (from
// double, once) as every other target.
constexpr FormatSpec kFloat32Spec{8, 23, 127, true, NonFiniteEncoding::kIeee,
                                  ZeroEncoding::kSigned};
// Elements converted per pass through a stack buffer (decode, scale, encode).
constexpr std::int64_t kChunk = 1024;

struct CastConfig {
  DType to = DType::kF32;
  Rounding rounding = Rounding::kNearestEven;
  Overflow overflow = Overflow::kSaturate;
  float scale = 1.0f;
  std::int64_t seed = 0;
};

// Reads and validates the attributes; every error names the op.
CastConfig config_of(const Attributes& attrs) {
  CastConfig config;
  config.to = attrs.get_enum<DType>("cast", "dtype");
  config.rounding = attrs.get_enum<Rounding>("cast", "rounding", Rounding::kNearestEven);
  config.overflow = attrs.get_enum<Overflow>("cast", "overflow", Overflow::kSaturate);
  const double scale = attrs.get_double("cast", "scale", 1.0);
  config.scale = static_cast<float>(scale);
  if (!std::isfinite(config.scale) || !(config.scale > 0.0f)) {
    throw Error(fmt::format("cast: scale must be finite and positive in fp32, got {}", scale));
  }
  config.seed = attrs.get_int("cast", "seed", 0);
  if (config.to == DType::kI32 && config.rounding == Rounding::kStochastic) {
    throw Error("cast: stochastic rounding into i32 is not supported (choose nearest_even, "
                "nearest_away, toward_zero, up or down)");
  }
  return config;
}

FormatSpec spec_of(DType dtype) { return dtype_format(dtype).value_or(kFloat32Spec); }

// The random word of element `index`: a pure function of (seed, step, index).
struct RandomStream {
  std::uint64_t key;
  RandomStream(std::int64_t seed, std::uint64_t step)
      : key(detail::splitmix64(detail::splitmix64(static_cast<std::uint64_t>(seed)) ^ step)) {}
  std::uint32_t word(std::int64_t index) const {
    return static_cast<std::uint32_t>(
        detail::splitmix64(key + static_cast<std::uint64_t>(index)) >> 32);
  }
};

void store_code(std::byte* y, DType to, std::int64_t i, std::uint32_t code) {
  switch (dtype_size(to)) {
    case 4: std::memcpy(y + 4 * i, &code, 4); break;
    case 2: {
      const auto half = static_cast<std::uint16_t>(code);
      std::memcpy(y + 2 * i, &half, 2);
      break;
    }
    default: y[i] = static_cast<std::byte>(code); break;
  }
}

// x · scale rounded to an integer by `rounding`; NaN, and out-of-range values without saturation,
// are errors naming the element.
std::int32_t to_int32(double v, const CastConfig& config, std::int64_t index) {
  if (std::isnan(v)) {
    throw Error(fmt::format("cast: element {} is NaN, which has no i32 value", index));
  }
  double r = v;
  switch (config.rounding) {
    case Rounding::kNearestEven: r = v - std::remainder(v, 1.0); break;  // remainder ties to even
    case Rounding::kNearestAway: r = std::round(v); break;
    case Rounding::kTowardZero: r = std::trunc(v); break;
    case Rounding::kUp: r = std::ceil(v); break;
    case Rounding::kDown: r = std::floor(v); break;
    case Rounding::kStochastic: break;  // rejected by config_of
  }
  constexpr double kMin = std::numeric_limits<std::int32_t>::min();
  constexpr double kMax = std::numeric_limits<std::int32_t>::max();
  if (r < kMin || r > kMax || std::isinf(v)) {
    if (config.overflow == Overflow::kNonFinite) {
      throw Error(fmt::format("cast: element {} ({}) is outside the i32 range and overflow is "
                              "non_finite",
                              index, v));
    }
    return r < 0 ? std::numeric_limits<std::int32_t>::min()
                 : std::numeric_limits<std::int32_t>::max();
  }
  return static_cast<std::int32_t>(r);
}

// From i32: each value times the scale is exact in double and rounded once into the target.
void cast_from_int32(ConstTensorView x, TensorView y, const CastConfig& config,
                     const RandomStream& random) {
  const std::int32_t* in = x.data_as<std::int32_t>();
  const std::int64_t n = x.numel();
  if (config.to == DType::kI32) {
    std::int32_t* out = y.data_as<std::int32_t>();
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] = to_int32(in[i] * static_cast<double>(config.scale), config, i);
    }
    return;
  }
  const FormatSpec spec = spec_of(config.to);
  std::byte* out = y.bytes();
  detail::for_each_share(n, [&](std::int64_t begin, std::int64_t count) {
    for (std::int64_t i = begin; i < begin + count; ++i) {
      const double v = in[i] * static_cast<double>(config.scale);
      const RandomBits bits{config.rounding == Rounding::kStochastic ? random.word(i) : 0u, 0};
      store_code(out, config.to, i,
                 detail::encode_bits(v, spec, config.rounding, config.overflow, bits));
    }
  });
}

// Elements [begin, begin + n) of a floating tensor as fp32 values times `scale`.
void load_floats(ConstTensorView x, std::int64_t begin, std::int64_t n, float scale, float* out) {
  if (x.dtype() == DType::kF32) {
    const float* in = x.data() + begin;
    if (scale == 1.0f) {
      std::memcpy(out, in, static_cast<std::size_t>(n) * sizeof(float));
    } else {
      for (std::int64_t i = 0; i < n; ++i) out[i] = in[i] * scale;
    }
    return;
  }
  const auto size = static_cast<int>(dtype_size(x.dtype()));
  detail::decode_codes(x.bytes() + begin * size, static_cast<std::size_t>(n), size,
                       {out, static_cast<std::size_t>(n)}, *dtype_format(x.dtype()), scale);
}

// Whether y = x · scale converts without an fp32 buffer: into fp32 (decoding and scaling in one
// pass), or from fp32 times a power of two (1 included), encoded straight from x with the
// factor's reciprocal as the quantisation scale: dividing by 2^-k rounds exactly as multiplying
// by 2^k does, and the copy into a buffer is saved (scale propagation stores every output this
// way). Such spans convert in one call of any length; the others go through a kChunk buffer.
bool converts_directly(const ConstTensorView& x, const TensorView& y, float scale) {
  if (y.dtype() == DType::kF32) return true;
  int exponent = 0;
  return x.dtype() == DType::kF32 && std::isfinite(scale) && scale > 0.0f &&
         std::frexp(scale, &exponent) == 0.5f;
}

// Elements [begin, begin + count) of FP16 x as codes of y's 8-bit format, in one call of the bulk
// layer with no FP32 buffer (detail::transcode_f16_to_8bit); false, writing nothing, where it
// does not apply (another pair of dtypes, a scale, a rounding or a CPU it does not take).
bool transcoded(ConstTensorView x, TensorView y, std::int64_t begin, std::int64_t count,
                float scale, const Quantization& q) {
  return x.dtype() == DType::kF16 && dtype_size(y.dtype()) == 1 && scale == 1.0f &&
         detail::transcode_f16_to_8bit(reinterpret_cast<const std::uint16_t*>(x.bytes()) + begin,
                                       reinterpret_cast<std::uint8_t*>(y.bytes()) + begin,
                                       static_cast<std::size_t>(count), *dtype_format(y.dtype()),
                                       q);
}

// Elements [begin, begin + count) of y = x · scale in y's floating dtype, quantised with `q`;
// count ≤ kChunk unless converts_directly.
void cast_piece(ConstTensorView x, TensorView y, std::int64_t begin, std::int64_t count,
                float scale, Quantization q) {
  if (y.dtype() == DType::kF32) {
    load_floats(x, begin, count, scale, y.data() + begin);
    return;
  }
  alignas(64) float buffer[kChunk];
  const float* values = buffer;
  if (converts_directly(x, y, scale)) {
    values = x.data() + begin;
    q.scale = 1.0f / scale;
  } else {
    load_floats(x, begin, count, scale, buffer);
  }
  const auto size = static_cast<int>(dtype_size(y.dtype()));
  detail::encode_codes({values, static_cast<std::size_t>(count)}, y.bytes() + begin * size,
                       static_cast<std::size_t>(count), size, *dtype_format(y.dtype()), q);
}

void cast_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext& context) {
  cast_forward(in[0], out[0], attrs, context.step);
}

// Backward inputs: x, y (both absent: never read), grad_y.
void cast_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                          const Attributes& attrs, const KernelContext&) {
  if (!present(out[0])) return;
  const auto scale = static_cast<float>(attrs.get_double("cast", "scale", 1.0));
  detail::map_unary(in[2].data(), out[0].data(), out[0].numel(),
                    [scale](float g) { return scale * g; });
}

// A cast runs on the scaled data (OpDef::runs_on_scaled_data) and never rescales, as Scalify's
// casts: y's data is convert(x's data · scale) and y keeps x's scale, the "scale" attribute (1
// unless the cast dequantises or quantises with a factor) staying in the data. Likewise grad_x =
// scale · grad_y keeps grad_y's scale. Backward inputs: x, y (both absent), grad_y.
std::vector<Scale> cast_scale_rule(const ScaleRuleArgs& args) { return {args.scale(0)}; }
std::vector<Scale> cast_backward_scale_rule(const ScaleRuleArgs& args) { return {args.scale(2)}; }

std::vector<Shape> infer_cast(std::span<const Shape* const> in, const Attributes& attrs) {
  config_of(attrs);
  return {*in[0]};
}

std::vector<DType> infer_cast_dtype(std::span<const DType>, const Attributes& attrs) {
  return {config_of(attrs).to};
}

}  // namespace

void cast_forward(ConstTensorView x, TensorView y, const Attributes& attrs, std::uint64_t step) {
  const CastConfig config = config_of(attrs);
  if (x.shape() != y.shape() || y.dtype() != config.to) {
    throw Error(fmt::format("cast: output {} {} does not match input {} cast to {}",
                            y.shape().to_string(), dtype_name(y.dtype()), x.shape().to_string(),
                            dtype_name(config.to)));
  }
  const RandomStream random(config.seed, step);
  if (x.dtype() == DType::kI32) {
    cast_from_int32(x, y, config, random);
    return;
  }
  const std::int64_t n = x.numel();
  if (config.to == DType::kI32) {
    // Serial: the errors (NaN, out of range) must not be thrown inside a parallel region.
    float buffer[kChunk];
    std::int32_t* out = y.data_as<std::int32_t>();
    for (std::int64_t begin = 0; begin < n; begin += kChunk) {
      const std::int64_t count = std::min(kChunk, n - begin);
      load_floats(x, begin, count, config.scale, buffer);
      for (std::int64_t i = 0; i < count; ++i) out[begin + i] = to_int32(buffer[i], config, begin + i);
    }
    return;
  }
  const bool stochastic = config.rounding == Rounding::kStochastic;
  // Each call of the bulk codec has a fixed cost; pieces only where a buffer needs them.
  const bool whole_shares = !stochastic && converts_directly(x, y, config.scale);
  detail::for_each_share(n, [&](std::int64_t first, std::int64_t share) {
    if (!stochastic && transcoded(x, y, first, share, config.scale,
                                  {.rounding = config.rounding, .overflow = config.overflow})) {
      return;
    }
    std::uint32_t bits[kChunk];
    const std::int64_t piece = whole_shares ? share : kChunk;
    for (std::int64_t begin = first; begin < first + share; begin += piece) {
      const std::int64_t count = std::min(piece, first + share - begin);
      Quantization q{.rounding = config.rounding, .overflow = config.overflow};
      if (stochastic) {
        for (std::int64_t i = 0; i < count; ++i) bits[i] = random.word(begin + i);
        q.random_bits = {bits, static_cast<std::size_t>(count)};
      }
      cast_piece(x, y, begin, count, config.scale, q);
    }
  });
}

void cast_values(ConstTensorView x, TensorView y, float factor, Overflow overflow) {
  if (x.shape() != y.shape() || !is_floating(x.dtype()) || !is_floating(y.dtype())) {
    throw Error(fmt::format("cast_values: need floating tensors of one shape, got {} {} and {} {}",
                            x.shape().to_string(), dtype_name(x.dtype()), y.shape().to_string(),
                            dtype_name(y.dtype())));
  }
  const std::int64_t n = x.numel();
  const Quantization q{.rounding = Rounding::kNearestEven, .overflow = overflow};
  if (transcoded(x, y, 0, n, factor, q)) return;
  const std::int64_t piece =
      converts_directly(x, y, factor) ? std::max<std::int64_t>(n, 1) : kChunk;
  for (std::int64_t begin = 0; begin < n; begin += piece) {
    cast_piece(x, y, begin, std::min(piece, n - begin), factor, q);
  }
}

const OpDef kCastOp{
    .name = "cast",
    .inputs = {"x"},
    .attributes = {AttributeSpec::enumeration<DType>("dtype", kRequired),
                   AttributeSpec::enumeration<Rounding>("rounding"),
                   AttributeSpec::enumeration<Overflow>("overflow"),
                   AttributeSpec::real("scale"),
                   AttributeSpec::integer("seed")},
    .input_dtypes = {DTypeSet::all()},
    .infer_dtypes = infer_cast_dtype,
    .infer_shapes = infer_cast,
    .kernel = cast_kernel,
    .backward_kernel = cast_backward_kernel,
    .backward_reads = 0,
    .scale_propagation = cast_scale_rule,
    .backward_scale_propagation = cast_backward_scale_rule,
    .runs_on_scaled_data = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value cast(Value x, DType to, const CastOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(kCastOp, inputs,
                          {{"dtype", to},
                           {"rounding", options.rounding},
                           {"overflow", options.overflow},
                           {"scale", options.scale},
                           {"seed", options.seed}});
}

}  // namespace unitscale

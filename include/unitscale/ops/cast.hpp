#pragma once
// cast: converts a tensor between any two dtypes (include/unitscale/tensor/dtype.hpp) through the
// format layer's conversions.
//
//   forward                                          backward (g = ∂L/∂y, f32)
//   y = convert_to(x · scale)                        dx = scale · g   (x floating; i32 has none)
//
// Attributes: "dtype" (the target's name), "rounding" and "overflow" (format/rounding.hpp names;
// defaults nearest_even and saturate, what FP8 training recipes use), "scale" (finite, positive;
// default 1) and "seed" (stochastic rounding only).
//
// Exactness. Between floating dtypes the value is decoded exactly, multiplied by `scale` in fp32
// (no arithmetic at all for scale 1; exact for a power of two unless it leaves fp32's normal
// range) and rounded once, so with scale 1 the result is bit for bit the format layer's scalar
// convert<T>(x, rounding, overflow). Into f32 every floating value is exact: the result is the
// decoded value times the scale (±Inf stays ±Inf; rounding and overflow do not apply). From i32 the value x · scale is formed in double (exact: an
// int32 times a float fits in 53 bits) and rounded once into the target, so ids beyond 2^24 round
// correctly into f32. Into i32 the value is rounded to an integer by the same rounding mode; out of
// range values saturate to the int32 limits (overflow = saturate) or are an error (non_finite), and
// NaN is always an error naming the element.
//
// Stochastic rounding draws one random word per element from a counter-based hash of (seed, the
// executor's step, element index), so it is reproducible, fresh each step, and independent of the
// thread count; it is not offered into i32.
//
// The backward is the straight-through estimator that quantisation-aware training uses: rounding
// is treated as the identity, so the gradient is the derivative of x · scale.

#include "unitscale/ops/op_def.hpp"
#include <cstdint>
#include "unitscale/format/rounding.hpp"
#include "unitscale/graph/graph.hpp"

namespace unitscale {

extern const OpDef kCastOp;  // inputs: x

// The kernel: `y` has the target dtype and x's shape.
void cast_forward(ConstTensorView x, TensorView y, const Attributes& attrs, std::uint64_t step);
// y = x · factor in y's floating dtype, rounded to nearest even: cast_forward's result for those
// settings, computed on the calling thread and without reading attributes, for callers that
// convert many small pieces (the scaled ops' chunks).
void cast_values(ConstTensorView x, TensorView y, float factor, Overflow overflow);

// ------------------------------------------------------------------------------------------------
// Builder for cast.
//
//   Value q = cast(x, DType::kE4M3FN);                                  // round to nearest, saturate
//   Value q = cast(x, DType::kE5M2, {.rounding = Rounding::kStochastic, .seed = 7});
//   Value d = cast(q, DType::kF32, {.scale = 0.25});                    // dequantise: q · 0.25
//   Value f = cast(ids, DType::kF32);                                   // i32 ids as floats

struct CastOptions {
  Rounding rounding = Rounding::kNearestEven;
  Overflow overflow = Overflow::kSaturate;
  double scale = 1.0;       // y = convert(x · scale); finite and positive
  std::int64_t seed = 0;    // stochastic rounding's stream
};

Value cast(Value x, DType to, const CastOptions& options = {});

}  // namespace unitscale

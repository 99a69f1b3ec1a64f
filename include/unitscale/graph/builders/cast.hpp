#pragma once
// Builder for cast (the conversion rules are in ops/cast.hpp).
//
//   Value q = cast(x, DType::kE4M3FN);                                  // round to nearest, saturate
//   Value q = cast(x, DType::kE5M2, {.rounding = Rounding::kStochastic, .seed = 7});
//   Value d = cast(q, DType::kF32, {.scale = 0.25});                    // dequantise: q · 0.25
//   Value f = cast(ids, DType::kF32);                                   // i32 ids as floats

#include <cstdint>

#include "unitscale/format/rounding.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/cast.hpp"

namespace unitscale {

struct CastOptions {
  Rounding rounding = Rounding::kNearestEven;
  Overflow overflow = Overflow::kSaturate;
  double scale = 1.0;       // y = convert(x · scale); finite and positive
  std::int64_t seed = 0;    // stochastic rounding's stream
};

Value cast(Value x, DType to, const CastOptions& options = {});

}  // namespace unitscale

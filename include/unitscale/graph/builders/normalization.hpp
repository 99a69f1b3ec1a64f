#pragma once
// Builders for layer_norm and rms_norm over the last dimension (the maths and scale rules are in
// ops/normalization.hpp). Affine parameters are off by default (the u-μP design default); pass a
// weight (and for layer_norm a bias) of shape [d] to turn them on.
//
//   Value h = rms_norm(x);                                       // no affine
//   Value h = layer_norm(x, {.weight = gain, .bias = shift});    // affine, eps 1e-5
//   Value h = rms_norm(x, {.weight = gain, .eps = 1e-6});

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/normalization.hpp"

namespace unitscale {

struct LayerNormOptions {
  Value weight = {};  // [d], optional
  Value bias = {};    // [d], optional
  double eps = kDefaultNormEps;
};

struct RmsNormOptions {
  Value weight = {};  // [d], optional
  double eps = kDefaultNormEps;
};

Value layer_norm(Value x, const LayerNormOptions& options = {});
Value rms_norm(Value x, const RmsNormOptions& options = {});

}  // namespace unitscale

#pragma once
// The exponents of the fan-based unit-scaling rule shared by the GEMM-like ops (linear,
// linear_readout, conv1d): α = fan_in^-alpha, β_x = fan_out^-beta_x, β_W = β_b = B^-beta_weight
// (the fans and B per op are in ops/linear.hpp and ops/conv1d.hpp). The builders record them as the
// attributes power_alpha, power_beta_x and power_beta_weight.

#include "unitscale/ops/attributes.hpp"

namespace unitscale {

struct ScalePowers {
  double alpha = 0.5;
  double beta_x = 0.5;
  double beta_weight = 0.5;

  // Adds the three power_* attributes to `attrs`.
  Attributes& record_in(Attributes& attrs) const {
    return attrs.set("power_alpha", alpha)
        .set("power_beta_x", beta_x)
        .set("power_beta_weight", beta_weight);
  }
};

}  // namespace unitscale

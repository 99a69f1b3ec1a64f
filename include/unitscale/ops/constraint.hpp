#pragma once
// Unit-scaling constraints (arXiv 2303.11257; docs/unit_scaling.md) and the scaling mode of a
// graph.
//
// A unit-scaled op has a forward scale α and a backward scale β per input. Where gradient paths
// meet again (residual forks, shared inputs) the ratios β/α must agree, so by default the scales
// are constrained to one value; Constraint::kNone is only safe on cut edges (see the spec's
// cut-edge rule), e.g. linear_readout.

#include <string_view>
#include <vector>

#include "unitscale/ops/attributes.hpp"

namespace unitscale {

enum class Constraint {
  kNone,               // scales stay independent
  kToOutputScale,      // all = α (the default)
  kToGradInputScale,   // all = β of the (single) input; arity exactly 2
  kToLeftGradScale,    // all = β of the left operand; arity exactly 3 (matmul)
  kToRightGradScale,   // all = β of the right operand; arity exactly 3 (matmul)
  kGMean,              // geometric mean (the Unit Scaling paper's default)
  kHMean,              // harmonic mean (Glorot-like)
  kAMean,              // arithmetic mean
};

// Whether an op applies its unit-scaling rule or runs with all scales 1 (how SP models use it).
enum class Scaling { kUnscaled, kUnit };

// c(s1, ..., sn), the value every scale is set to. Throws unitscale::Error if c's arity does not
// match scales.size() or c is kNone.
double constraint_value(Constraint c, const std::vector<double>& scales);

// Returns the scales after the constraint: unchanged for kNone, otherwise all equal to c(scales).
std::vector<double> apply_constraint(Constraint c, std::vector<double> scales);

// "to_output_scale", "gmean", "none", ... (the reference library's names). Unknown names throw
// unitscale::Error listing the valid ones.
Constraint constraint_from_name(std::string_view name);
std::string_view constraint_name(Constraint c);
template <>
struct EnumAttribute<Constraint> {
  static const EnumType& type();
};

// LI(a, lo, hi) = lo^(1-a) · hi^a, the logarithmic interpolation used by the nonlinearity rules.
double log_interpolate(double a, double lo, double hi);

}  // namespace unitscale

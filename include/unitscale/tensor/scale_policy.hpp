#pragma once
// How a tensor's dequantisation scale is chosen when it is stored in a low-precision format
// (value ≈ scale · decode(code), code = cast(value / scale)). Three policies, as the FP8 libraries
// users know have them, for the tensors that are not unit-scaled:
//
//   current amax   s = amax · 2^margin / max_format, by default rounded up to a power of two
//                  (the per-tensor "just-in-time" scaling of TransformerEngine and torchao)
//   delayed amax   s_t from a history of the last H steps' amax (TransformerEngine's
//                  DelayedScaling); the cast must saturate, as s_t can be stale
//   MX blocks      one E8M0 scale per block of 32 elements (OCP Microscaling v1.0), chosen by
//                  RCEIL (never clips; the default) or FLOOR (the OCP text; can clip the maximum)
//
// Scale propagation (Scalify, docs/scalify.md) mostly needs none of them: it predicts scales from
// the ops' rules instead of measuring amax.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "unitscale/format/format_spec.hpp"
#include "unitscale/tensor/scale.hpp"

namespace unitscale {

// ---- current amax scaling ----------------------------------------------------------------------

struct AmaxScaling {
  int margin = 0;             // leave 2^margin of headroom above the amax
  bool power_of_two = true;   // round s up to 2^⌈log2 s⌉ (the quantised amax never overflows)
  double amax_epsilon = 0.0;  // amax ← max(amax, ε), for tensors that may be all zeros
};

struct ChosenScale {
  Scale scale;
  // amax was 0, ±Inf or NaN (after the ε floor): the scale is 1 and nothing was measured.
  bool degenerate = false;
};

// The largest finite value of `format` (448 for E4M3FN, 57344 for E5M2, 65504 for FP16).
double format_max(const FormatSpec& format);

// The scale for a tensor whose max |x| is `amax`, stored in `format`, kept within [2^-126, 2^127]
// so that it and its inverse are finite floats.
ChosenScale amax_scale(float amax, const FormatSpec& format, const AmaxScaling& policy = {});

// ---- delayed scaling ---------------------------------------------------------------------------

enum class AmaxAlgorithm : std::uint8_t { kMax, kMostRecent };

struct DelayedScalingOptions {
  int history_length = 1024;  // TransformerEngine's default; 16–32 adapts faster
  AmaxAlgorithm algorithm = AmaxAlgorithm::kMax;
  AmaxScaling scaling = {};  // margin and power-of-two rounding of each new scale
};

// One quantised tensor role (a layer's input, weight or gradient), step by step: quantise with
// scale() during a step and record() the amax seen, then end_step(). A role that recorded nothing
// in a step is not rolled, and a history whose selected amax is 0 or not finite keeps the scale.
class DelayedScaling {
 public:
  DelayedScaling(const FormatSpec& format, const DelayedScalingOptions& options = {});

  Scale scale() const { return scale_; }  // 1 before the first step
  void record(float amax);                // max over the calls of one step; NaN sticks
  void end_step();
  // Oldest first, at most history_length entries.
  std::vector<float> history() const;

 private:
  FormatSpec format_;
  DelayedScalingOptions options_;
  std::vector<float> ring_;
  std::size_t next_ = 0, filled_ = 0;
  bool recorded_ = false;
  float step_amax_ = 0.0f;
  Scale scale_;
};

// ---- MX block scales ---------------------------------------------------------------------------

enum class MxScaleRule : std::uint8_t { kRceil, kFloor };
std::string_view mx_scale_rule_name(MxScaleRule rule);  // "rceil", "floor"

// The E8M0 code (value 2^(code − 127)) of the scale of a block with max |x| = `amax` whose elements
// are stored in `element` (e4m3fn, e5m2, e3m2fn, e2m3fn, e2m1fn):
//   RCEIL  2^⌈log2(amax / max_element)⌉ from t = amax / max_element in float: t's exponent field,
//          plus 1 if its mantissa is not zero; 0 → 0x00, +Inf → 0xFE, NaN → 0xFF, at most 0xFE
//   FLOOR  2^(⌊log2 amax⌋ − ⌊log2 max_element⌋), clipped to 2^±127; 0 → 0x00, NaN → 0xFF
std::uint8_t mx_scale_code(float amax, const FormatSpec& element,
                           MxScaleRule rule = MxScaleRule::kRceil);

}  // namespace unitscale

#include "unitscale/tensor/scale_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"

namespace unitscale {

double format_max(const FormatSpec& format) {
  return static_cast<double>(detail::decode_bits(format.max_magnitude_code(), format));
}

ChosenScale amax_scale(float amax, const FormatSpec& format, const AmaxScaling& policy) {
  const double a = std::max(static_cast<double>(amax), policy.amax_epsilon);
  if (!std::isfinite(a) || !(a > 0)) return {Scale(), true};
  // Kept within float's normal range, so that the scale and its inverse (the quant multiplier)
  // are both finite floats: TransformerEngine clamps the multiplier to FLT_MAX likewise.
  const double s = std::clamp(a * std::ldexp(1.0, policy.margin) / format_max(format),
                              static_cast<double>(std::numeric_limits<float>::min()), 0x1p127);
  return {policy.power_of_two ? Scale::rounded(s, Pow2Rounding::kUp) : Scale::of(s), false};
}

DelayedScaling::DelayedScaling(const FormatSpec& format, const DelayedScalingOptions& options)
    : format_(format), options_(options) {
  if (options.history_length < 1) {
    throw Error(
        fmt::format("DelayedScaling: history_length must be >= 1, got {}", options.history_length));
  }
  ring_.assign(static_cast<std::size_t>(options.history_length), 0.0f);
}

void DelayedScaling::record(float amax) {
  const float a = std::abs(amax);
  if (!recorded_) {
    step_amax_ = a;
  } else if (std::isnan(a) || std::isnan(step_amax_)) {
    step_amax_ = std::numeric_limits<float>::quiet_NaN();
  } else {
    step_amax_ = std::max(step_amax_, a);
  }
  recorded_ = true;
}

void DelayedScaling::end_step() {
  if (!recorded_) return;  // a role that did not run is not rolled
  ring_[next_] = step_amax_;
  next_ = (next_ + 1) % ring_.size();
  filled_ = std::min(filled_ + 1, ring_.size());
  recorded_ = false;
  step_amax_ = 0.0f;

  float selected = 0.0f;
  if (options_.algorithm == AmaxAlgorithm::kMostRecent) {
    selected = ring_[(next_ + ring_.size() - 1) % ring_.size()];
  } else {
    for (std::size_t i = 0; i < filled_; ++i) {
      const float a = ring_[i];
      selected = std::isnan(a) || std::isnan(selected) ? std::numeric_limits<float>::quiet_NaN()
                                                       : std::max(selected, a);
    }
  }
  const ChosenScale next = amax_scale(selected, format_, options_.scaling);
  if (!next.degenerate) scale_ = next.scale;
}

std::vector<float> DelayedScaling::history() const {
  std::vector<float> h;
  for (std::size_t i = 0; i < filled_; ++i) {
    h.push_back(ring_[(next_ + ring_.size() - filled_ + i) % ring_.size()]);
  }
  return h;
}

std::string_view mx_scale_rule_name(MxScaleRule rule) {
  return rule == MxScaleRule::kRceil ? "rceil" : "floor";
}

std::uint8_t mx_scale_code(float amax, const FormatSpec& element, MxScaleRule rule) {
  const float a = std::abs(amax);
  if (std::isnan(a)) return 0xFF;
  if (a == 0.0f) return 0x00;
  const double max_element = format_max(element);
  if (rule == MxScaleRule::kRceil) {
    if (std::isinf(a)) return 0xFE;
    const auto t = static_cast<float>(static_cast<double>(a) / max_element);  // RNE to float
    const auto bits = std::bit_cast<std::uint32_t>(t);
    const std::uint32_t code = ((bits >> 23) & 0xFFu) + ((bits & 0x7FFFFFu) != 0 ? 1u : 0u);
    return static_cast<std::uint8_t>(std::min<std::uint32_t>(code, 0xFE));
  }
  const int emax_element = static_cast<int>(std::floor(std::log2(max_element)));
  const int e = std::isinf(a) ? 127 : pow2_decompose(a).exponent - emax_element;
  return static_cast<std::uint8_t>(std::clamp(e, -127, 127) + 127);
}

}  // namespace unitscale

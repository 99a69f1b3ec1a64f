#include "unitscale/ops/dynamic_rescale.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/ops/cast.hpp"

namespace unitscale {

std::string_view rescale_statistic_name(RescaleStatistic statistic) {
  switch (statistic) {
    case RescaleStatistic::kMax:
      return "max";
    case RescaleStatistic::kL1:
      return "l1";
    case RescaleStatistic::kL2:
      return "l2";
  }
  return "?";
}

RescaleStatistic rescale_statistic_from_name(std::string_view name) {
  for (const auto s : {RescaleStatistic::kMax, RescaleStatistic::kL1, RescaleStatistic::kL2}) {
    if (rescale_statistic_name(s) == name) return s;
  }
  throw Error(fmt::format("unknown rescale statistic '{}'; valid names: max, l1, l2", name));
}

std::string_view rescale_direction_name(RescaleDirection direction) {
  return direction == RescaleDirection::kForward ? "forward" : "backward";
}

RescaleDirection rescale_direction_from_name(std::string_view name) {
  if (name == "forward") return RescaleDirection::kForward;
  if (name == "backward") return RescaleDirection::kBackward;
  throw Error(fmt::format("unknown rescale direction '{}'; valid names: forward, backward", name));
}

const EnumType& EnumAttribute<RescaleStatistic>::type() {
  return enum_type<RescaleStatistic, rescale_statistic_name, rescale_statistic_from_name>(
      "rescale statistic");
}

const EnumType& EnumAttribute<RescaleDirection>::type() {
  return enum_type<RescaleDirection, rescale_direction_name, rescale_direction_from_name>(
      "rescale direction");
}

namespace {

// The statistic's accumulation over one block: a sum (of |x| or x²) in four interleaved double
// chains, or the max |x| (NaN wins).
double block_statistic(const float* x, std::size_t n, RescaleStatistic statistic) {
  if (statistic == RescaleStatistic::kMax) {
    // A float maximum is exact, so the lanes need no double; NaN is tracked apart, which lets the
    // compiler turn the loop into vector max instructions (a NaN-propagating select did not
    // vectorise, and made the optimizer moments' measurement the slowest part of their update).
    constexpr std::size_t kLanes = 16;
    float lanes[kLanes] = {};
    bool unordered = false;
    std::size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (std::size_t k = 0; k < kLanes; ++k) {
        const float a = std::fabs(x[i + k]);
        lanes[k] = a > lanes[k] ? a : lanes[k];
        unordered |= a != a;
      }
    }
    float acc = 0.0f;
    for (; i < n; ++i) {
      const float a = std::fabs(x[i]);
      acc = a > acc ? a : acc;
      unordered |= a != a;
    }
    for (const float lane : lanes) acc = lane > acc ? lane : acc;
    return unordered ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(acc);
  }
  const bool squares = statistic == RescaleStatistic::kL2;
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (std::size_t k = 0; k < 4; ++k) {
      const double a = std::abs(static_cast<double>(x[i + k]));
      acc[k] += squares ? a * a : a;
    }
  }
  for (; i < n; ++i) {
    const double a = std::abs(static_cast<double>(x[i]));
    acc[0] += squares ? a * a : a;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace

// Blocks of a fixed size, combined in order: the result depends on the values only, never on the
// thread count, so scaled runs stay reproducible bit for bit (optimizer states are rescaled from
// it every step).
double rescale_block_partial(std::span<const float> block, RescaleStatistic statistic) {
  return block_statistic(block.data(), block.size(), statistic);
}

double rescale_statistic_of_partials(std::span<const double> partials, std::size_t count,
                                     RescaleStatistic statistic) {
  double acc = 0.0;
  for (const double p : partials) {
    if (statistic == RescaleStatistic::kMax) {
      acc = std::isnan(p) || p > acc ? p : acc;
    } else {
      acc += p;
    }
  }
  if (count == 0) return 0.0;
  const auto n = static_cast<double>(count);
  if (statistic == RescaleStatistic::kL1) return acc / n;
  if (statistic == RescaleStatistic::kL2) return std::sqrt(acc / n);
  return acc;
}

double rescale_statistic(std::span<const float> values, RescaleStatistic statistic) {
  if (values.empty()) return 0.0;
  constexpr std::size_t kBlock = kRescaleStatisticBlock;
  const std::size_t blocks = (values.size() + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks);
  const auto block_count = static_cast<std::int64_t>(blocks);
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (std::int64_t b = 0; b < block_count; ++b) {
    const std::size_t first = static_cast<std::size_t>(b) * kBlock;
    partial[static_cast<std::size_t>(b)] =
        block_statistic(values.data() + first, std::min(kBlock, values.size() - first), statistic);
  }
  return rescale_statistic_of_partials(partial, values.size(), statistic);
}

namespace {

constexpr std::string_view kOp = "dynamic_rescale";

// A finite, positive real attribute.
double positive(const Attributes& attrs, std::string_view name, double fallback) {
  const double value = attrs.get_double(kOp, name, fallback);
  if (!std::isfinite(value) || value <= 0) {
    throw Error(fmt::format("{}: {} must be finite and positive, got {}", kOp, name, value));
  }
  return value;
}

double floor_of(const Attributes& attrs) { return positive(attrs, "floor", 0x1p-14); }
double target_of(const Attributes& attrs) { return positive(attrs, "target", 1.0); }

std::vector<Shape> infer_dynamic_rescale(std::span<const Shape* const> in,
                                         const Attributes& attrs) {
  floor_of(attrs);
  target_of(attrs);
  return {*in[0]};
}

void copy_kernel(const ConstTensorView& from, const TensorView& to) {
  if (present(to) && from.data() != to.data()) {
    std::memcpy(to.data(), from.data(), from.byte_size());
  }
}

void dynamic_rescale_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes&, const KernelContext&) {
  copy_kernel(in[0], out[0]);
}

// Backward inputs: x, y (both absent), grad_y.
void dynamic_rescale_backward_kernel(std::span<const ConstTensorView> in,
                                     std::span<const TensorView> out, const Attributes&,
                                     const KernelContext&) {
  copy_kernel(in[2], out[0]);
}

// n = max(p2(stat(data) / target), floor) for the data of input `input`; 1 when the rule has no
// data, or the statistic is 0 or not finite (nothing to re-centre on).
Scale rescale_factor(const ScaleRuleArgs& args, std::size_t input) {
  if (args.data.size() <= input || !args.data[input].present()) return Scale{};
  const ConstTensorView& data = args.data[input];
  std::vector<float> decoded;
  std::span<const float> values;
  if (data.dtype() == DType::kF32) {
    values = data.span();
  } else {
    decoded.resize(static_cast<std::size_t>(data.numel()));
    cast_forward(data, TensorView(decoded.data(), data.shape()), {{"dtype", DType::kF32}}, 0);
    values = decoded;
  }
  const auto statistic =
      args.attrs.get_enum<RescaleStatistic>(kOp, "statistic", RescaleStatistic::kL2);
  const double stat = rescale_statistic(values, statistic);
  if (!std::isfinite(stat) || stat == 0.0) return Scale{};
  const Scale n = args.p2(stat / target_of(args.attrs));
  const Scale floor = args.p2(floor_of(args.attrs));
  return n.value() < floor.value() ? floor : n;
}

RescaleDirection direction_of(const Attributes& attrs) {
  return attrs.get_enum<RescaleDirection>(kOp, "direction", RescaleDirection::kForward);
}

// The forward variant moves the statistic of x's data into the scale; the backward one leaves it.
std::vector<Scale> dynamic_rescale_scale_rule(const ScaleRuleArgs& args) {
  if (direction_of(args.attrs) == RescaleDirection::kBackward) return {args.scale(0)};
  return {args.scale(0) * rescale_factor(args, 0)};
}

// Backward inputs: x, y (both absent), grad_y: the backward variant re-centres grad_y's data.
std::vector<Scale> dynamic_rescale_backward_scale_rule(const ScaleRuleArgs& args) {
  if (direction_of(args.attrs) == RescaleDirection::kForward) return {args.scale(2)};
  return {args.scale(2) * rescale_factor(args, 2)};
}

}  // namespace

const OpDef kDynamicRescaleOp{
    .name = kOp,
    .inputs = {"x"},
    .attributes = {AttributeSpec::enumeration<RescaleStatistic>("statistic"),
                   AttributeSpec::enumeration<RescaleDirection>("direction"),
                   AttributeSpec::real("floor"), AttributeSpec::real("target")},
    .infer_shapes = infer_dynamic_rescale,
    .kernel = dynamic_rescale_kernel,
    .backward_kernel = dynamic_rescale_backward_kernel,
    .backward_reads = 0b00,
    .scale_propagation = dynamic_rescale_scale_rule,
    .backward_scale_propagation = dynamic_rescale_backward_scale_rule,
};

Value dynamic_rescale(Value x, const DynamicRescaleOptions& options) {
  const Value inputs[] = {x};
  return x.graph().apply1(kDynamicRescaleOp, inputs,
                          {{"statistic", options.statistic},
                           {"direction", options.direction},
                           {"floor", options.floor},
                           {"target", options.target}});
}

}  // namespace unitscale

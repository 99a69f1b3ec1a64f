#pragma once
// dynamic_rescale: Scalify's dynamic rescaling (arXiv 2407.17353 §3). On values it is the identity,
// forward and backward; under scale propagation (graph/propagate_scales.hpp) it re-centres a
// value's data, or its gradient's, from a statistic of that data:
//
//   n = max(p2(stat(data) / target), floor)     data ← data / n,   scale ← scale · n
//
// so the represented value is unchanged (exactly, for power-of-two n) and stat(data) lands in
// [target, 2·target) with the default rounding (target 1 by default; current-amax scaling puts
// the max at half an FP8 format's largest value). Statistics are taken on the data alone, so they
// never overflow its format, and accumulate in double:
//
//   max:  max |d|          l1:  mean |d|          l2:  √mean(d²)
//
// Direction kForward rescales the value itself; kBackward leaves the forward pass alone and
// rescales the gradient flowing back through it (Scalify's *_grad variants), e.g. on the logits
// before the loss, whose gradient (softmax − onehot)/batch the rules cannot see coming. Data that
// is all zeros, or not finite, leaves the scale as it is. The floor (default 2^-14) keeps a nearly
// zero tensor from taking a scale that would blow later values up.
//
//   Value z = dynamic_rescale(logits, {.direction = RescaleDirection::kBackward});

#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

enum class RescaleStatistic : std::uint8_t { kMax, kL1, kL2 };
enum class RescaleDirection : std::uint8_t { kForward, kBackward };
std::string_view rescale_statistic_name(RescaleStatistic statistic);  // "max", "l1", "l2"
RescaleStatistic rescale_statistic_from_name(std::string_view name);
std::string_view rescale_direction_name(RescaleDirection direction);  // "forward", "backward"
RescaleDirection rescale_direction_from_name(std::string_view name);

template <>
struct EnumAttribute<RescaleStatistic> {
  static const EnumType& type();
};
template <>
struct EnumAttribute<RescaleDirection> {
  static const EnumType& type();
};

extern const OpDef kDynamicRescaleOp;  // inputs: x

// The statistic of some values, accumulated in double (0 for none), in parallel over fixed blocks
// combined in order: the same bits whatever the thread count.
double rescale_statistic(std::span<const float> values, RescaleStatistic statistic);

// rescale_statistic a block at a time, for callers that see the values so (the scaled optimizer
// updates): the partial of each block of kRescaleStatisticBlock values (the last may be shorter),
// then the statistic of the partials in block order, over `count` values: the same bits as
// rescale_statistic of all the values.
inline constexpr std::size_t kRescaleStatisticBlock = std::size_t{1} << 14;
double rescale_block_partial(std::span<const float> block, RescaleStatistic statistic);
double rescale_statistic_of_partials(std::span<const double> partials, std::size_t count,
                                     RescaleStatistic statistic);

struct DynamicRescaleOptions {
  RescaleStatistic statistic = RescaleStatistic::kL2;
  RescaleDirection direction = RescaleDirection::kForward;
  double floor = 0x1p-14;  // finite, > 0
  double target = 1.0;     // finite, > 0: where the statistic of the data lands
};

Value dynamic_rescale(Value x, const DynamicRescaleOptions& options = {});

}  // namespace unitscale

#include "unitscale/optim/schedule.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "unitscale/error.hpp"

namespace unitscale {

std::string_view schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant:
      return "constant";
    case ScheduleKind::kWarmupCosine:
      return "warmup_cosine";
  }
  return "?";
}

ScheduleKind schedule_kind_from_name(std::string_view name) {
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "warmup_cosine") return ScheduleKind::kWarmupCosine;
  throw Error(fmt::format("unknown schedule '{}' (expected constant or warmup_cosine)", name));
}

const EnumType& EnumAttribute<ScheduleKind>::type() {
  return enum_type<ScheduleKind, schedule_kind_name, schedule_kind_from_name>("schedule");
}

void Schedule::check() const {
  if (warmup_steps < 0) {
    throw Error(fmt::format("schedule: warmup_steps must be ≥ 0, got {}", warmup_steps));
  }
  if (kind == ScheduleKind::kWarmupCosine) {
    if (total_steps <= warmup_steps) {
      throw Error(fmt::format(
          "schedule warmup_cosine: total_steps ({}) must be greater than warmup_steps ({})",
          total_steps, warmup_steps));
    }
    if (!(final_ratio >= 0.0 && final_ratio <= 1.0)) {
      throw Error(fmt::format("schedule warmup_cosine: final_ratio must be in [0, 1], got {}",
                              final_ratio));
    }
  }
}

double Schedule::factor(std::int64_t step) const {
  check();
  if (step < 1) throw Error(fmt::format("schedule: steps count from 1, got {}", step));
  const auto t = static_cast<double>(step);
  if (step <= warmup_steps) return t / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::kConstant) return 1.0;
  if (step >= total_steps) return final_ratio;
  const double progress = (t - static_cast<double>(warmup_steps)) /
                          static_cast<double>(total_steps - warmup_steps);
  return final_ratio +
         (1.0 - final_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

std::string Schedule::to_string() const {
  if (kind == ScheduleKind::kConstant) {
    return warmup_steps > 0 ? fmt::format("constant(warmup {})", warmup_steps) : "constant";
  }
  return fmt::format("warmup_cosine(warmup {}, total {}, final {:g})", warmup_steps, total_steps,
                     final_ratio);
}

namespace {

Schedule schedule_of(const Attributes& attrs) {
  constexpr std::string_view op = "lr_schedule";
  return {.kind = attrs.get_enum<ScheduleKind>(op, "kind"),
          .warmup_steps = attrs.get_int(op, "warmup_steps", 0),
          .total_steps = attrs.get_int(op, "total_steps", 0),
          .final_ratio = attrs.get_double(op, "final_ratio", 0.0)};
}

std::vector<Shape> infer_lr_schedule(std::span<const Shape* const>, const Attributes& attrs) {
  schedule_of(attrs).check();
  if (attrs.get_int("lr_schedule", "step") < 1) {
    throw Error(fmt::format("lr_schedule: step must be ≥ 1, got {}",
                            attrs.get_int("lr_schedule", "step")));
  }
  return {Shape{1}};
}

void lr_schedule_kernel(std::span<const ConstTensorView>, std::span<const TensorView> out,
                        const Attributes& attrs, const KernelContext& context) {
  const std::int64_t step =
      attrs.get_int("lr_schedule", "step") + static_cast<std::int64_t>(context.step);
  out[0].data()[0] = static_cast<float>(schedule_of(attrs).factor(step));
}

// The factor is a learning-rate multiplier in [0, 1] (warmup t/T, cosine decay): a scalar the
// op has no input to inherit a scale from, O(1) by construction: scale 1.
std::vector<Scale> lr_schedule_scale_rule(const ScaleRuleArgs&) { return {Scale{}}; }

}  // namespace

const OpDef kLrScheduleOp{
    .name = "lr_schedule",
    .inputs = {},
    .outputs = {"factor"},
    .attributes = {AttributeSpec::enumeration<ScheduleKind>("kind", kRequired),
                   AttributeSpec::integer("warmup_steps"), AttributeSpec::integer("total_steps"),
                   AttributeSpec::real("final_ratio"), AttributeSpec::integer("step", kRequired)},
    .infer_shapes = infer_lr_schedule,
    .kernel = lr_schedule_kernel,
    .scale_propagation = lr_schedule_scale_rule,
};

Value lr_schedule(Graph& graph, const Schedule& schedule, std::int64_t first_step) {
  return graph.apply1(kLrScheduleOp, {},
                      {{"kind", schedule.kind},
                       {"warmup_steps", schedule.warmup_steps},
                       {"total_steps", schedule.total_steps},
                       {"final_ratio", schedule.final_ratio},
                       {"step", first_step}});
}

}  // namespace unitscale

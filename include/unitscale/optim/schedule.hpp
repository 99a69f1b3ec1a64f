#pragma once
// Learning-rate schedules. A schedule is a factor r(t) of the step t = 1, 2, ... that multiplies
// every parameter's base learning rate (η times its parametrization factor): it never overwrites
// one, so μP and u-μP's per-parameter factors survive it (replacing the LRs of parameter groups by
// an absolute value is a classic way to lose them).
//
//   constant:       r(t) = min(1, t/W)                                   (W = warmup_steps; 1 if 0)
//   warmup_cosine:  r(t) = t/W                                           for t ≤ W
//                   r(t) = f + (1 − f)·½·(1 + cos(π·(t − W)/(T − W)))    for W < t ≤ T
//                   r(t) = f                                             for t > T
//   (T = total_steps, f = final_ratio.) The warmup counts from 1, so the first step already moves
//   the parameters (by 1/W of the peak), and r(T) = f exactly.
//
// In a training graph the factor is the output of an lr_schedule node, which has no inputs and
// reads the executor's step counter (KernelContext::step), so one recorded graph runs the whole
// schedule; the update ops take it as their lr_multiplier input.

#include <cstdint>
#include <string>
#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

enum class ScheduleKind { kConstant, kWarmupCosine };
std::string_view schedule_kind_name(ScheduleKind kind);  // "constant" / "warmup_cosine"
// Throws unitscale::Error listing the valid names for anything else.
ScheduleKind schedule_kind_from_name(std::string_view name);
template <>
struct EnumAttribute<ScheduleKind> {
  static const EnumType& type();
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::kConstant;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  // warmup_cosine: where the decay ends (> warmup_steps)
  double final_ratio = 0.0;      // warmup_cosine: r at and after total_steps, in [0, 1]

  static Schedule constant(std::int64_t warmup_steps = 0) {
    return {.kind = ScheduleKind::kConstant, .warmup_steps = warmup_steps};
  }
  static Schedule warmup_cosine(std::int64_t warmup_steps, std::int64_t total_steps,
                                double final_ratio = 0.0) {
    return {.kind = ScheduleKind::kWarmupCosine,
            .warmup_steps = warmup_steps,
            .total_steps = total_steps,
            .final_ratio = final_ratio};
  }

  // Throws unitscale::Error naming the field for a negative warmup, total_steps ≤ warmup_steps
  // (cosine), or a final ratio outside [0, 1].
  void check() const;
  // r(step) for step ≥ 1 (the formulas above, in double). Throws for step < 1.
  double factor(std::int64_t step) const;
  // "warmup_cosine(warmup 100, total 1000, final 0)"
  std::string to_string() const;
};

// No inputs; output [1] f32: r(t) with t = the "step" attribute plus the executor's step counter.
extern const OpDef kLrScheduleOp;

// Records the schedule's factor into `graph`; `first_step` is the step of the executor's first
// run (as the update ops' step), so Executor::set_step resumes the schedule too.
Value lr_schedule(Graph& graph, const Schedule& schedule, std::int64_t first_step = 1);

}  // namespace unitscale

#pragma once
// Optimizer update ops: SGD (momentum, Nesterov) and Adam/AdamW recorded into a graph as nodes
// whose outputs overwrite state values in place (OpDef::in_place, Graph::state), so one executor
// run is forward + backward + update. Not differentiable.
//
// Per element, with w the parameter, g the gradient, s the gradient scale (a multiplier on the
// incoming gradient, for unit-scaled or loss-scaled gradients) times the optional grad_multiplier
// input (a clipping coefficient; exactly 0 skips the step, leaving the parameter and its state as
// they were: dynamic loss scaling's overflowing steps), η = lr · r the learning rate of this step (lr the attribute: the
// parameter's base LR, η·parametrization factor; r the optional lr_multiplier input: the
// schedule's factor of this step, 1 when absent), λ the weight decay and t the step:
//
//   g ← s · g
//   coupled L2:            g ← g + λ · w                          (L2 in the loss)
//   decoupled (AdamW):     w ← w − η · λ · w                      (arXiv 1711.05101)
//   independent:           w ← w − r · λ · w                      (λ_p = λ/lr, so the decay of a
//                                                                  step does not depend on the
//                                                                  peak LR, only on the schedule;
//                                                                  u-μP, arXiv 2407.17465)
// Decoupled and independent decay use w before the step, as PyTorch's AdamW does.
//
// Adam (Kingma & Ba, arXiv 1412.6980), m and v starting at zero:
//   m ← β1 · m + (1 − β1) · g          v ← β2 · v + (1 − β2) · g²
//   w ← w − η · m̂ / (√v̂ + ε)          m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)
// computed as w − (η / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε) in float, the bias corrections in
// double.
//
// SGD with PyTorch's momentum semantics (buffer b, momentum μ, dampening d):
//   μ ≠ 0:  b ← g at t = 1, else b ← μ · b + (1 − d) · g;   g ← g + μ · b (Nesterov) or g ← b
//   w ← w − η · g
//
// The step t of a node is its "step" attribute plus the executor's step counter
// (KernelContext::step), so a node recorded with step = 1 runs steps 1, 2, 3, ... over an
// executor's runs (Executor::set_step resumes at a later step). The base LR is fixed when the node
// is recorded; a schedule (optim/schedule.hpp) changes the step's LR through lr_multiplier, and so
// multiplies the base LR without ever overwriting it.

#include <cstdint>
#include <string_view>
#include <vector>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

// Inputs (param, grad, m, v), all f32 of one shape, then (lr_multiplier?, grad_multiplier?), each
// of one element; outputs (param, m, v), in place.
extern const OpDef kAdamUpdateOp;
// Inputs (param, grad, momentum_buffer?, lr_multiplier?, grad_multiplier?); outputs (param,
// momentum_buffer), in place (the second absent without a buffer).
extern const OpDef kSgdUpdateOp;

// How one update step applies its weight decay λ (see the formulas above). The parametrization's
// per-parameter policy (nn's WeightDecayMode) maps onto these: independent → kIndependent,
// coupled to the LR → kDecoupled, excluded → kNone with λ = 0.
enum class UpdateDecayMode { kNone, kDecoupled, kIndependent, kCoupled };
// "none" / "decoupled" / "independent" / "coupled"
std::string_view update_decay_mode_name(UpdateDecayMode mode);
// Throws unitscale::Error listing the valid names for anything else.
UpdateDecayMode update_decay_mode_from_name(std::string_view name);
template <>
struct EnumAttribute<UpdateDecayMode> {
  static const EnumType& type();
};

// ------------------------------------------------------------------------------------------------
// Builders. Record after autodiff, on a parameter that is a state value (Graph::state):
//
//   const Value grad = autodiff(g, loss, {w})[0];
//   const auto updated = adam_update(w, grad, m, v, {.lr = 1e-3, .step = 1});  // {w', m', v'}

struct AdamUpdateOptions {
  double lr = 0.0;  // required: this parameter's learning rate for this step
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::int64_t step = 1;  // the step of the executor's first run, ≥ 1
  double weight_decay = 0.0;
  UpdateDecayMode weight_decay_mode = UpdateDecayMode::kIndependent;
  double gradient_scale = 1.0;
  Value lr_multiplier = {};    // optional, one element: the schedule's factor of this step
  Value grad_multiplier = {};  // optional, one element: multiplies the gradient (clipping)
};

// Returns {param', m', v'}, which are param, m and v's storage after the update.
std::vector<Value> adam_update(Value param, Value grad, Value m, Value v,
                               const AdamUpdateOptions& options);

struct SgdUpdateOptions {
  double lr = 0.0;  // required: this parameter's learning rate for this step
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening 0
  std::int64_t step = 1;  // the step of the executor's first run, ≥ 1
  double weight_decay = 0.0;
  UpdateDecayMode weight_decay_mode = UpdateDecayMode::kIndependent;
  double gradient_scale = 1.0;
  Value lr_multiplier = {};    // optional, one element: the schedule's factor of this step
  Value grad_multiplier = {};  // optional, one element: multiplies the gradient (clipping)
};

// Returns {param', momentum_buffer'} (the second absent when momentum_buffer is). A momentum
// other than 0 needs a buffer.
std::vector<Value> sgd_update(Value param, Value grad, Value momentum_buffer,
                              const SgdUpdateOptions& options);

}  // namespace unitscale

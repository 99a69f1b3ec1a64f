#include "unitscale/optim/update_ops.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// Below this many elements the update runs on the calling thread.
constexpr std::int64_t kParallelThreshold = 1 << 15;

// The attributes both ops share, read and range-checked once per node and kernel call.
struct CommonAttrs {
  double lr;
  std::int64_t step;  // the recorded step; the kernel adds the executor's counter
  double weight_decay;
  UpdateDecayMode mode;
  double gradient_scale;
};

CommonAttrs common_attrs(std::string_view op, const Attributes& attrs) {
  CommonAttrs c{attrs.get_double(op, "lr"), attrs.get_int(op, "step", 1),
                attrs.get_double(op, "weight_decay", 0.0),
                attrs.get_enum<UpdateDecayMode>(op, "decay_mode", UpdateDecayMode::kIndependent),
                attrs.get_double(op, "gradient_scale", 1.0)};
  if (!(std::isfinite(c.lr) && c.lr >= 0.0)) {
    throw Error(fmt::format("{}: lr must be finite and ≥ 0, got {}", op, c.lr));
  }
  if (c.step < 1) throw Error(fmt::format("{}: step must be ≥ 1, got {}", op, c.step));
  if (!(c.weight_decay >= 0.0)) {
    throw Error(fmt::format("{}: weight_decay must be ≥ 0, got {}", op, c.weight_decay));
  }
  if (c.mode == UpdateDecayMode::kNone && c.weight_decay != 0.0) {
    throw Error(fmt::format("{}: weight_decay is {} but decay_mode is none", op, c.weight_decay));
  }
  if (c.mode == UpdateDecayMode::kIndependent && c.weight_decay > 1.0) {
    throw Error(fmt::format("{}: independent weight_decay shrinks w by λ per step, so it must be "
                            "≤ 1, got {}",
                            op, c.weight_decay));
  }
  if (!std::isfinite(c.gradient_scale)) {
    throw Error(fmt::format("{}: gradient_scale must be finite, got {}", op, c.gradient_scale));
  }
  return c;
}

void check_same_shape(std::string_view op, std::span<const Shape* const> in,
                      std::span<const std::string_view> names) {
  for (std::size_t i = 1; i < names.size(); ++i) {
    if (in[i] != nullptr && *in[i] != *in[0]) {
      throw Error(fmt::format("{}: {} has shape {}, expected the param's shape {}", op, names[i],
                              in[i]->to_string(), in[0]->to_string()));
    }
  }
}

// The multiplier of w from decoupled or independent decay (1 for none and coupled), for a step
// whose learning rate is lr·lr_multiplier, and the coefficient of w added to the gradient
// (coupled only).
float decay_factor(const CommonAttrs& c, double lr_multiplier) {
  switch (c.mode) {
    case UpdateDecayMode::kDecoupled:
      return static_cast<float>(1.0 - lr_multiplier * c.lr * c.weight_decay);
    case UpdateDecayMode::kIndependent:
      return static_cast<float>(1.0 - lr_multiplier * c.weight_decay);
    default:
      return 1.0f;
  }
}
float l2_coefficient(const CommonAttrs& c) {
  return c.mode == UpdateDecayMode::kCoupled ? static_cast<float>(c.weight_decay) : 0.0f;
}

// The two optional scalar inputs that follow an update op's tensors: the schedule's LR multiplier
// and the gradient multiplier (a clipping coefficient), each [1] and 1 when absent.
void check_multipliers(std::string_view op, std::span<const Shape* const> in, std::size_t first) {
  static constexpr std::string_view kNames[] = {"lr_multiplier", "grad_multiplier"};
  for (std::size_t k = 0; k < 2; ++k) {
    const Shape* shape = in[first + k];
    if (shape != nullptr && shape->numel() != 1) {
      throw Error(fmt::format("{}: {} must have one element, got shape {}", op, kNames[k],
                              shape->to_string()));
    }
  }
}
float multiplier_value(const ConstTensorView& view) {
  return present(view) ? view.data()[0] : 1.0f;
}
// A grad_multiplier of exactly 0 skips the step: dynamic loss scaling's overflowing steps
// (optim/loss_scaling.hpp). The outputs share the inputs' storage, so they stay as they were.
bool skips(const ConstTensorView& grad_multiplier) {
  return present(grad_multiplier) && grad_multiplier.data()[0] == 0.0f;
}

// ---- Adam ------------------------------------------------------------------------------------

struct AdamAttrs {
  CommonAttrs common;
  double beta1, beta2, eps;
};

AdamAttrs adam_attrs(const Attributes& attrs) {
  constexpr std::string_view op = "adam_update";
  AdamAttrs a{common_attrs(op, attrs), attrs.get_double(op, "beta1", 0.9),
              attrs.get_double(op, "beta2", 0.999), attrs.get_double(op, "eps", 1e-8)};
  if (!(a.beta1 >= 0.0 && a.beta1 < 1.0)) {
    throw Error(fmt::format("{}: beta1 must be in [0, 1), got {}", op, a.beta1));
  }
  if (!(a.beta2 >= 0.0 && a.beta2 < 1.0)) {
    throw Error(fmt::format("{}: beta2 must be in [0, 1), got {}", op, a.beta2));
  }
  if (!(a.eps > 0.0)) throw Error(fmt::format("{}: eps must be > 0, got {}", op, a.eps));
  return a;
}

std::vector<Shape> infer_adam(std::span<const Shape* const> in, const Attributes& attrs) {
  adam_attrs(attrs);
  static constexpr std::string_view kNames[] = {"param", "grad", "m", "v"};
  check_same_shape("adam_update", in, kNames);
  check_multipliers("adam_update", in, 4);
  return {*in[0], *in[0], *in[0]};
}

// Inputs (param, grad, m, v, lr_multiplier?, grad_multiplier?); outputs (param, m, v) share the
// storage of inputs 0, 2 and 3.
void adam_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext& context) {
  if (skips(in[5])) return;
  const AdamAttrs a = adam_attrs(attrs);
  const double t = static_cast<double>(a.common.step) + static_cast<double>(context.step);
  const double bias1 = 1.0 - std::pow(a.beta1, t);
  const double bias2 = 1.0 - std::pow(a.beta2, t);
  const double lr_multiplier = multiplier_value(in[4]);
  const auto step_size = static_cast<float>(lr_multiplier * a.common.lr / bias1);
  const auto inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const auto b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  const auto one_minus_b1 = static_cast<float>(1.0 - a.beta1);
  const auto one_minus_b2 = static_cast<float>(1.0 - a.beta2);
  const auto eps = static_cast<float>(a.eps);
  const auto scale = static_cast<float>(a.common.gradient_scale) * multiplier_value(in[5]);
  const float decay = decay_factor(a.common, lr_multiplier), l2 = l2_coefficient(a.common);
  const float* grad = in[1].data();
  float* w = out[0].data();
  float* m = out[1].data();
  float* v = out[2].data();
  const std::int64_t n = out[0].numel();
  // Vectorised: this file is compiled with -fno-math-errno (CMakeLists.txt), so std::sqrt is
  // the SQRTPS instruction rather than a call with an errno branch, which kept the loop scalar
  // and at a third of memory bandwidth. `omp simd` asserts what the compiler cannot prove, that
  // w, m, v and grad do not overlap (they are distinct values of the graph).
#pragma omp parallel for simd schedule(static) if (parallel : n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = scale * grad[i] + l2 * w[i];
    const float mi = b1 * m[i] + one_minus_b1 * g;
    const float vi = b2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    w[i] = decay * w[i] - step_size * mi / (std::sqrt(vi) * inv_sqrt_bias2 + eps);
  }
}

// ---- SGD -------------------------------------------------------------------------------------

struct SgdAttrs {
  CommonAttrs common;
  double momentum, dampening;
  bool nesterov;
};

SgdAttrs sgd_attrs(const Attributes& attrs) {
  constexpr std::string_view op = "sgd_update";
  const std::int64_t nesterov = attrs.get_int(op, "nesterov", 0);
  SgdAttrs s{common_attrs(op, attrs), attrs.get_double(op, "momentum", 0.0),
             attrs.get_double(op, "dampening", 0.0), nesterov != 0};
  if (nesterov != 0 && nesterov != 1) {
    throw Error(fmt::format("{}: nesterov must be 0 or 1, got {}", op, nesterov));
  }
  if (!(s.momentum >= 0.0 && s.momentum < 1.0)) {
    throw Error(fmt::format("{}: momentum must be in [0, 1), got {}", op, s.momentum));
  }
  if (!(s.dampening >= 0.0 && s.dampening <= 1.0)) {
    throw Error(fmt::format("{}: dampening must be in [0, 1], got {}", op, s.dampening));
  }
  if (s.nesterov && (s.momentum == 0.0 || s.dampening != 0.0)) {
    throw Error(fmt::format("{}: nesterov needs momentum > 0 and dampening 0, got momentum {} and "
                            "dampening {}",
                            op, s.momentum, s.dampening));
  }
  return s;
}

std::vector<Shape> infer_sgd(std::span<const Shape* const> in, const Attributes& attrs) {
  const SgdAttrs s = sgd_attrs(attrs);
  if (s.momentum != 0.0 && in[2] == nullptr) {
    throw Error(fmt::format("sgd_update: momentum {} needs a momentum_buffer", s.momentum));
  }
  static constexpr std::string_view kNames[] = {"param", "grad", "momentum_buffer"};
  check_same_shape("sgd_update", in, kNames);
  check_multipliers("sgd_update", in, 3);
  return {*in[0], *in[0]};
}

// Inputs (param, grad, momentum_buffer?, lr_multiplier?, grad_multiplier?); outputs (param,
// momentum_buffer?) in place.
void sgd_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                const Attributes& attrs, const KernelContext& context) {
  if (skips(in[4])) return;
  const SgdAttrs s = sgd_attrs(attrs);
  const bool first = s.common.step == 1 && context.step == 0;
  const double lr_multiplier = multiplier_value(in[3]);
  const auto lr = static_cast<float>(lr_multiplier * s.common.lr);
  const auto mu = static_cast<float>(s.momentum);
  const auto keep = static_cast<float>(1.0 - s.dampening);
  const auto scale = static_cast<float>(s.common.gradient_scale) * multiplier_value(in[4]);
  const float decay = decay_factor(s.common, lr_multiplier), l2 = l2_coefficient(s.common);
  const bool use_momentum = s.momentum != 0.0;
  const bool nesterov = s.nesterov;
  const float* grad = in[1].data();
  float* w = out[0].data();
  float* buf = out.size() > 1 && present(out[1]) ? out[1].data() : nullptr;
  const std::int64_t n = out[0].numel();
#pragma omp parallel for schedule(static) if (n > kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    float g = scale * grad[i] + l2 * w[i];
    if (buf != nullptr) {
      const float b = first ? g : mu * buf[i] + keep * g;
      buf[i] = b;
      if (use_momentum) g = nesterov ? g + mu * b : b;
    }
    w[i] = decay * w[i] - lr * g;
  }
}

// Scale rules. Every output is a state updated in place (OpDef::in_place): the new param, m, v
// or momentum buffer overwrite the state's storage and are read back as they are by the next
// step, so they carry no scale of their own (scale 1), whatever the gradient's scale was.
std::vector<Scale> adam_scale_rule(const ScaleRuleArgs&) { return {Scale{}, Scale{}, Scale{}}; }
std::vector<Scale> sgd_scale_rule(const ScaleRuleArgs&) { return {Scale{}, Scale{}}; }

}  // namespace

std::string_view update_decay_mode_name(UpdateDecayMode mode) {
  switch (mode) {
    case UpdateDecayMode::kNone:
      return "none";
    case UpdateDecayMode::kDecoupled:
      return "decoupled";
    case UpdateDecayMode::kIndependent:
      return "independent";
    case UpdateDecayMode::kCoupled:
      return "coupled";
  }
  return "?";
}

UpdateDecayMode update_decay_mode_from_name(std::string_view name) {
  if (name == "none") return UpdateDecayMode::kNone;
  if (name == "decoupled") return UpdateDecayMode::kDecoupled;
  if (name == "independent") return UpdateDecayMode::kIndependent;
  if (name == "coupled") return UpdateDecayMode::kCoupled;
  throw Error(fmt::format(
      "unknown weight decay mode '{}' (expected none, decoupled, independent or coupled)", name));
}

const EnumType& EnumAttribute<UpdateDecayMode>::type() {
  return enum_type<UpdateDecayMode, update_decay_mode_name, update_decay_mode_from_name>(
      "weight decay mode");
}

const OpDef kAdamUpdateOp{
    .name = "adam_update",
    .inputs = {"param", "grad", "m", "v", "lr_multiplier?", "grad_multiplier?"},
    .outputs = {"param", "m", "v"},
    .attributes = {AttributeSpec::real("lr", kRequired), AttributeSpec::real("beta1"),
                   AttributeSpec::real("beta2"), AttributeSpec::real("eps"),
                   AttributeSpec::integer("step", kRequired), AttributeSpec::real("weight_decay"),
                   AttributeSpec::enumeration<UpdateDecayMode>("decay_mode"),
                   AttributeSpec::real("gradient_scale")},
    .in_place = {0, 2, 3},
    .private_states = 0b110,  // m, v
    .first_moments = 0b010,   // m
    .infer_shapes = infer_adam,
    .kernel = adam_kernel,
    .scale_propagation = adam_scale_rule,
    .pointwise = true,
};

const OpDef kSgdUpdateOp{
    .name = "sgd_update",
    .inputs = {"param", "grad", "momentum_buffer?", "lr_multiplier?", "grad_multiplier?"},
    .outputs = {"param", "momentum_buffer"},
    .attributes = {AttributeSpec::real("lr", kRequired), AttributeSpec::real("momentum"),
                   AttributeSpec::real("dampening"), AttributeSpec::integer("nesterov"),
                   AttributeSpec::integer("step"), AttributeSpec::real("weight_decay"),
                   AttributeSpec::enumeration<UpdateDecayMode>("decay_mode"),
                   AttributeSpec::real("gradient_scale")},
    .in_place = {0, 2},
    .private_states = 0b10,  // the momentum buffer
    .first_moments = 0b10,
    .infer_shapes = infer_sgd,
    .kernel = sgd_kernel,
    .scale_propagation = sgd_scale_rule,
    .pointwise = true,
};

// ------------------------------------------------------------------------------------------------
// Builders

std::vector<Value> adam_update(Value param, Value grad, Value m, Value v,
                               const AdamUpdateOptions& options) {
  const Value inputs[] = {param, grad, m, v, options.lr_multiplier, options.grad_multiplier};
  return param.graph().apply(kAdamUpdateOp, inputs,
                             {{"lr", options.lr},
                              {"beta1", options.beta1},
                              {"beta2", options.beta2},
                              {"eps", options.eps},
                              {"step", options.step},
                              {"weight_decay", options.weight_decay},
                              {"decay_mode", options.weight_decay_mode},
                              {"gradient_scale", options.gradient_scale}});
}

std::vector<Value> sgd_update(Value param, Value grad, Value momentum_buffer,
                              const SgdUpdateOptions& options) {
  Graph& graph = param.graph();
  Attributes attrs{{"lr", options.lr},
                   {"momentum", options.momentum},
                   {"dampening", options.dampening},
                   {"nesterov", std::int64_t{options.nesterov ? 1 : 0}},
                   {"step", options.step},
                   {"weight_decay", options.weight_decay},
                   {"decay_mode", options.weight_decay_mode},
                   {"gradient_scale", options.gradient_scale}};
  const Value inputs[] = {param, grad, momentum_buffer, options.lr_multiplier,
                          options.grad_multiplier};
  return graph.apply(kSgdUpdateOp, inputs, std::move(attrs));
}

}  // namespace unitscale

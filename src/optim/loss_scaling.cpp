#include "unitscale/optim/loss_scaling.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "unitscale/error.hpp"
#include "unitscale/optim/clipping.hpp"

namespace unitscale {
namespace {

// S's range, as powers of two.
constexpr double kMinLog2Scale = -24, kMaxLog2Scale = 100;

DynamicLossScaling config_of(const Attributes& attrs, std::string_view op) {
  DynamicLossScaling c{.initial = attrs.get_double(op, "initial"),
                       .growth_factor = attrs.get_double(op, "growth_factor", 2.0),
                       .backoff_factor = attrs.get_double(op, "backoff_factor", 0.5),
                       .growth_interval = attrs.get_int(op, "growth_interval", 2000)};
  c.check();
  return c;
}

double scale_of(const DynamicLossScaling& c, double log2_scale) {
  return c.initial * std::exp2(log2_scale);
}

void check_scalar(std::string_view op, std::string_view name, const Shape* shape) {
  if (shape->numel() != 1) {
    throw Error(fmt::format("{}: {} must have one element, got shape {}", op, name,
                            shape->to_string()));
  }
}

std::vector<Shape> infer_seed(std::span<const Shape* const> in, const Attributes& attrs) {
  config_of(attrs, "loss_scale_seed");
  check_scalar("loss_scale_seed", "log2_scale", in[0]);
  return {*in[1]};
}

void seed_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                 const Attributes& attrs, const KernelContext&) {
  const auto s = static_cast<float>(scale_of(config_of(attrs, "loss_scale_seed"), in[0].data()[0]));
  std::fill(out[0].data(), out[0].data() + out[0].numel(), s);
}

std::vector<Shape> infer_update(std::span<const Shape* const> in, const Attributes& attrs) {
  config_of(attrs, "loss_scale_update");
  if (!(attrs.get_double("loss_scale_update", "max_norm", 0.0) >= 0.0)) {
    throw Error("loss_scale_update: max_norm must be ≥ 0 (0: no clipping)");
  }
  check_scalar("loss_scale_update", "log2_scale", in[0]);
  check_scalar("loss_scale_update", "good_steps", in[1]);
  check_scalar("loss_scale_update", "sum_of_squares", in[2]);
  return {Shape{1}, Shape{1}, Shape{1}, Shape{1}, Shape{1}};
}

// Inputs (log2_scale, good_steps, sum_of_squares); outputs (log2_scale', good_steps' in place,
// multiplier, skipped, norm).
void update_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext&) {
  const DynamicLossScaling c = config_of(attrs, "loss_scale_update");
  const double max_norm = attrs.get_double("loss_scale_update", "max_norm", 0.0);
  double log2_scale = in[0].data()[0];
  double good_steps = in[1].data()[0];
  const double squares = in[2].data()[0];
  const double s = scale_of(c, log2_scale);
  double multiplier = 0, skipped = 1, norm = std::numeric_limits<double>::infinity();
  if (std::isfinite(squares)) {
    norm = std::sqrt(squares) / s;
    const double clip = max_norm > 0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
    multiplier = clip / s;
    skipped = 0;
    if (++good_steps >= static_cast<double>(c.growth_interval)) {
      log2_scale += std::log2(c.growth_factor);
      good_steps = 0;
    }
  } else {
    log2_scale += std::log2(c.backoff_factor);
    good_steps = 0;
  }
  const double log2_initial = std::log2(c.initial);
  log2_scale = std::clamp(log2_scale, kMinLog2Scale - log2_initial, kMaxLog2Scale - log2_initial);
  out[0].data()[0] = static_cast<float>(log2_scale);
  out[1].data()[0] = static_cast<float>(good_steps);
  out[2].data()[0] = static_cast<float>(multiplier);
  out[3].data()[0] = static_cast<float>(skipped);
  out[4].data()[0] = static_cast<float>(norm);
}

// Scale rules. S = initial · 2^log2_scale, where log2_scale is state that the run changes: the
// rules know `initial`, an attribute, and leave the factor 2^log2_scale (1 at the start, then
// powers of the growth and backoff factors) in the data.

// The seed is S everywhere: p2(initial).
std::vector<Scale> seed_scale_rule(const ScaleRuleArgs& args) {
  return {args.p2(config_of(args.attrs, "loss_scale_seed").initial)};
}

// Outputs: log2_scale and good_steps, states updated in place, read back as they are: scale 1;
// multiplier = clip / S with clip ≤ 1: p2(1 / initial) (a multiplier of 2^-15 flushed to zero in
// a narrow format would read as a skipped step); skipped ∈ {0, 1}: scale 1; norm = √squares / S:
// sqrt's rule on the input's scale, times p2(1 / initial).
std::vector<Scale> update_scale_rule(const ScaleRuleArgs& args) {
  const Scale inverse_s = args.p2(1.0 / config_of(args.attrs, "loss_scale_update").initial);
  return {Scale{}, Scale{}, inverse_s, Scale{}, args.sqrt(args.scale(2)) * inverse_s};
}

std::vector<AttributeSpec> scaling_attributes() {
  return {AttributeSpec::real("initial", kRequired), AttributeSpec::real("growth_factor"),
          AttributeSpec::real("backoff_factor"), AttributeSpec::integer("growth_interval")};
}

Attributes attributes_of(const DynamicLossScaling& c) {
  return {{"initial", c.initial},
          {"growth_factor", c.growth_factor},
          {"backoff_factor", c.backoff_factor},
          {"growth_interval", c.growth_interval}};
}

}  // namespace

void DynamicLossScaling::check() const {
  if (!(std::isfinite(initial) && initial > 0)) {
    throw Error(fmt::format("dynamic loss scaling: the initial scale must be finite and positive, "
                            "got {}",
                            initial));
  }
  if (!(std::isfinite(growth_factor) && growth_factor > 1)) {
    throw Error(fmt::format("dynamic loss scaling: growth_factor must be > 1, got {}", growth_factor));
  }
  if (!(backoff_factor > 0 && backoff_factor < 1)) {
    throw Error(fmt::format("dynamic loss scaling: backoff_factor must be in (0, 1), got {}",
                            backoff_factor));
  }
  if (growth_interval < 1) {
    throw Error(fmt::format("dynamic loss scaling: growth_interval must be ≥ 1, got {}",
                            growth_interval));
  }
}

const OpDef kLossScaleSeedOp{
    .name = "loss_scale_seed",
    .inputs = {"log2_scale", "like"},
    .attributes = scaling_attributes(),
    .infer_shapes = infer_seed,
    .kernel = seed_kernel,
    .scale_propagation = seed_scale_rule,
};

const OpDef kLossScaleUpdateOp{
    .name = "loss_scale_update",
    .inputs = {"log2_scale", "good_steps", "sum_of_squares"},
    .outputs = {"log2_scale", "good_steps", "multiplier", "skipped", "norm"},
    .attributes = [] {
      std::vector<AttributeSpec> specs = scaling_attributes();
      specs.push_back(AttributeSpec::real("max_norm"));
      return specs;
    }(),
    .in_place = {0, 1},
    .infer_shapes = infer_update,
    .kernel = update_kernel,
    .scale_propagation = update_scale_rule,
};

LossScaleValues record_loss_scale_seed(Graph& graph, Value loss, const DynamicLossScaling& config) {
  config.check();
  LossScaleValues v;
  v.log2_scale = graph.state("loss_scale.log2", Shape{1});
  v.good_steps = graph.state("loss_scale.good_steps", Shape{1});
  const Value inputs[] = {v.log2_scale, loss};
  v.seed = graph.apply1(kLossScaleSeedOp, inputs, attributes_of(config));
  return v;
}

void record_loss_scale_update(LossScaleValues& values, std::span<const Value> gradients,
                              const DynamicLossScaling& config, double max_norm) {
  const Value squares = global_sum_of_squares(gradients, 1.0, "dynamic loss scaling");
  Attributes attrs = attributes_of(config);
  attrs.set("max_norm", max_norm);
  const Value inputs[] = {values.log2_scale, values.good_steps, squares};
  const std::vector<Value> outputs =
      values.log2_scale.graph().apply(kLossScaleUpdateOp, inputs, std::move(attrs));
  values.multiplier = outputs[2];
  values.skipped = outputs[3];
  values.norm = outputs[4];
  values.updated_state = {outputs[0], outputs[1]};
}

}  // namespace unitscale

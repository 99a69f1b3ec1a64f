#include "unitscale/ops/delayed_rescale.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/ops/cast.hpp"

namespace unitscale {

std::string_view amax_algorithm_name(AmaxAlgorithm algorithm) {
  return algorithm == AmaxAlgorithm::kMax ? "max" : "most_recent";
}

AmaxAlgorithm amax_algorithm_from_name(std::string_view name) {
  if (name == "max") return AmaxAlgorithm::kMax;
  if (name == "most_recent") return AmaxAlgorithm::kMostRecent;
  throw Error(fmt::format("unknown amax algorithm '{}' (expected max or most_recent)", name));
}

const EnumType& EnumAttribute<AmaxAlgorithm>::type() {
  return enum_type<AmaxAlgorithm, amax_algorithm_name, amax_algorithm_from_name>("amax algorithm");
}

namespace {

constexpr std::string_view kOp = "delayed_rescale";

double target_of(const Attributes& attrs) {
  const double target = attrs.get_double(kOp, "target", 1.0);
  if (!std::isfinite(target) || target <= 0) {
    throw Error(fmt::format("{}: target must be finite and positive, got {}", kOp, target));
  }
  return target;
}

std::vector<Shape> infer_delayed_rescale(std::span<const Shape* const> in,
                                         const Attributes& attrs) {
  target_of(attrs);
  if (in[1]->rank() != 1 || in[1]->dim(0) < 1) {
    throw Error(fmt::format("{}: the history must have shape [H] with H ≥ 1, got {}", kOp,
                            in[1]->to_string()));
  }
  return {*in[0], *in[1]};
}

// y = x; the history moves one step to the left and takes max |x| as its newest entry (in place:
// out[1] is in[1]'s storage).
void delayed_rescale_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                            const Attributes&, const KernelContext&) {
  const ConstTensorView& x = in[0];
  if (present(out[0]) && out[0].data() != x.data()) {
    std::memcpy(out[0].data(), x.data(), x.byte_size());
  }
  if (!present(out[1])) return;
  const float newest = amax(x.span());
  const auto h = static_cast<std::size_t>(out[1].numel());
  float* history = out[1].data();
  if (history != in[1].data()) std::memcpy(history, in[1].data(), h * sizeof(float));
  std::memmove(history, history + 1, (h - 1) * sizeof(float));
  history[h - 1] = newest;
}

// The amax the scale comes from: the history's (kMax: its largest entry; kMostRecent: its newest),
// or x's own on the first step, when the history holds nothing yet.
double history_amax(const ScaleRuleArgs& args) {
  const ConstTensorView& history = args.data[1];
  const std::span<const float> h = history.span();
  const auto algorithm = args.attrs.get_enum<AmaxAlgorithm>(kOp, "algorithm", AmaxAlgorithm::kMax);
  const double recorded = algorithm == AmaxAlgorithm::kMostRecent
                              ? static_cast<double>(h.back())
                              : static_cast<double>(*std::max_element(h.begin(), h.end()));
  if (recorded > 0.0) return recorded;
  const ConstTensorView& data = args.data[0];
  std::vector<float> decoded(static_cast<std::size_t>(data.numel()));
  cast_forward(data, TensorView(decoded.data(), data.shape()), {{"dtype", DType::kF32}}, 0);
  return static_cast<double>(amax(decoded)) * args.scale(0).value();
}

// y's scale from the amax history (its data lands near `target`); the history stays plain.
std::vector<Scale> delayed_rescale_scale_rule(const ScaleRuleArgs& args) {
  if (args.data.size() < 2 || !args.data[0].present() || !args.data[1].present()) {
    return {args.scale(0), Scale{}};
  }
  const double amax_value = history_amax(args);
  if (!std::isfinite(amax_value) || amax_value <= 0.0) return {args.scale(0), Scale{}};
  return {args.p2(amax_value / target_of(args.attrs)), Scale{}};
}

}  // namespace

const OpDef kDelayedRescaleOp{
    .name = kOp,
    .inputs = {"x", "history"},
    .outputs = {"y", "history"},
    .attributes = {AttributeSpec::enumeration<AmaxAlgorithm>("algorithm"),
                   AttributeSpec::real("target")},
    .in_place = {-1, 1},
    .infer_shapes = infer_delayed_rescale,
    .kernel = delayed_rescale_kernel,
    .scale_propagation = delayed_rescale_scale_rule,
};

std::vector<Value> delayed_rescale(Value x, Value history, const DelayedRescaleOptions& options) {
  const Value inputs[] = {x, history};
  return x.graph().apply(kDelayedRescaleOp, inputs,
                         {{"algorithm", options.algorithm}, {"target", options.target}});
}

}  // namespace unitscale

// The gradient exchange's two ops (distributed/gradient_exchange.hpp): the graph side of the
// exchange, which hands each gradient to the executor's GradientExchange and reads its mean back.

#include <fmt/format.h>

#include "unitscale/distributed/gradient_exchange.hpp"
#include "unitscale/error.hpp"

namespace unitscale {

namespace {

GradientExchange& exchange_of(const KernelContext& context, std::string_view op) {
  if (context.gradient_exchange == nullptr) {
    throw Error(
        fmt::format("{}: this executor has no gradient exchange; a data-parallel graph runs "
                    "on an executor given one (Executor::set_gradient_exchange)",
                    op));
  }
  return *context.gradient_exchange;
}

GradientExchangeOptions options_of(const Attributes& attrs, std::string_view op) {
  return {.format = attrs.get_enum<DType>(op, "format", DType::kF32),
          .scaling = attrs.get_enum<ExchangeScaling>(op, "scaling", ExchangeScaling::kUnit)};
}

int slot_of(const Attributes& attrs, std::string_view op) {
  return static_cast<int>(attrs.get_int(op, "slot"));
}

std::vector<Shape> infer_start(std::span<const Shape* const>, const Attributes& attrs) {
  options_of(attrs, "gradient_exchange_start").check("gradient_exchange_start");
  return {Shape{1}};
}

void start_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                  const Attributes& attrs, const KernelContext& context) {
  constexpr std::string_view kOp = "gradient_exchange_start";
  exchange_of(context, kOp)
      .start(slot_of(attrs, kOp), in[0], options_of(attrs, kOp),
             attrs.get_enum<ExchangeCombine>(kOp, "combine", ExchangeCombine::kMean));
  if (present(out[0])) out[0].data()[0] = 0.0f;
}

std::vector<Shape> infer_finish(std::span<const Shape* const> in, const Attributes&) {
  if (in[1]->numel() != 1) {
    throw Error(fmt::format("gradient_exchange_finish: the ticket must have one element, got {}",
                            in[1]->to_string()));
  }
  return {*in[0]};
}

void finish_kernel(std::span<const ConstTensorView>, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext& context) {
  constexpr std::string_view kOp = "gradient_exchange_finish";
  exchange_of(context, kOp).finish(slot_of(attrs, kOp), out[0]);
}

}  // namespace

const OpDef kGradientExchangeStartOp{
    .name = "gradient_exchange_start",
    .inputs = {"g"},
    .outputs = {"ticket"},
    .attributes = {AttributeSpec::integer("slot", kRequired),
                   AttributeSpec::enumeration<DType>("format"),
                   AttributeSpec::enumeration<ExchangeScaling>("scaling"),
                   AttributeSpec::enumeration<ExchangeCombine>("combine")},
    .infer_shapes = infer_start,
    .kernel = start_kernel,
    .runs_early = true,
};

const OpDef kGradientExchangeFinishOp{
    .name = "gradient_exchange_finish",
    .inputs = {"g", "ticket"},
    .outputs = {"mean"},
    .attributes = {AttributeSpec::integer("slot", kRequired)},
    .infer_shapes = infer_finish,
    .kernel = finish_kernel,
};

std::vector<Value> record_gradient_exchange(Graph& graph, std::span<const Value> gradients,
                                            const GradientExchangeOptions& options) {
  options.check("record_gradient_exchange");
  std::vector<Value> exchanged;
  exchanged.reserve(gradients.size());
  const ExchangeCombine combine =
      graph.scaling() == Scaling::kUnit ? ExchangeCombine::kUnitScaledSum : ExchangeCombine::kMean;
  int slot = 0;
  for (const Value& g : gradients) {
    if (!g.present()) {
      exchanged.push_back(g);
      continue;
    }
    if (graph.info(g).dtype != DType::kF32) {
      throw Error(
          fmt::format("record_gradient_exchange: gradient '{}' is {}; the exchange takes "
                      "f32 gradients",
                      graph.info(g).name, dtype_name(graph.info(g).dtype)));
    }
    const Value start_inputs[] = {g};
    const Value ticket = graph.apply(kGradientExchangeStartOp, start_inputs,
                                     {{"slot", std::int64_t{slot}},
                                      {"format", options.format},
                                      {"scaling", options.scaling},
                                      {"combine", combine}})[0];
    const Value finish_inputs[] = {g, ticket};
    exchanged.push_back(
        graph.apply(kGradientExchangeFinishOp, finish_inputs, {{"slot", std::int64_t{slot}}})[0]);
    ++slot;
  }
  return exchanged;
}

}  // namespace unitscale

#pragma once
// Test support for scale-propagation rules (ops/scale_rules.hpp): does an op's rule track the
// magnitude its kernels produce? The op runs on data times scales (values far from 1 on purpose),
// its forward and backward rules are evaluated on those scales, and each output's RMS is compared
// with the scale the rule gives it: a rule that tracks the output keeps rms / scale near 1 whatever
// the input scales are, which is what keeps FP16 and FP8 data in range.

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/ops/scale_rules.hpp"

namespace unitscale::testing {

struct RuleMagnitude {
  std::string output;  // "y", "grad_x", ...
  double rms = 0;      // of the output's values
  Scale scale;         // the rule's scale for it
  double ratio() const { return rms / scale.value(); }
};

struct RuleCheckOptions {
  Scaling scaling = Scaling::kUnit;  // how the op's α and β are resolved
  Scale grad_scale;                  // the scale of the output gradients (their data is N(0, 1))
  Pow2Rounding rounding = Pow2Rounding::kDown;
  unsigned seed = 11;
};

// Runs `op` on inputs data[i] · scales[i] (f32 inputs only; others, like token ids, as given) and
// its backward on N(0, 1) · grad_scale output gradients, for every f32 output and every f32 input
// that has a gradient (not a mask or a label); then
// returns rms / scale for every f32 output of both, the forward outputs first.
inline std::vector<RuleMagnitude> rule_magnitudes(const OpDef& op,
                                                  const std::vector<std::optional<Tensor>>& data,
                                                  const std::vector<Scale>& scales,
                                                  const Attributes& attrs,
                                                  const RuleCheckOptions& options = {}) {
  std::vector<std::optional<Tensor>> values = data;
  std::vector<const Shape*> in_shapes;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] && values[i]->dtype() == DType::kF32) {
      for (float& v : values[i]->span()) v = static_cast<float>(v * scales[i].value());
    }
    in_shapes.push_back(values[i] ? &values[i]->shape() : nullptr);
  }
  OpRun run(op, values, attrs, options.scaling);
  run.forward();

  std::vector<RuleMagnitude> result;
  std::vector<const Shape*> out_shapes;
  for (int k = 0; k < op.output_count(); ++k)
    out_shapes.push_back(&run.output(static_cast<std::size_t>(k)).shape());
  const ScaleRuleArgs forward_args{scales, in_shapes, out_shapes, run.attrs(), options.rounding};
  const std::vector<Scale> out_scales = op.scale_propagation(forward_args);
  for (int k = 0; k < op.output_count(); ++k) {
    const Tensor& y = run.output(static_cast<std::size_t>(k));
    if (y.dtype() != DType::kF32) continue;
    result.push_back({std::string(op.outputs[static_cast<std::size_t>(k)]), rms_of(y.span()),
                      out_scales[static_cast<std::size_t>(k)]});
  }
  if (op.backward_kernel == nullptr) return result;

  std::mt19937 rng(options.seed);
  std::vector<Tensor> grads;
  for (int k = 0; k < op.output_count(); ++k) {
    Tensor g = random_normal(run.output(static_cast<std::size_t>(k)).shape(), rng);
    for (float& v : g.span()) v = static_cast<float>(v * options.grad_scale.value());
    grads.push_back(std::move(g));
  }
  std::vector<bool> wanted;  // as autodiff asks: every f32 input that has a gradient
  for (std::size_t i = 0; i < values.size(); ++i) {
    wanted.push_back(values[i] && values[i]->dtype() == DType::kF32 &&
                     ((op.nondifferentiable_inputs >> i) & 1) == 0);
  }
  const auto input_grads = run.backward(grads, wanted);

  // The backward op's inputs as the graph gives them: forward values it does not read are absent.
  std::vector<Scale> bwd_scales;
  std::vector<const Shape*> bwd_in_shapes, bwd_out_shapes;
  const std::size_t n_in = values.size();
  for (std::size_t i = 0; i < n_in + out_shapes.size(); ++i) {
    const bool read = (op.backward_reads >> i) & 1;
    const Shape* shape = i < n_in ? in_shapes[i] : out_shapes[i - n_in];
    bwd_scales.push_back(!read ? Scale{} : i < n_in ? scales[i] : out_scales[i - n_in]);
    bwd_in_shapes.push_back(read ? shape : nullptr);
  }
  for (const Tensor& g : grads) {
    bwd_scales.push_back(options.grad_scale);
    bwd_in_shapes.push_back(&g.shape());
  }
  for (const auto& g : input_grads) bwd_out_shapes.push_back(g ? &g->shape() : nullptr);
  const ScaleRuleArgs backward_args{bwd_scales, bwd_in_shapes, bwd_out_shapes, run.attrs(),
                                    options.rounding};
  const std::vector<Scale> grad_scales = op.backward_scale_propagation(backward_args);
  for (std::size_t i = 0; i < n_in; ++i) {
    if (!input_grads[i]) continue;
    result.push_back(
        {"grad_" + std::string(op.input_name(i)), rms_of(input_grads[i]->span()), grad_scales[i]});
  }
  return result;
}

}  // namespace unitscale::testing

#pragma once
// ParameterRule: everything a parametrization decides about one parameter, as plain data. The
// modules read the initialisation and the forward multiplier from it, the optimizers its learning
// rate factors and weight-decay mode; nothing else in the model differs between SP, μP and u-μP.
//
//   init                 N(0, std²), U(±√3·std) or the constant `init_value`
//   multiplier           α in y = α·(x·Wᵀ): the parameter enters the forward pass multiplied by it
//   backward_multiplier  the scale of the gradient to the op's input; equal to `multiplier` except
//                        for u-μP's readout, whose backward uses 1/√fan_out (an unconstrained op)
//   weight gradient      1 (SP, μP), B^-½ (u-μP; B = rows sharing the weight) or √(V/numel(ids))
//                        (u-μP embedding table with V rows)
//   learning rate        lr_p = η·adam_lr_factor (Adam, AdamW) or η·sgd_lr_factor (SGD)
//   weight decay         per-step decay of w under the mode below

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "unitscale/graph/parameter_info.hpp"
#include "unitscale/tensor/shape.hpp"

namespace unitscale {

enum class InitDistribution {
  kNormal,    // N(0, std²)
  kUniform,   // U(−√3·std, √3·std), which has standard deviation std
  kConstant,  // every element is init_value (biases 0, norm gains 1)
};
std::string_view init_distribution_name(InitDistribution distribution);

enum class WeightGradientScale {
  kNone,              // the plain gradient (SP, μP)
  kInverseSqrtBatch,  // B^-½, B = the number of rows that share the weight (u-μP)
  kSqrtRowsPerToken,  // √(V / numel(ids)) for an embedding table with V rows (u-μP)
};

enum class WeightDecayMode {
  // λ_p = λ / lr_p, so a decoupled step shrinks w by λ·schedule(t) whatever the peak LR
  // (Wortsman et al. 2024; Lingle, arXiv 2404.05728). The u-μP default.
  kIndependent,
  // λ_p = λ: a decoupled step shrinks w by lr_p(t)·λ, as PyTorch's AdamW (SP, μP).
  kCoupledToLr,
  // λ_p = 0 (norm gains when the policy excludes them, as Aleph-Alpha's u-μP runs do).
  kExcluded,
};
std::string_view weight_decay_mode_name(WeightDecayMode mode);

struct ParameterRule {
  std::string name;
  Shape shape;
  std::optional<ParameterRole> role;  // none: a parameter without metadata, explicitly allowed

  InitDistribution init = InitDistribution::kNormal;
  double init_std = 1.0;    // kNormal and kUniform
  double init_value = 0.0;  // kConstant

  double multiplier = 1.0;
  double backward_multiplier = 1.0;
  WeightGradientScale weight_gradient = WeightGradientScale::kNone;

  double adam_lr_factor = 1.0;
  double sgd_lr_factor = 1.0;
  WeightDecayMode weight_decay = WeightDecayMode::kCoupledToLr;

  // The standard deviation of the initial values (0 for a constant), for summaries.
  double initial_std() const { return init == InitDistribution::kConstant ? 0.0 : init_std; }

  // The weight-gradient scale for `rows` rows sharing the weight (numel(ids) for an embedding).
  // Throws unitscale::Error naming the parameter if rows < 1.
  double weight_gradient_scale(std::int64_t rows) const;

  // lr_p for a global learning rate η.
  double adam_learning_rate(double eta) const { return eta * adam_lr_factor; }
  double sgd_learning_rate(double eta) const { return eta * sgd_lr_factor; }

  // The weight-decay coefficient λ_p for this parameter, given the global coefficient λ = `lambda`
  // and its learning rate lr_p = `learning_rate`: λ/lr_p, λ or 0 by the mode. Throws
  // unitscale::Error naming the parameter if the mode is independent and lr_p is not positive.
  double weight_decay_coefficient(double lambda, double learning_rate) const;

  // One summary row, columns aligned for a fixed-width table:
  //   "h.0.w  weight  [16, 16]  init N std 1  mult 0.25  adam 0.1443  sgd 0.1443  wd independent"
  std::string to_string() const;
};

}  // namespace unitscale

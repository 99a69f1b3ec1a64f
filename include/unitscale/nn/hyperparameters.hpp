#pragma once
// The shape hyperparameters of u-μP (arXiv 2407.17465, §4.3), all 1 by default. Together with the
// optimizer's global learning rate η they are u-μP's six hyperparameters; every model-level module
// takes them and passes them down, so none is fixed inside a module.
//
//   hyperparameter      field                 where it acts
//   α_ffn-act           ffn_act_mult          SwiGLU x ⊙ g·σ(α·g); GELU gelu(α·x)/α
//   α_attn-softmax      attn_softmax_mult     attention logits α·q·kᵀ·(the scheme's logit scale)
//   α_res               residual_mult         the τ rule: residual branches against the embedding
//   α_res-attn-ratio    residual_attn_ratio   the τ rule: attention against MLP branches
//   α_loss-softmax      loss_softmax_mult     cross-entropy of softmax(α·logits), forward only
//
// SP and μP graphs take them too (they act as plain multipliers; the residual is x + f(x) there,
// so the two residual ones have no effect).

namespace unitscale {

struct UmupHyperparameters {
  double ffn_act_mult = 1.0;
  double attn_softmax_mult = 1.0;
  double residual_mult = 1.0;
  double residual_attn_ratio = 1.0;
  double loss_softmax_mult = 1.0;
};

}  // namespace unitscale

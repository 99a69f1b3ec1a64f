#pragma once
// cross_entropy and mse_loss (unit scaling, arXiv 2303.11257; u-μP, arXiv 2407.17465). Both produce a scalar []
// loss and sit at the very end of the graph — a cut edge — so their gradient scales are free
// constants and need no constraint.
//
// cross_entropy(logits, labels)      logits [B, V] or [V]; labels [B] or [], i32 class ids;
//                                    attrs mult m, reduction, ignore_index
//   forward                                     backward (g = incoming scalar gradient)
//   p_b   = softmax(m · z_b)                    unscaled (SP), the true gradient:
//   ℓ_b   = logsumexp(m · z_b) − m · z_b[y_b]     dz_b = g · m · (p_b − onehot(y_b)) · r
//   loss  = r · Σ_{b valid} ℓ_b                 unit-scaled:
//   r     = 1 / B_valid ("mean") or 1 ("sum")     dz_b = g · β · (p_b − onehot(y_b)),  β = V/√(V−1)
//                                               ignored rows (y_b = ignore_index): dz_b = 0
//   B_valid counts the rows whose label is not ignore_index (a standard framework's mean; the
//   reference library divides by all B rows, a defect). In unit mode the gradient is neither ÷B
//   nor ×m: m and r act on the forward only, and β makes the rows p − onehot, whose std is
//   √(V−1)/V at initialisation (p ≈ 1/V), unit. Every label must be an integer in [0, V) or equal
//   to ignore_index; anything else throws when the kernel runs. labels get no gradient.
//
// mse_loss(a, b)                     a, b of equal shapes; attr reduction
//   forward                                     backward
//   loss = r · Σ (a − b)²                       unscaled: da = g · r · 2(a − b),  db = −da
//   r    = 1 / numel ("mean") or 1 ("sum")      unit-scaled: da = g · β · 2(a − b),  db = −da,
//                                                 β_a = β_b = 8^-½ (2(a − b) has std √8)
//
// Unit mode is recorded in the attributes: unit_scale sets "beta_<input>" and
// "gradient" = "unit", which tells the backward kernel to drop the forward-only factors (m, r).
// Without them (SP) the backward kernel computes the true gradient. exp runs in vectorised float;
// sums accumulate in float lanes and in double across blocks and rows. cross_entropy keeps small
// losses and 1 − p_label to full relative precision (see loss.cpp).

#include <cstdint>
#include <string_view>

#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

// How a loss combines its per-row (cross_entropy) or per-element (mse_loss) terms.
enum class Reduction {
  kMean,  // divide by the number of non-ignored rows (cross_entropy) or of elements (mse_loss)
  kSum,
};

std::string_view reduction_name(Reduction reduction);  // "mean", "sum"
// Throws unitscale::Error listing the valid names.
Reduction reduction_from_name(std::string_view name);
template <>
struct EnumAttribute<Reduction> {
  static const EnumType& type();
};

inline constexpr std::int64_t kDefaultIgnoreIndex = -100;

extern const OpDef kCrossEntropyOp;
extern const OpDef kMseLossOp;

// The unit-mode logits gradient scale V/√(V−1) and the mse gradient scale 8^-½, in double.
double cross_entropy_grad_scale(std::int64_t vocab_size);
double mse_loss_grad_scale();

// Which factors the backward kernels apply: the true gradient (SP), or the unit-scaled gradient
// that drops the forward-only multiplier and reduction factor.
// The losses' "gradient" attribute ("true", "unit"), which their unit-scaling rule sets.
enum class LossGradient { kTrue, kUnit };
std::string_view loss_gradient_name(LossGradient gradient);
LossGradient loss_gradient_from_name(std::string_view name);
template <>
struct EnumAttribute<LossGradient> {
  static const EnumType& type();
};

// The kernels, for direct use and benchmarks. Logits and labels are viewed as [B, V] and [B]
// (B = 1 for 1-D logits). Labels are validated before any output is written; a bad label throws
// unitscale::Error naming the op, the row and the value.
float cross_entropy_forward(ConstTensorView logits, ConstTensorView labels, double mult,
                            Reduction reduction, std::int64_t ignore_index);
void cross_entropy_backward(ConstTensorView logits, ConstTensorView labels, float grad_loss,
                            TensorView grad_logits, double mult, Reduction reduction,
                            std::int64_t ignore_index, LossGradient gradient, float beta_logits);
float mse_loss_forward(ConstTensorView a, ConstTensorView b, Reduction reduction);
// Absent (null) gradient views are skipped.
void mse_loss_backward(ConstTensorView a, ConstTensorView b, float grad_loss, TensorView grad_a,
                       TensorView grad_b, Reduction reduction, LossGradient gradient, float beta_a,
                       float beta_b);


// ------------------------------------------------------------------------------------------------
// Builders for cross_entropy and mse_loss.
//
//   Value loss = cross_entropy(logits, labels);                      // mean over non-ignored rows
//   Value loss = cross_entropy(logits, labels, {.mult = 0.5, .reduction = Reduction::kSum});
//   Value loss = mse_loss(prediction, target);
//
// In a unit-scaled graph the gradients these return are the unit-scaled ones: the logits
// gradient is (softmax(m·logits) − onehot)·V/√(V−1), without the ÷B and ×m of the true gradient;
// mse's is 2(a − b)·8^-½ without the ÷numel. In an unscaled graph they are the true gradients.

struct CrossEntropyOptions {
  double mult = 1.0;  // α_loss-softmax: the loss is CE(softmax(mult · logits)); forward only
  Reduction reduction = Reduction::kMean;
  std::int64_t ignore_index = kDefaultIgnoreIndex;  // rows with this label add no loss, no grad
};

struct MseLossOptions {
  Reduction reduction = Reduction::kMean;
};

// logits [B, V] with labels [B], or logits [V] with labels []; labels are i32 class ids.
Value cross_entropy(Value logits, Value labels, const CrossEntropyOptions& options = {});
// a and b of equal shapes.
Value mse_loss(Value a, Value b, const MseLossOptions& options = {});

}  // namespace unitscale

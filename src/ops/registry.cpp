#include "unitscale/ops/registry.hpp"

#include <array>
#include <string>

#include "unitscale/error.hpp"
#include "unitscale/ops.hpp"  // every op's header

namespace unitscale {

std::span<const OpDef* const> forward_ops() {
  static const std::array kOps{
      &kMatmulOp,    &kLinearOp,      &kLinearReadoutOp, &kConv1dOp,         &kAddOp,
      &kMulOp,       &kScaleOp,       &kReluOp,          &kGeluOp,           &kSiluOp,
      &kSiluGluOp,   &kSoftmaxOp,     &kDropoutOp,       &kLayerNormOp,      &kRmsNormOp,
      &kResidualSplitOp, &kResidualAddOp, &kEmbeddingOp, &kScaledDotProductAttentionOp,
      &kCrossEntropyOp, &kMseLossOp,  &kReshapeOp,       &kTransposeOp,      &kSliceOp,
      &kConcatOp,    &kSumOp,         &kMeanOp,          &kMaxOp,            &kExpOp,
      &kLogOp,       &kSqrtOp,        &kWhereOp,          &kCastOp,
      &kRoundToFormatOp, &kDynamicRescaleOp,
  };
  return kOps;
}

const OpDef& op_by_name(std::string_view name) {
  std::string valid;
  for (const OpDef* op : forward_ops()) {
    if (op->name == name) return *op;
    valid += (valid.empty() ? "" : ", ") + std::string(op->name);
  }
  throw Error("unknown op '" + std::string(name) + "'; valid names: " + valid);
}

}  // namespace unitscale

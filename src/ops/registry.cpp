#include "unitscale/ops/registry.hpp"

#include <array>
#include <string>

#include "unitscale/error.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/conv1d.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/matmul.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/ops/softmax.hpp"

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

#pragma once
// The op layer: every op's definition (shapes, unit-scaling rule, kernels, backward) and the
// constraint machinery. Most user code wants the builders in unitscale/graph.hpp instead.

#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/constraint.hpp"
#include "unitscale/ops/conv1d.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/matmul.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/registry.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/ops/scale_powers.hpp"
#include "unitscale/ops/softmax.hpp"

#pragma once
// The graph layer: the IR, autodiff, the executor and the passes. The builders user code records
// nodes with live beside their ops (<unitscale/ops.hpp>).

#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/graph/scaled_op.hpp"
#include "unitscale/graph/simulate_format.hpp"

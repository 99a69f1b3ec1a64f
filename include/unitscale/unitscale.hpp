#pragma once
// Umbrella header: everything public in unitscale.
//
//   #include <unitscale/unitscale.hpp>
//   namespace us = unitscale;

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/distributed.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format.hpp"
#include "unitscale/graph.hpp"
#include "unitscale/io.hpp"
#include "unitscale/nn.hpp"
#include "unitscale/ops.hpp"
#include "unitscale/optim.hpp"
#include "unitscale/tensor.hpp"
#include "unitscale/train.hpp"

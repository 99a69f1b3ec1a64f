#pragma once
// The graph layer: the IR, the builder API user code writes against, autodiff, the executor and
// the passes.

#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/builders/activation.hpp"
#include "unitscale/graph/builders/attention.hpp"
#include "unitscale/graph/builders/cast.hpp"
#include "unitscale/graph/builders/conv1d.hpp"
#include "unitscale/graph/builders/dropout.hpp"
#include "unitscale/graph/builders/elementwise.hpp"
#include "unitscale/graph/builders/embedding.hpp"
#include "unitscale/graph/builders/linear.hpp"
#include "unitscale/graph/builders/loss.hpp"
#include "unitscale/graph/builders/matmul.hpp"
#include "unitscale/graph/builders/normalization.hpp"
#include "unitscale/graph/builders/primitives.hpp"
#include "unitscale/graph/builders/residual.hpp"
#include "unitscale/graph/builders/softmax.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"

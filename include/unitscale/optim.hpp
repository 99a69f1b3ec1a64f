#pragma once
// The optimizer layer: update ops that change state values in place inside a training graph.

#include "unitscale/optim/update_ops.hpp"

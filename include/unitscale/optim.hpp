#pragma once
// The optimizer layer: SGD, Adam and AdamW recorded into a training graph (update ops that change
// state values in place), with per-parameter rules from the parametrization, LR schedules and
// global-norm clipping.

#include "unitscale/optim/clipping.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/optim/schedule.hpp"
#include "unitscale/optim/update_ops.hpp"

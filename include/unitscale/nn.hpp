#pragma once
// The nn layer: parametrizations (SP, μP, u-μP), parameter initialisation, models and modules.

#include "unitscale/nn/hyperparameters.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/modules.hpp"
#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/nn/parametrization.hpp"

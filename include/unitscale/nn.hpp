#pragma once
// The nn layer: parametrizations (SP, μP, u-μP) and parameter initialisation.

#include "unitscale/nn/init.hpp"
#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/nn/parametrization.hpp"

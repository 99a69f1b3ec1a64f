#pragma once
// The nn modules: basic layers, attention, MLPs, the transformer layer and decoder, and the MLP
// classifier. Each records its parameters through a Model (nn/model.hpp) and its nodes per use.

#include "unitscale/nn/attention.hpp"
#include "unitscale/nn/layers.hpp"
#include "unitscale/nn/mlp.hpp"
#include "unitscale/nn/mlp_classifier.hpp"
#include "unitscale/nn/transformer.hpp"

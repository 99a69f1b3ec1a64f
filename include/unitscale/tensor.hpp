#pragma once
// The tensor layer: shapes and dense FP32 tensors with Eigen views.

#include "unitscale/tensor/shape.hpp"
#include "unitscale/tensor/tensor.hpp"

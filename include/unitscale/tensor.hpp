#pragma once
// The tensor layer: shapes, dense FP32 tensors with Eigen views, and scales.

#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/shape.hpp"
#include "unitscale/tensor/tensor.hpp"

#pragma once
// The tensor layer: shapes, dense tensors of any dtype with Eigen views, scales, scaled tensors and
// the policies that choose their scales.

#include "unitscale/tensor/scale.hpp"
#include "unitscale/tensor/scale_policy.hpp"
#include "unitscale/tensor/scaled_tensor.hpp"
#include "unitscale/tensor/shape.hpp"
#include "unitscale/tensor/tensor.hpp"

#pragma once
// The portable GEMM: Eigen's, for the shapes where oneDNN is slower (see gemm_engine_for).

#include "unitscale/ops/gemm.hpp"

namespace unitscale::detail {

// One FP32 GEMM (batch entry `index` of a problem whose operands are FP32):
// c = output_scale · (a · b) + scaled_bias (+ c when accumulating), the bias per column of c or,
// with bias_per_row, per row.
void eigen_gemm(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                std::int64_t index, float output_scale, const float* scaled_bias,
                bool bias_per_row, bool accumulate);

}  // namespace unitscale::detail

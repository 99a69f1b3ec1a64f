#pragma once
// Widening GEMM operands to the type the products are formed in: FP8 codes to BF16 (exact), and
// anything to FP32 (exact). The result is packed: row_stride = cols, and batch_stride = rows · cols
// unless the operand was broadcast (batch_stride 0), which stays one matrix.

#include <cstddef>
#include <cstdint>

#include "unitscale/ops/gemm.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale::detail {

// The layout `matrix` has after widening it to `to`: itself when it already is of that type.
GemmMatrix widened_layout(const GemmMatrix& matrix, GemmType to);

// Converts `batch` matrices of `matrix` (one if broadcast) into the calling thread's workspace
// (tensor/workspace.hpp: valid until the caller's frame ends) and returns the widened operand
// (same transposition and scale). Returns `matrix` itself when it already is of type `to`. `to`
// is kF32 or kBF16; kBF16 takes only BF16 and FP8 operands.
GemmMatrix widen(const GemmMatrix& matrix, GemmType to, std::int64_t batch);

}  // namespace unitscale::detail

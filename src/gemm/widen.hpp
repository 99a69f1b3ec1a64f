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
// The layout of packed_copy(matrix, to): itself when it already is of type `to` and packed.
GemmMatrix packed_layout(const GemmMatrix& matrix, GemmType to);

// Converts `batch` matrices of `matrix` (one if broadcast) into the calling thread's workspace
// (tensor/workspace.hpp: valid until the caller's frame ends) and returns the widened operand
// (same transposition and scale). Returns `matrix` itself when it already is of type `to`. `to`
// is kF32 or kBF16; kBF16 takes only BF16 and FP8 operands.
GemmMatrix widen(const GemmMatrix& matrix, GemmType to, std::int64_t batch);

// As widen() for one matrix, but a matrix already of type `to` is copied too when its rows are
// strided (a block of a wider matrix): oneDNN 2.6 runs a packed block on its BRGEMM (AMX) kernels,
// which take their buffers from the scratchpad we give them, and a strided one on gemm:jit, which
// allocates its packing buffers on every call (glibc then keeps them resident in its heaps).
GemmMatrix packed_copy(const GemmMatrix& matrix, GemmType to);

// op(matrix) as a packed, untransposed matrix of type `to`: packed_copy() of an untransposed one;
// a transposed one is transposed as it is converted (oneDNN 2.6's BRGEMM kernels read a
// transposed A by copying it again on every call, which a GEMM computed in panels repeats).
GemmMatrix row_major_copy(const GemmMatrix& matrix, GemmType to);
// The layout row_major_copy() returns.
GemmMatrix row_major_layout(const GemmMatrix& matrix, GemmType to);

}  // namespace unitscale::detail

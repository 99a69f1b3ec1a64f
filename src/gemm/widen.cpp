#include "gemm/widen.hpp"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <span>

#include "gemm/fp8_decode_kernels.hpp"
#include "tensor/workspace.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/format/half.hpp"

namespace unitscale::detail {
namespace {

// Rows shorter than this many elements in all are converted on one thread.
constexpr std::int64_t kParallelElements = std::int64_t{1} << 16;
// Contiguous operands are converted in chunks of this many elements, spread over the threads.
constexpr std::int64_t kChunk = std::int64_t{1} << 14;

// Converts n consecutive elements of type `from` at `in` to `to` at `out`.
void convert_run(const void* in, GemmType from, void* out, GemmType to, std::int64_t n) {
  using fp8_decode::Fp8;
  if (from == to) {
    std::memcpy(out, in, static_cast<std::size_t>(n * gemm_type_bytes(to)));
    return;
  }
  const auto* bytes = static_cast<const std::uint8_t*>(in);
  const fp8_decode::KernelTable& fp8 = fp8_decode::kernels();
  if (to == GemmType::kBF16) {
    auto* dst = static_cast<std::uint16_t*>(out);
    switch (from) {
      case GemmType::kE4M3: return fp8.to_bf16(bytes, dst, n, Fp8::kE4M3);
      case GemmType::kE5M2: return fp8.to_bf16(bytes, dst, n, Fp8::kE5M2);
      default: break;
    }
  } else {
    auto* dst = static_cast<float*>(out);
    const auto count = static_cast<std::size_t>(n);
    switch (from) {
      case GemmType::kE4M3: return fp8.to_f32(bytes, dst, n, Fp8::kE4M3);
      case GemmType::kE5M2: return fp8.to_f32(bytes, dst, n, Fp8::kE5M2);
      case GemmType::kF16:
        return decode(std::span(static_cast<const float16*>(in), count), std::span(dst, count));
      case GemmType::kBF16: {
        const auto* src = static_cast<const std::uint16_t*>(in);
        for (std::int64_t i = 0; i < n; ++i) {
          dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(src[i]) << 16);
        }
        return;
      }
      default: break;
    }
  }
  UNITSCALE_ASSERT(false && "unsupported GEMM widening");
}

bool packed(const GemmMatrix& matrix) {
  return matrix.row_stride == 0 || matrix.row_stride == matrix.cols;
}

// `batch` matrices of `matrix` (one if broadcast) converted to `to` into the workspace, packed.
GemmMatrix convert(const GemmMatrix& matrix, GemmType to, std::int64_t batch) {
  UNITSCALE_ASSERT(to == GemmType::kF32 || to == GemmType::kBF16);
  GemmMatrix out = matrix;
  out.type = to;
  out.row_stride = matrix.cols;
  out.batch_stride = matrix.batch_stride == 0 ? 0 : matrix.rows * matrix.cols;
  const std::int64_t matrices = matrix.batch_stride == 0 ? 1 : batch;
  const std::int64_t rows = matrices * matrix.rows;
  const int in_bytes = gemm_type_bytes(matrix.type);
  const int out_bytes = gemm_type_bytes(to);
  std::byte* dst =
      Workspace::of_this_thread().take(static_cast<std::size_t>(rows * matrix.cols * out_bytes));
  out.data = dst;

  const std::int64_t in_row_stride = matrix.row_stride == 0 ? matrix.cols : matrix.row_stride;
  const std::int64_t in_batch_stride =
      matrix.batch_stride == 0 ? matrix.rows * in_row_stride : matrix.batch_stride;
  const auto* in = static_cast<const std::byte*>(matrix.data);
  const std::int64_t total = rows * matrix.cols;
  const bool parallel = total >= kParallelElements && !omp_in_parallel();
  if (in_row_stride == matrix.cols && in_batch_stride == matrix.rows * matrix.cols) {
    if (matrix.type == GemmType::kF16) {  // the bulk decoder splits over threads itself
      convert_run(in, matrix.type, dst, to, total);
      return out;
    }
    const std::int64_t chunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::int64_t first = c * kChunk;
      convert_run(in + first * in_bytes, matrix.type, dst + first * out_bytes, to,
                  std::min(kChunk, total - first));
    }
    return out;
  }
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t b = r / matrix.rows, row = r % matrix.rows;
    convert_run(in + (b * in_batch_stride + row * in_row_stride) * in_bytes, matrix.type,
                dst + r * matrix.cols * out_bytes, to, matrix.cols);
  }
  return out;
}

// out[c · out_stride + r] = tile[r · tile_stride + c] for the tile's rows × cols.
template <class T>
void transpose_tile(const T* tile, std::int64_t tile_stride, std::int64_t rows, std::int64_t cols,
                    T* out, std::int64_t out_stride) {
  for (std::int64_t c = 0; c < cols; ++c) {
    T* out_row = out + c * out_stride;
    for (std::int64_t r = 0; r < rows; ++r) out_row[r] = tile[r * tile_stride + c];
  }
}

// op(matrix) of a transposed matrix converted to `to` into the workspace, packed and untransposed:
// tiles of the stored rows are converted, then written out transposed.
GemmMatrix convert_transposed(const GemmMatrix& matrix, GemmType to) {
  constexpr std::int64_t kTile = 64;
  const std::int64_t rows = matrix.rows, cols = matrix.cols;  // as stored
  const std::int64_t in_row_stride = matrix.row_stride == 0 ? cols : matrix.row_stride;
  const int in_bytes = gemm_type_bytes(matrix.type);
  const int out_bytes = gemm_type_bytes(to);
  std::byte* dst =
      Workspace::of_this_thread().take(static_cast<std::size_t>(rows * cols * out_bytes));
  const auto* in = static_cast<const std::byte*>(matrix.data);
  const std::int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const bool parallel = rows * cols >= kParallelElements && !omp_in_parallel();
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (std::int64_t rt = 0; rt < row_tiles; ++rt) {
    for (std::int64_t ct = 0; ct < col_tiles; ++ct) {
      alignas(64) std::byte tile[kTile * kTile * sizeof(float)];
      const std::int64_t r0 = rt * kTile, c0 = ct * kTile;
      const std::int64_t tile_rows = std::min(kTile, rows - r0);
      const std::int64_t tile_cols = std::min(kTile, cols - c0);
      for (std::int64_t r = 0; r < tile_rows; ++r) {
        convert_run(in + ((r0 + r) * in_row_stride + c0) * in_bytes, matrix.type,
                    tile + r * kTile * out_bytes, to, tile_cols);
      }
      // Stored element (r0 + r, c0 + c) is element (c0 + c, r0 + r) of the result.
      if (out_bytes == 2) {
        transpose_tile(reinterpret_cast<const std::uint16_t*>(tile), kTile, tile_rows, tile_cols,
                       reinterpret_cast<std::uint16_t*>(dst) + c0 * rows + r0, rows);
      } else {
        transpose_tile(reinterpret_cast<const std::uint32_t*>(tile), kTile, tile_rows, tile_cols,
                       reinterpret_cast<std::uint32_t*>(dst) + c0 * rows + r0, rows);
      }
    }
  }
  GemmMatrix out = row_major_layout(matrix, to);
  out.data = dst;
  return out;
}

}  // namespace

GemmMatrix widened_layout(const GemmMatrix& matrix, GemmType to) {
  if (matrix.type == to) return matrix;
  GemmMatrix out = matrix;
  out.type = to;
  out.row_stride = matrix.cols;
  out.batch_stride = matrix.batch_stride == 0 ? 0 : matrix.rows * matrix.cols;
  return out;
}

GemmMatrix packed_layout(const GemmMatrix& matrix, GemmType to) {
  if (matrix.type != to || packed(matrix)) return widened_layout(matrix, to);
  GemmMatrix out = matrix;
  out.row_stride = matrix.cols;
  return out;
}

GemmMatrix widen(const GemmMatrix& matrix, GemmType to, std::int64_t batch) {
  return matrix.type == to ? matrix : convert(matrix, to, batch);
}

GemmMatrix packed_copy(const GemmMatrix& matrix, GemmType to) {
  UNITSCALE_ASSERT(matrix.batch_stride == 0);
  return matrix.type == to && packed(matrix) ? matrix : convert(matrix, to, 1);
}

GemmMatrix row_major_layout(const GemmMatrix& matrix, GemmType to) {
  if (!matrix.transposed) return packed_layout(matrix, to);
  GemmMatrix out = matrix;
  out.type = to;
  out.rows = matrix.cols;
  out.cols = matrix.rows;
  out.row_stride = out.cols;
  out.batch_stride = 0;
  out.transposed = false;
  return out;
}

GemmMatrix row_major_copy(const GemmMatrix& matrix, GemmType to) {
  UNITSCALE_ASSERT(matrix.batch_stride == 0);
  return matrix.transposed ? convert_transposed(matrix, to) : packed_copy(matrix, to);
}

}  // namespace unitscale::detail

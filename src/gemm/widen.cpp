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

}  // namespace

GemmMatrix widened_layout(const GemmMatrix& matrix, GemmType to) {
  if (matrix.type == to) return matrix;
  GemmMatrix out = matrix;
  out.type = to;
  out.row_stride = matrix.cols;
  out.batch_stride = matrix.batch_stride == 0 ? 0 : matrix.rows * matrix.cols;
  return out;
}

GemmMatrix widen(const GemmMatrix& matrix, GemmType to, std::int64_t batch) {
  if (matrix.type == to) return matrix;
  UNITSCALE_ASSERT(to == GemmType::kF32 || to == GemmType::kBF16);
  GemmMatrix out = widened_layout(matrix, to);
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

}  // namespace unitscale::detail

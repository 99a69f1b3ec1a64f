#include "gemm/eigen_gemm.hpp"

#include <Eigen/Core>

namespace unitscale::detail {
namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstMap = Eigen::Map<const Matrix, Eigen::Unaligned, Stride>;
using Map = Eigen::Map<Matrix, Eigen::Unaligned, Stride>;

ConstMap stored(const GemmMatrix& x, std::int64_t index) {
  const std::int64_t row_stride = x.row_stride == 0 ? x.cols : x.row_stride;
  return {static_cast<const float*>(x.data) + index * x.batch_stride, x.rows, x.cols,
          Stride(row_stride)};
}

}  // namespace

void eigen_gemm(const GemmMatrix& a, const GemmMatrix& b, const GemmOutput& c,
                std::int64_t index, float output_scale, const float* scaled_bias,
                bool bias_per_row, bool accumulate) {
  const std::int64_t row_stride = c.row_stride == 0 ? c.cols : c.row_stride;
  const std::int64_t batch_stride = c.batch_stride == 0 ? c.rows * row_stride : c.batch_stride;
  Map out(static_cast<float*>(c.data) + index * batch_stride, c.rows, c.cols, Stride(row_stride));
  const ConstMap sa = stored(a, index), sb = stored(b, index);
  // Four instantiations rather than a runtime transpose, which Eigen cannot express lazily.
  auto product = [&](const auto& left, const auto& right) {
    if (accumulate) out.noalias() += output_scale * (left * right);
    else out.noalias() = output_scale * (left * right);
  };
  if (a.transposed && b.transposed) product(sa.transpose(), sb.transpose());
  else if (a.transposed) product(sa.transpose(), sb);
  else if (b.transposed) product(sa, sb.transpose());
  else product(sa, sb);
  if (scaled_bias == nullptr) return;
  if (bias_per_row) out.colwise() += Eigen::Map<const Eigen::VectorXf>(scaled_bias, c.rows);
  else out.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(scaled_bias, c.cols);
}

}  // namespace unitscale::detail

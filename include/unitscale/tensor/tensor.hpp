#pragma once
// Tensor: a dense, row-major, 64-byte aligned FP32 array with a Shape, owning its storage with
// value semantics (copies are deep, moves are cheap). TensorView and ConstTensorView are the
// non-owning forms that kernels take, so the executor can hand them slices of its arena.
//
// Eigen views flatten the leading dimensions: a [B, S, D] tensor is seen as a (B·S) x D row-major
// matrix, which is the shape every linear/matmul kernel wants.

#include <cstddef>
#include <memory>
#include <span>

#include <Eigen/Core>

#include "unitscale/tensor/shape.hpp"

namespace unitscale {

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMajorMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

inline constexpr std::size_t kTensorAlignment = 64;

class ConstTensorView {
 public:
  ConstTensorView() = default;
  ConstTensorView(const float* data, Shape shape) : data_(data), shape_(std::move(shape)) {}

  const Shape& shape() const { return shape_; }
  std::int64_t numel() const { return shape_.numel(); }
  const float* data() const { return data_; }
  std::span<const float> span() const { return {data_, static_cast<std::size_t>(numel())}; }
  ConstMatrixMap matrix() const { return {data_, shape_.outer(), shape_.inner()}; }
  ConstVectorMap vector() const { return {data_, numel()}; }

 private:
  const float* data_ = nullptr;
  Shape shape_;
};

class TensorView {
 public:
  TensorView() = default;
  TensorView(float* data, Shape shape) : data_(data), shape_(std::move(shape)) {}

  const Shape& shape() const { return shape_; }
  std::int64_t numel() const { return shape_.numel(); }
  float* data() const { return data_; }
  std::span<float> span() const { return {data_, static_cast<std::size_t>(numel())}; }
  MatrixMap matrix() const { return {data_, shape_.outer(), shape_.inner()}; }
  VectorMap vector() const { return {data_, numel()}; }
  operator ConstTensorView() const { return {data_, shape_}; }

 private:
  float* data_ = nullptr;
  Shape shape_;
};

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised.
  explicit Tensor(Shape shape);
  Tensor(Shape shape, std::span<const float> values);  // throws if the sizes differ
  static Tensor filled(Shape shape, float value);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const Shape& shape() const { return shape_; }
  std::int64_t numel() const { return shape_.numel(); }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  std::span<float> span() { return {data(), static_cast<std::size_t>(numel())}; }
  std::span<const float> span() const { return {data(), static_cast<std::size_t>(numel())}; }
  float& operator[](std::int64_t i) { return data_[static_cast<std::size_t>(i)]; }
  float operator[](std::int64_t i) const { return data_[static_cast<std::size_t>(i)]; }

  TensorView view() { return {data(), shape_}; }
  ConstTensorView view() const { return {data(), shape_}; }
  operator TensorView() { return view(); }
  operator ConstTensorView() const { return view(); }
  MatrixMap matrix() { return view().matrix(); }
  ConstMatrixMap matrix() const { return view().matrix(); }

  // Same data, new shape with the same number of elements; throws otherwise.
  Tensor reshaped(Shape shape) &&;

 private:
  struct FreeAligned {
    void operator()(float* p) const;
  };
  Shape shape_;
  std::unique_ptr<float[], FreeAligned> data_;
};

// Allocates n floats aligned to kTensorAlignment (n == 0 gives a valid, empty allocation).
std::unique_ptr<float[], void (*)(float*)> allocate_aligned(std::size_t n);

}  // namespace unitscale

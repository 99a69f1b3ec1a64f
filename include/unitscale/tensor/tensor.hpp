#pragma once
// Tensor: a dense, row-major, 64-byte aligned array of any DType (fp32 by default) with a Shape,
// owning its storage with value semantics (copies are deep, moves are cheap). TensorView and
// ConstTensorView are the non-owning forms that kernels take, so the executor can hand them
// slices of its arena.
//
// Element access is typed and checked: data() and span() are the fp32 forms every fp32 kernel
// uses, data_as<T>() the form for other dtypes (T = std::int32_t, bfloat16, float8_e4m3fn, ...),
// and bytes() the raw storage. Asking for the wrong type throws unitscale::Error naming both
// dtypes, so a kernel can never reinterpret, say, FP8 codes as floats.
//
// Eigen views (fp32 only) flatten the leading dimensions: a [B, S, D] tensor is seen as a
// (B·S) x D row-major matrix, which is the shape every linear/matmul kernel wants.

#include <cstddef>
#include <memory>
#include <span>

#include <Eigen/Core>

#include "unitscale/tensor/dtype.hpp"
#include "unitscale/tensor/shape.hpp"

namespace unitscale {

using RowMajorMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMajorMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMajorMatrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

namespace detail {
// Throws unitscale::Error: "<what>: expected a <expected> tensor, got <actual> (shape ...)".
[[noreturn]] void throw_dtype_mismatch(std::string_view what, DType expected, DType actual,
                                       const Shape& shape);
inline void check_dtype(std::string_view what, DType expected, DType actual, const Shape& shape) {
  if (expected != actual) [[unlikely]] throw_dtype_mismatch(what, expected, actual, shape);
}
}  // namespace detail

inline constexpr std::size_t kTensorAlignment = 64;

class ConstTensorView {
 public:
  ConstTensorView() = default;
  ConstTensorView(const float* data, Shape shape) : data_(data), shape_(std::move(shape)) {}
  ConstTensorView(const void* data, Shape shape, DType dtype)
      : data_(data), shape_(std::move(shape)), dtype_(dtype) {}

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t byte_size() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool present() const { return data_ != nullptr; }
  const std::byte* bytes() const { return static_cast<const std::byte*>(data_); }
  template <class T>
  const T* data_as() const {
    detail::check_dtype("tensor view", dtype_of<T>, dtype_, shape_);
    return static_cast<const T*>(data_);
  }
  template <class T>
  std::span<const T> span_as() const {
    return {data_as<T>(), static_cast<std::size_t>(numel())};
  }
  const float* data() const { return data_as<float>(); }
  std::span<const float> span() const { return span_as<float>(); }
  ConstMatrixMap matrix() const { return {data(), shape_.outer(), shape_.inner()}; }
  ConstVectorMap vector() const { return {data(), numel()}; }

 private:
  const void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
};

class TensorView {
 public:
  TensorView() = default;
  TensorView(float* data, Shape shape) : data_(data), shape_(std::move(shape)) {}
  TensorView(void* data, Shape shape, DType dtype)
      : data_(data), shape_(std::move(shape)), dtype_(dtype) {}

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t byte_size() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool present() const { return data_ != nullptr; }
  std::byte* bytes() const { return static_cast<std::byte*>(data_); }
  template <class T>
  T* data_as() const {
    detail::check_dtype("tensor view", dtype_of<T>, dtype_, shape_);
    return static_cast<T*>(data_);
  }
  template <class T>
  std::span<T> span_as() const {
    return {data_as<T>(), static_cast<std::size_t>(numel())};
  }
  float* data() const { return data_as<float>(); }
  std::span<float> span() const { return span_as<float>(); }
  MatrixMap matrix() const { return {data(), shape_.outer(), shape_.inner()}; }
  VectorMap vector() const { return {data(), numel()}; }
  operator ConstTensorView() const { return {data_, shape_, dtype_}; }

 private:
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
};

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised (all-zero bytes: +0 in every float dtype but e8m0fnu, which has no zero).
  explicit Tensor(Shape shape, DType dtype = DType::kF32);
  // Throw if the sizes differ.
  Tensor(Shape shape, std::span<const float> values);
  Tensor(Shape shape, std::span<const std::int32_t> values);
  static Tensor filled(Shape shape, float value);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t byte_size() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  std::byte* bytes() { return data_.get(); }
  const std::byte* bytes() const { return data_.get(); }
  template <class T>
  T* data_as() {
    detail::check_dtype("tensor", dtype_of<T>, dtype_, shape_);
    return reinterpret_cast<T*>(data_.get());
  }
  template <class T>
  const T* data_as() const {
    detail::check_dtype("tensor", dtype_of<T>, dtype_, shape_);
    return reinterpret_cast<const T*>(data_.get());
  }
  template <class T>
  std::span<T> span_as() {
    return {data_as<T>(), static_cast<std::size_t>(numel())};
  }
  template <class T>
  std::span<const T> span_as() const {
    return {data_as<T>(), static_cast<std::size_t>(numel())};
  }
  float* data() { return data_as<float>(); }
  const float* data() const { return data_as<float>(); }
  std::span<float> span() { return span_as<float>(); }
  std::span<const float> span() const { return span_as<float>(); }
  float& operator[](std::int64_t i) { return data()[static_cast<std::size_t>(i)]; }
  float operator[](std::int64_t i) const { return data()[static_cast<std::size_t>(i)]; }

  TensorView view() { return {data_.get(), shape_, dtype_}; }
  ConstTensorView view() const { return {data_.get(), shape_, dtype_}; }
  operator TensorView() { return view(); }
  operator ConstTensorView() const { return view(); }
  MatrixMap matrix() { return view().matrix(); }
  ConstMatrixMap matrix() const { return view().matrix(); }

  // Same data, new shape with the same number of elements; throws otherwise.
  Tensor reshaped(Shape shape) &&;

 private:
  struct FreeAligned {
    void operator()(std::byte* p) const;
  };
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::unique_ptr<std::byte[], FreeAligned> data_;
};

// A copy of `view` in its own storage (same shape and dtype).
Tensor copy_of(ConstTensorView view);

// Allocates `bytes` bytes aligned to kTensorAlignment (0 gives a valid, empty allocation).
std::unique_ptr<std::byte[], void (*)(std::byte*)> allocate_aligned_bytes(std::size_t bytes);

}  // namespace unitscale

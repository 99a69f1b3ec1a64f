#include "unitscale/tensor/tensor.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <fmt/format.h>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

std::byte* allocate_bytes(std::size_t n) {
  const std::size_t bytes = std::max<std::size_t>(
      kTensorAlignment, (n + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment);
  void* p = std::aligned_alloc(kTensorAlignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<std::byte*>(p);
}

void free_bytes(std::byte* p) { std::free(p); }

}  // namespace

void detail::throw_dtype_mismatch(std::string_view what, DType expected, DType actual,
                                  const Shape& shape) {
  throw Error(fmt::format("{}: expected a {} tensor, got {} (shape {})", what,
                          dtype_name(expected), dtype_name(actual), shape.to_string()));
}

void Tensor::FreeAligned::operator()(std::byte* p) const { free_bytes(p); }

std::unique_ptr<std::byte[], void (*)(std::byte*)> allocate_aligned_bytes(std::size_t bytes) {
  return {allocate_bytes(bytes), &free_bytes};
}

Tensor::Tensor(Shape shape, DType dtype)
    : shape_(std::move(shape)), dtype_(dtype), data_(allocate_bytes(byte_size())) {
  std::memset(data_.get(), 0, byte_size());
}

namespace {
template <class T>
void copy_values(std::string_view kind, const Shape& shape, std::span<const T> values, T* out) {
  if (values.size() != static_cast<std::size_t>(shape.numel())) {
    throw Error(fmt::format("Tensor: shape {} needs {} {} values, got {}", shape.to_string(),
                            shape.numel(), kind, values.size()));
  }
  std::copy(values.begin(), values.end(), out);
}
}  // namespace

Tensor::Tensor(Shape shape, std::span<const float> values) : Tensor(std::move(shape)) {
  copy_values("f32", shape_, values, data());
}

Tensor::Tensor(Shape shape, std::span<const std::int32_t> values)
    : Tensor(std::move(shape), DType::kI32) {
  copy_values("i32", shape_, values, data_as<std::int32_t>());
}

Tensor Tensor::filled(Shape shape, float value) {
  Tensor t(std::move(shape));
  std::fill_n(t.data(), t.numel(), value);
  return t;
}

Tensor::Tensor(const Tensor& other)
    : shape_(other.shape_),
      dtype_(other.dtype_),
      data_(other.data_ ? allocate_bytes(other.byte_size()) : nullptr) {
  if (data_) std::memcpy(data_.get(), other.data_.get(), byte_size());
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

Tensor Tensor::reshaped(Shape shape) && {
  if (shape.numel() != numel()) {
    throw Error("Tensor::reshaped: cannot view " + shape_.to_string() + " (" +
                std::to_string(numel()) + " elements) as " + shape.to_string());
  }
  shape_ = std::move(shape);
  return std::move(*this);
}

Tensor copy_of(ConstTensorView view) {
  Tensor t(view.shape(), view.dtype());
  if (view.byte_size() > 0) std::memcpy(t.bytes(), view.bytes(), view.byte_size());
  return t;
}

}  // namespace unitscale

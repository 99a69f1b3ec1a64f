#include "unitscale/tensor/tensor.hpp"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

float* allocate_floats(std::size_t n) {
  const std::size_t bytes =
      std::max<std::size_t>(kTensorAlignment, (n * sizeof(float) + kTensorAlignment - 1) /
                                                  kTensorAlignment * kTensorAlignment);
  void* p = std::aligned_alloc(kTensorAlignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

void free_floats(float* p) { std::free(p); }

}  // namespace

void Tensor::FreeAligned::operator()(float* p) const { free_floats(p); }

std::unique_ptr<float[], void (*)(float*)> allocate_aligned(std::size_t n) {
  return {allocate_floats(n), &free_floats};
}

Tensor::Tensor(Shape shape)
    : shape_(std::move(shape)), data_(allocate_floats(static_cast<std::size_t>(shape_.numel()))) {
  std::fill_n(data_.get(), numel(), 0.0f);
}

Tensor::Tensor(Shape shape, std::span<const float> values) : Tensor(std::move(shape)) {
  if (values.size() != static_cast<std::size_t>(numel())) {
    throw Error("Tensor: shape " + shape_.to_string() + " needs " + std::to_string(numel()) +
                " values, got " + std::to_string(values.size()));
  }
  std::copy(values.begin(), values.end(), data_.get());
}

Tensor Tensor::filled(Shape shape, float value) {
  Tensor t(std::move(shape));
  std::fill_n(t.data(), t.numel(), value);
  return t;
}

Tensor::Tensor(const Tensor& other)
    : shape_(other.shape_), data_(other.data_ ? allocate_floats(static_cast<std::size_t>(other.numel())) : nullptr) {
  if (data_) std::copy_n(other.data(), numel(), data_.get());
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

}  // namespace unitscale

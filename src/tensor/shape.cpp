#include "unitscale/tensor/shape.hpp"

#include <algorithm>

#include "unitscale/error.hpp"

namespace unitscale {

namespace {
std::string dims_text(std::span<const std::int64_t> dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

// Every dimension >= 0, and the product of the non-zero ones fits in int64: then numel(),
// outer() and the product of any subset of the dimensions cannot overflow, whatever zeros the
// shape also holds (outer() of [2^62, 4, 0] skips the 0).
void check_dims(std::span<const std::int64_t> dims) {
  std::int64_t product = 1;
  for (const auto d : dims) {
    if (d < 0) {
      throw Error("Shape: dimensions must be non-negative, got " + dims_text(dims));
    }
    if (d != 0 && __builtin_mul_overflow(product, d, &product)) {
      throw Error("Shape: dimensions " + dims_text(dims) +
                  " have more elements than int64 can count: expected the product of the "
                  "non-zero dimensions to be at most 2^63 - 1");
    }
  }
}
}  // namespace

Shape::Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) { check_dims(dims_); }
Shape::Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) { check_dims(dims_); }

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (const auto d : dims_) n *= d;
  return n;
}

std::int64_t Shape::dim(int index) const { return dims_[static_cast<std::size_t>(axis(index, "Shape::dim"))]; }

int Shape::axis(int index, std::string_view op) const {
  const int resolved = index < 0 ? index + rank() : index;
  if (resolved < 0 || resolved >= rank()) {
    throw Error(std::string(op) + ": axis " + std::to_string(index) + " is out of range for shape " +
                to_string());
  }
  return resolved;
}

Shape Shape::with_dim(int index, std::int64_t size) const {
  auto dims = dims_;
  dims[static_cast<std::size_t>(axis(index, "Shape::with_dim"))] = size;
  return Shape(std::move(dims));
}

Shape Shape::without_dim(int index) const {
  auto dims = dims_;
  dims.erase(dims.begin() + axis(index, "Shape::without_dim"));
  return Shape(std::move(dims));
}

std::string Shape::to_string() const {
  std::string text = "[";
  for (std::size_t i = 0; i < dims_.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(dims_[i]);
  }
  return text + "]";
}

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  const int rank = std::max(a.rank(), b.rank());
  std::vector<std::int64_t> dims(static_cast<std::size_t>(rank));
  for (int i = 1; i <= rank; ++i) {
    const std::int64_t da = i <= a.rank() ? a.dim(-i) : 1;
    const std::int64_t db = i <= b.rank() ? b.dim(-i) : 1;
    if (da != db && da != 1 && db != 1) {
      throw Error(std::string(op) + ": shapes " + a.to_string() + " and " + b.to_string() +
                  " cannot be broadcast (dimension " + std::to_string(rank - i) + ": " +
                  std::to_string(da) + " vs " + std::to_string(db) + ")");
    }
    dims[static_cast<std::size_t>(rank - i)] = da == 1 ? db : da;
  }
  return Shape(std::move(dims));
}

}  // namespace unitscale

#pragma once
// Shape: the dimensions of a dense row-major tensor, outermost first. A rank-0 shape is a scalar
// with one element.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace unitscale {

class Shape {
 public:
  Shape() = default;
  // Throws unitscale::Error if a dimension is negative or the product of the non-zero dimensions
  // does not fit in int64 (so numel(), outer() and any partial product never overflow).
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::vector<std::int64_t> dims);

  int rank() const { return static_cast<int>(dims_.size()); }
  std::int64_t numel() const;
  // Negative indices count from the end, as in Python: dim(-1) is the innermost dimension.
  std::int64_t dim(int index) const;
  std::int64_t operator[](int index) const { return dim(index); }
  std::span<const std::int64_t> dims() const { return dims_; }

  // The innermost dimension and the product of all the others: the (rows, cols) of the matrix
  // view with leading dimensions flattened. A scalar is 1 x 1.
  std::int64_t inner() const { return dims_.empty() ? 1 : dims_.back(); }
  // The product of every dimension but the last (1 for rank 0 and 1), well defined when the last
  // dimension is 0.
  std::int64_t outer() const {
    std::int64_t n = 1;
    for (std::size_t i = 0; i + 1 < dims_.size(); ++i) n *= dims_[i];
    return n;
  }

  // Resolves a possibly negative axis; throws unitscale::Error naming `op` if it is out of range.
  int axis(int index, std::string_view op) const;

  Shape with_dim(int index, std::int64_t size) const;
  Shape without_dim(int index) const;

  std::string to_string() const;  // "[2, 3, 4]"; "[]" for a scalar

  friend bool operator==(const Shape&, const Shape&) = default;

 private:
  std::vector<std::int64_t> dims_;
};

// NumPy broadcasting of two shapes; throws unitscale::Error naming `op` and both shapes if they
// are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);

}  // namespace unitscale

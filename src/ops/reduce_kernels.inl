// The loops behind reduce_kernels.hpp, compiled once per instruction set. Plain loops only: an
// inline function or template from a header instantiated here would be compiled with this file's
// flags, and the linker may keep that copy for the whole program (see CMakeLists.txt).

#include <cstdint>

#include "ops/reduce_kernels.hpp"

namespace unitscale::detail {
namespace {

constexpr int kLanes = kSumLanes;

// Adds the partial sums pairwise: (0+8) + (4+12) + … in a fixed tree.
double combine(double* lane) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  }
  return lane[0];
}

// The last n − i < kLanes elements, zero-padded to a full row of lanes (adding +0 leaves a partial
// sum unchanged, and no partial sum is ever −0).
void load_tail(const float* x, std::int64_t i, std::int64_t n, float* tail) {
  for (int l = 0; l < kLanes; ++l) tail[l] = i + l < n ? x[i + l] : 0.0f;
}

double sum(const float* x, std::int64_t n) {
  double lane[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]);
  }
  float tail[kLanes];
  load_tail(x, i, n, tail);
  for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(tail[l]);
  return combine(lane);
}

double dot(const float* x, const float* y, std::int64_t n) {
  double lane[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lane[l] += static_cast<double>(x[i + l]) * static_cast<double>(y[i + l]);
    }
  }
  float tail_x[kLanes], tail_y[kLanes];
  load_tail(x, i, n, tail_x);
  load_tail(y, i, n, tail_y);
  for (int l = 0; l < kLanes; ++l) {
    lane[l] += static_cast<double>(tail_x[l]) * static_cast<double>(tail_y[l]);
  }
  return combine(lane);
}

void accumulate(double* acc, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(x[i]);
}

void accumulate_scaled(double* acc, const float* x, double s, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(x[i]) * s;
}

void accumulate_product(double* acc, const float* x, const float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    acc[i] += static_cast<double>(x[i]) * static_cast<double>(y[i]);
  }
}

void accumulate_and_scale(double* acc, const float* x, float* y, float s, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    acc[i] += static_cast<double>(v);
    y[i] = s * v;
  }
}

constexpr ReduceKernels kKernels{sum, dot, accumulate, accumulate_scaled, accumulate_product,
                                 accumulate_and_scale};

}  // namespace
}  // namespace unitscale::detail

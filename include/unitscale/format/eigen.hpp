#pragma once
// Eigen::NumTraits for every MiniFloat, so that Eigen::Matrix<float8_e4m3fn, ...> works and
// .cast<float>() / .cast<float8_e4m3fn>() convert element-wise (round to nearest-even, the
// non-saturating default of the scalar constructor).

#include <Eigen/Core>

#include "unitscale/format/numeric_limits.hpp"

template <unitscale::FormatSpec S>
struct Eigen::NumTraits<unitscale::MiniFloat<S>> : Eigen::GenericNumTraits<unitscale::MiniFloat<S>> {
  using T = unitscale::MiniFloat<S>;
  using Real = T;
  using NonInteger = T;
  using Literal = T;
  using Nested = T;
  enum {
    IsComplex = 0,
    IsInteger = 0,
    IsSigned = S.is_signed ? 1 : 0,
    RequireInitialization = 0,
    ReadCost = 1,
    AddCost = 3,
    MulCost = 3,
  };
  static constexpr T epsilon() { return std::numeric_limits<T>::epsilon(); }
  static constexpr T dummy_precision() { return T(0.5f); }
  static constexpr T highest() { return std::numeric_limits<T>::max(); }
  static constexpr T lowest() { return std::numeric_limits<T>::lowest(); }
  static constexpr T infinity() { return std::numeric_limits<T>::infinity(); }
  static constexpr T quiet_NaN() { return std::numeric_limits<T>::quiet_NaN(); }
  static constexpr int digits10() { return std::numeric_limits<T>::digits10; }
};

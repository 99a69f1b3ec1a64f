#pragma once
// DType: the element type of a tensor or graph value. fp32 is the default and what every op's
// kernels compute in; the low-precision dtypes are the storage formats of the format layer (FP16,
// BF16 and every 8-bit float), read and written through its exact conversions; i32 holds token
// ids and class labels, exact over the whole int32 range (float ids are exact only below 2^24).
//
// Names are the short forms of the format catalogue (docs/formats.md): "f32", "f16", "bf16",
// "e4m3fn", "e5m2", "e4m3fnuz", "e5m2fnuz", "e8m0fnu", "i32".

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "unitscale/format/float8.hpp"
#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/half.hpp"

namespace unitscale {

enum class DType : std::uint8_t {
  kF32,
  kF16,
  kBF16,
  kE4M3FN,
  kE5M2,
  kE4M3FNUZ,
  kE5M2FNUZ,
  kE8M0FNU,
  kI32,
};

// Every dtype, in the order of the enum.
std::span<const DType> all_dtypes();

std::string_view dtype_name(DType dtype);
// Accepts the short names above and the format catalogue's full names ("float8_e4m3fn",
// "float16", "bfloat16", "float32", "int32"); throws unitscale::Error listing the valid names.
DType dtype_from_name(std::string_view name);

constexpr std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    default:
      return 1;
  }
}

// The format-layer descriptor of a floating-point dtype other than f32 (std::nullopt for f32 and
// i32, which the format layer does not describe).
std::optional<FormatSpec> dtype_format(DType dtype);
constexpr bool is_floating(DType dtype) { return dtype != DType::kI32; }

// The C++ element type of a dtype, for typed access (Tensor::data_as<T>()).
template <class T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<std::int32_t> { static constexpr DType value = DType::kI32; };
template <> struct DTypeOf<float16> { static constexpr DType value = DType::kF16; };
template <> struct DTypeOf<bfloat16> { static constexpr DType value = DType::kBF16; };
template <> struct DTypeOf<float8_e4m3fn> { static constexpr DType value = DType::kE4M3FN; };
template <> struct DTypeOf<float8_e5m2> { static constexpr DType value = DType::kE5M2; };
template <> struct DTypeOf<float8_e4m3fnuz> { static constexpr DType value = DType::kE4M3FNUZ; };
template <> struct DTypeOf<float8_e5m2fnuz> { static constexpr DType value = DType::kE5M2FNUZ; };
template <> struct DTypeOf<float8_e8m0fnu> { static constexpr DType value = DType::kE8M0FNU; };
template <class T>
inline constexpr DType dtype_of = DTypeOf<T>::value;

// A set of dtypes: what an op input accepts.
class DTypeSet {
 public:
  constexpr DTypeSet() = default;
  constexpr DTypeSet(std::initializer_list<DType> dtypes) {
    for (const DType d : dtypes) bits_ |= bit(d);
  }
  static constexpr DTypeSet all() {
    DTypeSet s;
    s.bits_ = (std::uint32_t{1} << (static_cast<int>(DType::kI32) + 1)) - 1;
    return s;
  }
  // Every floating-point dtype (all but i32).
  static constexpr DTypeSet floating() {
    DTypeSet s = all();
    s.bits_ &= ~bit(DType::kI32);
    return s;
  }
  constexpr bool contains(DType d) const { return (bits_ & bit(d)) != 0; }
  constexpr bool empty() const { return bits_ == 0; }
  friend constexpr bool operator==(DTypeSet, DTypeSet) = default;
  // "f32", "f32 or i32", "f32, bf16 or f16"; "any dtype" for all().
  std::string to_string() const;

 private:
  static constexpr std::uint32_t bit(DType d) { return std::uint32_t{1} << static_cast<int>(d); }
  std::uint32_t bits_ = 0;
};

}  // namespace unitscale

#pragma once
// Attributes: the named, printable parameters of an op node (mult, axis, the resolved unit scales).
// Kept as an ordered list of (name, value) so the graph printer is stable.
//
// Attributes are typed. Numbers are int64 or double, shapes and axes lists of int64, and policies
// (a constraint, a gelu approximation, a cast's dtype) are enum values that keep their C++ enum
// type: a kernel reads `attrs.get_enum<GeluApproximation>(...)`, an integer read, never a string
// parse. An enum becomes an attribute type by specialising EnumAttribute (see below). Each OpDef
// declares its attributes (AttributeSpec); Graph::apply checks the given ones against that list
// when a node is recorded, so a misspelt name, a wrong type or an unknown enum name is an error at
// the line that made it, and enum names given as text ("tanh") are converted to the enum there.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "unitscale/format/rounding.hpp"
#include "unitscale/tensor/dtype.hpp"

namespace unitscale {

// An enum type that attributes can hold: its name in messages and the conversions of its values to
// and from their names (the parser throws unitscale::Error listing the valid names).
struct EnumType {
  std::string_view name;  // "gelu approximation"
  std::string_view (*value_name)(int value);
  int (*from_name)(std::string_view name);
};

// Specialise for an enum E with `static const EnumType& type();` to make E an attribute type (the
// op files do this for their policies; dtypes, rounding and overflow are declared below).
template <class E>
struct EnumAttribute {};

template <class E>
concept AttributeEnum = std::is_enum_v<E> && requires {
  { EnumAttribute<E>::type() } -> std::same_as<const EnumType&>;
};

// Defines EnumAttribute<E>::type() from E's name and parse functions (in the op's source file):
//   const EnumType& EnumAttribute<GeluApproximation>::type() {
//     return enum_type<GeluApproximation, gelu_approximation_name, gelu_approximation_from_name>(
//         "gelu approximation");
//   }
template <class E, std::string_view (*Name)(E), E (*FromName)(std::string_view)>
const EnumType& enum_type(std::string_view type_name) {
  static const EnumType type{
      type_name, [](int value) { return Name(static_cast<E>(value)); },
      [](std::string_view name) { return static_cast<int>(FromName(name)); }};
  return type;
}

template <>
struct EnumAttribute<DType> {
  static const EnumType& type();
};
template <>
struct EnumAttribute<Rounding> {
  static const EnumType& type();
};
template <>
struct EnumAttribute<Overflow> {
  static const EnumType& type();
};

// The value of an enum attribute: which enum type, and the enumerator.
struct EnumValue {
  const EnumType* type = nullptr;
  int value = 0;

  EnumValue() = default;
  template <AttributeEnum E>
  EnumValue(E e) : type(&EnumAttribute<E>::type()), value(static_cast<int>(e)) {}  // NOLINT
  std::string_view name() const { return type->value_name(value); }
  bool operator==(const EnumValue&) const = default;
};

using AttrValue =
    std::variant<std::int64_t, double, std::string, std::vector<std::int64_t>, EnumValue>;

class Attributes {
 public:
  Attributes() = default;
  Attributes(std::initializer_list<std::pair<std::string, AttrValue>> entries);

  // Replaces an existing entry of the same name, else appends.
  Attributes& set(std::string_view name, AttrValue value);
  bool has(std::string_view name) const;

  // Typed reads; a missing name or a wrong type throws unitscale::Error naming `op` and the
  // attribute. The defaulted forms return `fallback` when the name is absent.
  std::int64_t get_int(std::string_view op, std::string_view name) const;
  std::int64_t get_int(std::string_view op, std::string_view name, std::int64_t fallback) const;
  double get_double(std::string_view op, std::string_view name) const;
  double get_double(std::string_view op, std::string_view name, double fallback) const;
  const std::vector<std::int64_t>& get_ints(std::string_view op, std::string_view name) const;
  template <AttributeEnum E>
  E get_enum(std::string_view op, std::string_view name) const {
    return static_cast<E>(get_enum_value(op, name, EnumAttribute<E>::type()));
  }
  template <AttributeEnum E>
  E get_enum(std::string_view op, std::string_view name, E fallback) const {
    return has(name) ? get_enum<E>(op, name) : fallback;
  }
  // The name of an enum attribute's value ("tanh"), for printers and generic code.
  std::string_view get_enum_name(std::string_view op, std::string_view name) const;

  std::span<const std::pair<std::string, AttrValue>> entries() const { return entries_; }
  std::string to_string() const;  // "{axis=-1, mult=0.25, approximate=tanh}"; doubles as %.9g

 private:
  const AttrValue* find(std::string_view name) const;
  int get_enum_value(std::string_view op, std::string_view name, const EnumType& type) const;
  std::vector<std::pair<std::string, AttrValue>> entries_;
};

// What an op declares about one of its attributes (OpDef::attributes).
struct AttributeSpec {
  enum class Kind { kInt, kDouble, kInts, kEnum };
  std::string_view name;
  Kind kind = Kind::kDouble;
  const EnumType* (*enum_type)() = nullptr;  // kEnum: the enum's type
  bool required = false;

  static constexpr AttributeSpec integer(std::string_view name, bool required = false) {
    return {name, Kind::kInt, nullptr, required};
  }
  static constexpr AttributeSpec real(std::string_view name, bool required = false) {
    return {name, Kind::kDouble, nullptr, required};
  }
  static constexpr AttributeSpec integers(std::string_view name, bool required = false) {
    return {name, Kind::kInts, nullptr, required};
  }
  template <AttributeEnum E>
  static constexpr AttributeSpec enumeration(std::string_view name, bool required = false) {
    return {name, Kind::kEnum, [] { return &EnumAttribute<E>::type(); }, required};
  }
};
inline constexpr bool kRequired = true;

// Checks `attrs` against an op's declared attributes and scales, in place: every attribute must be
// declared (a scale counts as a real number; Graph::set_scale checks more), of its declared kind (an integer is accepted
// for a real and converted), real numbers finite and within float range since kernels compute in
// float, enum names given as text converted to the enum, and required ones present. Throws
// unitscale::Error naming the op, the attribute and what was expected.
void check_attributes(std::string_view op, std::span<const AttributeSpec> specs,
                      std::span<const std::string_view> scales, Attributes& attrs);

}  // namespace unitscale

#include "unitscale/ops/attributes.hpp"

#include <fmt/format.h>

#include <cfloat>
#include <cmath>
#include <limits>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

template <class T>
const T& typed(const AttrValue* value, std::string_view op, std::string_view name,
               std::string_view type) {
  if (value == nullptr) throw Error(fmt::format("{}: missing attribute '{}'", op, name));
  const T* typed_value = std::get_if<T>(value);
  if (typed_value == nullptr) {
    throw Error(fmt::format("{}: attribute '{}' must be {}", op, name, type));
  }
  return *typed_value;
}

std::string format_value(const AttrValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::int64_t>) return std::to_string(v);
        else if constexpr (std::is_same_v<T, double>) return fmt::format("{:.9g}", v);
        else if constexpr (std::is_same_v<T, std::string>) return '"' + v + '"';
        else if constexpr (std::is_same_v<T, EnumValue>) return std::string(v.name());
        else return fmt::format("[{}]", fmt::join(v, ", "));
      },
      value);
}

}  // namespace

Attributes::Attributes(std::initializer_list<std::pair<std::string, AttrValue>> entries) {
  for (const auto& [name, value] : entries) set(name, value);
}

Attributes& Attributes::set(std::string_view name, AttrValue value) {
  for (auto& entry : entries_) {
    if (entry.first == name) {
      entry.second = std::move(value);
      return *this;
    }
  }
  entries_.emplace_back(std::string(name), std::move(value));
  return *this;
}

const AttrValue* Attributes::find(std::string_view name) const {
  for (const auto& entry : entries_) {
    if (entry.first == name) return &entry.second;
  }
  return nullptr;
}

bool Attributes::has(std::string_view name) const { return find(name) != nullptr; }

std::int64_t Attributes::get_int(std::string_view op, std::string_view name) const {
  return typed<std::int64_t>(find(name), op, name, "an integer");
}
std::int64_t Attributes::get_int(std::string_view op, std::string_view name,
                                 std::int64_t fallback) const {
  return has(name) ? get_int(op, name) : fallback;
}
double Attributes::get_double(std::string_view op, std::string_view name) const {
  return typed<double>(find(name), op, name, "a number");
}
double Attributes::get_double(std::string_view op, std::string_view name, double fallback) const {
  return has(name) ? get_double(op, name) : fallback;
}
int Attributes::get_enum_value(std::string_view op, std::string_view name,
                               const EnumType& type) const {
  const auto& value = typed<EnumValue>(find(name), op, name, "an enum value");
  if (value.type != &type) {
    throw Error(fmt::format("{}: attribute '{}' is a {}, not a {}", op, name, value.type->name,
                            type.name));
  }
  return value.value;
}

std::string_view Attributes::get_enum_name(std::string_view op, std::string_view name) const {
  return typed<EnumValue>(find(name), op, name, "an enum value").name();
}
const std::vector<std::int64_t>& Attributes::get_ints(std::string_view op,
                                                      std::string_view name) const {
  return typed<std::vector<std::int64_t>>(find(name), op, name, "a list of integers");
}

std::string Attributes::to_string() const {
  std::string text = "{";
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (i) text += ", ";
    text += entries_[i].first + "=" + format_value(entries_[i].second);
  }
  return text + "}";
}

const EnumType& EnumAttribute<DType>::type() {
  return enum_type<DType, dtype_name, dtype_from_name>("dtype");
}
const EnumType& EnumAttribute<Rounding>::type() {
  return enum_type<Rounding, rounding_name, rounding_from_name>("rounding");
}
const EnumType& EnumAttribute<Overflow>::type() {
  return enum_type<Overflow, overflow_name, overflow_from_name>("overflow");
}

namespace {

std::string_view kind_name(AttributeSpec::Kind kind) {
  switch (kind) {
    case AttributeSpec::Kind::kInt:
      return "an integer";
    case AttributeSpec::Kind::kDouble:
      return "a number";
    case AttributeSpec::Kind::kInts:
      return "a list of integers";
    case AttributeSpec::Kind::kEnum:
      break;
  }
  return "an enum value";
}

// A real attribute as the kernels will use it: finite and representable as a float (a multiplier
// of 1e300 would otherwise become inf inside a kernel and turn finite rows into NaN).
double checked_real(std::string_view op, std::string_view name, const AttrValue& value) {
  double real = 0;
  if (const auto* i = std::get_if<std::int64_t>(&value)) real = static_cast<double>(*i);
  else if (const auto* d = std::get_if<double>(&value)) real = *d;
  else throw Error(fmt::format("{}: attribute '{}' must be a number", op, name));
  if (!std::isfinite(real) || std::abs(real) > FLT_MAX) {
    throw Error(fmt::format("{}: attribute '{}' is {}, expected a finite number of float range "
                            "(|x| <= {:.9g})",
                            op, name, real, FLT_MAX));
  }
  // A nonzero too small for float would read as 0 in the kernels while the shape and scale rules
  // (in double) still see it positive (softmax with mult 4.9e-324).
  if (real != 0.0 && static_cast<float>(real) == 0.0f) {
    throw Error(
        fmt::format("{}: attribute '{}' is {}, which rounds to 0 in float: expected 0 or "
                    "|x| >= {:.9g}",
                    op, name, real, std::numeric_limits<float>::denorm_min()));
  }
  return real;
}

// The attribute after checking it against its spec (an enum name given as text parsed).
AttrValue checked(std::string_view op, const AttributeSpec& spec, const AttrValue& value) {
  switch (spec.kind) {
    case AttributeSpec::Kind::kDouble:
      return checked_real(op, spec.name, value);
    case AttributeSpec::Kind::kInt:
      if (std::holds_alternative<std::int64_t>(value)) return value;
      break;
    case AttributeSpec::Kind::kInts:
      if (std::holds_alternative<std::vector<std::int64_t>>(value)) return value;
      break;
    case AttributeSpec::Kind::kEnum: {
      const EnumType& type = *spec.enum_type();
      if (const auto* text = std::get_if<std::string>(&value)) {
        try {
          EnumValue parsed;
          parsed.type = &type;
          parsed.value = type.from_name(*text);
          return parsed;
        } catch (const Error& e) {
          std::string_view what = e.what();
          if (what.starts_with(op) && what.substr(op.size()).starts_with(": ")) {
            what.remove_prefix(op.size() + 2);
          }
          throw Error(fmt::format("{}: attribute '{}': {}", op, spec.name, what));
        }
      }
      if (const auto* e = std::get_if<EnumValue>(&value)) {
        if (e->type == &type) return value;
        throw Error(fmt::format("{}: attribute '{}' must be a {}, got a {} ({})", op, spec.name,
                                type.name, e->type->name, e->name()));
      }
      throw Error(fmt::format("{}: attribute '{}' must be a {} (given by name or enum)", op,
                              spec.name, type.name));
    }
  }
  throw Error(fmt::format("{}: attribute '{}' must be {}", op, spec.name, kind_name(spec.kind)));
}

}  // namespace

void check_attributes(std::string_view op, std::span<const AttributeSpec> specs,
                      std::span<const std::string_view> scales, Attributes& attrs) {
  std::vector<std::pair<std::string, AttrValue>> checked_entries;
  for (const auto& [name, value] : attrs.entries()) {
    const AttributeSpec* spec = nullptr;
    for (const AttributeSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec != nullptr) {
      checked_entries.emplace_back(name, checked(op, *spec, value));
      continue;
    }
    bool is_scale = false;
    for (const std::string_view s : scales) is_scale = is_scale || s == name;
    if (!is_scale) {
      std::vector<std::string_view> valid;
      for (const AttributeSpec& s : specs) valid.push_back(s.name);
      valid.insert(valid.end(), scales.begin(), scales.end());
      throw Error(fmt::format("{}: unknown attribute '{}'; {}", op, name,
                              valid.empty() ? std::string("the op takes none")
                                            : fmt::format("valid: {}", fmt::join(valid, ", "))));
    }
    checked_entries.emplace_back(name, checked_real(op, name, value));
  }
  for (const AttributeSpec& spec : specs) {
    if (spec.required && !attrs.has(spec.name)) {
      throw Error(fmt::format("{}: missing attribute '{}' ({})", op, spec.name,
                              spec.kind == AttributeSpec::Kind::kEnum
                                  ? "a " + std::string(spec.enum_type()->name)
                                  : std::string(kind_name(spec.kind))));
    }
  }
  Attributes result;
  for (auto& [name, value] : checked_entries) result.set(name, std::move(value));
  attrs = std::move(result);
}

}  // namespace unitscale

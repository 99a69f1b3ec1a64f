#include "unitscale/ops/attributes.hpp"

#include <fmt/format.h>

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
const std::string& Attributes::get_string(std::string_view op, std::string_view name) const {
  return typed<std::string>(find(name), op, name, "a string");
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

}  // namespace unitscale

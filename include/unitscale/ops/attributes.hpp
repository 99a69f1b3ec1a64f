#pragma once
// Attributes: the named, printable parameters of an op node (mult, axis, the resolved unit scales).
// Kept as an ordered list of (name, value) so the graph printer is stable.

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace unitscale {

using AttrValue = std::variant<std::int64_t, double, std::string, std::vector<std::int64_t>>;

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
  const std::string& get_string(std::string_view op, std::string_view name) const;
  const std::vector<std::int64_t>& get_ints(std::string_view op, std::string_view name) const;

  std::span<const std::pair<std::string, AttrValue>> entries() const { return entries_; }
  std::string to_string() const;  // "{axis=-1, mult=0.25}"; doubles printed with %.9g

 private:
  const AttrValue* find(std::string_view name) const;
  std::vector<std::pair<std::string, AttrValue>> entries_;
};

}  // namespace unitscale

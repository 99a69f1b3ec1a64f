#include "unitscale/format/format_spec.hpp"

#include <array>
#include <charconv>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr std::array kNamedFormats{
    NamedFormat{"float8_e4m3fn", kFloat8E4M3FN},     NamedFormat{"float8_e5m2", kFloat8E5M2},
    NamedFormat{"float8_e4m3fnuz", kFloat8E4M3FNUZ}, NamedFormat{"float8_e5m2fnuz", kFloat8E5M2FNUZ},
    NamedFormat{"float8_e8m0fnu", kFloat8E8M0FNU},   NamedFormat{"float6_e2m3fn", kFloat6E2M3FN},
    NamedFormat{"float6_e3m2fn", kFloat6E3M2FN},     NamedFormat{"float4_e2m1fn", kFloat4E2M1FN},
    NamedFormat{"float16", kFloat16},                NamedFormat{"bfloat16", kBFloat16},
};

static_assert([] {
  for (const auto& f : kNamedFormats)
    if (!f.spec.is_valid()) return false;
  return true;
}());

// "float8_e4m3fn" -> "e4m3fn"; names without a width prefix are their own short name.
std::string_view short_name(std::string_view name) {
  const auto underscore = name.find('_');
  return underscore == std::string_view::npos ? name : name.substr(underscore + 1);
}

std::string valid_names() {
  std::string names;
  for (const auto& f : kNamedFormats) {
    if (!names.empty()) names += ", ";
    names += f.name;
  }
  return names;
}

// Reads a decimal integer at the front of `text`, advancing it; returns false if there is none.
bool read_int(std::string_view& text, int& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{}) return false;
  text.remove_prefix(static_cast<std::size_t>(end - text.data()));
  return true;
}

}  // namespace

std::span<const NamedFormat> named_formats() { return kNamedFormats; }

const FormatSpec& format_from_name(std::string_view name) {
  for (const auto& f : kNamedFormats) {
    if (name == f.name || name == short_name(f.name)) return f.spec;
  }
  throw Error("unknown number format '" + std::string(name) + "'; valid names: " + valid_names());
}

std::string format_name(const FormatSpec& spec) {
  for (const auto& f : kNamedFormats) {
    if (f.spec == spec) return std::string(f.name);
  }
  return "custom(E" + std::to_string(spec.exponent_bits) + "M" + std::to_string(spec.mantissa_bits) +
         ", bias " + std::to_string(spec.bias) + ")";
}

FormatSpec parse_format(std::string_view text) {
  for (const auto& f : kNamedFormats) {
    if (text == f.name || text == short_name(f.name)) return f.spec;
  }
  std::string_view rest = text;
  int exponent_bits = 0, mantissa_bits = 0;
  bool ok = !rest.empty() && rest.front() == 'e';
  if (ok) rest.remove_prefix(1);
  ok = ok && read_int(rest, exponent_bits) && !rest.empty() && rest.front() == 'm';
  if (ok) rest.remove_prefix(1);
  ok = ok && read_int(rest, mantissa_bits);
  int bias = exponent_bits > 0 && exponent_bits < 31 ? (1 << (exponent_bits - 1)) - 1 : 0;
  if (ok && !rest.empty() && rest.front() == 'b') {
    rest.remove_prefix(1);
    ok = read_int(rest, bias);
  }
  ok = ok && rest.empty();
  const FormatSpec spec{exponent_bits, mantissa_bits, bias, true, NonFiniteEncoding::kIeee,
                        ZeroEncoding::kSigned};
  if (!ok || !spec.is_valid()) {
    throw Error("cannot parse number format '" + std::string(text) +
                "': expected a catalogue name (" + valid_names() +
                ") or an IEEE-like descriptor 'e<E>m<M>[b<bias>]' that fits in float32 "
                "(1 <= E <= 8, M <= 23, at most 16 bits), e.g. 'e5m10' or 'e4m3b11'");
  }
  return spec;
}

}  // namespace unitscale

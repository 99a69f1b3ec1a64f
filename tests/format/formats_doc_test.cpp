// docs/formats.md must agree with the library. The format table and the overflow-threshold table
// are parsed, and every number, code and name in them is recomputed here from the catalogue
// descriptors: by decoding every code of the format, through std::numeric_limits, and (for the
// threshold table) by converting the threshold itself. A wrong edit to either table fails this
// test; CheckerCatchesWrongEdits proves that with deliberately corrupted copies of the page.
//
// The page is found through the UNITSCALE_SOURCE_DIR compile definition set by tests/CMakeLists.txt.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/format/convert.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/format/numeric_limits.hpp"

namespace unitscale {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Locating and reading the page
// ---------------------------------------------------------------------------------------------

std::string read_doc() {
  const fs::path path = fs::path(UNITSCALE_SOURCE_DIR) / "docs" / "formats.md";
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << "cannot read " << path.string();
  return text.str();
}

// ---------------------------------------------------------------------------------------------
// Markdown tables
// ---------------------------------------------------------------------------------------------

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return std::string(s.substr(first, last - first + 1));
}

// (Built by appending rather than with std::string::replace, which trips GCC 12's -Wrestrict
// false positive at -O3.)
std::string replace_all(const std::string& s, std::string_view from, std::string_view to) {
  std::string result;
  std::size_t done = 0;
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, done)) {
    result.append(s, done, at - done).append(to);
    done = at + from.size();
  }
  return result.append(s, done, std::string::npos);
}

// The typographic characters the page uses, as ASCII: · × → *, − and – → -, ≈ → ~.
std::string ascii(std::string s) {
  s = replace_all(s, "\u00B7", "*");
  s = replace_all(s, "\u00D7", "*");
  s = replace_all(s, "\u2212", "-");
  s = replace_all(s, "\u2013", "-");
  s = replace_all(s, "\u2248", "~");
  return s;
}

std::vector<std::string> split_row(std::string_view line) {
  std::vector<std::string> cells;
  std::string line_str = trim(line);
  std::string_view rest = line_str;
  if (rest.empty() || rest.front() != '|') return cells;
  rest.remove_prefix(1);
  std::string cell;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '\\' && i + 1 < rest.size() && rest[i + 1] == '|') {
      cell += '|';
      ++i;
    } else if (rest[i] == '|') {
      cells.push_back(trim(cell));
      cell.clear();
    } else {
      cell += rest[i];
    }
  }
  if (!trim(cell).empty()) cells.push_back(trim(cell));  // a row without a closing '|'
  return cells;
}

struct Table {
  std::vector<std::vector<std::string>> rows;  // body rows, header and separator excluded
  std::size_t first_line = 0;                   // 1-based line number of the header
};

// The table whose header row has exactly these cells.
std::optional<Table> find_table(const std::string& doc, const std::vector<std::string>& header) {
  std::istringstream in(doc);
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (split_row(line) != header) continue;
    Table table;
    table.first_line = number;
    std::getline(in, line);  // the |---| separator
    while (std::getline(in, line) && !trim(line).empty() && trim(line).front() == '|') {
      table.rows.push_back(split_row(line));
    }
    return table;
  }
  return std::nullopt;
}

// The catalogue name in a first cell such as "`float8_e4m3fn` (OCP E4M3)".
std::string name_cell(const std::string& cell) {
  const auto open = cell.find('`');
  const auto close = open == std::string::npos ? open : cell.find('`', open + 1);
  if (close == std::string::npos) return cell;
  return cell.substr(open + 1, close - open - 1);
}

// ---------------------------------------------------------------------------------------------
// Numbers: "448 = 1.75*2^8", "(2 - 2^-7)*2^127 ~ 3.3895e38", "2^-9 ~ 0.00195", "7.5"
// ---------------------------------------------------------------------------------------------

// Recursive-descent evaluator for + - * ^, parentheses and decimal literals; nullopt on any
// syntax error.
class Expression {
 public:
  static std::optional<double> evaluate(std::string_view text) {
    Expression e(text);
    const auto value = e.sum();
    e.skip_space();
    if (!value || e.pos_ != e.text_.size()) return std::nullopt;
    return value;
  }

 private:
  explicit Expression(std::string_view text) : text_(text) {}

  void skip_space() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::optional<double> sum() {
    auto value = product();
    while (value) {
      if (accept('+')) {
        const auto rhs = product();
        if (!rhs) return std::nullopt;
        *value += *rhs;
      } else if (accept('-')) {
        const auto rhs = product();
        if (!rhs) return std::nullopt;
        *value -= *rhs;
      } else {
        break;
      }
    }
    return value;
  }
  std::optional<double> product() {
    auto value = unary();
    while (value && accept('*')) {
      const auto rhs = unary();
      if (!rhs) return std::nullopt;
      *value *= *rhs;
    }
    return value;
  }
  std::optional<double> unary() {
    if (accept('-')) {
      const auto value = unary();
      return value ? std::optional<double>(-*value) : std::nullopt;
    }
    return power();
  }
  std::optional<double> power() {
    const auto base = primary();
    if (!base || !accept('^')) return base;
    const auto exponent = unary();
    if (!exponent) return std::nullopt;
    return std::pow(*base, *exponent);
  }
  std::optional<double> primary() {
    if (accept('(')) {
      const auto value = sum();
      if (!value || !accept(')')) return std::nullopt;
      return value;
    }
    skip_space();
    const char* begin = text_.data() + pos_;
    double value = 0;
    const auto [end, error] = std::from_chars(begin, text_.data() + text_.size(), value);
    if (error != std::errc{} || end == begin) return std::nullopt;
    pos_ += static_cast<std::size_t>(end - begin);
    return value;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

// Significant digits of a decimal literal ("0.00195" -> 3, "3.3895e38" -> 5).
int significant_digits(std::string_view literal) {
  const auto e = literal.find_first_of("eE");
  std::string digits;
  for (char c : literal.substr(0, e)) {
    if (c >= '0' && c <= '9') digits += c;
  }
  const auto first = digits.find_first_not_of('0');
  return first == std::string::npos ? 1 : static_cast<int>(digits.size() - first);
}

// Checks a numeric cell: every "=" part must equal `truth` exactly, and every "~" part must be a
// decimal literal equal to `truth` rounded to the literal's own number of significant digits.
// At least one exact part is required. Returns an empty string or a description of the problem.
std::string check_number(const std::string& raw, double truth) {
  const std::string cell = ascii(raw);
  std::vector<std::pair<char, std::string>> parts;  // (separator before it, text)
  char separator = '=';
  std::string part;
  for (char c : cell) {
    if (c == '=' || c == '~') {
      parts.emplace_back(separator, trim(part));
      separator = c;
      part.clear();
    } else {
      part += c;
    }
  }
  parts.emplace_back(separator, trim(part));

  bool exact_seen = false;
  std::ostringstream problem;
  problem.precision(17);
  for (const auto& [sep, text] : parts) {
    const auto value = Expression::evaluate(text);
    if (!value) return "cannot parse '" + text + "' in '" + raw + "'";
    if (sep == '=') {
      exact_seen = true;
      if (*value != truth) {
        problem << "'" << text << "' is " << *value << " but the library says " << truth;
        return problem.str();
      }
    } else {
      const double literal = *value;
      const bool plain = text.find_first_of("^*()") == std::string::npos;
      if (!plain) return "approximation '" + text + "' must be a plain decimal literal";
      const int digits = significant_digits(text);
      const double unit =
          std::pow(10.0, std::floor(std::log10(std::fabs(literal))) - digits + 1);
      if (std::fabs(literal - truth) > 0.5 * unit * (1 + 1e-9)) {
        problem << "'" << text << "' is not " << truth << " rounded to " << digits
                << " significant digits";
        return problem.str();
      }
    }
  }
  if (!exact_seen) return "'" + raw + "' has no exact value";
  return {};
}

std::optional<int> parse_int(const std::string& cell) {
  int value = 0;
  const auto [end, error] = std::from_chars(cell.data(), cell.data() + cell.size(), value);
  if (error != std::errc{} || end != cell.data() + cell.size()) return std::nullopt;
  return value;
}

// "0x7E": hex digits must match the format's width (one digit per 4 bits, rounded up).
std::optional<std::uint32_t> parse_code(const std::string& raw, int bits) {
  const std::string cell = trim(raw);
  if (cell.size() < 3 || cell[0] != '0' || cell[1] != 'x') return std::nullopt;
  const std::size_t digits = cell.size() - 2;
  if (digits != static_cast<std::size_t>((bits + 3) / 4)) return std::nullopt;
  std::uint32_t value = 0;
  const auto [end, error] = std::from_chars(cell.data() + 2, cell.data() + cell.size(), value, 16);
  if (error != std::errc{} || end != cell.data() + cell.size()) return std::nullopt;
  return value;
}

// "none" -> {}; "0x7D–0x7F, 0xFD–0xFF" -> the codes listed. nullopt on syntax errors.
std::optional<std::set<std::uint32_t>> parse_code_list(const std::string& raw, int bits) {
  const std::string cell = ascii(raw);
  std::set<std::uint32_t> codes;
  if (trim(cell) == "none") return codes;
  std::istringstream items(cell);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto dash = item.find('-');
    const auto lo = parse_code(item.substr(0, dash), bits);
    const auto hi = dash == std::string::npos ? lo : parse_code(item.substr(dash + 1), bits);
    if (!lo || !hi || *hi < *lo) return std::nullopt;
    for (std::uint32_t c = *lo; c <= *hi; ++c) codes.insert(c);
  }
  return codes;
}

// ---------------------------------------------------------------------------------------------
// What the library says
// ---------------------------------------------------------------------------------------------

struct Truth {
  std::string name;
  FormatSpec spec;
  double max = 0;          // largest finite value, by scanning every code
  double min_normal = 0;   // value of the min-normal code
  double min_positive = 0; // smallest positive value, by scanning every code
  std::set<std::uint32_t> inf_codes, nan_codes, negative_zero_codes, one_codes, max_codes;
};

Truth truth_of(const NamedFormat& format) {
  Truth t{};
  t.name = std::string(format.name);
  t.spec = format.spec;
  const FormatSpec& f = format.spec;
  t.min_positive = std::numeric_limits<double>::infinity();
  for (std::uint32_t code = 0; code < f.code_count(); ++code) {
    const double v = detail::decode_bits(code, f);
    if (std::isnan(v)) {
      t.nan_codes.insert(code);
    } else if (std::isinf(v)) {
      t.inf_codes.insert(code);
    } else {
      if (v > t.max) t.max = v;
      if (v > 0 && v < t.min_positive) t.min_positive = v;
      if (v == 0 && std::signbit(v)) t.negative_zero_codes.insert(code);
      if (v == 1.0) t.one_codes.insert(code);
    }
  }
  for (std::uint32_t code = 0; code < f.code_count(); ++code) {
    if (static_cast<double>(detail::decode_bits(code, f)) == t.max) t.max_codes.insert(code);
  }
  t.min_normal = detail::decode_bits(f.min_normal_code(), f);
  return t;
}

const std::vector<Truth>& catalogue_truth() {
  static const std::vector<Truth> truths = [] {
    std::vector<Truth> result;
    for (const auto& format : named_formats()) result.push_back(truth_of(format));
    return result;
  }();
  return truths;
}

// ---------------------------------------------------------------------------------------------
// The checkers: each returns one message per disagreement
// ---------------------------------------------------------------------------------------------

const std::vector<std::string> kFormatHeader = {
    "format", "bits", "E/M", "bias", "max", "min normal", "min subnormal",
    "Inf", "NaN codes", "\u22120", "+1.0", "max code"};

const std::vector<std::string> kThresholdHeader = {
    "format", "max", "\u00BD ulp(max)", "threshold T", "RNE at x = T", "RNE just above T"};

std::vector<std::string> check_format_table(const std::string& doc) {
  std::vector<std::string> errors;
  const auto table = find_table(doc, kFormatHeader);
  if (!table) return {"no format table with header | format | bits | E/M | ... | max code |"};
  const auto& truths = catalogue_truth();
  if (table->rows.size() != truths.size()) {
    errors.push_back("format table has " + std::to_string(table->rows.size()) + " rows, the catalogue " +
                     std::to_string(truths.size()) + " formats");
  }
  for (std::size_t i = 0; i < table->rows.size() && i < truths.size(); ++i) {
    const auto& row = table->rows[i];
    const Truth& t = truths[i];
    const FormatSpec& f = t.spec;
    const int bits = f.total_bits();
    auto fail = [&](const std::string& column, const std::string& message) {
      errors.push_back("format table line " + std::to_string(table->first_line + 2 + i) + " (" +
                       t.name + "), column '" + column + "': " + message);
    };
    if (row.size() != kFormatHeader.size()) {
      fail("*", "has " + std::to_string(row.size()) + " cells, expected " +
                    std::to_string(kFormatHeader.size()));
      continue;
    }
    if (name_cell(row[0]) != t.name) {
      fail("format", fmt::format("'{}' but catalogue entry {} is '{}' (rows must follow "
                                 "named_formats())",
                                 name_cell(row[0]), i, t.name));
      continue;
    }
    if (parse_int(row[1]) != bits) fail("bits", "'" + row[1] + "', expected " + std::to_string(bits));
    const std::string em = std::to_string(f.exponent_bits) + "/" + std::to_string(f.mantissa_bits);
    if (row[2] != em) fail("E/M", "'" + row[2] + "', expected " + em);
    if (parse_int(row[3]) != f.bias) fail("bias", "'" + row[3] + "', expected " + std::to_string(f.bias));
    if (auto e = check_number(row[4], t.max); !e.empty()) fail("max", e);
    if (auto e = check_number(row[5], t.min_normal); !e.empty()) fail("min normal", e);
    if (t.min_positive < t.min_normal) {
      if (auto e = check_number(row[6], t.min_positive); !e.empty()) fail("min subnormal", e);
    } else if (row[6] != "\u2014") {
      fail("min subnormal", "'" + row[6] + "', but the format has no subnormals (write \u2014)");
    }
    const auto inf = parse_code_list(row[7], bits);
    if (!inf || *inf != t.inf_codes) fail("Inf", "'" + row[7] + "' is not the set of codes that decode to \u00B1Inf");
    const auto nan = parse_code_list(row[8], bits);
    if (!nan || *nan != t.nan_codes) fail("NaN codes", "'" + row[8] + "' is not the set of codes that decode to NaN");
    if (t.negative_zero_codes.empty()) {
      if (row[9] != "none") fail("\u22120", "'" + row[9] + "', but no code decodes to -0 (write none)");
    } else {
      const auto code = parse_code(row[9], bits);
      if (!code || t.negative_zero_codes.count(*code) == 0) fail("\u22120", "'" + row[9] + "' does not decode to -0");
    }
    const auto one = parse_code(row[10], bits);
    if (!one || t.one_codes.count(*one) == 0) fail("+1.0", "'" + row[10] + "' does not decode to 1.0");
    const auto max_code = parse_code(row[11], bits);
    if (!max_code || t.max_codes.count(*max_code) == 0 || *max_code != f.max_magnitude_code()) {
      fail("max code", "'" + row[11] + "' is not the code of +max");
    }
  }
  return errors;
}

std::vector<std::string> check_threshold_table(const std::string& doc) {
  std::vector<std::string> errors;
  const auto table = find_table(doc, kThresholdHeader);
  if (!table) return {"no threshold table with header | format | max | \u00BD ulp(max) | ... |"};
  const auto& truths = catalogue_truth();
  if (table->rows.size() != truths.size()) {
    errors.push_back("threshold table has " + std::to_string(table->rows.size()) +
                     " rows, the catalogue " + std::to_string(truths.size()) + " formats");
  }
  for (std::size_t i = 0; i < table->rows.size() && i < truths.size(); ++i) {
    const auto& row = table->rows[i];
    const Truth& t = truths[i];
    const FormatSpec& f = t.spec;
    auto fail = [&](const std::string& column, const std::string& message) {
      errors.push_back("threshold table line " + std::to_string(table->first_line + 2 + i) + " (" +
                       t.name + "), column '" + column + "': " + message);
    };
    if (row.size() != kThresholdHeader.size() || name_cell(row[0]) != t.name) {
      fail("format", "expected a row for " + t.name + " with " +
                         std::to_string(kThresholdHeader.size()) + " cells");
      continue;
    }
    // ulp(max) is the spacing of max's own binade.
    const double half_ulp = std::ldexp(1.0, std::ilogb(t.max) - f.mantissa_bits - 1);
    const double threshold = t.max + half_ulp;
    if (auto e = check_number(row[1], t.max); !e.empty()) fail("max", e);
    if (auto e = check_number(row[2], half_ulp); !e.empty()) fail("\u00BD ulp(max)", e);
    if (auto e = check_number(row[3], threshold); !e.empty()) fail("threshold T", e);

    // "max" when round-to-nearest-even gives +max, "overflow" when it gives Inf or NaN.
    auto outcome = [&](double x) -> std::string {
      const std::uint32_t code = detail::encode_bits(x, f, Rounding::kNearestEven, Overflow::kNonFinite);
      if (code == f.max_magnitude_code()) return "max";
      if (!std::isfinite(detail::decode_bits(code, f))) return "overflow";
      return "a finite value other than max";
    };
    const std::string at = outcome(threshold);
    const std::string above = outcome(std::nextafter(threshold, std::numeric_limits<double>::infinity()));
    if (row[4] != at) fail("RNE at x = T", "'" + row[4] + "', the library gives " + at);
    if (row[5] != above) fail("RNE just above T", "'" + row[5] + "', the library gives " + above);
  }
  return errors;
}

std::string joined(const std::vector<std::string>& errors) {
  std::string text;
  for (const auto& e : errors) text += "\n  " + e;
  return text;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

TEST(FormatsDoc, FormatTableMatchesLibrary) {
  const std::string doc = read_doc();
  if (doc.empty()) return;
  const auto errors = check_format_table(doc);
  EXPECT_TRUE(errors.empty()) << "docs/formats.md disagrees with the library:" << joined(errors);
}

TEST(FormatsDoc, ThresholdTableMatchesLibrary) {
  const std::string doc = read_doc();
  if (doc.empty()) return;
  const auto errors = check_threshold_table(doc);
  EXPECT_TRUE(errors.empty()) << "docs/formats.md disagrees with the library:" << joined(errors);
}

// The decoded-code truth the tables are checked against is also what std::numeric_limits says.
template <class T>
void expect_limits_match(const std::vector<Truth>& truths) {
  const FormatSpec spec = FormatTraits<T>::kSpec;
  const std::string name = format_name(spec);
  const Truth* t = nullptr;
  for (const auto& candidate : truths) {
    if (candidate.spec == spec) t = &candidate;
  }
  ASSERT_NE(t, nullptr) << name << " is not in named_formats()";
  auto value = [](T x) { return static_cast<double>(to_float(x)); };
  using L = std::numeric_limits<T>;
  EXPECT_EQ(value(L::max()), t->max) << name;
  EXPECT_EQ(value(L::min()), t->min_normal) << name;
  EXPECT_EQ(value(L::denorm_min()), t->min_positive) << name;
  // Copied first: Eigen declares these in-class without an out-of-line definition, so binding
  // them to EXPECT_EQ's reference parameters would not link.
  const bool has_infinity = L::has_infinity, has_nan = L::has_quiet_NaN;
  EXPECT_EQ(has_infinity, !t->inf_codes.empty()) << name;
  EXPECT_EQ(has_nan, !t->nan_codes.empty()) << name;
}

TEST(FormatsDoc, NumericLimitsAgreeWithDecodedCodes) {
  const auto& truths = catalogue_truth();
  expect_limits_match<float8_e4m3fn>(truths);
  expect_limits_match<float8_e5m2>(truths);
  expect_limits_match<float8_e4m3fnuz>(truths);
  expect_limits_match<float8_e5m2fnuz>(truths);
  expect_limits_match<float8_e8m0fnu>(truths);
  expect_limits_match<float6_e2m3fn>(truths);
  expect_limits_match<float6_e3m2fn>(truths);
  expect_limits_match<float4_e2m1fn>(truths);
  expect_limits_match<float16>(truths);
  expect_limits_match<bfloat16>(truths);
}

// Replaces `from` by `to` in the table row of `format` (the first line starting "| `format`").
std::string corrupt(std::string doc, const std::string& format, const std::string& from,
                    const std::string& to, int row_occurrence = 0) {
  const std::string prefix = "| `" + format + "`";
  std::size_t line = 0;
  for (int k = 0; k <= row_occurrence; ++k) {
    line = doc.find(prefix, k == 0 ? 0 : line + 1);
    if (line == std::string::npos) {
      ADD_FAILURE() << "no row for " << format;
      return doc;
    }
  }
  const std::size_t end = doc.find('\n', line);
  const std::size_t at = doc.find(from, line);
  if (at == std::string::npos || at >= end) {
    ADD_FAILURE() << "'" << from << "' not in the row of " << format;
    return doc;
  }
  return doc.substr(0, at) + to + doc.substr(at + from.size());
}

TEST(FormatsDoc, CheckerCatchesWrongEdits) {
  const std::string doc = read_doc();
  if (doc.empty()) return;
  struct Edit {
    const char* format;
    const char* from;
    const char* to;
    int table;  // 0: format table row, 1: threshold table row
  };
  const Edit edits[] = {
      {"float8_e4m3fn", "448 = 1.75", "449 = 1.75", 0},
      {"float8_e4m3fn", "| 4/3 | 7 |", "| 4/3 | 8 |", 0},
      {"float8_e4m3fn", "0x7F, 0xFF", "0x7F", 0},
      {"float8_e4m3fn", "0x38", "0x39", 0},
      {"float8_e4m3fn", "0.00195", "0.00196", 0},
      {"float8_e5m2", "0x7D\u20130x7F", "0x7C\u20130x7F", 0},
      {"float8_e5m2", "2^-14", "2^-15", 0},
      {"float8_e5m2", "| 8 |", "| 9 |", 0},
      {"float8_e4m3fnuz", "| none | 0x40", "| 0x80 | 0x40", 0},
      {"float8_e4m3fnuz", "`float8_e4m3fnuz`", "`float8_e4m3fnz`", 0},
      {"float8_e8m0fnu", "| \u2014 |", "| 2^-127 |", 0},
      {"float8_e8m0fnu", "0xFE |", "0xFF |", 0},
      {"float6_e3m2fn", "0.0625 = 2^-4", "0.0625 = 2^-5", 0},
      {"float4_e2m1fn", "| 0x8 |", "| 0x08 |", 0},
      {"float16", "65504", "65505", 0},
      {"float16", "0x7C00, 0xFC00", "0x7C00", 0},
      {"bfloat16", "3.3895e38", "3.3896e38", 0},
      {"bfloat16", "(2 \u2212 2^-7)", "(2 \u2212 2^-8)", 0},
      {"float8_e4m3fn", "| 464 | max |", "| 464 | overflow |", 1},
      {"float8_e4m3fn", "| 16 |", "| 32 |", 1},
      {"float8_e5m2", "| overflow | overflow |", "| max | overflow |", 1},
      {"float8_e8m0fnu", "1.5\u00B72^127", "1.25\u00B72^127", 1},
      {"bfloat16", "2^128 \u2212 2^119", "2^128 \u2212 2^118", 1},
  };
  for (const auto& edit : edits) {
    const std::string bad = corrupt(doc, edit.format, edit.from, edit.to, edit.table);
    const auto errors = edit.table == 0 ? check_format_table(bad) : check_threshold_table(bad);
    EXPECT_FALSE(errors.empty()) << "editing '" << edit.from << "' to '" << edit.to << "' in the "
                                 << (edit.table == 0 ? "format" : "threshold") << " table row of "
                                 << edit.format << " went unnoticed";
  }
  // A missing row is noticed too.
  const std::string prefix = "| `float6_e3m2fn`";
  std::string missing = doc;
  const auto line = missing.find(prefix);
  ASSERT_NE(line, std::string::npos);
  missing.erase(line, missing.find('\n', line) - line + 1);
  EXPECT_FALSE(check_format_table(missing).empty());
}

TEST(FormatsDoc, NumberCellGrammar) {
  EXPECT_EQ(check_number("448 = 1.75\u00B72^8", 448), "");
  EXPECT_EQ(check_number("(2 \u2212 2^-7)\u00B72^127 \u2248 3.3895e38", std::ldexp(255.0, 120)), "");
  EXPECT_EQ(check_number("2^-9 \u2248 0.00195", std::ldexp(1.0, -9)), "");
  EXPECT_NE(check_number("2^-9 \u2248 0.0019", std::ldexp(1.0, -9)), "");  // 0.00195 rounds to 0.0020
  EXPECT_NE(check_number("\u2248 448", 448), "");                         // no exact part
  EXPECT_NE(check_number("448 = 1.75\u00B72^", 448), "");                 // syntax error
  EXPECT_EQ(parse_code_list("0x7D\u20130x7F, 0xFD\u20130xFF", 8)->size(), 6u);
  EXPECT_FALSE(parse_code_list("0x7D\u20130x7F, 0xFD\u20130xFF", 16).has_value());  // 2 hex digits
}

}  // namespace
}  // namespace unitscale

#include "unitscale/train/command_line.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

#include <fmt/format.h>

#include "unitscale/error.hpp"

namespace unitscale {

int run_program(std::string_view name, const std::function<int()>& program, int error_status) {
  try {
    return program();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "{}: {}\n", name, e.what());
    return error_status;
  }
}

namespace {

// A default as --help shows it: shortest round-tripping decimal, powers of two as 2^E.
std::string number_text(double x) {
  int exponent = 0;
  if (x > 0 && std::frexp(x, &exponent) == 0.5 && (exponent - 1 < -3 || exponent - 1 > 10)) {
    return fmt::format("2^{}", exponent - 1);
  }
  return fmt::format("{}", x);
}

// `text` broken into lines of at most `width` characters (words longer than that stay whole).
std::vector<std::string> wrap(std::string_view text, std::size_t width) {
  std::vector<std::string> lines(1);
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(start, end - start);
    if (!lines.back().empty() && lines.back().size() + 1 + word.size() > width) lines.emplace_back();
    if (!lines.back().empty()) lines.back() += ' ';
    lines.back() += word;
    start = end + 1;
  }
  return lines;
}

constexpr std::size_t kHelpWidth = 100;

}  // namespace

CommandLine::CommandLine(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

CommandLine& CommandLine::add(Entry entry) {
  if (!entry.is_section) {
    for (const Entry& e : entries_) {
      if (!e.is_section && e.name == entry.name) {
        throw Error(fmt::format("CommandLine: {} is declared twice", entry.name));
      }
    }
  }
  entries_.push_back(std::move(entry));
  return *this;
}

CommandLine& CommandLine::section(std::string title) {
  return add({.name = std::move(title), .is_section = true});
}

CommandLine& CommandLine::flag(std::string name, bool* target, std::string help) {
  return add({.name = std::move(name),
              .help = std::move(help),
              .is_flag = true,
              .set = [target](std::string_view) { *target = true; }});
}

CommandLine& CommandLine::option(std::string name, std::string* target, std::string metavar,
                                 std::string help) {
  return add({.name = std::move(name),
              .metavar = std::move(metavar),
              .help = std::move(help),
              .default_text = *target,
              .set = [target](std::string_view v) { *target = std::string(v); }});
}

CommandLine& CommandLine::option(std::string name, std::int64_t* target, std::string metavar,
                                 std::string help, std::int64_t min) {
  const std::string flag = name;
  return add({.name = std::move(name),
              .metavar = std::move(metavar),
              .help = std::move(help),
              .default_text = std::to_string(*target),
              .set = [target, flag, min](std::string_view v) {
                std::int64_t x = 0;
                const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
                if (ec != std::errc() || end != v.data() + v.size() || x < min) {
                  throw Error(fmt::format("{} needs an integer ≥ {}, got '{}'", flag, min, v));
                }
                *target = x;
              }});
}

CommandLine& CommandLine::option(std::string name, double* target, std::string metavar,
                                 std::string help) {
  const std::string flag = name;
  return add({.name = std::move(name),
              .metavar = std::move(metavar),
              .help = std::move(help),
              .default_text = number_text(*target),
              .set = [target, flag](std::string_view v) { *target = parse_number(flag, v); }});
}

CommandLine& CommandLine::choice(std::string name, std::string* target,
                                 std::vector<std::string> choices, std::string help) {
  const std::string flag = name;
  std::string metavar;
  for (const std::string& c : choices) metavar += (metavar.empty() ? "" : "|") + c;
  return add({.name = std::move(name),
              .metavar = metavar,
              .help = std::move(help),
              .default_text = *target,
              .set = [target, flag, choices, metavar](std::string_view v) {
                if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
                  throw Error(fmt::format("{} must be one of {}, got '{}'", flag, metavar, v));
                }
                *target = std::string(v);
              }});
}

CommandLine& CommandLine::epilog(std::string text) {
  epilog_ = std::move(text);
  return *this;
}

double CommandLine::parse_number(std::string_view what, std::string_view text) {
  auto plain = [&](std::string_view t, double& x) {
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), x);
    return ec == std::errc() && end == t.data() + t.size() && std::isfinite(x);
  };
  double x = 0;
  if (text.starts_with("2^")) {
    double e = 0;
    if (plain(text.substr(2), e) && std::isfinite(std::exp2(e))) return std::exp2(e);
  } else if (plain(text, x)) {
    return x;
  }
  throw Error(fmt::format("{} needs a number (decimal, or a power of two as 2^E), got '{}'", what,
                          text));
}

std::vector<std::string> CommandLine::split_list(std::string_view text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    items.emplace_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

std::vector<std::int64_t> CommandLine::parse_positive_integers(std::string_view what,
                                                               std::string_view text) {
  std::vector<std::int64_t> values;
  for (const std::string& item : split_list(text)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < 1) {
      throw Error(fmt::format("{}: '{}' is not a positive integer (in '{}')", what, item, text));
    }
    values.push_back(v);
  }
  return values;
}

bool CommandLine::parse(int argc, const char* const* argv) {
  given_.clear();
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fmt::print("{}", help());
      return false;
    }
    std::string_view inline_value;
    bool has_inline = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    const auto entry = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
      return !e.is_section && e.name == arg;
    });
    if (entry == entries_.end()) {
      throw Error(fmt::format("unknown option '{}' (see --help)", arg));
    }
    if (entry->is_flag) {
      if (has_inline) throw Error(fmt::format("{} takes no value", arg));
      entry->set({});
    } else if (has_inline) {
      entry->set(inline_value);
    } else {
      if (i + 1 >= argc) throw Error(fmt::format("{} needs a value {}", arg, entry->metavar));
      entry->set(argv[++i]);
    }
    given_.emplace_back(arg);
  }
  return true;
}

bool CommandLine::given(std::string_view name) const {
  return std::find(given_.begin(), given_.end(), name) != given_.end();
}

std::string CommandLine::help() const {
  std::string out = fmt::format("usage: {} [options]\n\n{}\n", program_, description_);
  std::size_t column = 0;
  for (const Entry& e : entries_) {
    if (!e.is_section) column = std::max(column, e.name.size() + 1 + e.metavar.size());
  }
  column = std::min<std::size_t>(column, 30);
  for (const Entry& e : entries_) {
    if (e.is_section) {
      out += fmt::format("\n{}:\n", e.name);
      continue;
    }
    const std::string head = e.metavar.empty() ? e.name : e.name + " " + e.metavar;
    std::string text = e.help;
    if (!e.is_flag && !e.default_text.empty()) text += fmt::format(" (default {})", e.default_text);
    // The help column starts after the widest name; long names get a line of their own.
    if (head.size() > column) out += fmt::format("  {}\n", head);
    bool first = head.size() <= column;
    for (const std::string& line : wrap(text, kHelpWidth - column - 4)) {
      out += fmt::format("  {:{}}  {}\n", first ? head : "", column, line);
      first = false;
    }
  }
  if (!epilog_.empty()) out += "\n" + epilog_ + "\n";
  return out;
}

}  // namespace unitscale

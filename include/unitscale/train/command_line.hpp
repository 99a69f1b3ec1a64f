#pragma once
// CommandLine: the options of a training program, declared once with their help; parsing and the
// --help text both come from the declarations, so they cannot drift apart. Each option writes into
// a variable whose value before parsing is the default the help shows.
//
//   std::int64_t width = 128;  double lr = 1.0;  std::string data = "corpus.txt";
//   CommandLine cli("unitscale-train", "Trains a byte-level decoder.");
//   cli.option("--width", &width, "N", "model width").option("--lr", &lr, "X", "learning rate");
//   if (!cli.parse(argc, argv)) return 0;   // --help was printed
//
// Numbers accept powers of two as 2^E (--lr 2^-8), the notation of learning-rate grids. A bad
// value or an unknown option throws unitscale::Error naming the option and what it expected.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace unitscale {

// main()'s body for a program: returns what `program` returns, or, if it throws, prints
// "<name>: <message>" on stderr (after flushing stdout, so that the message comes last) and
// returns `error_status`.
int run_program(std::string_view name, const std::function<int()>& program, int error_status = 1);

class CommandLine {
 public:
  CommandLine(std::string program, std::string description);

  // Starts a group of options under a heading in --help.
  CommandLine& section(std::string title);
  CommandLine& flag(std::string name, bool* target, std::string help);
  CommandLine& option(std::string name, std::string* target, std::string metavar,
                      std::string help);
  // `min`: the smallest value accepted.
  CommandLine& option(std::string name, std::int64_t* target, std::string metavar,
                      std::string help, std::int64_t min = 0);
  CommandLine& option(std::string name, double* target, std::string metavar, std::string help);
  // One of `choices`.
  CommandLine& choice(std::string name, std::string* target, std::vector<std::string> choices,
                      std::string help);
  // Free text after the options in --help (examples, notes).
  CommandLine& epilog(std::string text);

  // Returns false after printing --help (the program should exit 0).
  bool parse(int argc, const char* const* argv);
  bool given(std::string_view name) const;  // whether the last parse() saw the option
  std::string help() const;

  // "2^-8" → 1/256, else a plain decimal; throws naming `what` if it is not a finite number.
  static double parse_number(std::string_view what, std::string_view text);
  // The items of a comma-separated list, "a,b" → {"a", "b"}; empty items are kept, so that the
  // caller's check of each item names them.
  static std::vector<std::string> split_list(std::string_view text);
  // A comma-separated list of positive integers (widths, layer sizes), in the given order; throws
  // naming `what` and the bad item otherwise.
  static std::vector<std::int64_t> parse_positive_integers(std::string_view what,
                                                           std::string_view text);

 private:
  struct Entry {
    std::string name = {};
    std::string metavar = {};  // empty for flags and section headings
    std::string help = {};
    std::string default_text = {};
    bool is_section = false;
    bool is_flag = false;
    std::function<void(std::string_view)> set = {};
  };
  CommandLine& add(Entry entry);

  std::string program_;
  std::string description_;
  std::string epilog_;
  std::vector<Entry> entries_;
  std::vector<std::string> given_;
};

}  // namespace unitscale

// The μP coord check (experiment E1; "Tensor Programs V", arXiv 2203.03466; u-μP, arXiv
// 2407.17465): train the byte-level decoder M(d, 2) for a few Adam steps at widths 32 … 1024 under
// SP, μP and u-μP, all on one fixed batch, and fit how the typical activation size mean|x| of each
// module scales with the width. Under μP and u-μP the hidden activations stay Θ(1) (slope ≈ 0);
// under SP the updates grow with the width, and so do the activations after the first step.
//
// The batch is 8 windows of 65 bytes from the start of the text corpus (the Debian fortunes, as
// described in docs/results.md; or --data FILE), reused at every step. The program prints a
// progress line per model, the slopes and the pass table, and writes to --out:
//   coord_check.csv   scheme,width,seed,module,t,l1,rms (every measurement)
//   slopes.csv        scheme,module,t,slope,widths (log2 l1 vs log2 width, widths ≥ 64)
//   criteria.csv      criterion,scheme,module,t,width,value,pass
//   coord_check.svg   one panel per scheme, mean|x| against width at the last step
//
//   03_coord_check [--widths 32,64,...] [--seeds N] [--steps N] [--out DIR] [--data PATH]
//                  [--embedding-lr-exponent E] [--check] [--smoke] [--help]

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/coord_check.hpp"

namespace us = unitscale;
namespace fs = std::filesystem;

namespace {

const fs::path kFortunes{us::kFortunesDirectory};

struct Options {
  us::CoordCheckConfig config;
  fs::path out = ".";
  fs::path data = kFortunes;
  bool data_given = false;
  bool check = false;
  bool smoke = false;
};

void print_help() {
  fmt::print(
      "03_coord_check: the muP coord check (experiment E1) for SP, muP and u-muP on the "
      "byte-level\n"
      "decoder M(d, 2): mean|x| of every module over a few Adam steps at several widths, and the\n"
      "slope of log2 mean|x| against log2 width.\n\n"
      "usage: 03_coord_check [--widths LIST] [--seeds N] [--steps N] [--out DIR] [--data PATH]\n"
      "                      [--embedding-lr-exponent E] [--check] [--smoke] [--help]\n"
      "  --widths LIST  comma-separated widths, multiples of 32 (default 32,64,128,256,512,1024);\n"
      "                 widths below 64 are recorded but not fitted, so give at least two >= 64\n"
      "  --seeds N      model seeds per width (default 3)\n"
      "  --steps N      steps t = 1..N, t = 1 before any update (default 5)\n"
      "  --out DIR      where to write coord_check.csv, slopes.csv, criteria.csv, coord_check.svg\n"
      "                 (default: current directory)\n"
      "  --data PATH    the text: a file (its bytes), or a directory of fortune files (every\n"
      "                 regular file except *.dat and *.u8, in sorted order, entries split at '%'\n"
      "                 lines and joined with one newline); the batch is its first 8 x 65 bytes\n"
      "                 (default {}, from the Debian package fortunes)\n"
      "  --embedding-lr-exponent E\n"
      "                 diagnostic: the muP and u-muP embedding-LR exponent e (Adam factor\n"
      "                 fan_out^e) instead of each scheme's default (0 for muP, -1/2 for u-muP)\n"
      "  --check        exit with status 1 if any pass criterion fails\n"
      "  --smoke        widths 32,64,128, 1 seed, 3 steps, and (without --data) a built-in\n"
      "                 pseudo-random batch instead of the corpus (used by the test suite)\n",
      kFortunes.string());
}

int parse_count(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  int n = 0;
  try {
    n = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || n < 1) {
    throw us::Error(fmt::format("{} needs a positive integer, got '{}'", flag, text));
  }
  return n;
}

Options parse(int argc, char** argv) {
  Options options;
  bool widths_given = false, seeds_given = false, steps_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw us::Error(arg + " needs a value (see --help)");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      print_help();
      std::exit(0);
    } else if (arg == "--widths") {
      options.config.widths = us::CommandLine::parse_positive_integers("--widths", value());
      widths_given = true;
    } else if (arg == "--seeds") {
      options.config.seeds = parse_count(arg, value());
      seeds_given = true;
    } else if (arg == "--steps") {
      options.config.steps = parse_count(arg, value());
      steps_given = true;
    } else if (arg == "--out") {
      options.out = value();
    } else if (arg == "--data") {
      options.data = value();
      options.data_given = true;
    } else if (arg == "--embedding-lr-exponent") {
      const std::string text = value();
      std::size_t used = 0;
      double e = 0;
      try {
        e = std::stod(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != text.size() || !std::isfinite(e)) {
        throw us::Error(fmt::format("--embedding-lr-exponent needs a number, got '{}'", text));
      }
      options.config.embedding_lr_exponent = e;
    } else if (arg == "--check") {
      options.check = true;
    } else if (arg == "--smoke") {
      options.smoke = true;
    } else {
      throw us::Error("unknown argument '" + arg + "' (see --help)");
    }
  }
  if (options.smoke) {
    if (!widths_given) options.config.widths = {32, 64, 128};
    if (!seeds_given) options.config.seeds = 1;
    if (!steps_given) options.config.steps = 3;
  }
  return options;
}

std::string load_text(const Options& options) {
  if (!fs::exists(options.data)) {
    if (!options.data_given) {
      throw us::Error(fmt::format(
          "the default corpus {} is missing: install it with `apt-get install fortunes`, or give "
          "another text with --data FILE",
          kFortunes.string()));
    }
    throw us::Error(fmt::format("--data {}: no such file or directory", options.data.string()));
  }
  // The library's reader (io/text_corpus.hpp): a file verbatim, a directory as fortunes. The
  // coord check takes the start of the whole text, so no validation split is made.
  return us::load_text_corpus(options.data, {.validation_every = 0}).text;
}

// The smoke run's batch: fixed pseudo-random bytes, so CI needs no data package.
std::vector<unsigned char> smoke_bytes(std::size_t n) {
  // The library's counter-based generator (nn/init.hpp), one uniform byte per element.
  std::vector<unsigned char> bytes(n);
  for (std::size_t i = 0; i < n; ++i) {
    bytes[i] = static_cast<unsigned char>(unitscale::counter_uniform(2024, "bytes", i) * 256.0);
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) try {
  Options options = parse(argc, argv);
  us::CoordCheckConfig& config = options.config;
  const auto needed = static_cast<std::size_t>(config.batch * (config.seq + 1));

  std::vector<unsigned char> bytes;
  std::string source;
  if (options.smoke && !options.data_given) {
    bytes = smoke_bytes(needed);
    source = "built-in pseudo-random bytes (--smoke)";
  } else {
    const std::string text = load_text(options);
    bytes.assign(text.begin(), text.end());
    source =
        fmt::format("{} ({} bytes; the first {} used)", options.data.string(), text.size(), needed);
  }
  const us::CoordBatch batch = us::coord_check_batch(bytes, config.batch, config.seq);

  std::string widths;
  for (const std::int64_t w : config.widths)
    widths += fmt::format("{}{}", widths.empty() ? "" : ",", w);
  fmt::print("E1 coord check: M(d, {}), widths {}, {} seed(s), {} steps, batch {} x {}\n",
             config.depth, widths, config.seeds, config.steps, config.batch, config.seq);
  fmt::print("  data: {}\n", source);
  if (config.embedding_lr_exponent) {
    fmt::print("  (diagnostic) embedding-LR exponent {} for muP and u-muP\n",
               *config.embedding_lr_exponent);
  }
  fmt::print(
      "  Adam (beta {}, {}; eps {:g}; no schedule): SP lr 2^{:g}, muP lr 2^{:g} (base width "
      "{}), u-muP lr 2^{:g}\n\n",
      config.beta1, config.beta2, config.eps, std::log2(config.sp_lr), std::log2(config.mup_lr),
      config.mup_base_width, std::log2(config.umup_lr));

  const auto start = std::chrono::steady_clock::now();
  config.progress = [&](std::string_view line) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("  [{:7.1f} s] {}\n", s, line);
    std::fflush(stdout);
  };
  const std::vector<us::CoordRecord> records =
      us::run_coord_check(config, batch.ids, batch.targets);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::vector<us::CoordMean> means = us::coord_check_means(records);
  const std::vector<us::CoordSlope> slopes = us::coord_check_slopes(means, config.min_fit_width);
  const std::vector<us::CoordCriterion> criteria = us::evaluate_coord_check(slopes, means);

  fmt::print("\nSlopes of log2(seed-mean l1) against log2(width), widths >= {}:\n{}\n",
             config.min_fit_width, us::coord_slopes_table(slopes));
  fmt::print("Pass criteria:\n{}\n", us::coord_criteria_table(criteria));

  fs::create_directories(options.out);
  us::write_coord_check_csv(options.out / "coord_check.csv", records);
  us::write_coord_slopes_csv(options.out / "slopes.csv", slopes);
  us::write_coord_criteria_csv(options.out / "criteria.csv", criteria);
  us::save_coord_check_svg(options.out / "coord_check.svg", means);
  const bool all_pass =
      std::all_of(criteria.begin(), criteria.end(), [](const auto& c) { return c.pass; });
  fmt::print("wrote coord_check.csv, slopes.csv, criteria.csv and coord_check.svg to {}\n",
             options.out.string());
  fmt::print("{} models in {:.1f} s; all criteria: {}\n",
             config.schemes.size() * config.widths.size() * static_cast<std::size_t>(config.seeds),
             seconds, all_pass ? "PASS" : "FAIL");
  return options.check && !all_pass ? 1 : 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "03_coord_check: {}\n", e.what());
  return 2;
}

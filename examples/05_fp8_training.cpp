// FP8 training out of the box (E5), the unit-scaling papers' practical claim (arXiv 2303.11257
// §5, arXiv 2407.17465 §4.4): a plain cast of every matmul's inputs to E4M3 and of its incoming
// gradient to E5M2, with no loss scaling and no amax bookkeeping, trains a u-μP model as well as
// fp32, while the same cast degrades a standard (SP) model, because SP's gradients sit below
// E5M2's smallest subnormal and flush to zero.
//
// On the byte-level decoder M(d, 2) trained on the Debian fortunes, for SP, μP and u-μP at each
// width, at the scheme's optimal learning rate η* from the learning-rate transfer sweep (E3,
// examples/04_lr_transfer.cpp) and one grid point below:
//
//   fp32            the baseline (taken from the E3 table when one is given)
//   fp8             simulate_format's FP8 recipe on every linear (graph/simulate_format.hpp)
//   fp8-critical    FP8 with the attention-out and FFN-down matmuls kept in fp32
//   fp16            every value and gradient rounded to FP16, no loss scaling
//
// and, with --variants, the optional variants at η*, as train/precision.hpp's one-word forms:
// fp8+attention (q, k and v rounded too), fp8+sr (stochastic rounding of the gradients),
// fp8+scaled (per-tensor scaling, which other FP8 libraries need), fp16+dls (dynamic loss
// scaling), or any other combination.
//
// Every run is a row of OUT/sweep.csv, saved after each run (rerun the same command to continue
// an interrupted sweep). Low-precision rows also hold what the first and the last step did to
// the matmuls' operands: the shares of x, W (E4M3) and of the gradient (E5M2) that underflow,
// land among the subnormals or saturate. OUT gets the loss curves at the widest width
// (e5_loss_curves.svg), the final-loss and underflow tables (e5_tables.md) and the criteria
// (e5_criteria.md); docs/results.md records the measured ones.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/lr_sweep.hpp"
#include "unitscale/train/precision.hpp"
#include "unitscale/train/run_environment.hpp"

namespace fs = std::filesystem;
namespace us = unitscale;

namespace {

constexpr const char* kPrecisions[] = {"fp32", "fp8", "fp8-critical", "fp16"};

struct Options {
  std::string schemes = "sp,mup,umup";
  std::string widths = "64,128,256";
  std::string e3_table;  // the E3 sweep: η* and the fp32 baselines
  std::string variants;  // extra precisions at η*, comma-separated
  std::int64_t steps = 1000;
  std::int64_t batch = 16;
  std::int64_t seq = 64;
  std::int64_t warmup = -1;  // -1: steps / 10
  std::int64_t seed = 0;
  std::string data;
  std::string out = "fp8_training";
  bool smoke = false;
  bool check = false;
};

class Fp8Sweep {
 public:
  Fp8Sweep(const Options& o, const us::TextCorpus& corpus)
      : options_(o), corpus_(corpus), path_(fs::path(o.out) / "sweep.csv") {
    fs::create_directories(fs::path(o.out) / "curves");
    table_ = us::SweepTable::load(path_);
    // The E3 rows come along, so the table holds every number the criteria are decided on.
    if (!o.e3_table.empty()) {
      const us::SweepTable e3 = us::SweepTable::load(o.e3_table);
      for (const us::SweepResult& r : e3.results()) {
        if (r.point.experiment == "E3" && !table_.find(r.point)) table_.add(r);
      }
      table_.save(path_);
    }
    us::write_file_atomically(fs::path(o.out) / "environment.json",
                              us::to_json(us::current_run_environment()) + "\n");
  }

  const us::SweepTable& table() const { return table_; }

  // η* of the scheme at the width: the best E3 run of this length, or the scheme's default
  // (docs/results.md's optima) when the table has no E3 rows for it.
  double lr_star(us::Scheme scheme, std::int64_t width) const {
    const auto rows = table_.select([&](const us::SweepResult& r) {
      return r.point.experiment == "E3" && r.point.scheme == scheme && r.point.width == width &&
             r.point.steps == options_.steps && r.point.batch == options_.batch;
    });
    const auto best = us::best_of(rows);
    if (best && !best->diverged) return best->point.lr;
    return scheme == us::Scheme::kUMuP ? 0.5 : std::ldexp(1.0, -8);
  }

  us::SweepPoint point(us::Scheme scheme, std::int64_t width, double lr,
                       const std::string& precision) const {
    const Options& o = options_;
    return {.experiment = "E5", .scheme = scheme, .width = width, .depth = 2, .lr = lr,
            .seed = static_cast<std::uint64_t>(o.seed), .steps = o.steps, .batch = o.batch,
            .sequence_length = o.seq, .warmup = o.warmup, .precision = precision};
  }

  // The row of (scheme, width, η, precision): an E3 row for fp32 when there is one, else an E5
  // run. With `curve`, the per-step losses are kept in OUT/curves/ (a point already in the table
  // but without its curve file is run again for it).
  us::SweepResult run(us::Scheme scheme, std::int64_t width, double lr, const std::string& precision,
                      bool curve) {
    us::SweepPoint p = point(scheme, width, lr, precision);
    const fs::path curve_path = curve_file(p);
    if (precision == "fp32" && !(curve && !fs::exists(curve_path))) {
      us::SweepPoint e3 = p;
      e3.experiment = "E3";
      if (const us::SweepResult* r = table_.find(e3)) return *r;
    }
    if (curve && !fs::exists(curve_path)) {
      std::vector<float> losses;
      if (const us::SweepResult* r = table_.find(p)) {  // run again, for its curve only
        us::SweepTable scratch;
        us::run_missing_point(scratch, fs::path(options_.out) / "curve_rerun.csv", p, corpus_,
                              &losses);
        fs::remove(fs::path(options_.out) / "curve_rerun.csv");
        save_curve(curve_path, losses);
        return *r;
      }
      const us::SweepResult r = us::run_missing_point(table_, path_, p, corpus_, &losses);
      save_curve(curve_path, losses);
      return r;
    }
    return us::run_missing_point(table_, path_, p, corpus_);
  }

  fs::path curve_file(const us::SweepPoint& p) const {
    return fs::path(options_.out) / "curves" /
           fmt::format("{}-d{}-lr{}-{}.csv", us::scheme_name(p.scheme), p.width,
                       static_cast<int>(std::round(std::log2(p.lr))), p.precision);
  }

  static std::vector<double> load_curve(const fs::path& path) {
    std::vector<double> losses;
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) losses.push_back(std::stod(line.substr(line.find(',') + 1)));
    return losses;
  }

 private:
  static void save_curve(const fs::path& path, const std::vector<float>& losses) {
    std::string csv = "step,train_loss\n";
    for (std::size_t i = 0; i < losses.size(); ++i) csv += fmt::format("{},{:.9g}\n", i + 1, losses[i]);
    us::write_file_atomically(path, csv);
  }

  const Options& options_;
  const us::TextCorpus& corpus_;
  fs::path path_;
  us::SweepTable table_;
};

// The training loss over the steps, averaged over windows of `window` steps (the per-step loss of
// batch 16 × 64 is noisy).
us::Series smoothed(const std::string& label, const std::vector<double>& losses, std::size_t window) {
  us::Series s{.label = label, .x = {}, .y = {}};
  for (std::size_t start = 0; start + window <= losses.size(); start += window) {
    double sum = 0;
    for (std::size_t i = start; i < start + window; ++i) sum += losses[i];
    s.x.push_back(static_cast<double>(start + window));
    s.y.push_back(sum / static_cast<double>(window));
  }
  return s;
}

std::string loss_cell(const us::SweepTable& table, const us::SweepPoint& p) {
  auto find = [&](const std::string& experiment) {
    us::SweepPoint q = p;
    q.experiment = experiment;
    return table.find(q);
  };
  const us::SweepResult* r = p.precision == "fp32" && find("E3") ? find("E3") : find("E5");
  if (r == nullptr) return "–";
  return r->diverged ? "diverged" : fmt::format("{:.4f}", r->validation_loss);
}

std::string percent(double share) { return fmt::format("{:.3g}%", 100 * share); }

// The final-loss table (one row per scheme and width) and the operand-share table of the FP8 runs.
std::string tables_markdown(const Fp8Sweep& sweep, const std::vector<us::Scheme>& schemes,
                            const std::vector<std::int64_t>& widths,
                            const std::vector<std::string>& variants) {
  std::string md =
      "Final validation loss (nats/byte) at η*, and FP8 one grid point below it:\n\n"
      "| scheme | d | η* | fp32 | fp8 | fp8, critical matmuls fp32 | fp16 | fp32 at η*/2 | fp8 at "
      "η*/2 |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const us::Scheme scheme : schemes) {
    for (const std::int64_t w : widths) {
      const double lr = sweep.lr_star(scheme, w);
      md += fmt::format("| {} | {} | {} |", us::scheme_display_name(scheme), w, us::learning_rate_text(lr));
      for (const char* precision : kPrecisions) {
        md += " " + loss_cell(sweep.table(), sweep.point(scheme, w, lr, precision)) + " |";
      }
      md += " " + loss_cell(sweep.table(), sweep.point(scheme, w, lr / 2, "fp32")) + " |";
      md += " " + loss_cell(sweep.table(), sweep.point(scheme, w, lr / 2, "fp8")) + " |\n";
    }
  }
  md += "\nWhat the FP8 runs' steps did to the matmul operands (share of all elements; x and W "
        "against E4M3, the gradient of the output against E5M2):\n\n"
        "| scheme | d | step | grad underflow | grad subnormal | x underflow | x saturate | W "
        "underflow | W saturate |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const us::Scheme scheme : schemes) {
    for (const std::int64_t w : widths) {
      const us::SweepResult* r =
          sweep.table().find(sweep.point(scheme, w, sweep.lr_star(scheme, w), "fp8"));
      if (r == nullptr) continue;
      for (const auto& [step, shares] :
           {std::pair{"first", r->first_step_shares}, std::pair{"last", r->last_step_shares}}) {
        if (!shares) continue;
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                          us::scheme_display_name(scheme), w, step,
                          percent(shares->gradients.underflow), percent(shares->gradients.subnormal),
                          percent(shares->inputs.underflow), percent(shares->inputs.saturate),
                          percent(shares->weights.underflow), percent(shares->weights.saturate));
      }
    }
  }
  if (variants.empty()) return md;
  md +=
      "\nOptional variants at η*: final validation loss, its gap to fp32, and the gradient "
      "underflow share (against E5M2) at the last step:\n\n| scheme | d | fp32 |";
  std::string rule = "|---|---|---|";
  for (const std::string& v : variants) {
    md += fmt::format(" {} |", v);
    rule += "---|";
  }
  md += "\n" + rule + "\n";
  for (const us::Scheme scheme : schemes) {
    for (const std::int64_t w : widths) {
      const double lr = sweep.lr_star(scheme, w);
      const us::SweepPoint fp32 = sweep.point(scheme, w, lr, "fp32");
      md += fmt::format("| {} | {} | {} |", us::scheme_display_name(scheme), w,
                        loss_cell(sweep.table(), fp32));
      for (const std::string& v : variants) {
        const us::SweepResult* r = sweep.table().find(sweep.point(scheme, w, lr, v));
        const std::optional<double> gap = us::precision_gap(sweep.table(), scheme, w, lr, v);
        md += " " + loss_cell(sweep.table(), sweep.point(scheme, w, lr, v));
        if (gap && std::isfinite(*gap)) md += fmt::format(" ({:+.2f}%)", 100 * *gap);
        if (r != nullptr && r->last_step_shares) {
          md += ", " + percent(r->last_step_shares->gradients.underflow);
        }
        md += " |";
      }
      md += "\n";
    }
  }
  return md;
}

int run(int argc, char** argv) {
  Options o;
  us::CommandLine cli(
      "05_fp8_training",
      "FP8 training out of the box (E5): SP, muP and u-muP on the byte-level decoder M(d, 2) in\n"
      "fp32, FP8 (E4M3 matmul inputs, E5M2 gradients, no scaling), FP8 with the critical\n"
      "matmuls in fp32, and FP16 without loss scaling, at each scheme's optimal learning rate.");
  cli.option("--schemes", &o.schemes, "LIST", "schemes, comma-separated (sp, mup, umup)")
      .option("--widths", &o.widths, "LIST", "widths d (the loss curves are drawn for the widest)")
      .option("--e3-table", &o.e3_table, "CSV",
              "the learning-rate sweep's table (04_lr_transfer --experiment e3): eta* and the fp32 "
              "runs; without it eta* is u-muP 2^-1, SP and muP 2^-8, and fp32 is run here")
      .option("--variants", &o.variants, "LIST",
              "extra precisions at eta*, comma-separated, e.g. fp8+attention,fp8+sr,fp8+scaled,"
              "fp16+dls (a recipe, then any of +attention +scaled +sr +dls)")
      .option("--steps", &o.steps, "N", "steps per run", 1)
      .option("--batch", &o.batch, "B", "sequences per step", 1)
      .option("--seq", &o.seq, "S", "sequence length", 1)
      .option("--warmup", &o.warmup, "N", "warmup steps (-1: steps/10)", -1)
      .option("--seed", &o.seed, "N", "model and data seed")
      .option("--data", &o.data, "PATH", "text file or fortunes directory (default: the fortunes)")
      .option("--out", &o.out, "DIR", "sweep.csv, curves, figures, tables and criteria")
      .flag("--check", &o.check, "exit with status 1 if a pass criterion fails")
      .flag("--smoke", &o.smoke,
            "a seconds-long run for the test suite: width 32, 20 steps, a fresh table in "
            "fp8_training_smoke/, and (without --data) a built-in synthetic text");
  if (!cli.parse(argc, argv)) return 0;
  if (o.smoke) {
    if (!cli.given("--widths")) o.widths = "32";
    if (!cli.given("--steps")) o.steps = 20;
    if (!cli.given("--batch")) o.batch = 4;
    if (!cli.given("--seq")) o.seq = 32;
    if (!cli.given("--out")) o.out = "fp8_training_smoke";
    fs::remove_all(o.out);
  }
  if (o.warmup < 0) o.warmup = o.steps / 10;
  std::vector<us::Scheme> schemes;
  for (const std::string& name : us::CommandLine::split_list(o.schemes)) {
    schemes.push_back(us::scheme_from_flag(name, "--schemes"));
  }
  std::vector<std::int64_t> widths = us::CommandLine::parse_positive_integers("--widths", o.widths);
  std::sort(widths.begin(), widths.end());
  std::vector<std::string> variants;
  if (!o.variants.empty()) {
    for (const std::string& word : us::CommandLine::split_list(o.variants)) {
      variants.push_back(us::PrecisionConfig::parse(word).name());
    }
  }

  const us::TextCorpus corpus =
      o.smoke && o.data.empty()
          ? us::synthetic_text_corpus()
          : us::load_text_corpus(o.data.empty() ? fs::path(us::kFortunesDirectory) : fs::path(o.data));
  Fp8Sweep sweep(o, corpus);
  for (const us::Scheme scheme : schemes) {
    for (const std::int64_t w : widths) {
      const double lr = sweep.lr_star(scheme, w);
      const bool curve = w == widths.back();
      for (const char* precision : kPrecisions) sweep.run(scheme, w, lr, precision, curve);
      sweep.run(scheme, w, lr / 2, "fp32", false);
      sweep.run(scheme, w, lr / 2, "fp8", false);
      for (const std::string& v : variants) sweep.run(scheme, w, lr, v, false);
    }
  }

  // Loss curves at the widest width: one panel per scheme, one line per precision.
  std::vector<us::LinePlot> panels;
  const std::size_t window = std::max<std::size_t>(1, static_cast<std::size_t>(o.steps / 50));
  for (const us::Scheme scheme : schemes) {
    const double lr = sweep.lr_star(scheme, widths.back());
    us::LinePlot plot(fmt::format("{}, d={}, η*={}", us::scheme_display_name(scheme), widths.back(),
                                  us::learning_rate_text(lr)));
    plot.x_axis({.label = "step"}).y_axis({.label = "training loss (nats/byte)"});
    for (const char* precision : kPrecisions) {
      const fs::path path = sweep.curve_file(sweep.point(scheme, widths.back(), lr, precision));
      if (fs::exists(path)) plot.add(smoothed(precision, Fp8Sweep::load_curve(path), window));
    }
    panels.push_back(std::move(plot));
  }
  us::save_panels(fs::path(o.out) / "e5_loss_curves.svg", panels);

  const std::string tables = tables_markdown(sweep, schemes, widths, variants);
  us::write_file_atomically(fs::path(o.out) / "e5_tables.md", tables);
  const std::vector<us::Criterion> criteria = us::evaluate_fp8_training(
      sweep.table(), widths, [&](us::Scheme s, std::int64_t w) { return sweep.lr_star(s, w); });
  const std::string md = us::criteria_markdown(criteria);
  us::write_file_atomically(fs::path(o.out) / "e5_criteria.md", md);
  fmt::print("\n{}\nE5 criteria:\n{}\ntable: {}\n", tables, md, (fs::path(o.out) / "sweep.csv").string());
  const bool pass = std::all_of(criteria.begin(), criteria.end(),
                                [](const us::Criterion& c) { return c.pass || c.report_only; });
  return o.check && !pass ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("05_fp8_training", [&] { return run(argc, argv); });
}

// Learning-rate transfer, the u-μP paper's headline claim (arXiv 2407.17465, Fig. 1b), on the
// byte-level decoder M(d, L) trained on the Debian fortunes, plus the two experiments built on it:
//
//   --experiment e3   SP vs μP vs u-μP at widths 64, 128, 256 over LR grids in powers of two:
//                     does η* stay put as the model widens (μP, u-μP) or drift (SP)?
//   --experiment e4   u-μP at η*: each of the five α hyperparameters swept alone over
//                     {2^-2, 2^-1, 2^1, 2^2}, then all at their best: are the defaults near-optimal?
//   --experiment e6   u-μP at depths 2, 4, 8: does η* transfer across depth?
//
// Every run is a row of OUT/sweep.csv, written after each run, so an interrupted sweep continues
// where it stopped (rerun the same command). Grids are extended by one point when the optimum
// sits at an edge. Figures (SVG) and the pass/fail criteria (markdown) land in OUT; docs/results.md
// records the measured ones.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/lr_sweep.hpp"
#include "unitscale/train/run_environment.hpp"

namespace fs = std::filesystem;
namespace us = unitscale;

namespace {

struct Options {
  std::string experiment = "e3";
  std::string schemes = "sp,mup,umup";
  std::string widths = "64,128,256";
  std::string depths = "2,4,8";
  std::string lrs;  // overrides the grid
  double lr = 0;    // E4's η* (0: the E3 optimum of u-μP at d = 128 from the table, else 1)
  std::int64_t steps = 1000;
  std::int64_t batch = 16;
  std::int64_t seq = 64;
  std::int64_t warmup = -1;  // -1: steps / 10
  std::int64_t seed = 0;
  std::int64_t extensions = 2;
  std::string data;
  std::string out = "lr_transfer";
  bool quick = false;
  bool smoke = false;
  bool check = false;
};

std::vector<double> parse_list(const std::string& flag, const std::string& text) {
  std::vector<double> values;
  for (const std::string& item : us::CommandLine::split_list(text)) {
    values.push_back(us::CommandLine::parse_number(flag, item));
  }
  return values;
}

std::vector<double> powers_of_two(int from, int to) {
  std::vector<double> v;
  for (int e = from; e <= to; ++e) v.push_back(std::ldexp(1.0, e));
  return v;
}


class Sweep {
 public:
  Sweep(const Options& o, const us::TextCorpus& corpus)
      : options_(o), corpus_(corpus), path_(fs::path(o.out) / "sweep.csv") {
    fs::create_directories(o.out);
    table_ = us::SweepTable::load(path_);
    // The machine of this invocation (a table resumed across machines mixes them; each row's
    // tokens_per_second shows the speed it ran at).
    us::write_file_atomically(fs::path(o.out) / "environment.json",
                              us::to_json(us::current_run_environment()) + "\n");
  }

  const us::SweepTable& table() const { return table_; }

  us::SweepPoint point(std::string experiment, us::Scheme scheme, std::int64_t width, int depth,
                       double lr, us::UmupHyperparameters alphas = {}) const {
    const Options& o = options_;
    return {.experiment = std::move(experiment), .scheme = scheme, .width = width,
            .depth = depth, .lr = lr, .alphas = alphas,
            .seed = static_cast<std::uint64_t>(o.seed), .steps = o.steps, .batch = o.batch,
            .sequence_length = o.seq, .warmup = o.warmup};
  }

  // Runs `p` unless the table has it; returns its result.
  us::SweepResult run(const us::SweepPoint& p) { return us::run_missing_point(table_, path_, p, corpus_); }

  // Runs `make(lr)` over `grid`, then extends it by one point while the optimum sits at an edge.
  void grid(const std::vector<double>& grid, const std::function<us::SweepPoint(double)>& make) {
    std::vector<us::SweepResult> rows;
    for (const double lr : grid) rows.push_back(run(make(lr)));
    if (options_.lrs.size() > 0) return;  // an explicit grid is the user's to extend
    for (std::int64_t e = 0; e < options_.extensions; ++e) {
      const auto best = us::best_of(rows);
      const auto [lo, hi] = std::minmax_element(
          rows.begin(), rows.end(),
          [](const auto& a, const auto& b) { return a.point.lr < b.point.lr; });
      double next = 0;
      if (best && !best->diverged && best->point.lr == lo->point.lr) next = lo->point.lr / 2;
      if (best && !best->diverged && best->point.lr == hi->point.lr) next = hi->point.lr * 2;
      if (next == 0) break;
      rows.push_back(run(make(next)));
    }
  }

 private:
  const Options& options_;
  const us::TextCorpus& corpus_;
  fs::path path_;
  us::SweepTable table_;
};

std::vector<std::int64_t> integers(const std::string& flag, const std::string& text) {
  std::vector<std::int64_t> out = us::CommandLine::parse_positive_integers(flag, text);
  std::sort(out.begin(), out.end());
  return out;
}

us::LinePlot loss_against_lr(const std::string& title, const std::vector<us::SweepResult>& rows,
                             const std::function<std::string(const us::SweepResult&)>& series_of) {
  std::map<std::string, us::Series> series;
  std::vector<std::string> order;
  for (const us::SweepResult& r : rows) {
    const std::string label = series_of(r);
    if (!series.contains(label)) {
      order.push_back(label);
      series[label] = us::Series{.label = label, .x = {}, .y = {}};
    }
    series[label].x.push_back(r.point.lr);
    series[label].y.push_back(r.diverged ? NAN : r.validation_loss);  // diverged: a gap
  }
  us::LinePlot plot(title);
  plot.x_axis({.label = "learning rate η", .scale = us::AxisScale::kLog2})
      .y_axis({.label = "final validation loss (nats/byte)"});
  for (const std::string& label : order) {
    us::Series s = series[label];
    // LinePlot joins points in the given order: sort by η.
    std::vector<std::size_t> idx(s.x.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](auto a, auto b) { return s.x[a] < s.x[b]; });
    us::Series sorted{.label = label, .x = {}, .y = {}};
    for (const auto i : idx) {
      sorted.x.push_back(s.x[i]);
      sorted.y.push_back(s.y[i]);
    }
    plot.add(std::move(sorted));
  }
  return plot;
}

bool report(const Options& o, const std::string& name, const std::vector<us::Criterion>& criteria) {
  const std::string md = us::criteria_markdown(criteria);
  us::write_file_atomically(fs::path(o.out) / (name + "_criteria.md"), md);
  fmt::print("\n{} criteria:\n{}", name, md);
  return std::all_of(criteria.begin(), criteria.end(),
                     [](const us::Criterion& c) { return c.pass || c.report_only; });
}

bool run_e3(const Options& o, Sweep& sweep) {
  const auto widths = integers("--widths", o.widths);
  std::vector<us::Scheme> schemes;
  for (const std::string& name : us::CommandLine::split_list(o.schemes)) {
    schemes.push_back(us::scheme_from_flag(name, "--schemes"));
  }
  for (const us::Scheme scheme : schemes) {
    const std::vector<double> grid =
        !o.lrs.empty() ? parse_list("--lrs", o.lrs)
        : o.smoke      ? (scheme == us::Scheme::kUMuP ? powers_of_two(-1, 1) : powers_of_two(-9, -7))
        : (scheme == us::Scheme::kUMuP ? powers_of_two(-4, 3) : powers_of_two(-12, -5));
    for (const std::int64_t w : widths) {
      sweep.grid(grid, [&](double lr) { return sweep.point("E3", scheme, w, 2, lr); });
    }
  }
  std::vector<us::LinePlot> panels;
  for (const us::Scheme scheme : schemes) {
    const auto rows = sweep.table().select([&](const us::SweepResult& r) {
      return r.point.experiment == "E3" && r.point.scheme == scheme && r.point.steps == o.steps;
    });
    panels.push_back(loss_against_lr(std::string(us::scheme_display_name(scheme)), rows,
                                     [](const us::SweepResult& r) { return fmt::format("d={}", r.point.width); }));
  }
  us::save_panels(fs::path(o.out) / "e3_lr_transfer.svg", panels);
  return report(o, "e3", us::evaluate_lr_transfer(sweep.table(), widths));
}

double e4_learning_rate(const Options& o, const Sweep& sweep) {
  if (o.lr > 0) return o.lr;
  const auto rows = sweep.table().select([&](const us::SweepResult& r) {
    return r.point.experiment == "E3" && r.point.scheme == us::Scheme::kUMuP &&
           r.point.width == 128 && r.point.steps == o.steps;
  });
  const auto best = us::best_of(rows);
  return best && !best->diverged ? best->point.lr : 1.0;
}

bool run_e4(const Options& o, Sweep& sweep) {
  const double lr = e4_learning_rate(o, sweep);
  fmt::print("E4 at η* = {}\n", us::learning_rate_text(lr));
  const std::vector<double> values =
      o.smoke ? std::vector<double>{0.5, 2.0} : std::vector<double>{0.25, 0.5, 2.0, 4.0};
  using Field = double us::UmupHyperparameters::*;
  const std::vector<std::pair<std::string, Field>> alphas = {
      {"α_ffn-act", &us::UmupHyperparameters::ffn_act_mult},
      {"α_attn-softmax", &us::UmupHyperparameters::attn_softmax_mult},
      {"α_res", &us::UmupHyperparameters::residual_mult},
      {"α_res-attn-ratio", &us::UmupHyperparameters::residual_attn_ratio},
      {"α_loss-softmax", &us::UmupHyperparameters::loss_softmax_mult}};
  const us::SweepResult defaults = sweep.run(sweep.point("E4", us::Scheme::kUMuP, 128, 2, lr));
  us::UmupHyperparameters combined;
  us::LinePlot plot("u-μP: one α at a time at η*");
  plot.x_axis({.label = "α", .scale = us::AxisScale::kLog2})
      .y_axis({.label = "final validation loss (nats/byte)"});
  for (const auto& [name, field] : alphas) {
    us::Series s{.label = name, .x = {}, .y = {}};
    double best_value = 1.0, best_loss = us::ranking_loss(defaults);
    for (const double v : values) {
      if (v == 2.0) {  // keep the curve in order: the default (α = 1) sits between 1/2 and 2
        s.x.push_back(1.0);
        s.y.push_back(defaults.diverged ? NAN : defaults.validation_loss);
      }
      us::UmupHyperparameters a;
      a.*field = v;
      const us::SweepResult r = sweep.run(sweep.point("E4", us::Scheme::kUMuP, 128, 2, lr, a));
      s.x.push_back(v);
      s.y.push_back(r.diverged ? NAN : r.validation_loss);
      if (us::ranking_loss(r) < best_loss) {
        best_loss = us::ranking_loss(r);
        best_value = v;
      }
    }
    combined.*field = best_value;
    plot.add(std::move(s));
  }
  if (!defaults.diverged) plot.reference({.label = "defaults", .y = defaults.validation_loss});
  plot.save(fs::path(o.out) / "e4_independent_search.svg");
  if (us::SweepPoint p = sweep.point("E4", us::Scheme::kUMuP, 128, 2, lr, combined);
      p.alphas.ffn_act_mult != 1 || p.alphas.attn_softmax_mult != 1 || p.alphas.residual_mult != 1 ||
      p.alphas.residual_attn_ratio != 1 || p.alphas.loss_softmax_mult != 1) {
    sweep.run(p);
  }
  return report(o, "e4", us::evaluate_independent_search(sweep.table()));
}

bool run_e6(const Options& o, Sweep& sweep) {
  const auto depths_wide = integers("--depths", o.depths);
  const std::vector<int> depths(depths_wide.begin(), depths_wide.end());
  const std::vector<double> grid = !o.lrs.empty() ? parse_list("--lrs", o.lrs)
                                   : o.smoke      ? powers_of_two(-1, 1)
                                                  : powers_of_two(-2, 2);
  const std::int64_t width = o.smoke ? 32 : 128;
  for (const int depth : depths) {
    sweep.grid(grid, [&](double lr) { return sweep.point("E6", us::Scheme::kUMuP, width, depth, lr); });
  }
  const auto rows = sweep.table().select([&](const us::SweepResult& r) {
    return r.point.experiment == "E6" && r.point.steps == o.steps;
  });
  loss_against_lr("u-μP: learning rate against depth", rows,
                  [](const us::SweepResult& r) { return fmt::format("L={}", r.point.depth); })
      .save(fs::path(o.out) / "e6_depth_transfer.svg");
  return report(o, "e6", us::evaluate_depth_transfer(sweep.table(), depths));
}

int run(int argc, char** argv) {
  Options o;
  us::CommandLine cli("04_lr_transfer",
                      "Learning-rate transfer across width (E3) and depth (E6), and the independent "
                      "search of u-muP's\nalpha hyperparameters at eta* (E4), on the byte-level "
                      "decoder M(d, L) trained on the fortunes.");
  cli.choice("--experiment", &o.experiment, {"e3", "e4", "e6"}, "which experiment")
      .option("--schemes", &o.schemes, "LIST", "E3: schemes, comma-separated (sp, mup, umup)")
      .option("--widths", &o.widths, "LIST", "E3: widths (the first is the transfer source)")
      .option("--depths", &o.depths, "LIST", "E6: depths")
      .option("--lrs", &o.lrs, "LIST",
              "learning rates instead of the grid (SP/muP 2^-12..2^-5, u-muP 2^-4..2^3, E6 "
              "2^-2..2^2)")
      .option("--lr", &o.lr, "ETA", "E4: eta* (0: u-muP's E3 optimum at d=128 from the table, else 1)")
      .option("--steps", &o.steps, "N", "steps per run", 1)
      .option("--batch", &o.batch, "B", "sequences per step", 1)
      .option("--seq", &o.seq, "S", "sequence length", 1)
      .option("--warmup", &o.warmup, "N", "warmup steps (-1: steps/10)", -1)
      .option("--seed", &o.seed, "N", "model and data seed")
      .option("--extensions", &o.extensions, "N", "grid points added while the optimum is at an edge")
      .option("--data", &o.data, "PATH", "text file or fortunes directory (default: the fortunes)")
      .option("--out", &o.out, "DIR", "sweep.csv, figures and criteria")
      .flag("--quick", &o.quick, "the quick tier: 500 steps of batch 8")
      .flag("--check", &o.check, "exit with status 1 if a pass criterion fails")
      .flag("--smoke", &o.smoke,
            "a seconds-long run for the test suite: widths 32,64, three LRs, 20 steps, a fresh "
            "table in lr_transfer_smoke/, and (without --data) a built-in synthetic text");
  if (!cli.parse(argc, argv)) return 0;
  if (o.quick) {
    if (!cli.given("--steps")) o.steps = 500;
    if (!cli.given("--batch")) o.batch = 8;
  }
  if (o.smoke) {
    if (!cli.given("--widths")) o.widths = "32,64";
    if (!cli.given("--depths")) o.depths = "1,2";
    if (!cli.given("--steps")) o.steps = 20;
    if (!cli.given("--batch")) o.batch = 4;
    if (!cli.given("--seq")) o.seq = 32;
    if (!cli.given("--extensions")) o.extensions = 0;
  }
  if (o.warmup < 0) o.warmup = o.steps / 10;
  if (o.smoke) {
    // A smoke run tests the runs themselves: start from an empty table, in a directory of its own.
    if (!cli.given("--out")) o.out = "lr_transfer_smoke";
    fs::remove(fs::path(o.out) / "sweep.csv");
  }
  const us::TextCorpus corpus =
      o.smoke && o.data.empty()
          ? us::synthetic_text_corpus()
          : us::load_text_corpus(o.data.empty() ? fs::path(us::kFortunesDirectory) : fs::path(o.data));
  Sweep sweep(o, corpus);
  const bool pass = o.experiment == "e3"   ? run_e3(o, sweep)
                    : o.experiment == "e4" ? run_e4(o, sweep)
                                           : run_e6(o, sweep);
  fmt::print("\ntable: {}\n", (fs::path(o.out) / "sweep.csv").string());
  return o.check && !pass ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("04_lr_transfer", [&] { return run(argc, argv); });
}

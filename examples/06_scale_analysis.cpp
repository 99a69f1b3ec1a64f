// Scale analysis of a transformer, SP against u-μP (the unit-scaling library's "scale analysis"
// notebook, ported): where every activation, gradient and weight of a training step sits against
// the FP8 and FP16 ranges, at initialisation and after training, for a standard (SP) decoder and a
// u-μP one of the same shape.
//
// For each scheme it trains the byte-level decoder M(d, L) on the Debian fortunes at the scheme's
// default learning rate (u-μP 1, SP 2^-8), recording the tensors of the first and the last step
// with track_scales (analysis/scale_tracking.hpp). It writes, in OUT:
//   <scheme>_step_<n>.svg / .csv   one chart and table per recorded step (one row per tensor, the
//                                  RMS on a log2 axis between the smallest non-zero and the largest
//                                  |x|, lines at E4M3's, E5M2's and FP16's limits)
//   scale_analysis.svg             the four charts side by side: SP and u-μP, first and last step
// and prints per scheme and step the median RMS of each tensor class and the share of the
// gradients that underflow E5M2, the numbers behind the charts: SP's gradients sit orders of
// magnitude below 1, under E5M2's smallest subnormal; u-μP's sit near 1 in every format's range.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "unitscale/analysis/scale_tracking.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/io/text_corpus.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/trainer.hpp"

namespace fs = std::filesystem;
namespace us = unitscale;

namespace {

struct Options {
  std::int64_t width = 128;
  std::int64_t depth = 2;
  std::int64_t steps = 500;
  std::int64_t batch = 16;
  std::int64_t seq = 64;
  std::int64_t seed = 0;
  std::string data;
  std::string out = "scale_analysis";
  bool smoke = false;
};

struct Recorded {
  std::string chart;            // SVG
  std::vector<us::TensorScale> scales;
  std::int64_t step = 0;
};

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// The summary line of one recorded step: median RMS per class, and the share of all gradient
// elements below E5M2's underflow threshold.
std::string summary(const std::string& scheme, const Recorded& r) {
  std::vector<double> rms[3];
  double underflow = 0, gradient_elements = 0;
  for (const us::TensorScale& s : r.scales) {
    rms[static_cast<int>(s.role)].push_back(s.rms);
    if (s.role == us::TensorRole::kGradient) {
      for (const us::FormatFractions& f : s.formats) {
        if (f.format == us::DType::kE5M2) underflow += f.underflow * static_cast<double>(s.numel);
      }
      gradient_elements += static_cast<double>(s.numel);
    }
  }
  return fmt::format("| {} | {} | {:.3g} | {:.3g} | {:.3g} | {:.3g}% |", scheme, r.step,
                     median(rms[0]), median(rms[1]), median(rms[2]),
                     100 * underflow / std::max(gradient_elements, 1.0));
}

// Trains `scheme` for o.steps, recording the first and the last step.
std::vector<Recorded> analyse(us::Scheme scheme, const Options& o, const us::TextCorpus& corpus) {
  us::LanguageModelTask task({.scheme = scheme,
                              .width = o.width,
                              .depth = static_cast<int>(o.depth),
                              .sequence_length = o.seq,
                              .batch = o.batch,
                              .seed = static_cast<std::uint64_t>(o.seed),
                              .lr = us::default_learning_rate(scheme),
                              .steps = o.steps,
                              .warmup = o.steps / 10},
                             corpus);
  std::vector<Recorded> recorded;
  std::optional<us::ScaleTracker> tracker;
  const std::string name(us::scheme_display_name(scheme));
  us::TrainerOptions options{.steps = o.steps, .progress = us::ProgressMode::kAuto, .out = stderr};
  options.after_step = [&](std::int64_t step) {
    if (tracker->recording()) {
      const std::string title =
          fmt::format("{} M({}, {}), step {}{}", name, o.width, o.depth, step,
                      step == 1 ? " (initialisation)" : " (trained)");
      recorded.push_back({tracker->chart_svg(title), tracker->scales(), step});
      const std::string stem = fmt::format("{}_step_{}", us::scheme_name(scheme), step);
      us::write_file_atomically(fs::path(o.out) / (stem + ".svg"), recorded.back().chart);
      us::write_file_atomically(fs::path(o.out) / (stem + ".csv"), tracker->csv());
    }
    tracker->set_recording(step + 1 == o.steps);
  };
  us::Trainer trainer(task, options);
  tracker = us::track_scales(trainer.executor(), task.model().graph());
  const us::TrainingResult result = trainer.run();
  fmt::print("{}: final validation loss {:.4f}\n", name, result.validation_loss.value_or(NAN));
  return recorded;
}

int run(int argc, char** argv) {
  Options o;
  us::CommandLine cli(
      "06_scale_analysis",
      "Scale analysis of SP and u-muP decoders: every tensor of the first and the last training\n"
      "step against the E4M3, E5M2 and FP16 ranges, as charts side by side.");
  cli.option("--width", &o.width, "D", "decoder width", 32)
      .option("--depth", &o.depth, "L", "decoder layers", 1)
      .option("--steps", &o.steps, "N", "training steps (the last one is recorded too)", 2)
      .option("--batch", &o.batch, "B", "sequences per step", 1)
      .option("--seq", &o.seq, "S", "sequence length", 1)
      .option("--seed", &o.seed, "N", "model and data seed")
      .option("--data", &o.data, "PATH", "text file or fortunes directory (default: the fortunes)")
      .option("--out", &o.out, "DIR", "charts, tables and the side-by-side figure")
      .flag("--smoke", &o.smoke,
            "a seconds-long run for the test suite: width 32, 10 steps, a built-in synthetic text "
            "(without --data), output in scale_analysis_smoke/");
  if (!cli.parse(argc, argv)) return 0;
  if (o.smoke) {
    if (!cli.given("--width")) o.width = 32;
    if (!cli.given("--steps")) o.steps = 10;
    if (!cli.given("--batch")) o.batch = 4;
    if (!cli.given("--seq")) o.seq = 32;
    if (!cli.given("--out")) o.out = "scale_analysis_smoke";
  }
  fs::create_directories(o.out);
  const us::TextCorpus corpus =
      o.smoke && o.data.empty()
          ? us::synthetic_text_corpus()
          : us::load_text_corpus(o.data.empty() ? fs::path(us::kFortunesDirectory) : fs::path(o.data));

  const std::vector<Recorded> sp = analyse(us::Scheme::kSP, o, corpus);
  const std::vector<Recorded> umup = analyse(us::Scheme::kUMuP, o, corpus);
  // Rows: first step, last step; columns: SP, u-μP.
  std::vector<std::string> charts;
  for (std::size_t i = 0; i < std::min(sp.size(), umup.size()); ++i) {
    charts.push_back(sp[i].chart);
    charts.push_back(umup[i].chart);
  }
  us::write_file_atomically(fs::path(o.out) / "scale_analysis.svg",
                            us::charts_side_by_side(charts, 2));
  fmt::print("\n| scheme | step | median RMS, activations | gradients | weights | gradient "
             "elements below E5M2's range |\n|---|---|---|---|---|---|\n");
  for (const Recorded& r : sp) fmt::print("{}\n", summary("SP", r));
  for (const Recorded& r : umup) fmt::print("{}\n", summary("u-μP", r));
  fmt::print("\ncharts in {}\n", (fs::path(o.out) / "scale_analysis.svg").string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return us::run_program("06_scale_analysis", [&] { return run(argc, argv); });
}

#pragma once
// Progress of a long run, shown the way its output can take it: on a terminal one line redrawn in
// place (a bar with step, loss, throughput and ETA); in a log file or a pipe, where carriage
// returns make a mess, a plain line every so many steps.
//
//   ProgressReporter progress({.total_steps = 1000, .unit = "tok"});
//   for (step ...) progress.update(step, loss, tokens_done);
//   progress.message("step 500: validation loss 2.31");   // a line of its own, bar redrawn after
//   progress.finish();

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace unitscale {

enum class ProgressMode {
  kAuto,   // a bar if the output is a terminal, else plain lines
  kBar,
  kLines,
  kQuiet,  // nothing but message()
};

struct ProgressOptions {
  std::int64_t total_steps = 0;
  std::string unit = "tok";  // what update()'s work counts ("tok" → "12.3k tok/s")
  ProgressMode mode = ProgressMode::kAuto;
  std::FILE* out = stderr;
  // kLines: a line every this many steps (0: about 20 lines over the run). The first and last
  // steps always get one.
  std::int64_t line_every = 0;
};

class ProgressReporter {
 public:
  explicit ProgressReporter(ProgressOptions options);
  // Steps [first_step, total] remain: a resumed run's ETA counts only those.
  void start(std::int64_t first_step = 0);
  // After step `step` (1-based) with training loss `loss`; `work` counts the units done since
  // start(), for the throughput.
  void update(std::int64_t step, double loss, double work);
  // Time spent outside the steps (evaluation, checkpoints): the throughput and the ETA leave it out.
  void exclude(double seconds) { excluded_seconds_ += seconds; }
  // A line of its own (evaluation results, warnings) that does not garble the bar.
  void message(std::string_view text);
  // Ends the bar's line.
  void finish();

  bool uses_bar() const { return bar_; }

  // "1h02m", "3m05s", "42s"; "?" for a negative or non-finite time. Exposed for tests.
  static std::string format_duration(double seconds);
  // "12.3k", "4.56M", "789": three significant digits with an SI prefix.
  static std::string format_rate(double per_second);

 private:
  std::string status(std::int64_t step, double loss, double rate, double eta) const;

  ProgressOptions options_;
  bool bar_ = false;
  bool bar_drawn_ = false;
  std::int64_t first_step_ = 0;
  std::int64_t last_step_ = 0;
  double excluded_seconds_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace unitscale

#include "unitscale/train/progress.hpp"

#include <algorithm>
#include <cmath>
#include <unistd.h>

#include <fmt/format.h>

namespace unitscale {

namespace {

constexpr int kBarWidth = 24;
// A bar redrawn more often than this only costs terminal bandwidth.
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

}  // namespace

ProgressReporter::ProgressReporter(ProgressOptions options) : options_(std::move(options)) {
  switch (options_.mode) {
    case ProgressMode::kAuto:
      bar_ = options_.out != nullptr && ::isatty(::fileno(options_.out)) == 1;
      break;
    case ProgressMode::kBar: bar_ = true; break;
    case ProgressMode::kLines:
    case ProgressMode::kQuiet: bar_ = false; break;
  }
  if (options_.line_every <= 0) {
    options_.line_every = std::max<std::int64_t>(1, options_.total_steps / 20);
  }
}

void ProgressReporter::start(std::int64_t first_step) {
  first_step_ = first_step;
  last_step_ = first_step;
  excluded_seconds_ = 0;
  start_ = std::chrono::steady_clock::now();
  last_draw_ = {};
}

std::string ProgressReporter::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string ProgressReporter::format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0) return "?";
  constexpr const char* kPrefixes[] = {"", "k", "M", "G", "T"};
  int prefix = 0;
  while (per_second >= 999.5 && prefix < 4) {
    per_second /= 1000;
    ++prefix;
  }
  const int decimals = per_second >= 99.95 ? 0 : per_second >= 9.995 ? 1 : 2;
  return fmt::format("{:.{}f}{}", per_second, prefix == 0 ? 0 : decimals, kPrefixes[prefix]);
}

std::string ProgressReporter::status(std::int64_t step, double loss, double rate,
                                     double eta) const {
  const int digits = static_cast<int>(fmt::formatted_size("{}", options_.total_steps));
  return fmt::format("step {:>{}}/{}  loss {:.4f}  {} {}/s  ETA {}", step, digits,
                     options_.total_steps, loss, format_rate(rate), options_.unit,
                     format_duration(eta));
}

void ProgressReporter::update(std::int64_t step, double loss, double work) {
  if (options_.mode == ProgressMode::kQuiet || options_.out == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double stepping = std::max(0.0, elapsed - excluded_seconds_);
  const double rate = stepping > 0 ? work / stepping : 0.0;
  const std::int64_t done = step - first_step_;
  const double eta =
      done > 0 ? stepping / static_cast<double>(done) *
                     static_cast<double>(options_.total_steps - step)
               : -1.0;
  last_step_ = step;
  const bool last = step >= options_.total_steps;
  if (bar_) {
    if (!last && now - last_draw_ < kRedrawInterval) return;
    last_draw_ = now;
    const double fraction =
        options_.total_steps > 0
            ? std::clamp(static_cast<double>(step) / static_cast<double>(options_.total_steps),
                         0.0, 1.0)
            : 1.0;
    const int filled = static_cast<int>(fraction * kBarWidth);
    // \x1b[K clears what a longer previous line left on the right.
    fmt::print(options_.out, "\r{:3.0f}% [{:#<{}}{:.<{}}] {}\x1b[K", 100 * fraction, "", filled,
               "", kBarWidth - filled, status(step, loss, rate, eta));
    bar_drawn_ = true;
    std::fflush(options_.out);
    return;
  }
  if (step == first_step_ + 1 || last || step % options_.line_every == 0) {
    fmt::print(options_.out, "{}  elapsed {}\n", status(step, loss, rate, eta),
               format_duration(elapsed));
    std::fflush(options_.out);
  }
}

void ProgressReporter::message(std::string_view text) {
  if (options_.out == nullptr) return;
  if (bar_drawn_) {
    fmt::print(options_.out, "\r\x1b[K");
    bar_drawn_ = false;
    // The bar comes back at the next update.
    last_draw_ = {};
  }
  fmt::print(options_.out, "{}\n", text);
  std::fflush(options_.out);
}

void ProgressReporter::finish() {
  if (bar_drawn_ && options_.out != nullptr) {
    fmt::print(options_.out, "\n");
    std::fflush(options_.out);
  }
  bar_drawn_ = false;
}

}  // namespace unitscale

#pragma once
// MetricsLog: the per-step record of a training run, written where people and programs look for
// it: metrics.csv (spreadsheets, pandas), metrics.jsonl (one JSON object per line, for tools that
// tail a run) and loss.svg (training and validation loss against the step). Each write replaces
// the files atomically, so a crash or Ctrl-C never leaves a half-written line behind.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace unitscale {

struct MetricRecord {
  std::int64_t step = 0;
  double train_loss = 0;
  std::optional<double> validation_loss = std::nullopt;  // at evaluation steps
  double lr_multiplier = 1;               // the schedule's factor r(t)
  double tokens_per_second = 0;  // over the steps since the run (or its resumption) started
  double elapsed_seconds = 0;
  // Data-parallel training with a low-precision gradient exchange: of the gradient values the
  // step's exchange quantised (over every rank), the fractions that underflowed to zero and that
  // saturated (distributed/gradient_exchange.hpp).
  std::optional<double> exchange_underflow = std::nullopt;
  std::optional<double> exchange_saturation = std::nullopt;
};

class MetricsLog {
 public:
  // An empty `directory` keeps the records in memory only; otherwise it is created.
  explicit MetricsLog(std::filesystem::path directory = {}, std::string title = "training loss");

  void add(const MetricRecord& record);
  const std::vector<MetricRecord>& records() const { return records_; }

  // A resumed run continues the history: the records of `directory`'s metrics.jsonl up to and
  // including `step` (the checkpoint's), dropping what the interrupted run logged after it.
  // Nothing happens if there is no such file. Throws unitscale::Error naming the file and line
  // for a line that is not a metrics record.
  void restore(std::int64_t step);

  // metrics.csv, metrics.jsonl and loss.svg in the directory (no-op without one).
  void write() const;

  std::string csv() const;
  std::string json_lines() const;
  std::string loss_svg() const;

 private:
  std::filesystem::path directory_;
  std::string title_;
  std::vector<MetricRecord> records_;
};

}  // namespace unitscale

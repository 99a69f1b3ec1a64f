#include "unitscale/train/metrics_log.hpp"

#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"

namespace unitscale {

namespace {

// JSON has no NaN or infinity: a non-finite loss (the step that stopped a run) becomes null.
nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}

double number_or_nan(const nlohmann::json& j) {
  return j.is_number() ? j.get<double>() : std::nan("");
}

}  // namespace

MetricsLog::MetricsLog(std::filesystem::path directory, std::string title)
    : directory_(std::move(directory)), title_(std::move(title)) {
  if (!directory_.empty()) std::filesystem::create_directories(directory_);
}

void MetricsLog::add(const MetricRecord& record) { records_.push_back(record); }

void MetricsLog::restore(std::int64_t step) {
  records_.clear();
  if (directory_.empty()) return;
  const std::filesystem::path path = directory_ / "metrics.jsonl";
  std::ifstream in(path);
  if (!in) return;
  std::string line;
  for (int line_number = 1; std::getline(in, line); ++line_number) {
    if (line.empty()) continue;
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      MetricRecord r;
      r.step = j.at("step").get<std::int64_t>();
      if (r.step > step) break;
      r.train_loss = number_or_nan(j.at("train_loss"));
      if (j.contains("validation_loss")) r.validation_loss = number_or_nan(j["validation_loss"]);
      if (j.contains("exchange_underflow")) {
        r.exchange_underflow = number_or_nan(j["exchange_underflow"]);
        r.exchange_saturation = number_or_nan(j.at("exchange_saturation"));
      }
      r.lr_multiplier = number_or_nan(j.at("lr_multiplier"));
      r.tokens_per_second = number_or_nan(j.at("tokens_per_second"));
      r.elapsed_seconds = number_or_nan(j.at("elapsed_seconds"));
      records_.push_back(r);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}:{}: not a metrics record ({})", path.string(), line_number,
                              e.what()));
    }
  }
}

std::string MetricsLog::csv() const {
  std::string out =
      "step,train_loss,validation_loss,lr_multiplier,tokens_per_second,elapsed_seconds,"
      "exchange_underflow,exchange_saturation\n";
  auto optional = [](const std::optional<double>& x) {
    return x ? fmt::format("{:.6g}", *x) : std::string();
  };
  for (const MetricRecord& r : records_) {
    out += fmt::format("{},{:.6g},{},{:.6g},{:.1f},{:.3f},{},{}\n", r.step, r.train_loss,
                       optional(r.validation_loss), r.lr_multiplier, r.tokens_per_second,
                       r.elapsed_seconds, optional(r.exchange_underflow),
                       optional(r.exchange_saturation));
  }
  return out;
}

std::string MetricsLog::json_lines() const {
  std::string out;
  for (const MetricRecord& r : records_) {
    nlohmann::json j = {{"step", r.step},
                        {"train_loss", number_or_null(r.train_loss)},
                        {"lr_multiplier", number_or_null(r.lr_multiplier)},
                        {"tokens_per_second", number_or_null(r.tokens_per_second)},
                        {"elapsed_seconds", number_or_null(r.elapsed_seconds)}};
    if (r.validation_loss) j["validation_loss"] = number_or_null(*r.validation_loss);
    if (r.exchange_underflow) j["exchange_underflow"] = number_or_null(*r.exchange_underflow);
    if (r.exchange_saturation) j["exchange_saturation"] = number_or_null(*r.exchange_saturation);
    out += j.dump() + "\n";
  }
  return out;
}

std::string MetricsLog::loss_svg() const {
  Series train{.label = "train", .x = {}, .y = {}, .line = LineStyle::kSolid};
  Series validation{.label = "validation", .x = {}, .y = {}, .line = LineStyle::kSolidWithMarkers};
  for (const MetricRecord& r : records_) {
    train.x.push_back(static_cast<double>(r.step));
    train.y.push_back(r.train_loss);
    if (r.validation_loss) {
      validation.x.push_back(static_cast<double>(r.step));
      validation.y.push_back(*r.validation_loss);
    }
  }
  LinePlot plot(title_);
  plot.x_axis({.label = "step"}).y_axis({.label = "loss (nats)"});
  plot.add(std::move(train));
  if (!validation.x.empty()) plot.add(std::move(validation));
  return plot.to_svg();
}

void MetricsLog::write() const {
  if (directory_.empty()) return;
  write_file_atomically(directory_ / "metrics.csv", csv());
  write_file_atomically(directory_ / "metrics.jsonl", json_lines());
  write_file_atomically(directory_ / "loss.svg", loss_svg());
}

}  // namespace unitscale

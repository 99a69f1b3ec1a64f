#include "unitscale/analysis/line_plot.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <fmt/format.h>
#include <limits>

#include "analysis/svg_text.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

constexpr std::array<const char*, 8> kPalette{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                              "#9467bd", "#8c564b", "#e377c2", "#17becf"};

bool drawable(double v, AxisScale scale) {
  return std::isfinite(v) && (scale == AxisScale::kLinear || v > 0);
}

double to_axis(double v, AxisScale scale) {
  switch (scale) {
    case AxisScale::kLinear: return v;
    case AxisScale::kLog2: return std::log2(v);
    case AxisScale::kLog10: return std::log10(v);
  }
  return v;
}

// The axis range in axis units (log2/log10 of the data for log axes).
struct Range {
  double lo, hi;
};

Range axis_range(const Axis& axis, const std::vector<double>& values) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const double v : values) {
    if (!drawable(v, axis.scale)) continue;
    lo = std::min(lo, to_axis(v, axis.scale));
    hi = std::max(hi, to_axis(v, axis.scale));
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (axis.scale == AxisScale::kLinear) {
    const double pad = hi > lo ? 0.05 * (hi - lo) : std::max(1.0, std::abs(hi)) * 0.5;
    lo -= pad;
    hi += pad;
  } else {
    lo = std::floor(lo);
    hi = std::ceil(hi);
    if (hi == lo) hi = lo + 1;
  }
  if (axis.min) lo = to_axis(*axis.min, axis.scale);
  if (axis.max) hi = to_axis(*axis.max, axis.scale);
  return {lo, hi};
}

struct Tick {
  double position;  // axis units
  std::string label;
};

// Ticks for an axis drawn `pixels` long whose labels need `label_pixels` each (their width on the
// x axis, their height on the y axis): at most ten, and never so dense that the labels overlap, as
// sixteen "2^-12" labels would in a small panel.
std::vector<Tick> ticks(const Axis& axis, Range r, double pixels, double label_pixels) {
  std::vector<Tick> result;
  const double span = r.hi - r.lo;
  const double fitting = std::max(1.0, std::floor(pixels / label_pixels));
  if (axis.scale != AxisScale::kLinear) {
    const int step = std::max(1, static_cast<int>(std::ceil(span / std::min(10.0, fitting))));
    const char* base = axis.scale == AxisScale::kLog2 ? "2" : "10";
    for (int e = static_cast<int>(std::ceil(r.lo)); e <= static_cast<int>(std::floor(r.hi)); e += step) {
      result.push_back({static_cast<double>(e), fmt::format("{}^{}", base, e)});
    }
    return result;
  }
  const double raw = span / std::min(6.0, fitting);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  for (double v = std::ceil(r.lo / step) * step; v <= r.hi + 1e-9 * step; v += step) {
    result.push_back({v, fmt::format("{:g}", std::abs(v) < 1e-12 * step ? 0.0 : v)});
  }
  return result;
}

}  // namespace

LinePlot& LinePlot::x_axis(Axis axis) {
  x_axis_ = std::move(axis);
  return *this;
}

LinePlot& LinePlot::y_axis(Axis axis) {
  y_axis_ = std::move(axis);
  return *this;
}

LinePlot& LinePlot::add(Series series) {
  if (series.x.size() != series.y.size()) {
    throw Error(fmt::format("LinePlot::add: series '{}' has {} x values but {} y values",
                            series.label, series.x.size(), series.y.size()));
  }
  series_.push_back(std::move(series));
  return *this;
}

LinePlot& LinePlot::reference(ReferenceLine line) {
  references_.push_back(std::move(line));
  return *this;
}

std::string LinePlot::to_svg(int width, int height) const {
  std::vector<double> xs, ys;
  for (const Series& s : series_) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  for (const ReferenceLine& line : references_) ys.push_back(line.y);
  const Range xr = axis_range(x_axis_, xs), yr = axis_range(y_axis_, ys);

  const double left = 80, right = width - 190.0, top = 50, bottom = height - 60.0;
  auto px = [&](double v) { return left + (to_axis(v, x_axis_.scale) - xr.lo) / (xr.hi - xr.lo) * (right - left); };
  auto py = [&](double v) { return bottom - (to_axis(v, y_axis_.scale) - yr.lo) / (yr.hi - yr.lo) * (bottom - top); };
  auto inside = [&](double x, double y) {
    return drawable(x, x_axis_.scale) && drawable(y, y_axis_.scale) && px(x) >= left - 1e-6 &&
           px(x) <= right + 1e-6 && py(y) >= top - 1e-6 && py(y) <= bottom + 1e-6;
  };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">{3}</text>\n",
      width, height, (left + right) / 2, detail::svg_escape(title_));

  // About 7 px a character at font-size 12, "2^-12" or "0.0005" plus a gap; one line high.
  constexpr double kXLabelPixels = 48, kYLabelPixels = 24;
  for (const Tick& t : ticks(x_axis_, xr, right - left, kXLabelPixels)) {
    const double x = left + (t.position - xr.lo) / (xr.hi - xr.lo) * (right - left);
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
                       "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                       x, top, bottom, bottom + 18, detail::svg_escape(t.label));
  }
  for (const Tick& t : ticks(y_axis_, yr, bottom - top, kYLabelPixels)) {
    const double y = bottom - (t.position - yr.lo) / (yr.hi - yr.lo) * (bottom - top);
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e5e5e5\"/>\n"
                       "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
                       left, y, right, left - 6, y + 4, detail::svg_escape(t.label));
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
                     left, top, right - left, bottom - top);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (left + right) / 2,
                     height - 15, detail::svg_escape(x_axis_.label));
  svg += fmt::format("<text transform=\"translate(20,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                     (top + bottom) / 2, detail::svg_escape(y_axis_.label));

  double legend_y = top + 10;
  auto legend = [&](const std::string& label, const std::string& stroke, const char* dash, bool line) {
    if (line) {
      svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>\n",
                         right + 12, legend_y, right + 36, stroke, dash);
    } else {
      svg += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>\n", right + 24, legend_y, stroke);
    }
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", right + 42, legend_y + 4, detail::svg_escape(label));
    legend_y += 18;
  };

  for (const ReferenceLine& line : references_) {
    if (!drawable(line.y, y_axis_.scale) || py(line.y) < top || py(line.y) > bottom) continue;
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>\n",
                       left, py(line.y), right);
    legend(line.label, "#888", " stroke-dasharray=\"2,3\"", true);
  }
  for (std::size_t k = 0; k < series_.size(); ++k) {
    const Series& s = series_[k];
    const char* color = kPalette[k % kPalette.size()];
    const bool lines = s.line != LineStyle::kMarkers;
    const bool markers = s.line == LineStyle::kMarkers || s.line == LineStyle::kSolidWithMarkers;
    const char* dash = s.line == LineStyle::kDashed ? " stroke-dasharray=\"6,4\"" : "";
    std::string points;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!inside(s.x[i], s.y[i])) continue;
      points += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
      if (markers) {
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", px(s.x[i]), py(s.y[i]), color);
      }
    }
    if (lines && !points.empty()) {
      svg += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", points, color, dash);
    }
    legend(s.label, color, dash, lines);
  }
  return svg + "</svg>\n";
}

void LinePlot::save(const std::filesystem::path& path, int width, int height) const {
  write_file_atomically(path, to_svg(width, height));
}

std::string panels_to_svg(const std::vector<LinePlot>& plots, int columns, int width,
                          int height) {
  const int n = static_cast<int>(plots.size());
  if (columns <= 0 || columns > n) columns = std::max(n, 1);
  const int rows = (n + columns - 1) / columns;
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n",
      columns * width, std::max(rows, 1) * height);
  for (int i = 0; i < n; ++i) {
    // A nested <svg> is a viewport of its own: each panel keeps its coordinates, placed by x/y.
    std::string panel = plots[static_cast<std::size_t>(i)].to_svg(width, height);
    const std::size_t open = panel.find("<svg ");
    if (open == std::string::npos) throw Error("panels_to_svg: a plot did not render as <svg>");
    panel.insert(open + 5, fmt::format("x=\"{}\" y=\"{}\" ", (i % columns) * width,
                                       (i / columns) * height));
    out += panel.substr(open);
    if (out.back() != '\n') out += '\n';
  }
  return out + "</svg>\n";
}

void save_panels(const std::filesystem::path& path, const std::vector<LinePlot>& plots,
                 int columns, int width, int height) {
  write_file_atomically(path, panels_to_svg(plots, columns, width, height));
}

}  // namespace unitscale

#pragma once
// LinePlot: small, dependency-free SVG line plots for the examples and reports — linear or
// logarithmic axes, several series with markers, horizontal reference lines (format ranges,
// targets), a legend and a title. Every figure in the project goes through this one class.
//
//   LinePlot plot("hardtanh scales");
//   plot.x_axis({.label = "mult", .scale = AxisScale::kLog2})
//       .y_axis({.label = "scale"})
//       .add({.label = "α (closed form)", .x = mults, .y = alphas})
//       .add({.label = "α (measured)", .x = mults, .y = measured, .line = LineStyle::kMarkers});
//   plot.save("hardtanh_scales.svg");

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace unitscale {

enum class AxisScale { kLinear, kLog2, kLog10 };
enum class LineStyle { kSolid, kDashed, kMarkers, kSolidWithMarkers };

struct Axis {
  std::string label;
  AxisScale scale = AxisScale::kLinear;
  std::optional<double> min = std::nullopt;  // default: the data range (with a margin)
  std::optional<double> max = std::nullopt;
};

struct Series {
  std::string label;
  std::vector<double> x;
  std::vector<double> y;
  LineStyle line = LineStyle::kSolidWithMarkers;
};

struct ReferenceLine {
  std::string label;
  double y;
};

class LinePlot {
 public:
  explicit LinePlot(std::string title) : title_(std::move(title)) {}

  LinePlot& x_axis(Axis axis);
  LinePlot& y_axis(Axis axis);
  // Throws unitscale::Error if x and y differ in length. Points that a log axis cannot show
  // (values <= 0) and non-finite values are skipped.
  LinePlot& add(Series series);
  LinePlot& reference(ReferenceLine line);

  std::string to_svg(int width = 720, int height = 450) const;
  void save(const std::filesystem::path& path, int width = 720, int height = 450) const;  // atomic

 private:
  std::string title_;
  Axis x_axis_, y_axis_;
  std::vector<Series> series_;
  std::vector<ReferenceLine> references_;
};

// Several plots side by side in one SVG, `columns` per row (0: all in one row), each panel
// width × height: the figure for one quantity under several conditions (a panel per scheme).
std::string panels_to_svg(const std::vector<LinePlot>& plots, int columns = 0, int width = 480,
                          int height = 360);
void save_panels(const std::filesystem::path& path, const std::vector<LinePlot>& plots,
                 int columns = 0, int width = 480, int height = 360);  // atomic

}  // namespace unitscale

#include "unitscale/analysis/line_plot.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "unitscale/atomic_write.hpp"
#include "../support/occurrences.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using ::testing::HasSubstr;

using testing_support::occurrences;

TEST(LinePlot, DrawsSeriesLegendTitleAndLogTicks) {
  LinePlot plot("scales <vs> mult");
  plot.x_axis({.label = "mult", .scale = AxisScale::kLog2}).y_axis({.label = "std"});
  plot.add({.label = "alpha", .x = {0.25, 1, 4}, .y = {1, 2, 3}, .line = LineStyle::kSolid});
  plot.add({.label = "beta", .x = {0.25, 1, 4}, .y = {3, 2, 1}, .line = LineStyle::kMarkers});
  plot.reference({.label = "target", .y = 2});
  const std::string svg = plot.to_svg();
  EXPECT_THAT(svg, HasSubstr("scales &lt;vs&gt; mult"));
  EXPECT_EQ(occurrences(svg, "<polyline"), 1);
  EXPECT_EQ(occurrences(svg, "<circle"), 3 + 1);  // three markers and the legend's
  EXPECT_THAT(svg, HasSubstr(">2^-2<"));
  EXPECT_THAT(svg, HasSubstr(">2^2<"));
  EXPECT_THAT(svg, HasSubstr(">target<"));
}

TEST(LinePlot, SkipsPointsALogAxisCannotShow) {
  LinePlot plot("log");
  plot.y_axis({.label = "y", .scale = AxisScale::kLog10});
  plot.add({.label = "s", .x = {1, 2, 3}, .y = {0, -1, 100}, .line = LineStyle::kMarkers});
  EXPECT_EQ(occurrences(plot.to_svg(), "<circle"), 1 + 1);
}

TEST(LinePlot, MismatchedSeriesIsAnError) {
  LinePlot plot("p");
  EXPECT_THAT([&] { plot.add({.label = "bad", .x = {1, 2}, .y = {1}}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("'bad' has 2 x values but 1 y values")));
}

TEST(AtomicWrite, ReplacesContentAndReportsFailures) {
  const auto path = std::filesystem::temp_directory_path() / "unitscale_atomic_write_test.txt";
  write_file_atomically(path, "first");
  write_file_atomically(path, "second");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "second");
  std::filesystem::remove(path);
  EXPECT_THAT([] { write_file_atomically("/nonexistent-dir/x.svg", "x"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("/nonexistent-dir/x.svg")));
}

}  // namespace
}  // namespace unitscale

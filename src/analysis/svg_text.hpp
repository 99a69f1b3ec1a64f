#pragma once
// Text placed in the project's SVG figures (line_plot.cpp, scale_tracking.cpp): labels and titles
// may hold <, >, & and quotes (e.g. "tiny <step>"), which must be escaped to stay well-formed XML.

#include <string>
#include <string_view>

namespace unitscale::detail {

inline std::string svg_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace unitscale::detail

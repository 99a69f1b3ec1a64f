#pragma once
// How often a needle occurs in a text: the SVG and report tests count elements and rows with it.

#include <string>

namespace unitscale::testing_support {

inline int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

}  // namespace unitscale::testing_support

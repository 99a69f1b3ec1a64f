#include "unitscale/error.hpp"

#include <cstdio>
#include <cstdlib>

namespace unitscale::detail {

void assertion_failed(const char* expression, const char* file, int line) {
  std::fprintf(stderr, "unitscale: internal invariant failed: %s (%s:%d)\n", expression, file, line);
  std::abort();
}

}  // namespace unitscale::detail

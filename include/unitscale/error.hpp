#pragma once
// Errors and invariants shared by every layer.
//
// Caller mistakes (a shape mismatch, an unknown format name, a bad option, a corrupt file) throw
// unitscale::Error with a message that names the operation, what was given and what was expected.
// Internal invariants use UNITSCALE_ASSERT, which stays on in release builds: a broken invariant
// in numerics code produces silently wrong numbers, which is worse than a crash.

#include <stdexcept>
#include <string>

namespace unitscale {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] void assertion_failed(const char* expression, const char* file, int line);
}  // namespace detail

}  // namespace unitscale

#define UNITSCALE_ASSERT(condition)                                                  \
  do {                                                                               \
    if (!(condition)) ::unitscale::detail::assertion_failed(#condition, __FILE__, __LINE__); \
  } while (false)

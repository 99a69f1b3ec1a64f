#pragma once
// The message of the unitscale::Error a call throws, for tests that check what an error says
// (the file, the offset, the option, the expected and actual values).

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale::testing_support {

// The message of the unitscale::Error `f` throws; a test failure (and "") if it throws none.
inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no unitscale::Error thrown";
  return {};
}

}  // namespace unitscale::testing_support

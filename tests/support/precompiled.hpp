#pragma once
// The headers nearly every test program includes, precompiled once for all of them
// (tests/CMakeLists.txt). Only widely shared, stable headers belong here: a change to one of them
// rebuilds every test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"

#pragma once
// Umbrella header: everything public in unitscale.
//
//   #include <unitscale/unitscale.hpp>
//   namespace us = unitscale;

#include "unitscale/error.hpp"
#include "unitscale/format.hpp"

#pragma once
// The registry of every forward op, for tools that look ops up by name (configs, the docs check).

#include <span>
#include <string_view>

#include "unitscale/ops/op_def.hpp"

namespace unitscale {

std::span<const OpDef* const> forward_ops();

// Throws unitscale::Error listing the valid names if there is no op called `name`.
const OpDef& op_by_name(std::string_view name);

}  // namespace unitscale

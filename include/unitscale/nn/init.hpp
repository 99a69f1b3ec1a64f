#pragma once
// init_parameter: a parameter's initial values, drawn from a counter-based generator.
//
// Element i of the parameter `name` is a pure function of (seed, name, i): the words come from
// splitmix64 applied to a key derived from the seed and a hash of the name, plus the element
// index. A model's weights therefore do not depend on the order in which its parameters are
// created, on the thread count, or on which other parameters exist; renaming a parameter gives it
// new values.
//
// Normal values use the Box–Muller transform on the two 32-bit halves of one 64-bit word:
//   u1 = (hi + ½)/2³²  ∈ (0, 1),   u2 = lo/2³²  ∈ [0, 1),   z = √(−2 ln u1)·cos(2π·u2)
// (only the cosine branch, so element i needs only word i). Uniform values use u1 alone:
//   x = √3·std·(2·u1 − 1), which has standard deviation std.

#include <cstdint>
#include <string_view>

#include "unitscale/nn/parameter_rule.hpp"
#include "unitscale/tensor/shape.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

// An fp32 tensor of `shape` filled as `rule` says (rule.init, rule.init_std, rule.init_value).
// Throws unitscale::Error naming the parameter if the rule was made for another parameter (a
// non-empty rule.name that differs from `name`, or a different rule.shape), or if its std or
// value is negative or not finite.
Tensor init_parameter(std::uint64_t seed, std::string_view name, const Shape& shape,
                      const ParameterRule& rule);

// The generator itself, for tests and for code that draws without a rule: one N(0, 1) value and
// one U(0, 1) value of element `index` of the stream keyed by (seed, name).
double counter_normal(std::uint64_t seed, std::string_view name, std::uint64_t index);
double counter_uniform(std::uint64_t seed, std::string_view name, std::uint64_t index);

}  // namespace unitscale

#pragma once
// fmt formatters that print a low-precision value together with its code: "1.5 (0x3c)".
// Format specs apply to the value: fmt::format("{:.3f}", x) gives "1.500 (0x3c)".

#include <fmt/format.h>

#include "unitscale/format/convert.hpp"
#include "unitscale/format/minifloat.hpp"

template <unitscale::FormatSpec S>
struct fmt::formatter<unitscale::MiniFloat<S>> : fmt::formatter<float> {
  template <class FormatContext>
  auto format(unitscale::MiniFloat<S> x, FormatContext& ctx) const -> decltype(ctx.out()) {
    auto out = fmt::formatter<float>::format(x.to_float(), ctx);
    return fmt::format_to(out, " (0x{:02x})", x.bits());
  }
};

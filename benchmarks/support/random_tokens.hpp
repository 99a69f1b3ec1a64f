#pragma once
// Shared by the benchmark programs that train on tokens (bench_train, bench_scalify): random token
// ids from the counter-based generator, so that every program and run sees the same data.

#include <cstdint>

#include "unitscale/nn/init.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale::bench {

// i32 ids uniform in [0, vocab), a pure function of (seed, element index).
inline Tensor random_tokens(const Shape& shape, std::int64_t vocab, std::uint64_t seed) {
  Tensor t(shape, DType::kI32);
  std::int32_t* ids = t.data_as<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    ids[i] = static_cast<std::int32_t>(
        counter_uniform(seed, "bench-ids", static_cast<std::uint64_t>(i)) *
        static_cast<double>(vocab));
  }
  return t;
}

}  // namespace unitscale::bench

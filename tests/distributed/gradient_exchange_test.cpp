// The gradient exchange in one process: its arithmetic (fixed-order fp32 sums, mean vs unit-scaled
// sum, quantisation counted exactly) on SingleProcessCommunicator and on 2–3 "ranks" of threads,
// the graph's exchange nodes and where the executor runs them. tests/distributed/
// data_parallel_test.cpp runs the same code over MPI.

#include "unitscale/distributed/gradient_exchange.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../support/thread_communicator.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/elementwise.hpp"

namespace unitscale {
namespace {

using testing_support::run_ranks;
using testing_support::ThreadGroup;

// Rank r's gradient: distinct, irregular values of both signs.
std::vector<float> gradient_of(int rank, std::size_t n) {
  std::vector<float> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    g[i] = std::sin(0.7f * static_cast<float>(i) + 1.3f * static_cast<float>(rank)) *
           (1.0f + 0.25f * static_cast<float>(rank));
  }
  return g;
}

// One exchange of `g` on `comm`; returns the combined gradient.
std::vector<float> exchange_once(Communicator& comm, std::vector<float> g,
                                 const GradientExchangeOptions& options, ExchangeCombine combine,
                                 bool overlap = true, ExchangeStatistics* statistics = nullptr) {
  GradientExchange exchange(comm, overlap);
  std::vector<float> out(g.size());
  const Shape shape{static_cast<std::int64_t>(g.size())};
  exchange.start(0, ConstTensorView(g.data(), shape), options, combine);
  exchange.finish(0, TensorView(out.data(), shape));
  if (statistics != nullptr) *statistics = exchange.take_statistics();
  return out;
}

TEST(GradientExchange, Fp32OnOneRankIsTheIdentityBitForBit) {
  SingleProcessCommunicator single;
  const std::vector<float> g = gradient_of(0, 37);
  for (const ExchangeCombine combine : {ExchangeCombine::kMean, ExchangeCombine::kUnitScaledSum}) {
    EXPECT_EQ(exchange_once(single, g, {}, combine), g);
  }
}

// The contract of the fp32 exchange: ((g0 + g1) + g2) in fp32, in rank order, times 1/N or 1/√N
// (as floats), the same bits on every rank; n = 10 does not split evenly into 3 chunks.
TEST(GradientExchange, Fp32SumsInRankOrderAndCombinesOnEveryRank) {
  for (const int ranks : {2, 3}) {
    for (const ExchangeCombine combine :
         {ExchangeCombine::kMean, ExchangeCombine::kUnitScaledSum}) {
      constexpr std::size_t n = 10;
      const auto factor = static_cast<float>(
          combine == ExchangeCombine::kMean ? 1.0 / ranks : 1.0 / std::sqrt(double(ranks)));
      std::vector<float> expected(n);
      for (std::size_t i = 0; i < n; ++i) {
        float sum = 0;
        double exact = 0;
        for (int r = 0; r < ranks; ++r) {
          sum += gradient_of(r, n)[i];
          exact += gradient_of(r, n)[i];
        }
        expected[i] = sum * factor;
        EXPECT_NEAR(expected[i], exact * factor, 1e-6);
      }
      ThreadGroup group(ranks);
      std::vector<std::vector<float>> results(static_cast<std::size_t>(ranks));
      run_ranks(group, [&](Communicator& comm) {
        results[static_cast<std::size_t>(comm.rank())] =
            exchange_once(comm, gradient_of(comm.rank(), n), {}, combine);
      });
      for (int r = 0; r < ranks; ++r) {
        EXPECT_EQ(results[static_cast<std::size_t>(r)], expected)
            << ranks << " ranks, rank " << r << ", " << exchange_combine_name(combine);
      }
    }
  }
}

// E4M3 with unit scaling: each rank's values rounded once (nearest even, saturating), summed in
// fp32, the mean rounded again; the scalar conversions of the format layer are the reference.
TEST(GradientExchange, Fp8RoundsEachRanksGradientAndTheMeanOnce) {
  constexpr std::size_t n = 11;
  auto round_e4m3 = [](float x) {
    return static_cast<float>(
        convert<float8_e4m3fn>(x, Rounding::kNearestEven, Overflow::kSaturate));
  };
  std::vector<float> expected(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float sum = round_e4m3(gradient_of(0, n)[i]) + round_e4m3(gradient_of(1, n)[i]);
    expected[i] = round_e4m3(sum * 0.5f);
  }
  ThreadGroup group(2);
  std::vector<std::vector<float>> results(2);
  run_ranks(group, [&](Communicator& comm) {
    results[static_cast<std::size_t>(comm.rank())] = exchange_once(
        comm, gradient_of(comm.rank(), n), {.format = DType::kE4M3FN}, ExchangeCombine::kMean);
  });
  EXPECT_EQ(results[0], expected);
  EXPECT_EQ(results[1], expected);
}

// Underflow and saturation are counted exactly: E4M3's smallest subnormal is 2^-9, so 2^-11
// rounds to zero (and 2^-10, a tie, to even: zero); 1000 > 448 saturates. Zeros are not underflow.
TEST(GradientExchange, CountsUnderflowAndSaturation) {
  SingleProcessCommunicator single;
  const std::vector<float> g = {1.0f,
                                std::ldexp(1.0f, -11),
                                std::ldexp(1.0f, -10),
                                0.0f,
                                1000.0f,
                                -2000.0f,
                                std::ldexp(1.0f, -9),
                                0.5f};
  ExchangeStatistics statistics;
  const std::vector<float> out = exchange_once(single, g, {.format = DType::kE4M3FN},
                                               ExchangeCombine::kMean, true, &statistics);
  // One rank: step 1 quantises all 8 values, step 3 the 8 of the one chunk again.
  EXPECT_EQ(statistics.quantized, 16);
  EXPECT_EQ(statistics.underflowed, 2);  // step 1 only: step 3 sees them as zeros already
  EXPECT_EQ(statistics.saturated, 2);    // the same
  EXPECT_EQ(statistics.tensors, 1);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[4], 448.0f);
  EXPECT_EQ(out[5], -448.0f);
  EXPECT_EQ(out[6], std::ldexp(1.0f, -9));
}

// Gradients far outside E4M3's range: unit scaling flushes or saturates them, per-tensor scaling
// keeps them to the format's precision (2^-4 relative for E4M3 normals).
TEST(GradientExchange, PerTensorScalingFitsAnyMagnitude) {
  SingleProcessCommunicator single;
  for (const float magnitude : {std::ldexp(1.0f, -30), std::ldexp(1.0f, 40)}) {
    std::vector<float> g = gradient_of(0, 64);
    for (float& x : g) x *= magnitude;
    ExchangeStatistics unit_statistics;
    exchange_once(single, g, {.format = DType::kE4M3FN}, ExchangeCombine::kMean, true,
                  &unit_statistics);
    EXPECT_GT(unit_statistics.underflowed + unit_statistics.saturated, 50);

    ExchangeStatistics statistics;
    const std::vector<float> out =
        exchange_once(single, g, {.format = DType::kE4M3FN, .scaling = ExchangeScaling::kPerTensor},
                      ExchangeCombine::kMean, true, &statistics);
    EXPECT_EQ(statistics.saturated, 0);
    float largest = 0;
    for (const float x : g) largest = std::max(largest, std::fabs(x));
    for (std::size_t i = 0; i < g.size(); ++i) {
      // Two roundings of at most 2^-4 relative each, or E4M3's subnormal spacing at the scale.
      EXPECT_NEAR(out[i], g[i], std::fabs(g[i]) * 0.13f + largest * std::ldexp(1.0f, -16))
          << "element " << i << " at magnitude " << magnitude;
    }
  }
}

TEST(GradientExchange, OverlapAndInlineGiveTheSameBits) {
  ThreadGroup group(2);
  std::vector<std::vector<float>> overlapped(2), in_line(2);
  run_ranks(group, [&](Communicator& comm) {
    const auto r = static_cast<std::size_t>(comm.rank());
    overlapped[r] = exchange_once(comm, gradient_of(comm.rank(), 100), {.format = DType::kBF16},
                                  ExchangeCombine::kUnitScaledSum, true);
    in_line[r] = exchange_once(comm, gradient_of(comm.rank(), 100), {.format = DType::kBF16},
                               ExchangeCombine::kUnitScaledSum, false);
  });
  EXPECT_EQ(overlapped[0], in_line[0]);
  EXPECT_EQ(overlapped[0], overlapped[1]);
}

TEST(GradientExchange, OptionsNameAndRefuseOtherFormats) {
  EXPECT_EQ((GradientExchangeOptions{.format = DType::kE5M2}).name(), "e5m2");
  EXPECT_EQ(
      (GradientExchangeOptions{.format = DType::kE4M3FN, .scaling = ExchangeScaling::kPerTensor})
          .name(),
      "e4m3fn/per-tensor");
  EXPECT_EQ(exchange_format_from_name("e4m3"), DType::kE4M3FN);
  EXPECT_EQ(exchange_format_from_name("bf16"), DType::kBF16);
  try {
    exchange_format_from_name("e8m0fnu");
    FAIL() << "e8m0fnu accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32, bf16, f16, e5m2 or e4m3fn"), std::string::npos)
        << e.what();
  }
}

// In a graph: the update reads the exchanged gradient; the start node runs as soon as its gradient
// exists (before nodes recorded earlier that do not need it), the finish node where it is read.
TEST(GradientExchange, GraphNodesStartEarlyAndCombineAsTheGraphIsScaled) {
  for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
    Graph graph(scaling);
    const Value a = graph.input("a", Shape{4});
    const Value b = graph.input("b", Shape{4});
    const Value ga = mul(a, a);           // node 0: "a's gradient"
    const Value late = mul(b, b);         // node 1: other backward work
    const Value later = mul(late, late);  // node 2
    const Value ga_exchanged[] = {ga, Value{}, later};
    const std::vector<Value> out =
        record_gradient_exchange(graph, ga_exchanged, {.format = DType::kF32});
    ASSERT_EQ(out.size(), 3u);
    EXPECT_FALSE(out[1].present());
    const std::vector<int> order = graph.execution_order();
    // Node 3 is ga's start, recorded after nodes 1 and 2, and runs right after node 0.
    EXPECT_EQ(order[0], 0);
    EXPECT_EQ(order[1], 3);
    EXPECT_EQ(graph.nodes()[3].attrs.get_enum<ExchangeCombine>("test", "combine"),
              scaling == Scaling::kUnit ? ExchangeCombine::kUnitScaledSum : ExchangeCombine::kMean);

    const Value requested[] = {out[0], out[2]};
    Executor executor(graph, requested);
    std::vector<float> a_data = {1, 2, 3, 4}, b_data = {1, -1, 2, -2};
    executor.bind(a, ConstTensorView(a_data.data(), Shape{4}));
    executor.bind(b, ConstTensorView(b_data.data(), Shape{4}));
    try {
      executor.run();
      FAIL() << "ran without a gradient exchange";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("gradient_exchange_start"), std::string::npos)
          << e.what();
    }
    SingleProcessCommunicator single;
    GradientExchange exchange(single);
    executor.set_gradient_exchange(&exchange);
    executor.run();
    // One rank: both combines are the identity.
    EXPECT_EQ(executor.get(out[0]).data()[1], 4.0f);
    EXPECT_EQ(executor.get(out[2]).data()[3], 16.0f);
  }
}

TEST(GradientExchange, RefusesNonFp32Gradients) {
  Graph graph;
  const Value g = graph.input("g", Shape{4}, DType::kF16);
  const Value gradients[] = {g};
  try {
    record_gradient_exchange(graph, gradients, {});
    FAIL() << "an f16 gradient was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32 gradients"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace unitscale

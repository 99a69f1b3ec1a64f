#include "unitscale/ops/primitives.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../support/accuracy.hpp"
#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/ops/cast.hpp"

namespace unitscale {
namespace {

using namespace testing;
using ::testing::ElementsAreArray;

using Ints = std::vector<std::int64_t>;

Tensor make(Shape shape, std::vector<float> values) { return Tensor(std::move(shape), values); }

std::vector<float> values_of(const Tensor& t) { return {t.span().begin(), t.span().end()}; }

// Distinct values 0.1 apart in random order, so that finite-difference steps never change an
// argmax.
Tensor separated(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  std::iota(values.begin(), values.end(), 0.0f);
  std::shuffle(values.begin(), values.end(), rng);
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t[i] = 0.1f * values[static_cast<std::size_t>(i)] - 1.0f;
  return t;
}

Tensor positive(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::uniform_real_distribution<float> uniform(0.5f, 2.0f);
  for (float& v : t.span()) v = uniform(rng);
  return t;
}

// Forward of a one-output op on concrete tensors.
Tensor forward(const OpDef& op, std::vector<std::optional<Tensor>> inputs, Attributes attrs) {
  OpRun run(op, std::move(inputs), std::move(attrs));
  run.forward();
  return run.output();
}

Attributes reduce_attrs(Ints axes, std::int64_t keepdim = 0) {
  return {{"axes", std::move(axes)}, {"keepdim", keepdim}};
}

// ---------------------------------------------------------------------------------------------
// Gradcheck: every op and variant
// ---------------------------------------------------------------------------------------------

TEST(PrimitivesGradcheck, Reshape) {
  std::mt19937 rng(1);
  const Tensor x = random_normal({2, 3, 4}, rng);
  for (const Ints& shape : {Ints{4, -1}, Ints{24}, Ints{-1}, Ints{2, 2, 1, 6}, Ints{3, 8}}) {
    testing::gradcheck(kReshapeOp, {x}, {{"shape", shape}});
  }
  testing::gradcheck(kReshapeOp, {random_normal({1, 1}, rng)}, {{"shape", Ints{}}});
}

TEST(PrimitivesGradcheck, Transpose) {
  std::mt19937 rng(2);
  const Tensor x = random_normal({2, 3, 4}, rng);
  for (const auto& [d0, d1] :
       std::vector<std::pair<int, int>>{{0, 2}, {-1, -2}, {0, 1}, {1, 1}, {2, 0}}) {
    testing::gradcheck(kTransposeOp, {x}, {{"dim0", std::int64_t{d0}}, {"dim1", std::int64_t{d1}}});
  }
  testing::gradcheck(kTransposeOp, {random_normal({2, 3, 2, 3}, rng)},
                     {{"dim0", std::int64_t{1}}, {"dim1", std::int64_t{3}}});
}

TEST(PrimitivesGradcheck, Slice) {
  std::mt19937 rng(3);
  const Tensor x = random_normal({2, 5, 3}, rng);
  const auto attrs = [](std::int64_t axis, std::int64_t start, std::int64_t end) {
    return Attributes{{"axis", axis}, {"start", start}, {"end", end}};
  };
  testing::gradcheck(kSliceOp, {x}, attrs(1, 1, 4));
  testing::gradcheck(kSliceOp, {x}, attrs(0, 1, 2));
  testing::gradcheck(kSliceOp, {x}, attrs(-1, -2, 3));
  testing::gradcheck(kSliceOp, {x}, attrs(1, 0, 5));
  testing::gradcheck(kSliceOp, {x}, attrs(1, 2, 2));  // empty: the gradient is all zero
}

TEST(PrimitivesGradcheck, Concat) {
  std::mt19937 rng(4);
  testing::gradcheck(kConcatOp, {random_normal({2, 3}, rng), random_normal({4, 3}, rng)},
                     {{"axis", std::int64_t{0}}});
  testing::gradcheck(kConcatOp, {random_normal({2, 3, 2}, rng), random_normal({2, 1, 2}, rng)},
                     {{"axis", std::int64_t{1}}});
  testing::gradcheck(kConcatOp, {random_normal({2, 3}, rng), random_normal({2, 2}, rng)},
                     {{"axis", std::int64_t{-1}}});
  testing::gradcheck(kConcatOp, {random_normal({2, 0}, rng), random_normal({2, 2}, rng)},
                     {{"axis", std::int64_t{-1}}});
  // Only one operand differentiated: the other's part of grad_y is skipped.
  testing::gradcheck(kConcatOp, {random_normal({2, 3}, rng), random_normal({2, 2}, rng)},
                     {{"axis", std::int64_t{1}}}, {.differentiable = {false, true}});
  testing::gradcheck(kConcatOp, {random_normal({2, 3}, rng), random_normal({2, 2}, rng)},
                     {{"axis", std::int64_t{1}}}, {.differentiable = {true, false}});
}

TEST(PrimitivesGradcheck, SumAndMean) {
  std::mt19937 rng(5);
  const Tensor x = random_normal({2, 3, 4}, rng);
  for (const OpDef* op : {&kSumOp, &kMeanOp}) {
    for (const Ints& axes :
         {Ints{}, Ints{0}, Ints{1}, Ints{2}, Ints{0, 2}, Ints{-1, 0}, Ints{0, 1, 2}}) {
      for (const std::int64_t keepdim : {0, 1})
        testing::gradcheck(*op, {x}, reduce_attrs(axes, keepdim));
    }
    testing::gradcheck(*op, {random_normal({3, 1, 2}, rng)}, reduce_attrs({1}));
    testing::gradcheck(*op, {random_normal({}, rng)}, reduce_attrs({}));
  }
}

TEST(PrimitivesGradcheck, Max) {
  std::mt19937 rng(6);
  const Tensor x = separated({3, 4, 2}, rng);
  for (const std::int64_t axis : {0, 1, 2, -1}) {
    for (const std::int64_t keepdim : {0, 1}) {
      testing::gradcheck(kMaxOp, {x}, {{"axis", axis}, {"keepdim", keepdim}});
    }
  }
  testing::gradcheck(kMaxOp, {separated({5}, rng)}, {{"axis", std::int64_t{0}}});
}

TEST(PrimitivesGradcheck, ExpLogSqrt) {
  std::mt19937 rng(7);
  testing::gradcheck(kExpOp, {random_normal({3, 4}, rng)}, {});
  testing::gradcheck(kLogOp, {positive({3, 4}, rng)}, {});
  testing::gradcheck(kSqrtOp, {positive({3, 4}, rng)}, {});
  testing::gradcheck(kExpOp, {random_normal({}, rng)}, {});
}

TEST(PrimitivesGradcheck, Where) {
  std::mt19937 rng(8);
  const Tensor cond = make({2, 3}, {1, 0, 0, 2, -1, 0});
  testing::gradcheck(kWhereOp, {cond, random_normal({2, 3}, rng), random_normal({2, 3}, rng)}, {},
                     {.differentiable = {false, true, true}});
  testing::gradcheck(kWhereOp, {cond, random_normal({2, 3}, rng), random_normal({2, 3}, rng)}, {},
                     {.differentiable = {false, false, true}});
}

// ---------------------------------------------------------------------------------------------
// Exact values on hand-made tensors
// ---------------------------------------------------------------------------------------------

TEST(PrimitivesForward, Reshape) {
  const Tensor y =
      forward(kReshapeOp, {make({2, 3}, {1, 2, 3, 4, 5, 6})}, {{"shape", Ints{3, -1}}});
  EXPECT_EQ(y.shape(), (Shape{3, 2}));
  EXPECT_THAT(values_of(y), ElementsAreArray({1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(forward(kReshapeOp, {make({1}, {7})}, {{"shape", Ints{}}}).shape(), Shape{});
  EXPECT_EQ(forward(kReshapeOp, {Tensor(Shape{0, 3})}, {{"shape", Ints{3, 0}}}).shape(),
            (Shape{3, 0}));
}

TEST(PrimitivesForward, Transpose) {
  const Tensor x = make({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor y =
      forward(kTransposeOp, {x}, {{"dim0", std::int64_t{0}}, {"dim1", std::int64_t{-1}}});
  EXPECT_EQ(y.shape(), (Shape{3, 2}));
  EXPECT_THAT(values_of(y), ElementsAreArray({1, 4, 2, 5, 3, 6}));

  // [2, 3, 4] with dims 0 and 2 swapped: y[k, j, i] = x[i, j, k].
  Tensor x3({2, 3, 4});
  for (std::int64_t i = 0; i < x3.numel(); ++i) x3[i] = static_cast<float>(i);
  const Tensor y3 =
      forward(kTransposeOp, {x3}, {{"dim0", std::int64_t{2}}, {"dim1", std::int64_t{0}}});
  ASSERT_EQ(y3.shape(), (Shape{4, 3, 2}));
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 4; ++k) EXPECT_EQ(y3[(k * 3 + j) * 2 + i], x3[(i * 3 + j) * 4 + k]);
    }
  }
}

TEST(PrimitivesForward, SliceAndItsBackward) {
  const Tensor x = make({2, 4}, {0, 1, 2, 3, 4, 5, 6, 7});
  const Attributes attrs{
      {"axis", std::int64_t{-1}}, {"start", std::int64_t{1}}, {"end", std::int64_t{-1}}};
  OpRun run(kSliceOp, {x}, attrs);
  run.forward();
  EXPECT_EQ(run.output().shape(), (Shape{2, 2}));
  EXPECT_THAT(values_of(run.output()), ElementsAreArray({1, 2, 5, 6}));
  const auto grads = run.backward({make({2, 2}, {10, 20, 30, 40})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({0, 10, 20, 0, 0, 30, 40, 0}));
  const Tensor rows =
      forward(kSliceOp, {x},
              {{"axis", std::int64_t{0}}, {"start", std::int64_t{1}}, {"end", std::int64_t{2}}});
  EXPECT_THAT(values_of(rows), ElementsAreArray({4, 5, 6, 7}));
}

// reshape, transpose and slice move elements of any dtype bit for bit (OpDef::moves_values): on
// FP16, BF16, E4M3 and i32 tensors they give the codes of what they give on the decoded fp32
// values, in the same dtype, and slice's backward pads a narrow gradient with +0 codes.
TEST(PrimitivesForward, MoversMoveEveryDtypeBitForBit) {
  const Shape shape{3, 5, 4};
  const auto run = [&](const Tensor& x) {
    Graph g(Scaling::kUnscaled);
    const Value in = g.input("x", shape, x.dtype());
    const Value moved = reshape(slice(transpose(in, 0, 2), 1, 1, 4), {-1, 3});
    Executor exec(g, std::vector<Value>{moved});
    exec.bind(in, x);
    exec.run();
    EXPECT_EQ(exec.get(moved).dtype(), x.dtype());
    return copy_of(exec.get(moved));
  };
  std::mt19937 rng(3);
  Tensor ids(shape, DType::kI32);
  for (std::int32_t& v : ids.span_as<std::int32_t>()) v = static_cast<std::int32_t>(rng() % 1000);
  Tensor ids_f32(shape);
  for (std::int64_t i = 0; i < ids.numel(); ++i) {
    ids_f32.data()[i] = static_cast<float>(ids.data_as<std::int32_t>()[i]);
  }
  const Tensor moved_ids = run(ids), moved_ids_f32 = run(ids_f32);
  for (std::int64_t i = 0; i < moved_ids.numel(); ++i) {
    ASSERT_EQ(static_cast<float>(moved_ids.data_as<std::int32_t>()[i]), moved_ids_f32.data()[i]);
  }
  for (const DType dtype : {DType::kF16, DType::kBF16, DType::kE4M3FN}) {
    Tensor values(shape);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& v : values.span()) v = normal(rng);
    Tensor codes(shape, dtype);
    cast_forward(values, codes, {{"dtype", dtype}, {"overflow", Overflow::kSaturate}}, 0);
    Tensor decoded(shape);
    cast_forward(codes, decoded, {{"dtype", DType::kF32}}, 0);
    const Tensor moved = run(codes), expected = run(decoded);
    Tensor moved_decoded(moved.shape());
    cast_forward(moved, moved_decoded, {{"dtype", DType::kF32}}, 0);
    for (std::int64_t i = 0; i < expected.numel(); ++i) {
      ASSERT_EQ(moved_decoded.data()[i], expected.data()[i]) << dtype_name(dtype) << " " << i;
    }
    // slice's backward: the gradient's codes in the middle, +0 codes around them.
    const Tensor grad = copy_of(moved);
    Tensor grad_x(Shape{1, 3, 1}, dtype);
    const Tensor grad_row = [&] {
      Tensor row(Shape{1, 1, 1}, dtype);
      std::memcpy(row.bytes(), grad.bytes(), dtype_size(dtype));
      return row;
    }();
    slice_backward(grad_row, grad_x, 1, 1);
    const std::byte* bytes = grad_x.bytes();
    const std::size_t size = dtype_size(dtype);
    for (std::size_t b = 0; b < size; ++b) {
      EXPECT_EQ(bytes[b], std::byte{0});
      EXPECT_EQ(bytes[size + b], grad.bytes()[b]);
      EXPECT_EQ(bytes[2 * size + b], std::byte{0});
    }
  }
}

TEST(PrimitivesForward, ConcatAndItsBackward) {
  const Tensor a = make({2, 2}, {1, 2, 3, 4});
  const Tensor b = make({2, 1}, {5, 6});
  OpRun run(kConcatOp, {a, b}, {{"axis", std::int64_t{1}}});
  run.forward();
  EXPECT_EQ(run.output().shape(), (Shape{2, 3}));
  EXPECT_THAT(values_of(run.output()), ElementsAreArray({1, 2, 5, 3, 4, 6}));
  const auto grads = run.backward({make({2, 3}, {10, 20, 30, 40, 50, 60})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({10, 20, 40, 50}));
  EXPECT_THAT(values_of(*grads[1]), ElementsAreArray({30, 60}));
  const Tensor rows = forward(kConcatOp, {a, make({1, 2}, {7, 8})}, {{"axis", std::int64_t{0}}});
  EXPECT_THAT(values_of(rows), ElementsAreArray({1, 2, 3, 4, 7, 8}));
}

TEST(PrimitivesForward, SumAndMean) {
  Tensor x({2, 3, 2});
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i);  // x[i,j,k] = 6i+2j+k
  EXPECT_THAT(values_of(forward(kSumOp, {x}, reduce_attrs({}))), ElementsAreArray({66}));
  EXPECT_EQ(forward(kSumOp, {x}, reduce_attrs({})).shape(), Shape{});
  EXPECT_EQ(forward(kSumOp, {x}, reduce_attrs({}, 1)).shape(), (Shape{1, 1, 1}));
  const Tensor over_j = forward(kSumOp, {x}, reduce_attrs({1}));
  EXPECT_EQ(over_j.shape(), (Shape{2, 2}));
  EXPECT_THAT(values_of(over_j), ElementsAreArray({6, 9, 24, 27}));
  const Tensor over_ik = forward(kSumOp, {x}, reduce_attrs({0, -1}, 1));
  EXPECT_EQ(over_ik.shape(), (Shape{1, 3, 1}));
  EXPECT_THAT(values_of(over_ik), ElementsAreArray({14, 22, 30}));
  EXPECT_THAT(values_of(forward(kMeanOp, {x}, reduce_attrs({1}))), ElementsAreArray({2, 3, 8, 9}));
  EXPECT_THAT(values_of(forward(kMeanOp, {x}, reduce_attrs({0, 2}))),
              ElementsAreArray({3.5, 5.5, 7.5}));
  // The mean's backward spreads g / N.
  OpRun run(kMeanOp, {x}, reduce_attrs({1}));
  run.forward();
  const auto grads = run.backward({make({2, 2}, {3, 6, 9, 12})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4}));
}

TEST(PrimitivesForward, SumAccumulatesInDouble) {
  // In FP32, 1e8 + 1 rounds back to 1e8, so a float accumulator returns 0 or 1 instead of 2.
  const Tensor column = make({4}, {1e8f, 1, -1e8f, 1});
  EXPECT_THAT(values_of(forward(kSumOp, {column}, reduce_attrs({0}))), ElementsAreArray({2}));
  EXPECT_THAT(values_of(forward(kMeanOp, {column}, reduce_attrs({0}))), ElementsAreArray({0.5}));
  // The same down the rows of a [4, 2] matrix (a kept inner run).
  const Tensor matrix = make({4, 2}, {1e8f, 1, 1, 1e8f, -1e8f, 1, 1, -1e8f});
  EXPECT_THAT(values_of(forward(kSumOp, {matrix}, reduce_attrs({0}))), ElementsAreArray({2, 2}));
}

TEST(PrimitivesForward, EmptyReductions) {
  const Tensor empty(Shape{0, 3});
  EXPECT_THAT(values_of(forward(kSumOp, {empty}, reduce_attrs({0}))), ElementsAreArray({0, 0, 0}));
  const Tensor empty_mean = forward(kMeanOp, {empty}, reduce_attrs({0}));
  ASSERT_EQ(empty_mean.shape(), Shape{3});
  for (const float v : empty_mean.span()) EXPECT_TRUE(std::isnan(v));  // 0/0, as in NumPy
  EXPECT_EQ(forward(kSumOp, {empty}, reduce_attrs({1})).shape(), Shape{0});
}

TEST(PrimitivesForward, MaxAndFirstArgmaxGradient) {
  const Tensor x = make({2, 3}, {1, 5, 5, 7, 2, 7});
  const Attributes attrs{{"axis", std::int64_t{1}}, {"keepdim", std::int64_t{0}}};
  OpRun run(kMaxOp, {x}, attrs);
  run.forward();
  EXPECT_EQ(run.output().shape(), Shape{2});
  EXPECT_THAT(values_of(run.output()), ElementsAreArray({5, 7}));
  const auto grads = run.backward({make({2}, {10, 20})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({0, 10, 0, 20, 0, 0}));  // ties: the first

  OpRun columns(kMaxOp, {x}, {{"axis", std::int64_t{0}}, {"keepdim", std::int64_t{1}}});
  columns.forward();
  EXPECT_EQ(columns.output().shape(), (Shape{1, 3}));
  EXPECT_THAT(values_of(columns.output()), ElementsAreArray({7, 5, 7}));
  const auto column_grads = columns.backward({make({1, 3}, {1, 2, 3})});
  EXPECT_THAT(values_of(*column_grads[0]), ElementsAreArray({0, 2, 0, 1, 0, 3}));
}

TEST(PrimitivesForward, MaxPropagatesNan) {
  const Tensor x = make({4}, {1, NAN, 3, NAN});
  OpRun run(kMaxOp, {x}, {{"axis", std::int64_t{0}}});
  run.forward();
  EXPECT_TRUE(std::isnan(run.output()[0]));
  const auto grads = run.backward({make({}, {1})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({0, 1, 0, 0}));
  EXPECT_THAT(values_of(forward(kMaxOp, {make({3}, {-INFINITY, -2, -INFINITY})},
                                {{"axis", std::int64_t{0}}})),
              ElementsAreArray({-2}));
}

// A row of −∞ has maximum −∞ (not −FLT_MAX, OpenMP's identity for a max reduction under clang),
// and its gradient goes to the first element, inside the row (found by the graph fuzzer as a
// heap-buffer-overflow in the clang build).
TEST(PrimitivesForward, MaxOfMinusInfinityRows) {
  const Tensor x = make({2, 20}, std::vector<float>(40, -INFINITY));
  OpRun run(kMaxOp, {x}, {{"axis", std::int64_t{1}}});
  run.forward();
  EXPECT_THAT(values_of(run.output()), ElementsAreArray({-INFINITY, -INFINITY}));
  const auto grads = run.backward({make({2}, {3, 4})});
  std::vector<float> expected(40, 0.0f);
  expected[0] = 3;
  expected[20] = 4;
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray(expected));
}

TEST(PrimitivesForward, ExpLogSqrtAndTheirBackward) {
  const Tensor x = make({3}, {0, 1, 4});
  const Tensor exps = forward(kExpOp, {x}, {});
  EXPECT_EQ(exps[0], 1.0f);
  EXPECT_FLOAT_EQ(exps[1], std::exp(1.0f));
  EXPECT_FLOAT_EQ(exps[2], std::exp(4.0f));
  EXPECT_THAT(values_of(forward(kSqrtOp, {x}, {})), ElementsAreArray({0, 1, 2}));
  const Tensor logs = forward(kLogOp, {x}, {});
  EXPECT_EQ(logs[0], -INFINITY);
  EXPECT_EQ(logs[1], 0.0f);
  EXPECT_FLOAT_EQ(logs[2], std::log(4.0f));
  const Tensor g = make({3}, {2, 2, 2});
  for (const auto& [op, expected] : std::vector<std::pair<const OpDef*, std::vector<float>>>{
           {&kExpOp, {2, 2 * std::exp(1.0f), 2 * std::exp(4.0f)}},
           {&kLogOp, {INFINITY, 2, 0.5}},
           {&kSqrtOp, {INFINITY, 1, 0.5}}}) {
    OpRun run(*op, {x}, {});
    run.forward();
    const std::vector<float> got = values_of(*run.backward({g})[0]);
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], expected[i]) << op->name;
  }
}

// exp runs a vector approximation: within 1 ulp of the exact value over the whole float range
// where the result is normal, with the overflow, underflow and NaN behaviour of expf.
TEST(PrimitivesAccuracy, ExpIsWithinOneUlpAndKeepsSpecialValues) {
  std::vector<float> args;
  for (float v = -87.0f; v < 88.7f; v = std::nextafter(v, INFINITY) + 1e-4f) args.push_back(v);
  for (const float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-8f, 88.72f, -87.33f}) args.push_back(v);
  const auto n = static_cast<std::int64_t>(args.size());
  Tensor x({n});
  std::copy(args.begin(), args.end(), x.data());
  testing::for_each_simd_level([&] {
    const Tensor y = forward(kExpOp, {x}, {});
    double worst = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double exact = std::exp(static_cast<double>(x[i]));
      const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
      worst = std::max(worst, std::abs(y[i] - exact) / ulp);
    }
    EXPECT_LE(worst, 1.0) << "over " << n << " arguments";
    const Tensor special =
        forward(kExpOp, {make({5}, {INFINITY, -INFINITY, NAN, 100.0f, -120.0f})}, {});
    EXPECT_EQ(special[0], INFINITY);
    EXPECT_EQ(special[1], 0.0f);
    EXPECT_TRUE(std::isnan(special[2]));
    EXPECT_EQ(special[3], INFINITY);
    EXPECT_EQ(special[4], 0.0f);
  });
}

TEST(PrimitivesForward, WhereAndItsBackward) {
  const Tensor cond = make({4}, {1, 0, -2, NAN});
  const Tensor a = make({4}, {1, 2, 3, 4});
  const Tensor b = make({4}, {5, 6, 7, 8});
  OpRun run(kWhereOp, {cond, a, b}, {});
  run.forward();
  EXPECT_THAT(values_of(run.output()), ElementsAreArray({1, 6, 3, 4}));  // NaN is nonzero
  const auto grads = run.backward({make({4}, {10, 20, 30, 40})});
  EXPECT_THAT(values_of(*grads[0]), ElementsAreArray({0, 0, 0, 0}));  // cond: no gradient
  EXPECT_THAT(values_of(*grads[1]), ElementsAreArray({10, 0, 30, 40}));
  EXPECT_THAT(values_of(*grads[2]), ElementsAreArray({0, 20, 0, 0}));
}

// Large enough to take the OpenMP paths; compared with straightforward loops.
TEST(PrimitivesForward, LargeTensorsMatchSimpleLoops) {
  std::mt19937 rng(9);
  const std::int64_t rows = 300, cols = 257;
  const Tensor x = random_normal({rows, cols}, rng);
  const Tensor xt =
      forward(kTransposeOp, {x}, {{"dim0", std::int64_t{0}}, {"dim1", std::int64_t{1}}});
  const Tensor row_max = forward(kMaxOp, {x}, {{"axis", std::int64_t{1}}});
  const Tensor col_sum = forward(kSumOp, {x}, reduce_attrs({0}));
  const Tensor sliced =
      forward(kSliceOp, {x},
              {{"axis", std::int64_t{1}}, {"start", std::int64_t{7}}, {"end", std::int64_t{200}}});
  const Tensor e = forward(kExpOp, {x}, {});
  for (std::int64_t r = 0; r < rows; ++r) {
    float best = x[r * cols];
    for (std::int64_t c = 0; c < cols; ++c) {
      ASSERT_EQ(xt[c * rows + r], x[r * cols + c]);
      ASSERT_FLOAT_EQ(e[r * cols + c], std::exp(x[r * cols + c]));
      if (c >= 7 && c < 200) {
        ASSERT_EQ(sliced[r * 193 + c - 7], x[r * cols + c]);
      }
      best = std::max(best, x[r * cols + c]);
    }
    ASSERT_EQ(row_max[r], best);
  }
  for (std::int64_t c = 0; c < cols; ++c) {
    double total = 0;
    for (std::int64_t r = 0; r < rows; ++r) total += x[r * cols + c];
    ASSERT_EQ(col_sum[c], static_cast<float>(total));
  }
}

// ---------------------------------------------------------------------------------------------
// Large tensors through every parallel and vectorised path, against plain references
// ---------------------------------------------------------------------------------------------

// One reduction of sum/mean and the kernel path it takes (see sum_forward).
struct ReductionCase {
  Shape shape;
  Ints axes;
  const char* path;
};

// Every path of sum_forward: long runs split into pieces, outermost group kept, reduced outermost
// with partial sums per chunk of rows or (few rows) split along the next group, a short serial
// one.
const std::vector<ReductionCase>& reduction_cases() {
  static const std::vector<ReductionCase> cases{
      {{std::int64_t{1} << 22}, {}, "full reduction of 2^22"},
      {{3, std::int64_t{1} << 19}, {1}, "long rows"},
      {{4096, 1024}, {1}, "rows"},
      {{16, 64, 32}, {1}, "middle axis"},
      {{512, 2048}, {0}, "columns"},
      {{std::int64_t{1} << 18, 3}, {0}, "narrow columns"},
      {{8, 64, 300}, {0, 2}, "outer and inner axes"},
      {{8, 20000}, {0}, "few long columns"},
      {{4, 3000, 2}, {0, 2}, "outer and inner axes, few rows"},
      {{1000}, {0}, "short full reduction"},
  };
  return cases;
}

std::vector<bool> reduced_mask(const Shape& shape, const Ints& axes) {
  std::vector<bool> reduced(static_cast<std::size_t>(shape.rank()), axes.empty());
  for (const std::int64_t axis : axes) reduced[static_cast<std::size_t>(axis)] = true;
  return reduced;
}

// Per output of reducing x over `reduced`: the sum by Neumaier's compensated summation in plain
// index order (its error, about 2⁻⁵³ of the sum plus n·2⁻¹⁰⁶ of Σ|x|, is far below the tolerances
// below), and Σ|x|.
struct ReferenceSums {
  std::vector<double> sum, abs_sum;
};

ReferenceSums reference_sums(const Tensor& x, const std::vector<bool>& reduced) {
  const Shape& shape = x.shape();
  std::int64_t outputs = 1;
  for (int d = 0; d < shape.rank(); ++d) {
    if (!reduced[static_cast<std::size_t>(d)]) outputs *= shape.dim(d);
  }
  const auto size = static_cast<std::size_t>(outputs);
  std::vector<double> sum(size), compensation(size), abs_sum(size);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    std::int64_t rest = i, out = 0, stride = 1;
    for (int d = shape.rank() - 1; d >= 0; --d) {
      const std::int64_t index = rest % shape.dim(d);
      rest /= shape.dim(d);
      if (!reduced[static_cast<std::size_t>(d)]) {
        out += index * stride;
        stride *= shape.dim(d);
      }
    }
    const auto o = static_cast<std::size_t>(out);
    const double v = x[i], t = sum[o] + v;
    compensation[o] += std::abs(sum[o]) >= std::abs(v) ? (sum[o] - t) + v : (v - t) + sum[o];
    sum[o] = t;
    abs_sum[o] += std::abs(v);
  }
  for (std::size_t o = 0; o < size; ++o) sum[o] += compensation[o];
  return {sum, abs_sum};
}

// Integers that cancel: ±2^30 in equal numbers (in random places) plus small integers. Every
// partial sum is an integer below 2^53, so a double accumulator is exact in any order, while a
// float one rounds away the small terms (its spacing at 2^30 is 128).
Tensor cancelling_integers(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::uniform_int_distribution<int> small(-1000, 1000);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t[i] = i % 4 == 0 ? 1073741824.0f : i % 4 == 1 ? -1073741824.0f : static_cast<float>(small(rng));
  }
  std::shuffle(t.span().begin(), t.span().end(), rng);
  return t;
}

// Normal values scaled over twelve orders of magnitude, with random signs.
Tensor mixed_magnitudes(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> exponent(-6.0f, 6.0f);
  for (float& v : t.span()) v = normal(rng) * std::pow(10.0f, exponent(rng));
  return t;
}

TEST(PrimitivesReductions, SumOfCancellingIntegersIsExactOnEveryPath) {
  std::mt19937 rng(21);
  for (const ReductionCase& c : reduction_cases()) {
    const Tensor x = cancelling_integers(c.shape, rng);
    const std::vector<bool> reduced = reduced_mask(c.shape, c.axes);
    const ReferenceSums want = reference_sums(x, reduced);
    const Tensor got = forward(kSumOp, {x}, reduce_attrs(c.axes));
    ASSERT_EQ(static_cast<std::size_t>(got.numel()), want.sum.size()) << c.path;
    int bad = 0;
    for (std::int64_t o = 0; o < got.numel() && bad < 3; ++o) {
      if (got[o] != static_cast<float>(want.sum[static_cast<std::size_t>(o)])) {
        ++bad;
        ADD_FAILURE() << c.path << ", output " << o << ": " << got[o] << " vs "
                      << want.sum[static_cast<std::size_t>(o)];
      }
    }
  }
  // The mean divides the exact sum by a power of two here, which is exact too.
  const Tensor x = cancelling_integers({std::int64_t{1} << 22}, rng);
  const double total = reference_sums(x, {true}).sum[0];
  EXPECT_EQ(forward(kMeanOp, {x}, reduce_attrs({}))[0], static_cast<float>(total / 4194304.0));
}

// Mixed magnitudes: the sums stay within one float rounding of the exact value plus 2⁻⁴⁰·Σ|x|,
// which a double accumulator meets with a wide margin (its error is about 2⁻⁵³·√n·max|partial
// sum|) and a float accumulator misses by orders of magnitude (about 2⁻²⁴ of its partial sums).
TEST(PrimitivesReductions, SumAndMeanMatchCompensatedReferenceOnMixedMagnitudes) {
  std::mt19937 rng(22);
  for (const ReductionCase& c : reduction_cases()) {
    const Tensor x = mixed_magnitudes(c.shape, rng);
    const std::vector<bool> reduced = reduced_mask(c.shape, c.axes);
    const ReferenceSums want = reference_sums(x, reduced);
    const double count = static_cast<double>(x.numel()) / static_cast<double>(want.sum.size());
    const Tensor sum = forward(kSumOp, {x}, reduce_attrs(c.axes));
    const Tensor mean = forward(kMeanOp, {x}, reduce_attrs(c.axes));
    int bad = 0;
    for (std::int64_t o = 0; o < sum.numel() && bad < 3; ++o) {
      const auto i = static_cast<std::size_t>(o);
      const double tolerance = std::ldexp(std::abs(want.sum[i]), -23) +
                               std::ldexp(want.abs_sum[i], -40);
      const double mean_error = std::abs(mean[o] - want.sum[i] / count) * count;
      if (std::abs(sum[o] - want.sum[i]) > tolerance || mean_error > tolerance) {
        ++bad;
        ADD_FAILURE() << c.path << ", output " << o << ": sum " << sum[o] << ", mean " << mean[o]
                      << " vs " << want.sum[i] << " (Σ|x| " << want.abs_sum[i] << ")";
      }
    }
  }
}

TEST(PrimitivesReductions, SumDoesNotDependOnThreadCount) {
  std::mt19937 rng(23);
  const int threads = omp_get_max_threads();
  for (const ReductionCase& c : reduction_cases()) {
    const Tensor x = mixed_magnitudes(c.shape, rng);
    omp_set_num_threads(1);
    const Tensor one = forward(kSumOp, {x}, reduce_attrs(c.axes));
    for (const int n : {2, 3}) {
      omp_set_num_threads(n);
      const Tensor many = forward(kSumOp, {x}, reduce_attrs(c.axes));
      EXPECT_TRUE(std::equal(one.span().begin(), one.span().end(), many.span().begin()))
          << c.path << " with " << n << " threads";
    }
  }
  omp_set_num_threads(threads);
}

// The backward of sum/mean on the same paths: every element of dx is g / N at its output.
TEST(PrimitivesReductions, MeanBackwardBroadcastsOnEveryPath) {
  std::mt19937 rng(24);
  for (const ReductionCase& c : reduction_cases()) {
    const std::vector<bool> reduced = reduced_mask(c.shape, c.axes);
    const Shape out = forward(kSumOp, {Tensor(c.shape)}, reduce_attrs(c.axes)).shape();
    const Tensor g = random_normal(out, rng);
    const double count = static_cast<double>(c.shape.numel()) / static_cast<double>(out.numel());
    const auto factor = static_cast<float>(1.0 / count);
    Tensor dx(c.shape);
    sum_backward(g, dx, reduced, 1.0 / count);
    int bad = 0;
    for (std::int64_t i = 0; i < dx.numel() && bad < 3; ++i) {
      std::int64_t rest = i, o = 0, stride = 1;
      for (int d = c.shape.rank() - 1; d >= 0; --d) {
        const std::int64_t index = rest % c.shape.dim(d);
        rest /= c.shape.dim(d);
        if (!reduced[static_cast<std::size_t>(d)]) {
          o += index * stride;
          stride *= c.shape.dim(d);
        }
      }
      if (dx[i] != factor * g[o]) {
        ++bad;
        ADD_FAILURE() << c.path << ", element " << i << ": " << dx[i] << " vs " << factor * g[o];
      }
    }
  }
}

// max and its backward against a serial loop with the documented rules (NaN wins, ties and equal
// zeros keep the first), compared bit for bit: rows and columns, with NaNs, signed zeros and ties
// planted.
TEST(PrimitivesReductions, MaxMatchesSerialRuleWithNansZerosAndTies) {
  std::mt19937 rng(25);
  const auto bits = [](float v) { return std::bit_cast<std::uint32_t>(v); };
  for (const Shape& shape : {Shape{300, 257}, Shape{7, 300, 45}, Shape{2, 5, 700}}) {
    Tensor x = random_normal(shape, rng);
    const std::int64_t n = x.numel();
    // NaNs of two payloads, runs of negative values around signed zeros, and repeated maxima.
    for (std::int64_t i = 0; i < n; i += 997) x[i] = std::bit_cast<float>(0x7FC00001u);
    for (std::int64_t i = 500; i < n; i += 1499) x[i] = std::bit_cast<float>(0xFFC00002u);
    for (std::int64_t i = 2000; i < std::min<std::int64_t>(n, 2600); ++i) {
      x[i] = i % 7 == 0 ? -0.0f : i % 7 == 3 ? 0.0f : -1.0f - static_cast<float>(i % 5);
    }
    for (std::int64_t i = 4000; i < n; i += 1201) x[i] = x[i + 1] = 50.0f;
    for (int axis = 0; axis < shape.rank(); ++axis) {
      const std::int64_t size = shape.dim(axis);
      std::int64_t inner = 1;
      for (int d = axis + 1; d < shape.rank(); ++d) inner *= shape.dim(d);
      const std::int64_t outer = n / (size * inner);
      std::vector<std::int64_t> out_dims;
      for (int d = 0; d < shape.rank(); ++d) {
        if (d != axis) out_dims.push_back(shape.dim(d));
      }
      Tensor y{Shape(out_dims)}, dx(shape);
      const Tensor g = random_normal(y.shape(), rng);
      max_forward(x, y, axis);
      max_backward(x, g, dx, axis);
      int bad = 0;
      for (std::int64_t o = 0; o < outer; ++o) {
        for (std::int64_t c = 0; c < inner; ++c) {
          std::int64_t first = 0;
          const auto at = [&](std::int64_t k) { return x[(o * size + k) * inner + c]; };
          for (std::int64_t k = 1; k < size; ++k) {
            const float v = at(k), best = at(first);
            if (v > best || (std::isnan(v) && !std::isnan(best))) first = k;
          }
          const std::int64_t out = o * inner + c;
          bool ok = bits(y[out]) == bits(at(first));
          for (std::int64_t k = 0; k < size; ++k) {
            ok = ok && dx[(o * size + k) * inner + c] == (k == first ? g[out] : 0.0f);
          }
          if (!ok && ++bad <= 3) {
            ADD_FAILURE() << shape.to_string() << " axis " << axis << ", output " << out << ": "
                          << y[out] << " vs " << at(first) << " at " << first;
          }
        }
      }
    }
  }
}

// Transposes whose elements are single floats (ragged 4 × 4 blocks at the edges) or runs of
// `inner` floats, against index arithmetic.
TEST(PrimitivesForward, LargeTransposesMatchIndexArithmetic) {
  std::mt19937 rng(26);
  struct Case {
    Shape shape;
    int dim0, dim1;
  };
  for (const Case& c : {Case{{130, 70}, 0, 1}, Case{{3, 130, 70}, 2, 1},
                        Case{{5, 67, 3, 33, 2}, 1, 3}, Case{{4, 9, 64, 33}, 0, 2}}) {
    const Tensor x = random_normal(c.shape, rng);
    std::vector<std::int64_t> dims(c.shape.dims().begin(), c.shape.dims().end());
    std::swap(dims[static_cast<std::size_t>(c.dim0)], dims[static_cast<std::size_t>(c.dim1)]);
    Tensor y{Shape(dims)};
    transpose_copy(x, y, c.dim0, c.dim1);
    const int rank = c.shape.rank();
    int bad = 0;
    for (std::int64_t i = 0; i < x.numel() && bad < 3; ++i) {
      std::vector<std::int64_t> index(static_cast<std::size_t>(rank));
      std::int64_t rest = i;
      for (int d = rank - 1; d >= 0; --d) {
        index[static_cast<std::size_t>(d)] = rest % c.shape.dim(d);
        rest /= c.shape.dim(d);
      }
      std::swap(index[static_cast<std::size_t>(c.dim0)], index[static_cast<std::size_t>(c.dim1)]);
      std::int64_t target = 0;
      for (int d = 0; d < rank; ++d) target = target * y.shape().dim(d) + index[static_cast<std::size_t>(d)];
      if (y[target] != x[i]) {
        ++bad;
        ADD_FAILURE() << c.shape.to_string() << " element " << i;
      }
    }
  }
}

// Slices and concatenations along the first axis are a few long rows, which the copies split into
// pieces across threads.
TEST(PrimitivesForward, LongRowSlicesAndConcatsMatchLoops) {
  std::mt19937 rng(27);
  const std::int64_t width = 40000;
  const Tensor x = random_normal({3, width}, rng);
  const Attributes attrs{{"axis", std::int64_t{0}}, {"start", std::int64_t{1}}, {"end", std::int64_t{3}}};
  OpRun slice(kSliceOp, {x}, attrs);
  slice.forward();
  const Tensor g = random_normal({2, width}, rng);
  const Tensor dx = *slice.backward({g})[0];
  for (std::int64_t i = 0; i < 3 * width; ++i) {
    if (i >= width) {
      ASSERT_EQ(slice.output()[i - width], x[i]);
    }
    ASSERT_EQ(dx[i], i < width ? 0.0f : g[i - width]);
  }
  const Tensor a = random_normal({1, width}, rng);
  OpRun concat(kConcatOp, {a, x}, {{"axis", std::int64_t{0}}});
  concat.forward();
  const Tensor gy = random_normal({4, width}, rng);
  const auto grads = concat.backward({gy});
  for (std::int64_t i = 0; i < 4 * width; ++i) {
    ASSERT_EQ(concat.output()[i], i < width ? a[i] : x[i - width]);
    ASSERT_EQ(i < width ? (*grads[0])[i] : (*grads[1])[i - width], gy[i]);
  }
}

// where with both gradients (one fused pass) or either one alone.
TEST(PrimitivesForward, LargeWhereMatchesLoops) {
  std::mt19937 rng(28);
  const Shape shape{300, 257};
  Tensor cond(shape);
  for (std::int64_t i = 0; i < cond.numel(); ++i) {
    cond[i] = i % 11 == 0 ? NAN : static_cast<float>(rng() % 2);
  }
  const Tensor a = random_normal(shape, rng), b = random_normal(shape, rng),
               g = random_normal(shape, rng);
  Tensor y(shape), da(shape), db(shape), da_only(shape), db_only(shape);
  where_forward(cond, a, b, y);
  where_backward(cond, g, da, db);
  where_backward(cond, g, da_only, TensorView{});
  where_backward(cond, g, TensorView{}, db_only);
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    const bool take = cond[i] != 0.0f;
    ASSERT_EQ(y[i], take ? a[i] : b[i]);
    ASSERT_EQ(da[i], take ? g[i] : 0.0f);
    ASSERT_EQ(db[i], take ? 0.0f : g[i]);
    ASSERT_EQ(da_only[i], da[i]);
    ASSERT_EQ(db_only[i], db[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: each names the op and the shape
// ---------------------------------------------------------------------------------------------

TEST(PrimitivesErrors, Reshape) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  EXPECT_THAT(
      [&] {
        reshape(x, {4, 2});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("reshape"), HasSubstr("[2, 3]"), HasSubstr("[4, 2]"))));
  EXPECT_THAT(
      [&] {
        reshape(x, {-1, -1});
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("reshape"), HasSubstr("[2, 3]"), HasSubstr("at most one"))));
  EXPECT_THAT(
      [&] {
        reshape(x, {4, -1});
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("reshape"), HasSubstr("[2, 3]"), HasSubstr("inferred"))));
  EXPECT_THAT(
      [&] {
        reshape(x, {-2, -3});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("reshape"), HasSubstr("non-negative"))));
  EXPECT_THAT([&] { reshape(x, {0, -1}); }, ThrowsMessage<Error>(HasSubstr("reshape")));
}

// Requested dims whose product overflows int64 are refused, naming the op, x and the dims (they
// were multiplied unchecked: found by the graph fuzzer as reshape-overflow). The product that
// counts is that of the non-zero dims, as for Shape; an empty x may take any dims that fit.
TEST(PrimitivesErrors, ReshapeDimsWhoseProductOverflowsInt64) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t k2p62 = std::int64_t{1} << 62;
  Graph g;
  const Value empty = g.input("empty", {0});
  for (const Ints& dims : {Ints{kMax, 2}, Ints{k2p62, 4, -1}, Ints{-1, 3, kMax}, Ints{0, k2p62, k2p62},
                           Ints{k2p62, k2p62, 0}}) {
    EXPECT_THAT([&] { reshape(empty, dims); },
                ThrowsMessage<Error>(AllOf(HasSubstr("reshape: cannot reshape x [0] (0 elements) to ["),
                                           HasSubstr(std::to_string(dims[1])),
                                           HasSubstr("the product of the dimensions overflows int64"))))
        << ::testing::PrintToString(dims);
  }
  EXPECT_EQ(reshape(empty, {kMax, -1}).shape(), (Shape{kMax, 0}));
  EXPECT_EQ(reshape(empty, {k2p62, 0, 1}).shape(), (Shape{k2p62, 0, 1}));
  // concat's joined dim is a sum: 2^62 + 2^62 does not fit either.
  const Value half = g.input("half", {k2p62, 0});
  EXPECT_THAT([&] { concat({half, half}, 0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("concat: a [4611686018427387904, 0] and b [4611686018427387904, 0] along axis 0"),
                                         HasSubstr("overflows int64"))));
  EXPECT_EQ(concat({half, g.input("rest", {k2p62 - 1, 0})}, 0).shape(), (Shape{kMax, 0}));
}

TEST(PrimitivesErrors, AxesOutOfRange) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  const auto names_op_and_shape = [](const char* op) {
    return ThrowsMessage<Error>(
        AllOf(HasSubstr(op), HasSubstr("out of range"), HasSubstr("[2, 3]")));
  };
  EXPECT_THAT([&] { transpose(x, 0, 2); }, names_op_and_shape("transpose"));
  EXPECT_THAT([&] { transpose(x, -3, 0); }, names_op_and_shape("transpose"));
  EXPECT_THAT([&] { slice(x, 2, 0, 1); }, names_op_and_shape("slice"));
  EXPECT_THAT([&] { concat({x, x}, -3); }, names_op_and_shape("concat"));
  EXPECT_THAT([&] { sum(x, {2}); }, names_op_and_shape("sum"));
  EXPECT_THAT([&] { mean(x, {0, -3}); }, names_op_and_shape("mean"));
  EXPECT_THAT([&] { max(x, 5); }, names_op_and_shape("max"));
  const Value scalar = g.input("s", {});
  EXPECT_THAT([&] { max(scalar, 0); },
              ThrowsMessage<Error>(AllOf(HasSubstr("max"), HasSubstr("[]"))));
  // An axis beyond int goes through the attribute path, not the builder.
  const Value inputs[] = {x};
  EXPECT_THAT([&] { g.apply1(kSumOp, inputs, reduce_attrs({std::int64_t{1} << 40})); },
              names_op_and_shape("sum"));
}

TEST(PrimitivesErrors, SliceRange) {
  Graph g;
  const Value x = g.input("x", {2, 5});
  for (const auto& [start, end] :
       std::vector<std::pair<std::int64_t, std::int64_t>>{{3, 2}, {0, 6}, {-6, 2}, {4, -2}}) {
    EXPECT_THAT(
        [&] { slice(x, 1, start, end); },
        ThrowsMessage<Error>(AllOf(HasSubstr("slice"), HasSubstr("[2, 5]"), HasSubstr("size 5"))))
        << start << ", " << end;
  }
}

TEST(PrimitivesErrors, ConcatShapes) {
  Graph g;
  const Value a = g.input("a", {2, 3});
  EXPECT_THAT(
      [&] {
        concat({a, g.input("b", {2, 3, 1})}, 0);
      },
      ThrowsMessage<Error>(
          AllOf(HasSubstr("concat"), HasSubstr("[2, 3]"), HasSubstr("[2, 3, 1]"))));
  EXPECT_THAT(
      [&] {
        concat({a, g.input("c", {3, 3})}, 1);
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("concat"), HasSubstr("[2, 3]"), HasSubstr("[3, 3]"))));
  EXPECT_THAT([&] { concat(std::span<const Value>{}, 0); },
              ThrowsMessage<Error>(HasSubstr("concat")));
  EXPECT_THAT(
      [&] {
        concat({g.input("s", {}), g.input("t", {})}, 0);
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("concat"), HasSubstr("[]"))));
}

TEST(PrimitivesErrors, ReductionAttributes) {
  Graph g;
  const Value x = g.input("x", {2, 3});
  EXPECT_THAT(
      [&] {
        sum(x, {1, -1});
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("sum"), HasSubstr("twice"), HasSubstr("[2, 3]"))));
  const Value inputs[] = {x};
  EXPECT_THAT([&] { g.apply1(kMeanOp, inputs, reduce_attrs({0}, 2)); },
              ThrowsMessage<Error>(AllOf(HasSubstr("mean"), HasSubstr("keepdim"))));
  const Value empty_axis = g.input("e", {2, 0});
  EXPECT_THAT(
      [&] { max(empty_axis, 1); },
      ThrowsMessage<Error>(AllOf(HasSubstr("max"), HasSubstr("[2, 0]"), HasSubstr("empty"))));
}

TEST(PrimitivesErrors, WhereShapes) {
  Graph g;
  const Value c = g.input("c", {2, 3});
  EXPECT_THAT(
      [&] {
        where(c, g.input("a", {2, 3}), g.input("b", {3}));
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("where"), HasSubstr("[2, 3]"), HasSubstr("[3]"))));
  EXPECT_THAT(
      [&] {
        where(g.input("c1", {1, 3}), g.input("a1", {2, 3}), g.input("b1", {2, 3}));
      },
      ThrowsMessage<Error>(AllOf(HasSubstr("where"), HasSubstr("[1, 3]"))));
}

// ---------------------------------------------------------------------------------------------
// Through the graph: builders, autodiff and the executor (which passes absent forward values as
// the backward_reads masks say)
// ---------------------------------------------------------------------------------------------

TEST(PrimitivesGraph, CompositeGradientMatchesFiniteDifferences) {
  std::mt19937 rng(10);
  Tensor x_value = positive({2, 6}, rng);
  const Tensor cond_value = make({3, 4}, {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1});

  Graph g(Scaling::kUnit);  // primitives never scale, even in a unit-scaled graph
  const Value x = g.parameter("x", x_value.shape());
  const Value cond = g.input("cond", cond_value.shape());
  const Value r = reshape(x, {3, -1});                                              // [3, 4]
  const Value t = transpose(r, 0, 1);                                               // [4, 3]
  const Value s = slice(t, 0, 1, 4);                                                // [3, 3]
  const Value c = concat({s, log(slice(r, 1, 0, 1)), sqrt(slice(r, 1, 3, 4))}, 1);  // [3, 5]
  const Value m = max(c, 1, {.keepdims = KeepDims::kYes});                          // [3, 1]
  const Value w = where(cond, r, exp(r));                                           // [3, 4]
  const Value loss = sum(concat({mean(w, {1}, {.keepdims = KeepDims::kYes}), m}, 0));
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_THAT(g.to_string(), HasSubstr("{axes=[1], keepdim=1}"));
  EXPECT_THAT(g.to_string(), ::testing::Not(HasSubstr("alpha")));

  const Value wrt[] = {x};
  const Value grad_x = autodiff(g, loss, wrt)[0];
  const Value outputs[] = {loss, grad_x};
  Executor exec(g, outputs);
  exec.bind(x, x_value);
  exec.bind(cond, cond_value);
  exec.run();
  const std::vector<float> analytic(exec.get(grad_x).span().begin(), exec.get(grad_x).span().end());

  const auto loss_at = [&](float delta, std::int64_t i) {
    x_value[i] += delta;
    exec.run();
    const double value = exec.get(loss).data()[0];
    x_value[i] -= delta;
    return value;
  };
  for (std::int64_t i = 0; i < x_value.numel(); ++i) {
    const double numeric = (loss_at(1e-2f, i) - loss_at(-1e-2f, i)) / 2e-2;
    EXPECT_NEAR(analytic[static_cast<std::size_t>(i)], numeric, 2e-3 + 2e-2 * std::abs(numeric))
        << i;
  }
}

}  // namespace
}  // namespace unitscale

#include "unitscale/ops/primitives.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/builders/primitives.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::OpRun;
using testing::random_normal;
using ::testing::ThrowsMessage;

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

TEST(PrimitivesForward, ExpLogSqrtAndTheirBackward) {
  const Tensor x = make({3}, {0, 1, 4});
  EXPECT_THAT(values_of(forward(kExpOp, {x}, {})),
              ElementsAreArray({1.0f, std::exp(1.0f), std::exp(4.0f)}));
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
    EXPECT_THAT(values_of(*run.backward({g})[0]), ElementsAreArray(expected)) << op->name;
  }
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
      ASSERT_EQ(e[r * cols + c], std::exp(x[r * cols + c]));
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

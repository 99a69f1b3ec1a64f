// Typed attributes: enum values keep their C++ type, and Graph::apply checks every attribute
// against the op's declaration (names, kinds, ranges, enum names given as text).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// Every value of E: its EnumValue names it as `name_of` does, and parsing the name gives it back.
template <class E>
void expect_round_trip(std::initializer_list<E> values, std::string_view (*name_of)(E)) {
  for (const E e : values) {
    const EnumValue value(e);
    SCOPED_TRACE(std::string(name_of(e)));
    EXPECT_EQ(value.type, &EnumAttribute<E>::type());
    EXPECT_EQ(value.name(), name_of(e));
    EXPECT_EQ(value.type->from_name(name_of(e)), static_cast<int>(e));
  }
}

TEST(EnumAttributes, EveryEnumeratorRoundTripsThroughItsName) {
  expect_round_trip({Constraint::kNone, Constraint::kToOutputScale, Constraint::kToGradInputScale,
                     Constraint::kToLeftGradScale, Constraint::kToRightGradScale, Constraint::kGMean,
                     Constraint::kHMean, Constraint::kAMean},
                    constraint_name);
  expect_round_trip({GeluApproximation::kNone, GeluApproximation::kTanh}, gelu_approximation_name);
  expect_round_trip({AttentionMask::kNone, AttentionMask::kCausal}, attention_mask_name);
  expect_round_trip({DropoutMode::kTraining, DropoutMode::kEval}, dropout_mode_name);
  expect_round_trip({Reduction::kMean, Reduction::kSum}, reduction_name);
  expect_round_trip({LossGradient::kTrue, LossGradient::kUnit}, loss_gradient_name);
  expect_round_trip({Rounding::kNearestEven, Rounding::kNearestAway, Rounding::kTowardZero,
                     Rounding::kUp, Rounding::kDown, Rounding::kStochastic},
                    rounding_name);
  expect_round_trip({Overflow::kSaturate, Overflow::kNonFinite}, overflow_name);
  for (const DType dtype : all_dtypes()) expect_round_trip({dtype}, dtype_name);
}

TEST(EnumAttributes, TypedReadsCheckTheEnumType) {
  const Attributes attrs{{"approximate", GeluApproximation::kTanh}};
  EXPECT_EQ(attrs.get_enum<GeluApproximation>("gelu", "approximate"), GeluApproximation::kTanh);
  EXPECT_EQ(attrs.get_enum<Constraint>("gelu", "constraint", Constraint::kGMean), Constraint::kGMean);
  EXPECT_EQ(attrs.get_enum_name("gelu", "approximate"), "tanh");
  EXPECT_THAT([&] { attrs.get_enum<Constraint>("gelu", "approximate"); },
              ThrowsMessage<Error>(HasSubstr(
                  "gelu: attribute 'approximate' is a gelu approximation, not a constraint")));
  EXPECT_THAT([&] { attrs.get_double("gelu", "approximate"); },
              ThrowsMessage<Error>(HasSubstr("gelu: attribute 'approximate' must be a number")));
  EXPECT_EQ(attrs.to_string(), "{approximate=tanh}");
}

// The node gelu records in a fresh unit-scaled graph with `attrs`, or the error it throws.
Attributes recorded_gelu(Attributes attrs) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value inputs[] = {x};
  const Value y = g.apply1(kGeluOp, inputs, std::move(attrs));
  return g.nodes()[static_cast<std::size_t>(g.info(y).node)].attrs;
}

TEST(AttributeChecks, EnumNamesGivenAsTextAreStoredAsEnums) {
  const Attributes attrs = recorded_gelu({{"approximate", std::string("tanh")},
                                          {"constraint", std::string("none")}});
  for (const auto& [name, value] : attrs.entries()) {
    if (name == "approximate" || name == "constraint") {
      EXPECT_TRUE(std::holds_alternative<EnumValue>(value)) << name << " kept as text";
    }
  }
  EXPECT_EQ(attrs.get_enum<GeluApproximation>("gelu", "approximate"), GeluApproximation::kTanh);
  EXPECT_EQ(attrs.get_enum<Constraint>("gelu", "constraint"), Constraint::kNone);
}

TEST(AttributeChecks, AnIntegerForARealIsConverted) {
  const Attributes attrs = recorded_gelu({{"mult", std::int64_t{2}}});
  EXPECT_EQ(attrs.get_double("gelu", "mult"), 2.0);
}

TEST(AttributeChecks, MistakesAreErrorsAtRecordTime) {
  EXPECT_THAT([] { recorded_gelu({{"mlt", 2.0}}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("gelu: unknown attribute 'mlt'"),
                                         HasSubstr("valid: mult, approximate, constraint, alpha, "
                                                   "beta_x"))));
  EXPECT_THAT([] { recorded_gelu({{"mult", std::string("2")}}); },
              ThrowsMessage<Error>(HasSubstr("gelu: attribute 'mult' must be a number")));
  EXPECT_THAT([] { recorded_gelu({{"approximate", std::string("sigmoid")}}); },
              ThrowsMessage<Error>(AllOf(HasSubstr("gelu: attribute 'approximate'"),
                                         HasSubstr("'sigmoid'"), HasSubstr("tanh"))));
  EXPECT_THAT([] { recorded_gelu({{"approximate", Constraint::kNone}}); },
              ThrowsMessage<Error>(HasSubstr("gelu: attribute 'approximate' must be a gelu "
                                             "approximation, got a constraint (none)")));
  EXPECT_THAT([] { recorded_gelu({{"approximate", std::int64_t{1}}}); },
              ThrowsMessage<Error>(HasSubstr("must be a gelu approximation")));
  EXPECT_THAT([] { recorded_gelu({{"alpha", std::string("1")}}); },
              ThrowsMessage<Error>(HasSubstr("gelu: attribute 'alpha' must be a number")));

  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value one[] = {x};
  EXPECT_THAT([&] { g.apply1(kReluOp, one, {{"mult", 2.0}}); },
              ThrowsMessage<Error>(HasSubstr("relu: unknown attribute 'mult'; the op takes none")));
  EXPECT_THAT([&] { g.apply1(kCastOp, one, {}); },
              ThrowsMessage<Error>(HasSubstr("cast: missing attribute 'dtype' (a dtype)")));
  EXPECT_THAT([&] { g.apply1(kReshapeOp, one, {{"shape", std::int64_t{32}}}); },
              ThrowsMessage<Error>(HasSubstr("reshape: attribute 'shape' must be a list of "
                                             "integers")));
  // Checked when recorded even though only the kernel reads it.
  EXPECT_THAT([&] { g.apply1(kDropoutOp, one, {{"p", 0.1}, {"seed", 1.5}}); },
              ThrowsMessage<Error>(HasSubstr("dropout: attribute 'seed' must be an integer")));
}

// Kernels compute in float: a real attribute beyond float range would become ±inf inside them
// (softmax with mult 1e300 turned finite rows into NaN, found by the graph fuzzer).
TEST(AttributeChecks, RealsMustBeFiniteAndWithinFloatRange) {
  Graph g;
  const Value x = g.input("x", {4, 8});
  const Value one[] = {x};
  for (const double bad : {1e300, -1e39, std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THAT([&] { g.apply1(kSoftmaxOp, one, {{"mult", bad}}); },
                ThrowsMessage<Error>(AllOf(HasSubstr("softmax: attribute 'mult' is"),
                                           HasSubstr("expected a finite number of float range"))))
        << bad;
    EXPECT_THAT([&] { g.apply1(kScaleOp, one, {{"alpha", bad}}); },
                ThrowsMessage<Error>(HasSubstr("scale: attribute 'alpha' is")))
        << bad;
  }
  EXPECT_NO_THROW(g.apply1(kSoftmaxOp, one, {{"mult", static_cast<double>(FLT_MAX)}}));
  // Nonzero reals that float rounds to 0 (softmax with mult 4.9e-324 gave NaN rows, found by the
  // graph fuzzer); float's smallest subnormal and zero itself are fine where the op takes them.
  for (const double tiny : {std::numeric_limits<double>::denorm_min(), 1e-300, -1e-46}) {
    EXPECT_THAT(
        [&] {
          g.apply1(kSoftmaxOp, one, {{"mult", tiny}});
        },
        ThrowsMessage<Error>(AllOf(HasSubstr("softmax: attribute 'mult' is"),
                                   HasSubstr("which rounds to 0 in float"))))
        << tiny;
  }
  EXPECT_NO_THROW(g.apply1(kSoftmaxOp, one, {{"mult", 1e-45}}));
  EXPECT_NO_THROW(g.apply1(kScaleOp, one, {{"alpha", 0.0}}));
}

// The nonlinearity rules' interpolation at its end points is the end point itself, even where the
// other one is infinite (a softmax multiplier so small that n/mult overflows: 0·log ∞ was NaN).
TEST(AttributeChecks, LogInterpolateEndPointsAreExact) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(log_interpolate(0.0, 3.0, inf), 3.0);
  EXPECT_EQ(log_interpolate(1.0, inf, 5.0), 5.0);
  EXPECT_DOUBLE_EQ(log_interpolate(0.5, 4.0, 16.0), 8.0);
}

// Without the builder's attributes, an op recorded by name gets its defaults (matmul and conv1d
// used to require an explicit constraint).
TEST(AttributeChecks, OpsRecordedByNameWithoutAttributesGetTheDefaultConstraint) {
  Graph g;
  const Value a = g.input("a", {3, 16});
  const Value b = g.input("b", {16, 4});
  const Value y = g.apply1(op_by_name("matmul"), std::vector<Value>{a, b}, {});
  const Attributes& attrs = g.nodes()[static_cast<std::size_t>(g.info(y).node)].attrs;
  // to_output_scale: every scale equals α = 1/√K.
  EXPECT_DOUBLE_EQ(attrs.get_double("matmul", "alpha"), 0.25);
  EXPECT_DOUBLE_EQ(attrs.get_double("matmul", "beta_left"), 0.25);
  EXPECT_DOUBLE_EQ(attrs.get_double("matmul", "beta_right"), 0.25);

  const Value x = g.input("x", {2, 3, 10});
  const Value w = g.parameter("w", {5, 3, 4});
  EXPECT_NO_THROW(g.apply1(op_by_name("conv1d"), std::vector<Value>{x, w, Value{}}, {}));
}

TEST(AttributeDeclarations, EveryOpDeclaresEachNameOnce) {
  for (const OpDef* op : forward_ops()) {
    SCOPED_TRACE(std::string(op->name));
    std::set<std::string_view> names(op->scales.begin(), op->scales.end());
    EXPECT_EQ(names.size(), op->scales.size()) << "a scale declared twice";
    for (const AttributeSpec& spec : op->attributes) {
      EXPECT_TRUE(names.insert(spec.name).second) << spec.name << " declared twice";
      EXPECT_EQ(spec.kind == AttributeSpec::Kind::kEnum, spec.enum_type != nullptr) << spec.name;
    }
    // The derived backward op checks the same attributes.
    if (op->backward_kernel != nullptr) {
      EXPECT_EQ(backward_of(*op).attributes.size(), op->attributes.size());
    }
  }
}

}  // namespace
}  // namespace unitscale

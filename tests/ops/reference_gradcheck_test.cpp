// Every op of forward_ops() against its independent double-precision reference
// (tests/support/reference_ops.hpp): the FP32 forward kernel against the reference forward, and
// the FP32 backward kernel against central finite differences of the reference, unscaled and
// unit-scaled, at two or three shapes and with the non-default attributes (see
// tests/support/reference_gradcheck.hpp for the check and its tolerances).
//
// Also here: the check's power (a backward kernel off by a term of relative size 1e-3 fails it) and
// the coverage test (an op added to forward_ops() without a reference and cases fails).

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../support/op_check.hpp"
#include "../support/reference_gradcheck.hpp"
#include "../support/reference_ops.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/registry.hpp"

namespace unitscale {
namespace {

using testing::check_against_reference;
using testing::gradcheck_reference;
using testing::ReferenceCheckOptions;
using testing::ReferenceCheckResult;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

using Inputs = std::vector<std::optional<Tensor>>;

Tensor normal(const Shape& shape, std::mt19937& rng, float std = 1.0f, float mean = 0.0f) {
  Tensor t = testing::random_normal(shape, rng, std);
  for (float& v : t.span()) v += mean;
  return t;
}

// |x| ≥ 0.1, for relu: finite differences must not straddle the kink at 0.
Tensor away_from_zero(const Shape& shape, std::mt19937& rng) {
  Tensor t = normal(shape, rng);
  for (float& v : t.span()) v = std::copysign(0.1f + std::abs(v), v);
  return t;
}

// x ≥ 0.5, for log and sqrt.
Tensor positive(const Shape& shape, std::mt19937& rng) {
  Tensor t = normal(shape, rng);
  for (float& v : t.span()) v = 0.5f + std::abs(v);
  return t;
}

// Distinct values 0.05 apart (shuffled, with a little noise), for max: no two elements close
// enough for a finite-difference step to change the argmax.
Tensor distinct(const Shape& shape, std::mt19937& rng) {
  Tensor t(shape);
  std::vector<float> values(static_cast<std::size_t>(t.numel()));
  std::uniform_real_distribution<float> noise(-0.01f, 0.01f);
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.05f * (static_cast<float>(i) - 0.5f * static_cast<float>(values.size())) + noise(rng);
  }
  std::shuffle(values.begin(), values.end(), rng);
  std::copy(values.begin(), values.end(), t.span().begin());
  return t;
}

// The integer-valued tensors: embedding's ids and cross_entropy's labels (i32).
using Indices = std::vector<std::int32_t>;
Tensor index_tensor(const Shape& shape, const Indices& values) {
  return Tensor(shape, std::span<const std::int32_t>(values));
}

Indices random_indices(std::int64_t count, std::int32_t bound, std::mt19937& rng) {
  std::uniform_int_distribution<std::int32_t> pick(0, bound - 1);
  Indices out(static_cast<std::size_t>(count));
  for (auto& v : out) v = pick(rng);
  return out;
}

using Ints = std::vector<std::int64_t>;
std::int64_t I(std::int64_t v) { return v; }
std::string S(std::string_view v) { return std::string(v); }

// ---------------------------------------------------------------------------------------------
// The cases of every op
// ---------------------------------------------------------------------------------------------

struct Case {
  std::string label;
  Inputs inputs;
  Attributes attrs;
  Scaling scaling = Scaling::kUnscaled;
  std::uint64_t step = 0;
  std::int64_t max_fd_elements = 0;  // 0: every element (see ReferenceCheckOptions)
};

constexpr Scaling kUnit = Scaling::kUnit;
constexpr Scaling kPlain = Scaling::kUnscaled;

// One case per op at a shape of about 2^15 elements or more, where the kernels take their
// OpenMP-parallel paths (ops/parallel.hpp) and the reductions their blocked ones; finite
// differences at 32 random elements per input keep it cheap.
std::vector<Case> large_cases_for(std::string_view op, std::mt19937& rng) {
  auto n = [&](const Shape& s) { return std::optional<Tensor>(normal(s, rng)); };
  const Shape flat{200, 200};
  std::vector<Case> c;
  if (op == "matmul") {
    c.push_back({"large", {n({8, 64, 64}), n({64, 64})}, {{"constraint", S("to_output_scale")}}, kUnit});
  } else if (op == "linear" || op == "linear_readout") {
    c.push_back({"large", {n({128, 64}), n({256, 64}), n({256})}, {}, kUnit});
  } else if (op == "conv1d") {
    c.push_back({"large", {n({4, 16, 256}), n({32, 16, 3}), n({32})},
                 {{"constraint", S("to_output_scale")}, {"padding", I(1)}}, kUnit});
  } else if (op == "add") {
    c.push_back({"large, row vector", {n({64, 600}), n({600})}, {}, kUnit});
    c.push_back({"large, column", {n({64, 600}), n({64, 1})}, {}, kUnit});
  } else if (op == "mul") {
    c.push_back({"large, row vector", {n({64, 600}), n({600})}, {}, kPlain});
  } else if (op == "scale") {
    c.push_back({"large", {n(flat)}, {{"alpha", 0.75}, {"beta_x", 1.5}}, kPlain});
  } else if (op == "relu") {
    c.push_back({"large", {away_from_zero(flat, rng)}, {}, kPlain});
  } else if (op == "gelu") {
    c.push_back({"large, exact", {n({48, 800})}, {{"mult", 1.5}}, kUnit});
    c.push_back({"large, tanh", {n({48, 800})}, {{"approximate", S("tanh")}}, kUnit});
  } else if (op == "silu") {
    c.push_back({"large", {n({48, 800})}, {{"mult", 2.0}}, kUnit});
  } else if (op == "silu_glu") {
    c.push_back({"large", {n({48, 800}), n({48, 800})}, {}, kUnit});
  } else if (op == "softmax") {
    c.push_back({"large", {n({40, 1000})}, {{"mult", 0.5}}, kUnit});
  } else if (op == "dropout") {
    c.push_back({"large, p = 0.3, step 1", {n(flat)}, {{"p", 0.3}, {"seed", I(9)}}, kUnit, 1});
  } else if (op == "layer_norm") {
    c.push_back({"large", {n({64, 600}), n({600}), n({600})}, {}, kUnit});
  } else if (op == "rms_norm") {
    c.push_back({"large", {n({64, 600}), n({600})}, {}, kUnit});
  } else if (op == "residual_split") {
    c.push_back({"large", {n(flat)}, {{"tau", 0.3}}, kUnit});
  } else if (op == "residual_add") {
    c.push_back({"large", {n(flat), n(flat)}, {{"tau", 0.3}}, kUnit});
  } else if (op == "embedding") {
    c.push_back({"large", {index_tensor({4096}, random_indices(4096, 50, rng)), n({50, 16})}, {}, kUnit});
  } else if (op == "scaled_dot_product_attention") {
    c.push_back({"large, causal", {n({8, 4, 32, 16}), n({8, 4, 32, 16}), n({8, 4, 32, 16})},
                 {{"mask", S("causal")}}, kUnit});
  } else if (op == "cross_entropy") {
    Indices labels = random_indices(64, 600, rng);
    for (std::size_t b = 0; b < labels.size(); b += 5) labels[b] = -100;
    c.push_back({"large", {n({64, 600}), index_tensor({64}, labels)}, {}, kUnit});
  } else if (op == "mse_loss") {
    c.push_back({"large", {n(flat), n(flat)}, {}, kUnit});
  } else if (op == "reshape") {
    c.push_back({"large", {n(flat)}, {{"shape", Ints{-1}}}, kPlain});
  } else if (op == "transpose") {
    c.push_back({"large", {n({64, 600})}, {{"dim0", I(0)}, {"dim1", I(1)}}, kPlain});
  } else if (op == "slice") {
    c.push_back({"large", {n({64, 600})}, {{"axis", I(1)}, {"start", I(100)}, {"end", I(500)}}, kPlain});
  } else if (op == "concat") {
    c.push_back({"large", {n({64, 300}), n({64, 300})}, {{"axis", I(1)}}, kPlain});
  } else if (op == "sum") {
    c.push_back({"large, columns", {n({64, 640})}, {{"axes", Ints{0}}}, kPlain});
  } else if (op == "mean") {
    c.push_back({"large, all", {n({64, 640})}, {}, kPlain});
  } else if (op == "max") {
    c.push_back({"large, columns", {distinct({64, 640}, rng)}, {{"axis", I(0)}}, kPlain});
  } else if (op == "exp") {
    c.push_back({"large", {n(flat)}, {}, kPlain});
  } else if (op == "log" || op == "sqrt") {
    c.push_back({"large", {positive(flat, rng)}, {}, kPlain});
  } else if (op == "where") {
    Tensor cond = normal(flat, rng);
    for (float& v : cond.span()) v = v > 0 ? v : 0.0f;
    c.push_back({"large", {cond, n(flat), n(flat)}, {}, kPlain});
  } else if (op == "cast") {
    c.push_back({"large", {n(flat)}, {{"dtype", std::string("f32")}, {"scale", 0.5}}, kPlain});
  } else if (op == "round_to_format") {
    c.push_back({"large", {n(flat)}, {{"format", std::string("f32")}}, kPlain});
  } else if (op == "dynamic_rescale") {
    c.push_back({"large", {n(flat)}, {}, kPlain});
  }
  for (Case& large : c) large.max_fd_elements = 32;
  return c;
}

std::vector<Case> cases_for(std::string_view op) {
  std::mt19937 rng(static_cast<unsigned>(std::hash<std::string_view>{}(op) & 0xffffu));
  auto n = [&](const Shape& s) { return std::optional<Tensor>(normal(s, rng)); };
  std::vector<Case> c;

  if (op == "matmul") {
    c.push_back({"2-D", {n({5, 7}), n({7, 3})}, {{"constraint", S("to_output_scale")}}, kPlain});
    c.push_back({"batched left, 2-D right, unit", {n({2, 3, 4, 6}), n({6, 5})},
                 {{"constraint", S("to_output_scale")}}, kUnit});
    c.push_back({"both broadcast, unit, constraint none", {n({3, 1, 4, 6}), n({2, 6, 5})},
                 {{"constraint", S("none")}}, kUnit});
    c.push_back({"2-D left, batched right, unit, gmean", {n({4, 6}), n({3, 6, 2})},
                 {{"constraint", S("gmean")}}, kUnit});
  } else if (op == "linear" || op == "linear_readout") {
    c.push_back({"with bias", {n({6, 8}), n({5, 8}), n({5})}, {}, kPlain});
    c.push_back({"3-D x, no bias, unit", {n({2, 3, 8}), n({4, 8}), std::nullopt}, {}, kUnit});
    c.push_back({"with bias, unit, constraint none", {n({4, 8}), n({5, 8}), n({5})},
                 {{"constraint", S("none")}}, kUnit});
  } else if (op == "conv1d") {
    c.push_back({"plain, with bias", {n({2, 4, 10}), n({6, 4, 3}), n({6})},
                 {{"constraint", S("to_output_scale")}}, kPlain});
    c.push_back({"groups 2, stride 2, padding 2, dilation 2, unit, none",
                 {n({3, 4, 11}), n({6, 2, 3}), n({6})},
                 {{"constraint", S("none")}, {"groups", I(2)}, {"stride", I(2)}, {"padding", I(2)},
                  {"dilation", I(2)}},
                 kUnit});
    c.push_back({"no batch dim, k = 1, no bias, unit", {n({4, 9}), n({3, 4, 1}), std::nullopt},
                 {{"constraint", S("to_output_scale")}}, kUnit});
    c.push_back({"2 batch dims, padding 1, stride 3", {n({2, 2, 3, 8}), n({4, 3, 2}), n({4})},
                 {{"constraint", S("to_output_scale")}, {"padding", I(1)}, {"stride", I(3)}}, kUnit});
  } else if (op == "add") {
    c.push_back({"same shape", {n({4, 6}), n({4, 6})}, {}, kPlain});
    c.push_back({"row vector, unit", {n({3, 4, 5}), n({5})}, {}, kUnit});
    c.push_back({"outer broadcast, unit, none", {n({3, 1, 5}), n({4, 1})}, {{"constraint", S("none")}},
                 kUnit});
    c.push_back({"scalar operand, unit", {n({}), n({3, 4})}, {}, kUnit});
    c.push_back({"first operand broadcast", {n({5}), n({3, 4, 5})}, {}, kPlain});
  } else if (op == "mul") {
    c.push_back({"same shape", {n({4, 6}), n({4, 6})}, {}, kPlain});
    c.push_back({"column broadcast", {n({3, 4, 5}), n({4, 1})}, {}, kPlain});
    c.push_back({"scalar", {n({2, 3}), n({})}, {}, kPlain});
    c.push_back({"both broadcast, first a column", {n({4, 1}), n({3, 1, 5})}, {}, kPlain});
  } else if (op == "scale") {
    c.push_back({"alpha 0.5, beta 3", {n({4, 5})}, {{"alpha", 0.5}, {"beta_x", 3.0}}, kPlain});
    c.push_back({"alpha -1.7, beta 0.25", {n({2, 3, 4})}, {{"alpha", -1.7}, {"beta_x", 0.25}}, kPlain});
  } else if (op == "relu") {
    c.push_back({"2-D", {away_from_zero({5, 8}, rng)}, {}, kPlain});
    c.push_back({"3-D", {away_from_zero({3, 4, 7}, rng)}, {}, kPlain});
  } else if (op == "gelu") {
    c.push_back({"exact, m = 1", {n({6, 9})}, {}, kPlain});
    c.push_back({"tanh, m = 1", {n({4, 10})}, {{"approximate", S("tanh")}}, kPlain});
    c.push_back({"exact, m = 2.5, unit", {n({3, 4, 5})}, {{"mult", 2.5}}, kUnit});
    c.push_back({"tanh, m = 0.4, unit, none", {n({5, 7})},
                 {{"mult", 0.4}, {"approximate", S("tanh")}, {"constraint", S("none")}}, kUnit});
    c.push_back({"exact, wide inputs", {std::optional<Tensor>(normal({64}, rng, 4.0f))}, {}, kPlain});
  } else if (op == "silu") {
    c.push_back({"m = 1", {n({6, 9})}, {}, kPlain});
    c.push_back({"m = 3, unit", {n({3, 4, 5})}, {{"mult", 3.0}}, kUnit});
    c.push_back({"m = 0.5, unit, none", {n({5, 7})}, {{"mult", 0.5}, {"constraint", S("none")}}, kUnit});
  } else if (op == "silu_glu") {
    c.push_back({"m = 1", {n({6, 9}), n({6, 9})}, {}, kPlain});
    c.push_back({"m = 2, unit", {n({2, 3, 8}), n({2, 3, 8})}, {{"mult", 2.0}}, kUnit});
  } else if (op == "softmax") {
    // softmax has no axis attribute: it is always over the last dimension (ops/softmax.hpp).
    c.push_back({"m = 1", {n({5, 9})}, {}, kPlain});
    c.push_back({"3-D, m = 0.25, unit", {n({2, 3, 16})}, {{"mult", 0.25}}, kUnit});
    c.push_back({"m = 2, unit, none", {n({4, 7})}, {{"mult", 2.0}, {"constraint", S("none")}}, kUnit});
    c.push_back({"1-D, large logits", {std::optional<Tensor>(normal({12}, rng, 3.0f))}, {}, kPlain});
  } else if (op == "dropout") {
    // The mask is dropout's documented mask (dropout_keeps at the step's seed), taken as given by
    // the reference.
    c.push_back({"p = 0, training", {n({4, 9})}, {{"p", 0.0}, {"seed", I(3)}}, kPlain});
    c.push_back({"eval, p = 0.3, unit", {n({4, 9})}, {{"p", 0.3}, {"mode", S("eval")}}, kUnit});
    c.push_back({"training, p = 0.25, unit", {n({6, 10})}, {{"p", 0.25}, {"seed", I(42)}}, kUnit});
    c.push_back({"training, p = 0.4, step 3", {n({3, 5, 7})}, {{"p", 0.4}, {"seed", I(7)}}, kPlain, 3});
  } else if (op == "layer_norm") {
    // Inputs with a common offset (mean 3) check the centring.
    auto off = [&](const Shape& s) { return std::optional<Tensor>(normal(s, rng, 1.0f, 3.0f)); };
    c.push_back({"no affine", {off({6, 16}), std::nullopt, std::nullopt}, {}, kPlain});
    c.push_back({"weight only, unit", {off({3, 4, 8}), n({8}), std::nullopt}, {}, kUnit});
    c.push_back({"weight and bias, eps 1e-3, unit", {n({5, 12}), n({12}), n({12})}, {{"eps", 1e-3}},
                 kUnit});
    c.push_back({"weight and bias, explicit alpha and beta_x", {off({4, 10}), n({10}), n({10})},
                 {{"alpha", 1.5}, {"beta_x", 0.5}, {"beta_weight", 0.7}, {"beta_bias", 2.0}}, kPlain});
    c.push_back({"bias only", {n({3, 6}), std::nullopt, n({6})}, {}, kPlain});
  } else if (op == "rms_norm") {
    c.push_back({"no weight", {n({6, 16}), std::nullopt}, {}, kPlain});
    c.push_back({"weight, unit", {n({3, 4, 8}), n({8})}, {}, kUnit});
    c.push_back({"weight, eps 0.1, explicit alpha and beta_x", {n({4, 10}), n({10})},
                 {{"eps", 0.1}, {"alpha", 0.8}, {"beta_x", 1.25}, {"beta_weight", 0.5}}, kPlain});
  } else if (op == "residual_split") {
    c.push_back({"tau 0.5, unit", {n({4, 6})}, {{"tau", 0.5}}, kUnit});
    c.push_back({"tau 2, plain fork", {n({2, 3, 5})}, {{"tau", 2.0}}, kPlain});
  } else if (op == "residual_add") {
    c.push_back({"tau 0.5, unit", {n({4, 6}), n({4, 6})}, {{"tau", 0.5}}, kUnit});
    // The smallest τ (0 would make α_residual 0, not a unit scale): weights FLT_MIN and 1.
    c.push_back({"tau 2^-126, unit", {n({3, 5}), n({3, 5})}, {{"tau", 0x1p-126}}, kUnit});
    c.push_back({"tau 1, plain", {n({2, 3, 4}), n({2, 3, 4})}, {{"tau", 1.0}}, kPlain});
  } else if (op == "embedding") {
    c.push_back({"ids [2, 5], V = 7", {index_tensor({2, 5}, random_indices(10, 7, rng)), n({7, 4})}, {},
                 kPlain});
    c.push_back({"repeated ids, unit", {index_tensor({6}, {1, 3, 1, 0, 3, 3}), n({4, 3})}, {}, kUnit});
    c.push_back({"scalar id", {index_tensor({}, {2}), n({5, 6})}, {}, kUnit});
  } else if (op == "scaled_dot_product_attention") {
    c.push_back({"no mask", {n({2, 5, 8}), n({2, 5, 8}), n({2, 5, 6})}, {}, kPlain});
    c.push_back({"causal, heads, unit", {n({2, 2, 6, 4}), n({2, 2, 6, 4}), n({2, 2, 6, 3})},
                 {{"mask", S("causal")}}, kUnit});
    c.push_back({"causal, s_q < s_k, m = 2, unit", {n({1, 5, 4}), n({1, 7, 4}), n({1, 7, 5})},
                 {{"mask", S("causal")}, {"mult", 2.0}}, kUnit});
    c.push_back({"causal, s_q > s_k, m = 0", {n({6, 4}), n({3, 4}), n({3, 2})},
                 {{"mask", S("causal")}, {"mult", 0.0}}, kPlain});
    c.push_back({"dropout 0.2, unit, step 2", {n({2, 4, 4}), n({2, 5, 4}), n({2, 5, 3})},
                 {{"dropout", 0.2}, {"seed", I(5)}, {"mult", 3.0}}, kUnit, 2});
    c.push_back({"causal, dropout 0.5, heads", {n({2, 2, 5, 4}), n({2, 2, 5, 4}), n({2, 2, 5, 2})},
                 {{"mask", S("causal")}, {"dropout", 0.5}, {"seed", I(11)}}, kPlain});
  } else if (op == "cross_entropy") {
    c.push_back({"mean", {n({6, 5}), index_tensor({6}, random_indices(6, 5, rng))}, {}, kPlain});
    c.push_back({"sum, m = 2, unit",
                 {n({4, 7}), index_tensor({4}, random_indices(4, 7, rng))},
                 {{"mult", 2.0}, {"reduction", S("sum")}}, kUnit});
    c.push_back({"ignored rows, mean, unit", {n({5, 6}), index_tensor({5}, {2, -100, 0, -100, 5})}, {},
                 kUnit});
    c.push_back({"ignored rows, custom ignore_index, m = 0.5",
                 {n({4, 3}), index_tensor({4}, {7, 1, 0, 7})},
                 {{"ignore_index", I(7)}, {"mult", 0.5}}, kPlain});
    c.push_back({"1-D logits, large", {std::optional<Tensor>(normal({9}, rng, 3.0f)), index_tensor({}, {4})},
                 {}, kPlain});
  } else if (op == "mse_loss") {
    c.push_back({"mean", {n({4, 5}), n({4, 5})}, {}, kPlain});
    c.push_back({"sum, unit", {n({3, 7}), n({3, 7})}, {{"reduction", S("sum")}}, kUnit});
    c.push_back({"mean, 3-D, unit", {n({2, 3, 4}), n({2, 3, 4})}, {}, kUnit});
  } else if (op == "reshape") {
    c.push_back({"[3, 4, 5] -> [12, -1]", {n({3, 4, 5})}, {{"shape", Ints{12, -1}}}, kPlain});
    c.push_back({"[6, 4] -> [2, 3, 4]", {n({6, 4})}, {{"shape", Ints{2, 3, 4}}}, kPlain});
  } else if (op == "transpose") {
    c.push_back({"dims 0, 2", {n({3, 4, 5})}, {{"dim0", I(0)}, {"dim1", I(2)}}, kPlain});
    c.push_back({"dims -1, 1", {n({2, 3, 4, 5})}, {{"dim0", I(-1)}, {"dim1", I(1)}}, kPlain});
    c.push_back({"2-D", {n({4, 7})}, {{"dim0", I(1)}, {"dim1", I(0)}}, kPlain});
  } else if (op == "slice") {
    c.push_back({"axis 0", {n({5, 6})}, {{"axis", I(0)}, {"start", I(1)}, {"end", I(4)}}, kPlain});
    c.push_back({"axis -2, negative bounds", {n({3, 8, 4})},
                 {{"axis", I(-2)}, {"start", I(-5)}, {"end", I(-1)}}, kPlain});
    c.push_back({"last axis", {n({2, 3, 7})}, {{"axis", I(2)}, {"start", I(2)}, {"end", I(7)}}, kPlain});
  } else if (op == "concat") {
    c.push_back({"axis 0", {n({2, 3}), n({4, 3})}, {{"axis", I(0)}}, kPlain});
    c.push_back({"axis -1", {n({2, 3, 4}), n({2, 3, 2})}, {{"axis", I(-1)}}, kPlain});
    c.push_back({"axis 1", {n({2, 1, 4}), n({2, 5, 4})}, {{"axis", I(1)}}, kPlain});
  } else if (op == "sum" || op == "mean") {
    c.push_back({"all axes", {n({3, 4, 5})}, {}, kPlain});
    c.push_back({"axis 1", {n({3, 4, 5})}, {{"axes", Ints{1}}}, kPlain});
    c.push_back({"axes 0, 2, keepdim", {n({3, 4, 5})}, {{"axes", Ints{0, 2}}, {"keepdim", I(1)}}, kPlain});
    c.push_back({"axis -1", {n({6, 7})}, {{"axes", Ints{-1}}}, kPlain});
    c.push_back({"empty axes list, keepdim", {n({2, 3, 4})}, {{"axes", Ints{}}, {"keepdim", I(1)}}, kPlain});
  } else if (op == "max") {
    c.push_back({"axis 1", {distinct({4, 7}, rng)}, {{"axis", I(1)}}, kPlain});
    c.push_back({"axis 0, keepdim", {distinct({3, 5, 4}, rng)}, {{"axis", I(0)}, {"keepdim", I(1)}}, kPlain});
    c.push_back({"axis -2", {distinct({2, 6, 3}, rng)}, {{"axis", I(-2)}}, kPlain});
    c.push_back({"axis of size 1", {distinct({3, 1, 4}, rng)}, {{"axis", I(1)}}, kPlain});
  } else if (op == "exp") {
    c.push_back({"2-D", {n({4, 6})}, {}, kPlain});
    c.push_back({"3-D", {n({2, 3, 5})}, {}, kPlain});
  } else if (op == "log" || op == "sqrt") {
    c.push_back({"2-D", {positive({4, 6}, rng)}, {}, kPlain});
    c.push_back({"3-D", {positive({2, 3, 5}, rng)}, {}, kPlain});
  } else if (op == "where") {
    // cond holds zeros, −0 (false), NaN (true) and other values.
    Tensor cond = normal({4, 6}, rng);
    for (std::int64_t e = 0; e < cond.numel(); e += 3) cond[e] = 0.0f;
    cond[1] = -0.0f;
    cond[2] = std::numeric_limits<float>::quiet_NaN();
    c.push_back({"mixed cond", {cond, n({4, 6}), n({4, 6})}, {}, kPlain});
    Tensor cond3 = normal({2, 3, 4}, rng);
    for (float& v : cond3.span()) v = v > 0 ? 1.0f : 0.0f;
    c.push_back({"0/1 cond", {cond3, n({2, 3, 4}), n({2, 3, 4})}, {}, kPlain});
  } else if (op == "cast") {
    // Into f32, where the straight-through gradient is the true one (y = x · scale).
    c.push_back({"f32, scale 1", {n({4, 6})}, {{"dtype", std::string("f32")}}, kPlain});
    c.push_back({"f32, scale 0.3", {n({2, 3, 5})},
                 {{"dtype", std::string("f32")}, {"scale", 0.3}}, kPlain});
  } else if (op == "round_to_format") {
    // Into f32, the identity, whose straight-through gradient is the true one.
    c.push_back({"f32", {n({4, 6})}, {{"format", std::string("f32")}}, kPlain});
  } else if (op == "dynamic_rescale") {
    // The identity on values whatever its statistic and direction (they act on scales only).
    c.push_back({"l2", {n({4, 6})}, {}, kPlain});
    c.push_back({"max, backward", {n({2, 3, 5})},
                 {{"statistic", std::string("max")}, {"direction", std::string("backward")}},
                 kPlain});
  }
  if (c.empty()) return c;  // an op this file does not know: the coverage test reports it
  for (Case& large : large_cases_for(op, rng)) c.push_back(std::move(large));
  return c;
}

// ---------------------------------------------------------------------------------------------
// Every op of forward_ops()
// ---------------------------------------------------------------------------------------------

std::vector<std::string> forward_op_names() {
  std::vector<std::string> names;
  for (const OpDef* op : forward_ops()) names.emplace_back(op->name);
  return names;
}

class ReferenceGradcheck : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceGradcheck, ForwardAndBackwardMatchTheDoubleReference) {
  const OpDef& op = op_by_name(GetParam());
  const std::vector<Case> cases = cases_for(op.name);
  ASSERT_FALSE(cases.empty()) << op.name << " has no reference gradcheck cases";
  double forward = 0, forward_elem = 0, grad = 0, grad_elem = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(op.name) + " case \"" + c.label + "\"" +
                 (c.scaling == Scaling::kUnit ? " (unit-scaled)" : " (unscaled)"));
    ReferenceCheckOptions options;
    options.scaling = c.scaling;
    options.step = c.step;
    options.max_fd_elements = c.max_fd_elements;
    const ReferenceCheckResult r = gradcheck_reference(op, c.inputs, c.attrs, options);
    forward = std::max(forward, r.forward_error);
    forward_elem = std::max(forward_elem, r.forward_elem_error);
    for (std::size_t i = 0; i < r.grad_error.size(); ++i) {
      if (std::isnan(r.grad_error[i])) continue;
      grad = std::max(grad, r.grad_error[i]);
      grad_elem = std::max(grad_elem, r.grad_elem_error[i]);
    }
  }
  std::printf("%-30s %zu cases; worst errors: forward %.2e (element %.2e), gradient %.2e (element %.2e)\n",
              std::string(op.name).c_str(), cases.size(), forward, forward_elem, grad, grad_elem);
}

INSTANTIATE_TEST_SUITE_P(AllOps, ReferenceGradcheck, ::testing::ValuesIn(forward_op_names()),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

// A new op in forward_ops() without a reference (or with a reference whose scales disagree with
// the op's declared ones) fails here.
TEST(ReferenceGradcheckCoverage, EveryForwardOpHasAReferenceAndCases) {
  std::set<std::string_view> registered;
  for (const OpDef* op : forward_ops()) {
    registered.insert(op->name);
    SCOPED_TRACE(std::string(op->name));
    ASSERT_TRUE(testing::has_reference(op->name)) << op->name << " has no reference forward";
    EXPECT_FALSE(cases_for(op->name).empty()) << op->name << " has no reference gradcheck cases";
    const auto ref_scales = testing::reference_scale_names(op->name);
    EXPECT_EQ(std::set<std::string_view>(ref_scales.begin(), ref_scales.end()),
              std::set<std::string_view>(op->scales.begin(), op->scales.end()))
        << op->name << ": the reference's scale attributes differ from OpDef::scales";
    bool unit_case = false, plain_case = false;
    for (const Case& c : cases_for(op->name)) (c.scaling == Scaling::kUnit ? unit_case : plain_case) = true;
    EXPECT_TRUE(plain_case) << op->name << " has no unscaled case";
    if (op->unit_scale != nullptr) {
      EXPECT_TRUE(unit_case) << op->name << " has a unit-scaling rule but no unit-scaled case";
    }
  }
  for (const std::string_view name : testing::reference_op_names()) {
    EXPECT_TRUE(registered.contains(name)) << "reference for " << name << ", which is not in forward_ops()";
  }
}

// ---------------------------------------------------------------------------------------------
// Power: a backward off by 1e-3 (relative) fails the check
// ---------------------------------------------------------------------------------------------

constexpr double kPerturbation = 1e-3;

// The backward of `Op`, then gradient `Which` gets an extra term kPerturbation·x·rms(dx)/rms(x),
// x being forward input `Which` (which the backward must read): a missing or extra term of
// relative size 1e-3.
template <const OpDef& Op, int Which>
void backward_plus_term(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                        const Attributes& attrs, const KernelContext& context) {
  Op.backward_kernel(in, out, attrs, context);
  const TensorView& dx = out[Which];
  const ConstTensorView& x = in[Which];
  if (!present(dx)) return;
  double x2 = 0, d2 = 0;
  for (const float v : x.span()) x2 += static_cast<double>(v) * v;
  for (const float v : dx.span()) d2 += static_cast<double>(v) * v;
  const double c = kPerturbation * std::sqrt(d2 / x2);
  auto d = dx.span();
  const auto xs = x.span();
  for (std::size_t e = 0; e < d.size(); ++e) d[e] += static_cast<float>(c * xs[e]);
}

// The backward of `Op`, then gradient `Which` scaled by 1 + kPerturbation (a β off by 0.1 %).
template <const OpDef& Op, int Which>
void backward_scaled(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                     const Attributes& attrs, const KernelContext& context) {
  Op.backward_kernel(in, out, attrs, context);
  if (!present(out[Which])) return;
  for (float& v : out[Which].span()) v *= static_cast<float>(1.0 + kPerturbation);
}

// A copy of `op` whose backward kernel is `kernel`. Built on first use (not at static
// initialisation: the library's OpDefs live in another translation unit).
struct PerturbedOp {
  OpDef forward;
  PerturbedOp(const OpDef& op, KernelFn kernel) : forward(op) { forward.backward_kernel = kernel; }
  PerturbedOp(const PerturbedOp&) = delete;
};

TEST(ReferenceGradcheckPower, AnExtraTermOfRelativeSize1e3Fails) {
  static const PerturbedOp gelu(kGeluOp, backward_plus_term<kGeluOp, 0>);
  std::mt19937 rng(5);
  const Inputs inputs = {normal({6, 9}, rng)};
  const Attributes attrs{{"mult", 1.5}};
  ReferenceCheckOptions options;
  options.scaling = Scaling::kUnit;

  const ReferenceCheckResult good = check_against_reference(kGeluOp, inputs, attrs, options);
  EXPECT_TRUE(good.ok) << good.failures;
  const ReferenceCheckResult bad = check_against_reference(gelu.forward, inputs, attrs, options);
  EXPECT_FALSE(bad.ok);
  EXPECT_THAT(bad.failures, ::testing::HasSubstr("d/d input 0 (x)"));
  // The measured error is the perturbation, 1e-3, far above the unperturbed kernel's.
  EXPECT_GT(bad.grad_error[0], 0.5 * kPerturbation);
  EXPECT_LT(bad.grad_error[0], 2 * kPerturbation);
  EXPECT_LT(good.grad_error[0], 0.05 * kPerturbation);
  std::printf("gelu backward + 1e-3 term: relative L2 error %.3g (unperturbed %.3g)\n",
              bad.grad_error[0], good.grad_error[0]);
  // And gradcheck_reference reports it through gtest.
  EXPECT_NONFATAL_FAILURE(gradcheck_reference(gelu.forward, inputs, attrs, options),
                          "relative L2 error");
}

TEST(ReferenceGradcheckPower, AGradientScaleOffBy1e3Fails) {
  static const PerturbedOp layer_norm(kLayerNormOp, backward_scaled<kLayerNormOp, 0>);
  static const PerturbedOp attention(kScaledDotProductAttentionOp,
                                     backward_plus_term<kScaledDotProductAttentionOp, 1>);
  std::mt19937 rng(6);
  {
    const Inputs inputs = {normal({4, 12}, rng), normal({12}, rng), normal({12}, rng)};
    const ReferenceCheckResult bad = check_against_reference(layer_norm.forward, inputs, {});
    EXPECT_FALSE(bad.ok);
    EXPECT_GT(bad.grad_error[0], 0.5 * kPerturbation);
    EXPECT_LT(bad.grad_error[1], 0.05 * kPerturbation);  // the weight's gradient is untouched
    std::printf("layer_norm dx x (1 + 1e-3): relative L2 error %.3g\n", bad.grad_error[0]);
  }
  {
    const Inputs inputs = {normal({2, 5, 4}, rng), normal({2, 5, 4}, rng), normal({2, 5, 3}, rng)};
    const Attributes attrs{{"mask", S("causal")}};
    const ReferenceCheckResult bad = check_against_reference(attention.forward, inputs, attrs);
    EXPECT_FALSE(bad.ok);
    EXPECT_THAT(bad.failures, ::testing::HasSubstr("d/d input 1 (k)"));
    EXPECT_GT(bad.grad_error[1], 0.5 * kPerturbation);
    std::printf("attention dk + 1e-3 term: relative L2 error %.3g\n", bad.grad_error[1]);
  }
}

// A forward kernel off by 1e-4 (relative) fails too: forwards are checked to FP32 precision
// against the reference with the resolved α.
template <const OpDef& Op>
void forward_scaled(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs, const KernelContext& context) {
  Op.kernel(in, out, attrs, context);
  for (float& v : out[0].span()) v *= static_cast<float>(1.0 + 0.1 * kPerturbation);
}

TEST(ReferenceGradcheckPower, AForwardOffBy1e4Fails) {
  static const OpDef linear = [] {
    OpDef op = kLinearOp;
    op.kernel = forward_scaled<kLinearOp>;
    return op;
  }();
  std::mt19937 rng(7);
  const Inputs inputs = {normal({5, 8}, rng), normal({3, 8}, rng), normal({3}, rng)};
  ReferenceCheckOptions options;
  options.scaling = Scaling::kUnit;
  const ReferenceCheckResult bad = check_against_reference(linear, inputs, {}, options);
  EXPECT_FALSE(bad.ok);
  EXPECT_THAT(bad.failures, ::testing::HasSubstr("forward output 0"));
  EXPECT_GT(bad.forward_error, 0.05 * kPerturbation);
  std::printf("linear forward x (1 + 1e-4): relative L2 error %.3g\n", bad.forward_error);
}

// ---------------------------------------------------------------------------------------------
// Where the references disagreed with the ops (found by the graph fuzzer, which compares every
// node it runs with them): linear over an empty input dim (in = 0) is α·b, an empty sum, as the op
// gives (the reference divided numel(x) by in = 0); max lets a NaN win wherever it is in the row,
// as the op does (std::max let a NaN after a number lose).
// ---------------------------------------------------------------------------------------------

Tensor op_forward(std::string_view op, std::vector<std::optional<Tensor>> inputs, Attributes attrs) {
  testing::OpRun run(op_by_name(op), std::move(inputs), std::move(attrs));
  run.forward();
  return run.output();
}

TEST(ReferenceEdges, LinearWithNoInputFeaturesIsAlphaTimesBias) {
  const Attributes attrs{{"alpha", 0.5}};
  const std::vector<float> bias = {1.5f, -2.0f};
  for (const std::string_view op : {"linear", "linear_readout"}) {
    SCOPED_TRACE(op);
    const testing::RefInputs in = {testing::RefTensor(Shape{3, 0}, {}), testing::RefTensor(Shape{2, 0}, {}),
                                   testing::RefTensor(Shape{2}, {1.5, -2.0})};
    const std::vector<testing::RefTensor> ref = testing::reference_forward(op, in, attrs);
    ASSERT_EQ(ref.size(), 1u);
    ASSERT_EQ(ref[0].shape, (Shape{3, 2}));
    const Tensor y = op_forward(op, {Tensor(Shape{3, 0}), Tensor(Shape{2, 0}), Tensor(Shape{2}, bias)}, attrs);
    for (std::int64_t i = 0; i < 6; ++i) {
      EXPECT_EQ(ref[0][i], i % 2 == 0 ? 0.75 : -1.0) << i;
      EXPECT_EQ(y[i], ref[0][i]) << i;
    }
  }
}

TEST(ReferenceEdges, MaxLetsNanWinAsTheOpDoes) {
  constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {1, kNan, 3, 5,   kNan, -1, 2, 0,   -0.0f, 0, -1, -2,
                                2, 4, 9, kNan,   -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  const Attributes attrs{{"axis", std::int64_t{1}}};
  const testing::RefInputs in = {testing::RefTensor(Shape{5, 4}, std::vector<double>(x.begin(), x.end()))};
  const std::vector<testing::RefTensor> ref = testing::reference_forward("max", in, attrs);
  const Tensor y = op_forward("max", {Tensor(Shape{5, 4}, x)}, attrs);
  ASSERT_EQ(ref.size(), 1u);
  ASSERT_EQ(ref[0].shape, (Shape{5}));
  const double expected[] = {NAN, NAN, -0.0, NAN, -INFINITY};
  for (std::int64_t r = 0; r < 5; ++r) {
    if (std::isnan(expected[r])) {
      EXPECT_TRUE(std::isnan(ref[0][r])) << "reference, row " << r;
      EXPECT_TRUE(std::isnan(y[r])) << "op, row " << r;
    } else {
      EXPECT_EQ(ref[0][r], expected[r]) << "reference, row " << r;
      EXPECT_EQ(y[r], expected[r]) << "op, row " << r;
      EXPECT_EQ(std::signbit(ref[0][r]), std::signbit(expected[r])) << "row " << r;
    }
  }
  EXPECT_TRUE(std::signbit(y[2]));  // the first of the equal zeros
}

}  // namespace
}  // namespace unitscale

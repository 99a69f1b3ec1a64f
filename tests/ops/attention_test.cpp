#include "unitscale/ops/attention.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "../support/accuracy.hpp"
#include "../support/op_check.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/dropout.hpp"

namespace unitscale {
namespace {

using namespace testing;

Attributes attention_attrs(double mult = 1.0, std::string_view mask = "none", double dropout = 0.0,
                           std::int64_t seed = 0) {
  Attributes attrs{{"mult", mult}, {"mask", std::string(mask)}};
  if (dropout != 0.0) attrs.set("dropout", dropout).set("seed", seed);
  return attrs;
}

// softmax((m/d)·q·kᵀ)·v in double, straight from the definition (no dropout).
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, double mult,
                                        bool causal) {
  const std::int64_t sq = q.shape().dim(-2), sk = k.shape().dim(-2), d = q.shape().dim(-1),
                     dv = v.shape().dim(-1);
  const std::int64_t slices = q.numel() / (sq * d);
  std::vector<double> y(static_cast<std::size_t>(slices * sq * dv), 0.0);
  for (std::int64_t b = 0; b < slices; ++b) {
    for (std::int64_t i = 0; i < sq; ++i) {
      std::vector<double> logits(static_cast<std::size_t>(sk), -INFINITY);
      double max_logit = -INFINITY;
      for (std::int64_t j = 0; j < sk && (!causal || j <= i); ++j) {
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c) dot += static_cast<double>(q[(b * sq + i) * d + c]) * k[(b * sk + j) * d + c];
        logits[static_cast<std::size_t>(j)] = mult / static_cast<double>(d) * dot;
        max_logit = std::max(max_logit, logits[static_cast<std::size_t>(j)]);
      }
      double sum = 0;
      for (double& l : logits) sum += (l = std::exp(l - max_logit));
      for (std::int64_t j = 0; j < sk; ++j) {
        for (std::int64_t c = 0; c < dv; ++c) {
          y[static_cast<std::size_t>((b * sq + i) * dv + c)] += logits[static_cast<std::size_t>(j)] / sum * v[(b * sk + j) * dv + c];
        }
      }
    }
  }
  return y;
}

TEST(AttentionForward, MatchesDefinition) {
  std::mt19937 rng(1);
  const Tensor q = random_normal({2, 3, 6, 8}, rng), k = random_normal({2, 3, 9, 8}, rng),
               v = random_normal({2, 3, 9, 5}, rng);
  for (const bool causal : {false, true}) {
    OpRun run(kScaledDotProductAttentionOp, {q, k, v}, attention_attrs(6.0, causal ? "causal" : "none"));
    EXPECT_EQ(run.output().shape(), (Shape{2, 3, 6, 5}));
    run.forward();
    const auto expected = reference_attention(q, k, v, 6.0, causal);
    for (std::int64_t i = 0; i < run.output().numel(); ++i) {
      EXPECT_NEAR(run.output()[i], expected[static_cast<std::size_t>(i)], 1e-5) << "causal " << causal;
    }
  }
  // Causal is top-left aligned: the first query sees only the first key.
  OpRun causal(kScaledDotProductAttentionOp, {q, k, v}, attention_attrs(6.0, "causal"));
  causal.forward();
  for (std::int64_t c = 0; c < 5; ++c) EXPECT_FLOAT_EQ(causal.output()[c], v[c]);
}

TEST(AttentionGradcheck, MasksMultsShapesAndDropout) {
  std::mt19937 rng(2);
  auto qkv = [&](Shape q, Shape k, Shape v) {
    return std::vector<std::optional<Tensor>>{random_normal(q, rng), random_normal(k, rng), random_normal(v, rng)};
  };
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({2, 3, 4}, {2, 5, 4}, {2, 5, 3}), attention_attrs(4.0));
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({2, 3, 4}, {2, 5, 4}, {2, 5, 3}), attention_attrs(4.0, "causal"));
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({4, 4}, {4, 4}, {4, 2}), attention_attrs(1.0, "causal"));
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({2, 2, 3, 4}, {2, 2, 3, 4}, {2, 2, 3, 4}),
                     attention_attrs(8.0, "causal"));
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({2, 4, 4}, {2, 6, 4}, {2, 6, 3}),
                     attention_attrs(4.0, "none", 0.3, 11));
  testing::gradcheck(kScaledDotProductAttentionOp, qkv({3, 5, 2}, {3, 5, 2}, {3, 5, 2}),
                     attention_attrs(2.0, "causal", 0.5, 3));
}

// spec §4 "Constants at the defaults": SDPA σ.
TEST(AttentionScales, SpecConstants) {
  const double causal_64[] = {3.9020, 5.1036, 6.7441, 12.0370};
  const std::int64_t lengths[] = {64, 128, 256, 1024};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(attention_unit_scale(64, lengths[i], 1.0, AttentionMask::kCausal), causal_64[i], 0.5e-4)
        << "s = " << lengths[i];
  }
  EXPECT_NEAR(attention_unit_scale(64, 64, 1.0, AttentionMask::kNone), 7.9355, 0.5e-4);
  EXPECT_NEAR(attention_unit_scale(64, 256, 1.0, AttentionMask::kNone), 15.8283, 0.5e-4);
  EXPECT_NEAR(attention_unit_scale(128, 2048, 1.0, AttentionMask::kCausal), 16.3000, 0.5e-4);
  // Dropout multiplies σ by √(1−p); a single causal key gives σ = √(1−p).
  EXPECT_NEAR(attention_unit_scale(64, 256, 1.0, AttentionMask::kNone, 0.19),
              0.9 * attention_unit_scale(64, 256, 1.0, AttentionMask::kNone), 1e-12);
  EXPECT_DOUBLE_EQ(attention_unit_scale(64, 1, 1.0, AttentionMask::kCausal, 0.36), 0.8);
  // m → ∞ is one-hot attention: σ → √(1−p).
  EXPECT_NEAR(attention_unit_scale(64, 256, 1e6, AttentionMask::kNone), 1.0, 1e-6);
}

// One σ on the output and every gradient: scaled = σ × unscaled, exactly.
TEST(AttentionScales, ScaledEqualsSigmaTimesUnscaled) {
  std::mt19937 rng(3);
  const Tensor q = random_normal({2, 6, 8}, rng), k = random_normal({2, 7, 8}, rng), v = random_normal({2, 7, 4}, rng);
  const Tensor g = random_normal({2, 6, 4}, rng);
  for (const double dropout : {0.0, 0.25}) {
    const Attributes attrs = attention_attrs(2.0, "causal", dropout, 5);
    OpRun plain(kScaledDotProductAttentionOp, {q, k, v}, attrs, Scaling::kUnscaled);
    OpRun scaled(kScaledDotProductAttentionOp, {q, k, v}, attrs, Scaling::kUnit);
    const double sigma = attention_unit_scale(8, 7, 2.0, AttentionMask::kCausal, dropout);
    for (const char* name : {"alpha", "beta_q", "beta_k", "beta_v"}) {
      EXPECT_DOUBLE_EQ(scaled.attrs().get_double("t", name), sigma) << name;
    }
    EXPECT_FALSE(plain.attrs().has("alpha"));
    plain.forward();
    scaled.forward();
    for (std::int64_t i = 0; i < plain.output().numel(); ++i) {
      EXPECT_NEAR(scaled.output()[i], sigma * plain.output()[i], 1e-5 * (1 + std::abs(plain.output()[i])));
    }
    const auto gp = plain.backward({g});
    const auto gs = scaled.backward({g});
    for (std::size_t n = 0; n < 3; ++n) {
      for (std::int64_t i = 0; i < gp[n]->numel(); ++i) {
        EXPECT_NEAR((*gs[n])[i], sigma * (*gp[n])[i], 1e-5 * (1 + std::abs((*gp[n])[i]))) << "input " << n;
      }
    }
  }
}

TEST(AttentionBackward, PartialGradientsMatchFullOnes) {
  std::mt19937 rng(4);
  const Tensor q = random_normal({3, 5, 4}, rng), k = random_normal({3, 5, 4}, rng), v = random_normal({3, 5, 4}, rng);
  const Tensor g = random_normal({3, 5, 4}, rng);
  OpRun run(kScaledDotProductAttentionOp, {q, k, v}, attention_attrs(3.0, "none", 0.2, 9));
  run.forward();
  const auto all = run.backward({g});
  const auto only_k = run.backward({g}, {false, true, false});
  const auto only_v = run.backward({g}, {false, false, true});
  EXPECT_FALSE(only_k[0].has_value());
  for (std::int64_t i = 0; i < k.numel(); ++i) {
    EXPECT_EQ((*only_k[1])[i], (*all[1])[i]);
    EXPECT_EQ((*only_v[2])[i], (*all[2])[i]);
  }
}

// Forward and backward in double from the definition (attention.hpp, no dropout): y = α·P·v and
// the gradients of Σ g·y, with P's masked (−∞) entries exactly 0.
struct AttentionReference {
  std::vector<double> y, dq, dk, dv;
};

// x rounded to float, then to BF16 by round-to-nearest-even on the bits (finite x only).
double to_bf16(double x) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(static_cast<float>(x));
  bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  return std::bit_cast<float>(bits);
}

// With bf16_probabilities, P and dS enter the GEMMs with v, g, k and q rounded to BF16
// (AttentionConfig::probabilities); the softmax VJP still uses the unrounded P and dP.
AttentionReference reference_attention_all(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& g, double mult, bool causal, double alpha,
                                           double beta, bool bf16_probabilities = false) {
  auto operand = [&](double x) { return bf16_probabilities ? to_bf16(x) : x; };
  const std::int64_t sq = q.shape().dim(-2), sk = k.shape().dim(-2), d = q.shape().dim(-1),
                     dv = v.shape().dim(-1), slices = q.numel() / (sq * d);
  AttentionReference ref;
  ref.y.assign(static_cast<std::size_t>(g.numel()), 0.0);
  ref.dq.assign(static_cast<std::size_t>(q.numel()), 0.0);
  ref.dk.assign(static_cast<std::size_t>(k.numel()), 0.0);
  ref.dv.assign(static_cast<std::size_t>(v.numel()), 0.0);
  const double scale = mult / static_cast<double>(d);
  std::vector<double> p(static_cast<std::size_t>(sk)), ds(p.size());
  for (std::int64_t b = 0; b < slices; ++b) {
    auto Q = [&](std::int64_t i, std::int64_t c) -> double { return q[(b * sq + i) * d + c]; };
    auto K = [&](std::int64_t j, std::int64_t c) -> double { return k[(b * sk + j) * d + c]; };
    auto V = [&](std::int64_t j, std::int64_t c) -> double { return v[(b * sk + j) * dv + c]; };
    auto G = [&](std::int64_t i, std::int64_t c) -> double { return g[(b * sq + i) * dv + c]; };
    auto at = [](std::vector<double>& t, std::int64_t index) -> double& {
      return t[static_cast<std::size_t>(index)];
    };
    for (std::int64_t i = 0; i < sq; ++i) {
      const std::int64_t valid = causal ? std::min(i + 1, sk) : sk;
      double top = -INFINITY, sum = 0, row_dot = 0;
      for (std::int64_t j = 0; j < valid; ++j) {
        double s = 0;
        for (std::int64_t c = 0; c < d; ++c) s += Q(i, c) * K(j, c);
        top = std::max(top, at(p, j) = scale * s);
      }
      for (std::int64_t j = 0; j < sk; ++j)
        sum += (at(p, j) = j < valid ? std::exp(at(p, j) - top) : 0.0);
      for (std::int64_t j = 0; j < sk; ++j) {
        at(p, j) /= sum;
        double dp = 0;
        for (std::int64_t c = 0; c < dv; ++c) {
          at(ref.y, (b * sq + i) * dv + c) += alpha * operand(at(p, j)) * V(j, c);
          at(ref.dv, (b * sk + j) * dv + c) += beta * operand(at(p, j)) * G(i, c);
          dp += G(i, c) * V(j, c);
        }
        at(ds, j) = dp;
        row_dot += at(p, j) * dp;
      }
      for (std::int64_t j = 0; j < sk; ++j) {
        const double dsj = operand(at(p, j) * (at(ds, j) - row_dot));
        for (std::int64_t c = 0; c < d; ++c) {
          at(ref.dq, (b * sq + i) * d + c) += beta * scale * dsj * K(j, c);
          at(ref.dk, (b * sk + j) * d + c) += beta * scale * dsj * Q(i, c);
        }
      }
    }
  }
  return ref;
}

// The vectorised row softmax and dS = P∘(dP − rowsum(P∘dP)) against double precision on every
// SIMD level, with rows whose lengths leave partial vectors, causal rows down to a single key, and
// sharp (near one-hot) attention with logits of ±50.
TEST(AttentionAccuracy, ForwardAndBackwardMatchDoublePrecision) {
  std::mt19937 rng(8);
  constexpr float kAlpha = 1.7f, kBeta = 0.6f;
  struct Case {
    Shape q, k, v;
  };
  const Case cases[] = {{{2, 5, 8}, {2, 19, 8}, {2, 19, 3}}, {{1, 33, 8}, {1, 33, 8}, {1, 33, 5}}};
  testing::for_each_simd_level([&] {
    for (const Case& c : cases) {
      for (const bool causal : {false, true}) {
        for (const double mult : {1.0, 40.0}) {
          // At m = 40 the logits (m/d)·q·k reach ±50.
          const Tensor q = random_normal(c.q, rng, mult > 1 ? 3.0f : 1.0f);
          const Tensor k = random_normal(c.k, rng), v = random_normal(c.v, rng);
          const Tensor g = random_normal(c.q.with_dim(-1, c.v.dim(-1)), rng);
          Tensor y(g.shape()), dq(c.q), dk(c.k), dv(c.v);
          AttentionConfig config;
          config.mult = mult;
          config.mask = causal ? AttentionMask::kCausal : AttentionMask::kNone;
          attention_forward(q, k, v, y, config, kAlpha);
          attention_backward(g, q, k, v, dq, dk, dv, config, kBeta, kBeta, kBeta);
          const AttentionReference ref =
              reference_attention_all(q, k, v, g, mult, causal, kAlpha, kBeta);
          // Errors relative to each tensor's largest element, at most ~1e-5: the float GEMMs
          // that form the logits err by ~ε·|logit| ≈ 3e-6 at ±50, which exp passes on to P as a
          // relative error. A wrong mask, shift or VJP errs by 1e-2 or more.
          auto check = [&](const char* name, const Tensor& actual,
                           const std::vector<double>& expected) {
            double largest = 0;
            for (const double e : expected) largest = std::max(largest, std::abs(e));
            testing::WorstError error;
            for (std::int64_t i = 0; i < actual.numel(); ++i) {
              error.update(actual[i], expected[static_cast<std::size_t>(i)], largest,
                           [&] { return fmt::format("{} element {}", name, i); });
            }
            EXPECT_LE(error.error, 5e-5) << error.where << " (causal " << causal << ", m " << mult
                                         << ", q " << c.q.to_string() << ")";
          };
          check("y", y, ref.y);
          check("dq", dq, ref.dq);
          check("dk", dk, ref.dk);
          check("dv", dv, ref.dv);
        }
      }
    }
  });
}

// With BF16 probabilities the kernels compute P and dS in fp32 and round them for the GEMMs with
// v, g, k and q: they track a double reference that rounds there, not the unrounded one. An fp32
// P within a few ulps of a BF16 rounding boundary may round the other way than the double one,
// so the test compares mean errors: against the rounding reference they are flips and fp32
// noise, against the exact one every element's rounding error.
TEST(AttentionAccuracy, Bf16ProbabilitiesRoundPAndDsForTheGemms) {
  std::mt19937 rng(21);
  constexpr float kAlpha = 1.3f, kBeta = 0.8f;
  for (const bool causal : {false, true}) {
    const Shape qs{3, 24, 16}, vs{3, 24, 8};
    const Tensor q = random_normal(qs, rng, 2.0f), k = random_normal(qs, rng);
    const Tensor v = random_normal(vs, rng), g = random_normal(vs, rng);
    Tensor y(vs), dq(qs), dk(qs), dv(vs);
    AttentionConfig config{.mult = 4.0,
                           .mask = causal ? AttentionMask::kCausal : AttentionMask::kNone};
    config.probabilities = DType::kBF16;
    attention_forward(q, k, v, y, config, kAlpha);
    attention_backward(g, q, k, v, dq, dk, dv, config, kBeta, kBeta, kBeta);
    const AttentionReference rounded =
        reference_attention_all(q, k, v, g, 4.0, causal, kAlpha, kBeta, true);
    const AttentionReference exact =
        reference_attention_all(q, k, v, g, 4.0, causal, kAlpha, kBeta);
    auto mean_error = [](const Tensor& actual, const std::vector<double>& expected) {
      double total = 0, largest = 0;
      for (std::int64_t i = 0; i < actual.numel(); ++i) {
        total += std::abs(actual[i] - expected[static_cast<std::size_t>(i)]);
        largest = std::max(largest, std::abs(expected[static_cast<std::size_t>(i)]));
      }
      return total / static_cast<double>(actual.numel()) / largest;
    };
    const std::pair<const Tensor*, const std::vector<double>*> pairs[][2] = {
        {{&y, &rounded.y}, {&y, &exact.y}},
        {{&dq, &rounded.dq}, {&dq, &exact.dq}},
        {{&dk, &rounded.dk}, {&dk, &exact.dk}},
        {{&dv, &rounded.dv}, {&dv, &exact.dv}}};
    const char* names[] = {"y", "dq", "dk", "dv"};
    for (int t = 0; t < 4; ++t) {
      const double to_rounded = mean_error(*pairs[t][0].first, *pairs[t][0].second);
      const double to_exact = mean_error(*pairs[t][1].first, *pairs[t][1].second);
      // BF16 keeps 8 significant bits: the rounding moves each product by up to 2^-9.
      EXPECT_LT(to_exact, 4e-3) << names[t] << " causal " << causal;
      EXPECT_GT(to_exact, 1e-5) << names[t] << " causal " << causal << ": not rounded?";
      EXPECT_LT(to_rounded, 0.05 * to_exact) << names[t] << " causal " << causal;
    }
  }
  // Only f32 and bf16 are formats for the probabilities.
  Graph graph;
  const Value x = graph.input("x", {2, 4, 8});
  EXPECT_THAT(
      [&] {
        graph.apply1(kScaledDotProductAttentionOp, std::vector<Value>{x, x, x},
                     {{"probabilities_format", DType::kE4M3FN}});
      },
      ThrowsMessage<Error>(HasSubstr("probabilities_format must be f32 or bf16, got e4m3fn")));
}

TEST(AttentionDropout, DropsAboutPAndDependsOnTheSeed) {
  std::mt19937 rng(5);
  // With v = identity rows, y = P̃ itself: count the dropped probabilities.
  const std::int64_t s = 64;
  const Tensor q = random_normal({8, s, 16}, rng), k = random_normal({8, s, 16}, rng);
  Tensor v({8, s, s});
  for (std::int64_t b = 0; b < 8; ++b) {
    for (std::int64_t j = 0; j < s; ++j) v[(b * s + j) * s + j] = 1.0f;
  }
  auto dropped_fraction = [&](double p, std::int64_t seed, Tensor* out) {
    OpRun run(kScaledDotProductAttentionOp, {q, k, v}, attention_attrs(1.0, "none", p, seed));
    run.forward();
    std::int64_t zeros = 0;
    for (const float x : run.output().span()) zeros += x == 0.0f;
    if (out != nullptr) *out = run.output();
    return static_cast<double>(zeros) / static_cast<double>(run.output().numel());
  };
  Tensor a, b, c;
  EXPECT_NEAR(dropped_fraction(0.1, 1, &a), 0.1, 0.01);
  EXPECT_NEAR(dropped_fraction(0.1, 1, &b), 0.1, 0.01);
  EXPECT_NEAR(dropped_fraction(0.1, 2, &c), 0.1, 0.01);
  EXPECT_NEAR(dropped_fraction(0.5, 1, nullptr), 0.5, 0.01);
  EXPECT_EQ(dropped_fraction(0.0, 1, nullptr), 0.0);
  std::int64_t same = 0, differ = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    same += a[i] == b[i];
    differ += (a[i] == 0.0f) != (c[i] == 0.0f);
  }
  EXPECT_EQ(same, a.numel());  // the mask is a pure function of the seed
  EXPECT_GT(differ, a.numel() / 10);

  // The mask is the dropout op's: attention dropout with seed 1 equals dropout(P) with seed 1.
  OpRun no_dropout(kScaledDotProductAttentionOp, {q, k, v}, attention_attrs(1.0, "none"));
  no_dropout.forward();
  Tensor dropped_probs(a.shape());
  dropout_forward(no_dropout.output(), dropped_probs, 0.1, 1, DropoutMode::kTraining, 1.0f);
  for (std::int64_t i = 0; i < a.numel(); ++i) EXPECT_FLOAT_EQ(a[i], dropped_probs[i]);
}

// Targets measured with the unit-scaling reference library (arXiv 2303.11257): SDPA 16×4×256×64,
// non-causal / causal: out 1.000 / 1.053; q, k grads 0.124 / 0.113 (≈ d^-½); v grad 0.982 / 1.053.
struct AttentionTarget {
  std::string mask;
  double out_std, grad_qk_std, grad_v_std;
};

class AttentionStatistics : public ::testing::TestWithParam<AttentionTarget> {};

TEST_P(AttentionStatistics, HitsSpecTargets) {
  const AttentionTarget& t = GetParam();
  std::mt19937 rng(6);
  const Shape shape{16, 4, 256, 64};
  OpRun run(kScaledDotProductAttentionOp,
            {random_normal(shape, rng), random_normal(shape, rng), random_normal(shape, rng)},
            attention_attrs(1.0, t.mask), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(shape, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), t.out_std, 0.1);
  EXPECT_NEAR(testing::std_of(grads[0]->span()), t.grad_qk_std, 0.1 * t.grad_qk_std);
  EXPECT_NEAR(testing::std_of(grads[1]->span()), t.grad_qk_std, 0.1 * t.grad_qk_std);
  EXPECT_NEAR(testing::std_of(grads[2]->span()), t.grad_v_std, 0.1);
}

INSTANTIATE_TEST_SUITE_P(Masks, AttentionStatistics,
                         ::testing::Values(AttentionTarget{"none", 1.000, 0.124, 0.982},
                                           AttentionTarget{"causal", 1.053, 0.113, 1.053}),
                         [](const auto& test_info) { return test_info.param.mask; });

// Dropout keeps the output unit: σ's √(1−p) cancels the inverted-dropout growth.
TEST(AttentionStatistics, DropoutKeepsOutputUnit) {
  std::mt19937 rng(7);
  const Shape shape{4, 4, 256, 64};
  OpRun run(kScaledDotProductAttentionOp,
            {random_normal(shape, rng), random_normal(shape, rng), random_normal(shape, rng)},
            attention_attrs(1.0, "none", 0.3, 1), Scaling::kUnit);
  run.forward();
  const auto grads = run.backward({random_normal(shape, rng)});
  EXPECT_NEAR(testing::std_of(run.output().span()), 1.0, 0.1);
  EXPECT_NEAR(testing::std_of(grads[2]->span()), 1.0, 0.1);
}

TEST(AttentionErrors, ShapesAndAttributesNameTheOp) {
  Graph graph;
  const Value q = graph.input("q", {2, 8, 16});
  const Value k = graph.input("k", {2, 10, 16});
  const Value v = graph.input("v", {2, 10, 4});
  const auto message = [](const std::string& a, const std::string& b) {
    return ThrowsMessage<Error>(AllOf(HasSubstr("scaled_dot_product_attention"), HasSubstr(a), HasSubstr(b)));
  };
  EXPECT_THAT([&] { scaled_dot_product_attention(q, graph.input("k2", {2, 10, 15}), v); },
              message("[2, 8, 16]", "[2, 10, 15]"));
  EXPECT_THAT([&] { scaled_dot_product_attention(q, k, graph.input("v2", {2, 9, 4})); }, message("[2, 9, 4]", "s_k"));
  EXPECT_THAT([&] { scaled_dot_product_attention(q, graph.input("k3", {3, 10, 16}), v); }, message("[3, 10, 16]", "leading"));
  EXPECT_THAT([&] { scaled_dot_product_attention(graph.input("q1", {16}), k, v); }, message("[16]", "[2, 10, 16]"));
  EXPECT_THAT([&] { scaled_dot_product_attention(q, k, v, {.mult = -1.0}); }, message("mult", "-1"));
  EXPECT_THAT([&] { scaled_dot_product_attention(q, k, v, {.dropout = 1.0}); }, message("dropout", "[0, 1)"));
  EXPECT_THAT([&] { graph.apply(kScaledDotProductAttentionOp, std::vector<Value>{q, k, v}, {{"mask", std::string("diagonal")}}); },
              message("diagonal", "causal"));
  EXPECT_EQ(scaled_dot_product_attention(q, k, v).shape(), (Shape{2, 8, 4}));
}

TEST(AttentionBuilders, RecordAttributesAndScales) {
  Graph unit;
  const Value q = unit.input("q", {4, 256, 64});
  const Value y = scaled_dot_product_attention(q, q, q, {.mask = AttentionMask::kCausal});
  EXPECT_EQ(y.shape(), q.shape());
  const Attributes& attrs = unit.nodes().back().attrs;
  EXPECT_EQ(attrs.get_enum_name("t", "mask"), "causal");
  EXPECT_FALSE(attrs.has("dropout"));
  EXPECT_NEAR(attrs.get_double("t", "alpha"), 6.7441, 0.5e-4);
  scaled_dot_product_attention(q, q, q, {.dropout = 0.1, .seed = 42});
  EXPECT_EQ(unit.nodes().back().attrs.get_int("t", "seed"), 42);
  scaled_dot_product_attention(q, q, q, {.dropout = 0.1});  // default seed: the node's position
  EXPECT_EQ(unit.nodes().back().attrs.get_int("t", "seed"), 2);

  Graph plain(Scaling::kUnscaled);
  const Value qp = plain.input("q", {4, 16, 8});
  scaled_dot_product_attention(qp, qp, qp);
  EXPECT_FALSE(plain.nodes().back().attrs.has("alpha"));
}

}  // namespace
}  // namespace unitscale

#include "unitscale/nn/modules.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <numbers>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/nn/parametrization.hpp"

namespace unitscale {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using Vec = std::vector<double>;

// ---- harness ------------------------------------------------------------------------------------

// A parametrization, a graph of its scaling and a model over them.
struct Harness {
  explicit Harness(Scheme scheme, ParametrizationOptions options = {})
      : parametrization(scheme, options),
        graph(parametrization.op_scaling()),
        model(graph, parametrization, {.seed = 11}) {}
  Parametrization parametrization;
  Graph graph;
  Model model;
};

Tensor random_normal(Shape shape, std::mt19937& rng, double std = 1.0) {
  Tensor t(std::move(shape));
  std::normal_distribution<float> normal(0.0f, static_cast<float>(std));
  for (float& v : t.span()) v = normal(rng);
  return t;
}

Tensor random_ids(Shape shape, std::int32_t vocab, std::mt19937& rng) {
  Tensor t(std::move(shape), DType::kI32);
  std::uniform_int_distribution<std::int32_t> pick(0, vocab - 1);
  for (std::int32_t& v : t.span_as<std::int32_t>()) v = pick(rng);
  return t;
}

Vec to_vec(ConstTensorView t) { return Vec(t.span().begin(), t.span().end()); }

// Runs `outputs` after initialising every parameter and binding the inputs.
struct Session {
  Session(Harness& h, std::vector<Value> outs) : exec(h.graph, outs) { h.model.initialize(exec); }
  Vec param(Value v) const { return to_vec(exec.state(v)); }
  Executor exec;
};

void expect_near_all(const Vec& actual, const Vec& expected, double tolerance,
                     const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0;
  std::size_t where = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double error = std::abs(actual[i] - expected[i]) / std::max(1.0, std::abs(expected[i]));
    if (error > worst) worst = error, where = i;
  }
  EXPECT_LE(worst, tolerance) << what << ": element " << where << " is " << actual[where]
                              << ", expected " << expected[where];
}

const ParameterInfo& info_of(const Harness& h, Value v) {
  const auto& info = h.graph.info(v).parameter;
  EXPECT_TRUE(info.has_value());
  return *info;
}

void expect_info(const Harness& h, Value v, const std::string& name, const Shape& shape,
                 ParameterRole role, std::int64_t fan_in, std::int64_t fan_out,
                 std::vector<int> width_dims, std::optional<int> depth) {
  SCOPED_TRACE(name);
  EXPECT_EQ(h.graph.info(v).name, name);
  EXPECT_EQ(h.graph.info(v).shape, shape);
  const ParameterInfo& info = info_of(h, v);
  EXPECT_EQ(info.role, role);
  EXPECT_EQ(info.fan_in, fan_in);
  EXPECT_EQ(info.fan_out, fan_out);
  EXPECT_EQ(info.width_dims, width_dims);
  EXPECT_EQ(info.depth, depth);
}

std::vector<std::string> parameter_names(const Model& model) {
  std::vector<std::string> names;
  for (const ModelParameter& p : model.parameters()) names.push_back(p.rule.name);
  return names;
}

// ---- double-precision references ----------------------------------------------------------------

// y[r, o] = α·(Σ_i x[r, i]·W[o, i] + b[o]).
Vec linear_ref(const Vec& x, std::int64_t in, const Vec& w, std::int64_t out, const Vec* b,
               double alpha) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / in;
  Vec y(static_cast<std::size_t>(rows * out));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = b ? (*b)[static_cast<std::size_t>(o)] : 0.0;
      for (std::int64_t i = 0; i < in; ++i) {
        acc += x[static_cast<std::size_t>(r * in + i)] * w[static_cast<std::size_t>(o * in + i)];
      }
      y[static_cast<std::size_t>(r * out + o)] = alpha * acc;
    }
  }
  return y;
}

Vec rms_norm_ref(const Vec& x, std::int64_t d, const Vec* w, double eps) {
  Vec y(x.size());
  for (std::size_t r = 0; r < x.size() / static_cast<std::size_t>(d); ++r) {
    double ms = 0;
    for (std::int64_t c = 0; c < d; ++c) ms += x[r * d + c] * x[r * d + c];
    const double rstd = 1.0 / std::sqrt(ms / static_cast<double>(d) + eps);
    for (std::int64_t c = 0; c < d; ++c) {
      y[r * d + c] = x[r * d + c] * rstd * (w ? (*w)[static_cast<std::size_t>(c)] : 1.0);
    }
  }
  return y;
}

Vec layer_norm_ref(const Vec& x, std::int64_t d, const Vec* w, const Vec* b, double eps) {
  Vec y(x.size());
  for (std::size_t r = 0; r < x.size() / static_cast<std::size_t>(d); ++r) {
    double mean = 0, var = 0;
    for (std::int64_t c = 0; c < d; ++c) mean += x[r * d + c];
    mean /= static_cast<double>(d);
    for (std::int64_t c = 0; c < d; ++c) var += (x[r * d + c] - mean) * (x[r * d + c] - mean);
    const double rstd = 1.0 / std::sqrt(var / static_cast<double>(d) + eps);
    for (std::int64_t c = 0; c < d; ++c) {
      const auto k = static_cast<std::size_t>(c);
      y[r * d + c] = (x[r * d + c] - mean) * rstd * (w ? (*w)[k] : 1.0) + (b ? (*b)[k] : 0.0);
    }
  }
  return y;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::numbers::sqrt2); }
// LI(a, lo, hi) = lo^(1−a)·hi^a (arXiv 2407.17465's log interpolation).
double log_interp(double a, double lo, double hi) { return std::pow(lo, 1 - a) * std::pow(hi, a); }

// Unit scales from their closed forms (docs/unit_scaling.md), independent of the ops' code.
double silu_glu_scale(double m) { return log_interp(1 / (1 + 1 / (m * m)), 2, std::sqrt(2.0)); }
double gelu_alpha(double m) {
  return log_interp(1 / (1 + 1 / (4 * m * m)), 2, std::sqrt(2 / (1 - 1 / std::numbers::pi)));
}
double causal_attention_scale(std::int64_t d, std::int64_t s, double m) {
  const double a = 1 / (1 + 4 * static_cast<double>(d) / (m * m));
  const double c = s > 1 ? std::log(static_cast<double>(s)) : 1.0;
  return 1 / log_interp(a, std::sqrt(c / static_cast<double>(s)), 1);
}
// τ_i of the residual rule for L layers (arXiv 2407.17465), from its definition.
double tau_ref(int layers, int i, double residual_mult = 1, double ratio = 1) {
  const double a_mlp = residual_mult * std::sqrt(2 / (1 + ratio * ratio));
  const double a_attn = ratio * a_mlp;
  const int n_attn = (i + 1) / 2, n_mlp = i / 2;
  const double branch = i % 2 == 0 ? a_attn : a_mlp;
  return branch / std::sqrt(layers + n_attn * a_attn * a_attn + n_mlp * a_mlp * a_mlp);
}

// Causal multi-head attention of x [B, S, W] with projection weights wqkv [3W, W], wo [W, W]:
// linear scale `lin_in` on both projections, logits `logit`·q·k, output scale `sigma`.
Vec attention_ref(const Vec& x, std::int64_t batch, std::int64_t seq, std::int64_t width,
                  std::int64_t heads, const Vec& wqkv, const Vec& wo, double lin_alpha,
                  double logit, double sigma) {
  const std::int64_t d = width / heads;
  const Vec qkv = linear_ref(x, width, wqkv, 3 * width, nullptr, lin_alpha);
  Vec o(static_cast<std::size_t>(batch * seq * width), 0.0);
  const auto at = [&](std::int64_t b, std::int64_t t, std::int64_t part, std::int64_t h,
                      std::int64_t c) {
    return qkv[static_cast<std::size_t>((b * seq + t) * 3 * width + part * width + h * d + c)];
  };
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t i = 0; i < seq; ++i) {
        Vec p(static_cast<std::size_t>(i + 1));
        double top = -INFINITY, total = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (std::int64_t c = 0; c < d; ++c) dot += at(b, i, 0, h, c) * at(b, j, 1, h, c);
          p[static_cast<std::size_t>(j)] = logit * dot;
          top = std::max(top, logit * dot);
        }
        for (double& v : p) total += (v = std::exp(v - top));
        for (std::int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (std::int64_t j = 0; j <= i; ++j) acc += p[static_cast<std::size_t>(j)] * at(b, j, 2, h, c);
          o[static_cast<std::size_t>((b * seq + i) * width + h * d + c)] = sigma * acc / total;
        }
      }
    }
  }
  return linear_ref(o, width, wo, width, nullptr, lin_alpha);
}

Vec swiglu_ref(const Vec& x, std::int64_t width, std::int64_t hidden, const Vec& up,
               const Vec& gate, const Vec& down, double up_alpha, double down_alpha, double m,
               double s) {
  const Vec a = linear_ref(x, width, up, hidden, nullptr, up_alpha);
  const Vec g = linear_ref(x, width, gate, hidden, nullptr, up_alpha);
  Vec h(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) h[i] = s * a[i] * g[i] * sigmoid(m * g[i]);
  return linear_ref(h, hidden, down, width, nullptr, down_alpha);
}

Vec residual_ref(const Vec& x, const Vec& f, double tau, bool unit) {
  Vec y(x.size());
  const double norm = unit ? std::sqrt(1 + tau * tau) : 1.0;
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = ((unit ? tau : 1.0) * f[i] + x[i]) / norm;
  return y;
}

const Scheme kSchemes[] = {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP};

// ---- Linear -------------------------------------------------------------------------------------

TEST(LinearModule, RecordsWeightAndBiasWithTheirMetadata) {
  for (const Scheme scheme : kSchemes) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.residual_blocks = 2});
    const LinearConfig config{.in = 8, .out = 16, .bias = true, .depth = 1};
    set_base_shapes(h.parametrization, [&](Model& base) {
      Linear(base, "block.up", {.in = 4, .out = 8, .bias = true, .depth = 1});
      Linear(base, "input", {.in = 5, .out = 4, .role = ParameterRole::kInput});
    });
    const Linear up(h.model, "block.up", config);
    expect_info(h, up.weight(), "block.up.weight", {16, 8}, ParameterRole::kWeight, 8, 16, {0, 1}, 1);
    expect_info(h, up.bias(), "block.up.bias", {16}, ParameterRole::kBias, 8, 16, {0}, 1);
    const Linear input(h.model, "input", {.in = 5, .out = 8, .role = ParameterRole::kInput});
    EXPECT_FALSE(input.bias().present());
    EXPECT_EQ(info_of(h, input.weight()).role, ParameterRole::kInput);
    EXPECT_EQ(info_of(h, input.weight()).width_dims, std::vector<int>{0});
    EXPECT_EQ(h.model.parameters().size(), 3u);
  }
}

// y = m·(x·Wᵀ + b): u-μP m = 1/√in (the op's unit scale), SP m = 1, μP input m = α_emb.
TEST(LinearModule, ForwardMatchesTheSchemesMultiplier) {
  struct Case {
    Scheme scheme;
    ParameterRole role;
    double expected_mult;
  };
  const Case cases[] = {{Scheme::kSP, ParameterRole::kWeight, 1.0},
                        {Scheme::kMuP, ParameterRole::kWeight, 1.0},
                        {Scheme::kMuP, ParameterRole::kInput, 2.5},
                        {Scheme::kUMuP, ParameterRole::kWeight, 1 / std::sqrt(8.0)},
                        {Scheme::kUMuP, ParameterRole::kInput, 1 / std::sqrt(8.0)}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(scheme_name(c.scheme)) + " " + std::string(parameter_role_name(c.role)));
    Harness h(c.scheme, {.mup_input_multiplier = 2.5});
    const LinearConfig config{.in = 8, .out = 6, .bias = true, .role = c.role};
    set_base_shapes(h.parametrization, [&](Model& base) {
      Linear(base, "lin", {.in = c.role == ParameterRole::kInput ? 8 : 4, .out = 3, .bias = true,
                           .role = c.role});
    });
    const Linear lin(h.model, "lin", config);
    const Value x = h.graph.input("x", {3, 2, 8});
    const Value y = lin(x);
    EXPECT_EQ(y.shape(), (Shape{3, 2, 6}));
    std::mt19937 rng(1);
    const Tensor xt = random_normal({3, 2, 8}, rng);
    const Tensor bias = random_normal({6}, rng);
    Session run(h, {y});
    run.exec.set_state(lin.bias(), bias);
    run.exec.bind(x, xt);
    run.exec.run();
    const Vec b = to_vec(bias);
    expect_near_all(to_vec(run.exec.get(y)),
                    linear_ref(to_vec(xt), 8, run.param(lin.weight()), 6, &b, c.expected_mult),
                    1e-5, "linear");
  }
}

// The gradient a unit-scaled linear sends back: β_x = 1/√in under to_output_scale, 1/√out
// unconstrained (arXiv 2303.11257).
TEST(LinearModule, UnitScaledInputGradientFollowsTheConstraint) {
  for (const Constraint constraint : {Constraint::kToOutputScale, Constraint::kNone}) {
    Harness h(Scheme::kUMuP);
    const Linear lin(h.model, "lin", {.in = 8, .out = 32, .constraint = constraint});
    const Value x = h.graph.input("x", {4, 8});
    const Value g = h.graph.input("g", {4, 32});
    const Value y = lin(x);
    const Value wrt[] = {x};
    const Value dx = autodiff(h.graph, y, wrt, {.seed = g})[0];
    std::mt19937 rng(2);
    const Tensor xt = random_normal({4, 8}, rng), gt = random_normal({4, 32}, rng);
    Session run(h, {dx});
    run.exec.bind(x, xt);
    run.exec.bind(g, gt);
    run.exec.run();
    const Vec w = run.param(lin.weight());
    const double beta = constraint == Constraint::kNone ? 1 / std::sqrt(32.0) : 1 / std::sqrt(8.0);
    Vec expected(32, 0.0);
    for (int r = 0; r < 4; ++r) {
      for (int i = 0; i < 8; ++i) {
        double acc = 0;
        for (int o = 0; o < 32; ++o) acc += gt[r * 32 + o] * w[static_cast<std::size_t>(o * 8 + i)];
        expected[static_cast<std::size_t>(r * 8 + i)] = beta * acc;
      }
    }
    expect_near_all(to_vec(run.exec.get(dx)), expected, 1e-5, "dx");
  }
}

TEST(LinearModule, ClearErrors) {
  Harness h(Scheme::kUMuP);
  EXPECT_THAT([&] { Linear(h.model, "bad", {.in = 0, .out = 4}); },
              ThrowsMessage<Error>(HasSubstr("Linear 'bad': in must be at least 1, got 0")));
  EXPECT_THAT([&] { Linear(h.model, "out", {.in = 4, .out = 4, .role = ParameterRole::kOutput}); },
              ThrowsMessage<Error>(HasSubstr("role must be weight or input, got output")));
  const Linear lin(h.model, "lin", {.in = 4, .out = 4});
  const Value x = h.graph.input("x", {2, 5});
  EXPECT_THAT([&] { lin(x); },
              ThrowsMessage<Error>(HasSubstr("Linear 'lin': input [2, 5] does not match: expected [..., 4]")));
  Graph other(Scaling::kUnit);
  const Value foreign = other.input("x", {2, 4});
  EXPECT_THAT([&] { lin(foreign); }, ThrowsMessage<Error>(HasSubstr("another graph")));
  EXPECT_THAT([&] { Linear(h.model, "lin", {.in = 4, .out = 4}); },
              ThrowsMessage<Error>(HasSubstr("'lin.weight' is defined twice")));
}

// ---- LinearReadout ------------------------------------------------------------------------------

TEST(LinearReadoutModule, MetadataAndForwardMultiplier) {
  // u-μP: α = 1/fan_in; μP: α_out/m_w with m_w = 8/4 = 2 against the base; SP: 1.
  const std::pair<Scheme, double> cases[] = {
      {Scheme::kSP, 1.0}, {Scheme::kMuP, 3.0 / 2.0}, {Scheme::kUMuP, 1.0 / 8.0}};
  for (const auto& [scheme, mult] : cases) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.mup_output_multiplier = 3.0});
    set_base_shapes(h.parametrization,
                    [](Model& base) { LinearReadout(base, "readout", {.in = 4, .out = 10}); });
    const LinearReadout readout(h.model, "readout", {.in = 8, .out = 10});
    expect_info(h, readout.weight(), "readout.weight", {10, 8}, ParameterRole::kOutput, 8, 10, {1},
                std::nullopt);
    const Value x = h.graph.input("x", {5, 8});
    const Value y = readout(x);
    std::mt19937 rng(3);
    const Tensor xt = random_normal({5, 8}, rng);
    Session run(h, {y});
    run.exec.bind(x, xt);
    run.exec.run();
    expect_near_all(to_vec(run.exec.get(y)),
                    linear_ref(to_vec(xt), 8, run.param(readout.weight()), 10, nullptr, mult), 1e-5,
                    "readout");
    if (scheme == Scheme::kMuP) {
      // μP keeps the base model's init for the readout: std 1/√(3·4), PyTorch-uniform.
      EXPECT_NEAR(h.model.rule(readout.weight()).init_std, 1 / std::sqrt(12.0), 1e-12);
    }
  }
}

// ---- Embedding ----------------------------------------------------------------------------------

TEST(EmbeddingModule, LooksUpRowsTimesTheMultiplier) {
  const std::pair<Scheme, double> cases[] = {
      {Scheme::kSP, 1.0}, {Scheme::kMuP, 2.0}, {Scheme::kUMuP, 1.0}};
  for (const auto& [scheme, mult] : cases) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.mup_input_multiplier = 2.0});
    set_base_shapes(h.parametrization,
                    [](Model& base) { Embedding(base, "embedding", {.vocab = 11, .width = 3}); });
    const Embedding embed(h.model, "embedding", {.vocab = 11, .width = 6});
    expect_info(h, embed.weight(), "embedding.weight", {11, 6}, ParameterRole::kEmbedding, 11, 6,
                {1}, std::nullopt);
    const Value ids = h.graph.input("ids", {2, 3}, DType::kI32);
    const Value y = embed(ids);
    EXPECT_EQ(y.shape(), (Shape{2, 3, 6}));
    std::mt19937 rng(4);
    const Tensor id_values = random_ids({2, 3}, 11, rng);
    Session run(h, {y});
    run.exec.bind(ids, id_values);
    run.exec.run();
    const Vec table = run.param(embed.weight());
    Vec expected;
    for (const std::int32_t id : id_values.span_as<std::int32_t>()) {
      for (int c = 0; c < 6; ++c) expected.push_back(mult * table[static_cast<std::size_t>(id * 6 + c)]);
    }
    expect_near_all(to_vec(run.exec.get(y)), expected, 1e-6, "embedding");
  }
  Harness h(Scheme::kUMuP);
  const Embedding embed(h.model, "tok", {.vocab = 4, .width = 2});
  const Value float_ids = h.graph.input("ids", {3});
  EXPECT_THAT([&] { embed(float_ids); },
              ThrowsMessage<Error>(HasSubstr("Embedding 'tok': ids [3] must be i32 token ids, got f32")));
}

// ---- norms --------------------------------------------------------------------------------------

TEST(NormModules, AffineParametersAndForward) {
  for (const Scheme scheme : kSchemes) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.residual_blocks = 1});
    const auto build = [](Model& m, std::int64_t width) {
      LayerNorm(m, "ln", {.width = width, .affine = true, .depth = 0});
      RmsNorm(m, "rms", {.width = width, .affine = true, .eps = 1e-3, .depth = 0});
    };
    set_base_shapes(h.parametrization, [&](Model& base) { build(base, 3); });
    const LayerNorm ln(h.model, "ln", {.width = 6, .affine = true, .depth = 0});
    const RmsNorm rms(h.model, "rms", {.width = 6, .affine = true, .eps = 1e-3, .depth = 0});
    const RmsNorm plain(h.model, "plain", {.width = 6});
    EXPECT_FALSE(plain.weight().present());
    expect_info(h, ln.weight(), "ln.weight", {6}, ParameterRole::kNorm, 6, 6, {0}, 0);
    expect_info(h, ln.bias(), "ln.bias", {6}, ParameterRole::kBias, 6, 6, {0}, 0);
    expect_info(h, rms.weight(), "rms.weight", {6}, ParameterRole::kNorm, 6, 6, {0}, 0);
    EXPECT_EQ(h.model.parameters().size(), 3u);

    const Value x = h.graph.input("x", {4, 6});
    const Value y_ln = ln(x), y_rms = rms(x), y_plain = plain(x);
    std::mt19937 rng(5);
    const Tensor xt = random_normal({4, 6}, rng, 3.0);
    const Tensor w = random_normal({6}, rng), b = random_normal({6}, rng), w2 = random_normal({6}, rng);
    Session run(h, {y_ln, y_rms, y_plain});
    // The gains initialise to 1 and the shift to 0 in every scheme.
    EXPECT_THAT(run.param(ln.weight()), ::testing::Each(1.0));
    EXPECT_THAT(run.param(ln.bias()), ::testing::Each(0.0));
    run.exec.set_state(ln.weight(), w);
    run.exec.set_state(ln.bias(), b);
    run.exec.set_state(rms.weight(), w2);
    run.exec.bind(x, xt);
    run.exec.run();
    const Vec wv = to_vec(w), bv = to_vec(b), w2v = to_vec(w2);
    expect_near_all(to_vec(run.exec.get(y_ln)), layer_norm_ref(to_vec(xt), 6, &wv, &bv, 1e-5), 1e-5,
                    "layer_norm");
    expect_near_all(to_vec(run.exec.get(y_rms)), rms_norm_ref(to_vec(xt), 6, &w2v, 1e-3), 1e-5,
                    "rms_norm");
    expect_near_all(to_vec(run.exec.get(y_plain)), rms_norm_ref(to_vec(xt), 6, nullptr, 1e-5), 1e-5,
                    "rms_norm without affine");
  }
  Harness h(Scheme::kSP);
  EXPECT_THAT([&] { RmsNorm(h.model, "n", {.width = 4, .eps = -1.0}); },
              ThrowsMessage<Error>(HasSubstr("RmsNorm 'n': eps must be finite and at least 0")));
}

// ---- attention ----------------------------------------------------------------------------------

TEST(AttentionModule, ForwardMatchesReferenceUnderEveryScheme) {
  constexpr std::int64_t kBatch = 2, kSeq = 5, kWidth = 8, kHeads = 2, kD = 4;
  for (const Scheme scheme : kSchemes) {
    for (const double alpha_attn : {1.0, 4.0}) {
      SCOPED_TRACE(std::string(scheme_name(scheme)) + " α_attn " + std::to_string(alpha_attn));
      Harness h(scheme, {.residual_blocks = 1});
      const SelfAttentionConfig config{
          .width = kWidth, .heads = kHeads, .depth = 0, .attn_softmax_mult = alpha_attn};
      set_base_shapes(h.parametrization, [&](Model& base) {
        MultiHeadSelfAttention(base, "attn", {.width = 4, .heads = 1, .depth = 0});
      });
      const MultiHeadSelfAttention attn(h.model, "attn", config);
      expect_info(h, attn.qkv().weight(), "attn.qkv.weight", {24, 8}, ParameterRole::kWeight, 8, 24,
                  {0, 1}, 0);
      expect_info(h, attn.out().weight(), "attn.out.weight", {8, 8}, ParameterRole::kWeight, 8, 8,
                  {0, 1}, 0);
      const Value x = h.graph.input("x", {kBatch, kSeq, kWidth});
      const Value y = attn(x);
      EXPECT_EQ(y.shape(), (Shape{kBatch, kSeq, kWidth}));
      std::mt19937 rng(6);
      const Tensor xt = random_normal({kBatch, kSeq, kWidth}, rng);
      Session run(h, {y});
      run.exec.bind(x, xt);
      run.exec.run();

      const bool unit = scheme == Scheme::kUMuP;
      // Logit scale: 1/√d (SP), 1/d (μP, u-μP), times α_attn.
      const double s = scheme == Scheme::kSP ? 1 / std::sqrt(double{kD}) : 1 / double{kD};
      const double logit = alpha_attn * s;
      const double sigma = unit ? causal_attention_scale(kD, kSeq, logit * kD) : 1.0;
      const double lin = unit ? 1 / std::sqrt(double{kWidth}) : 1.0;
      expect_near_all(to_vec(run.exec.get(y)),
                      attention_ref(to_vec(xt), kBatch, kSeq, kWidth, kHeads,
                                    run.param(attn.qkv().weight()), run.param(attn.out().weight()),
                                    lin, logit, sigma),
                      2e-5, "attention");
      EXPECT_NEAR(attn.op_mult(), logit * kD, 1e-12);
    }
  }
}

TEST(AttentionModule, LogitScaleOverrideAndErrors) {
  Harness h(Scheme::kMuP);
  set_base_shapes(h.parametrization, [](Model& base) {
    MultiHeadSelfAttention(base, "attn", {.width = 8, .heads = 2});
  });
  // μP with the 1/√d_head logits of the experiments' fixed-head-dim setup.
  const MultiHeadSelfAttention attn(
      h.model, "attn", {.width = 8, .heads = 2, .attention_logit_scale = 0.5});
  EXPECT_DOUBLE_EQ(attn.logit_scale(), 0.5);
  EXPECT_DOUBLE_EQ(attn.op_mult(), 0.5 * 4);
  const Value x = h.graph.input("x", {1, 3, 8});
  attn(x);
  double recorded = -1;
  for (const Node& node : h.graph.nodes()) {
    if (node.op->name == "scaled_dot_product_attention") {
      recorded = node.attrs.get_double("scaled_dot_product_attention", "mult");
    }
  }
  EXPECT_DOUBLE_EQ(recorded, 2.0);

  Harness u(Scheme::kUMuP);
  EXPECT_THAT([&] { MultiHeadSelfAttention(u.model, "a", {.width = 10, .heads = 3}); },
              ThrowsMessage<Error>(HasSubstr("MultiHeadSelfAttention 'a': width 10 is not divisible by heads 3")));
  EXPECT_TRUE(u.model.parameters().empty());  // nothing recorded before the check
  const MultiHeadSelfAttention ok(u.model, "ok", {.width = 8, .heads = 2});
  const Value flat = u.graph.input("flat", {3, 8});
  EXPECT_THAT([&] { ok(flat); }, ThrowsMessage<Error>(HasSubstr("must be [batch, seq, 8]")));
}

// ---- MLPs ---------------------------------------------------------------------------------------

TEST(MlpModules, SwiGluAndGeluForwardUnderEveryScheme) {
  constexpr std::int64_t kWidth = 6, kExp = 2, kHidden = kWidth * kExp;
  for (const Scheme scheme : kSchemes) {
    for (const double m : {1.0, 3.0}) {
      SCOPED_TRACE(std::string(scheme_name(scheme)) + " mult " + std::to_string(m));
      Harness h(scheme, {.residual_blocks = 2});
      const MlpConfig config{.width = kWidth, .expansion = kExp, .depth = 1, .ffn_act_mult = m};
      set_base_shapes(h.parametrization, [&](Model& base) {
        SwiGluMlp(base, "swiglu", {.width = 3, .expansion = kExp, .depth = 1});
        GeluMlp(base, "gelu", {.width = 3, .expansion = kExp, .depth = 1});
      });
      const SwiGluMlp swiglu(h.model, "swiglu", config);
      const GeluMlp gelu_mlp(h.model, "gelu", config);
      EXPECT_THAT(parameter_names(h.model),
                  ElementsAre("swiglu.up.weight", "swiglu.gate.weight", "swiglu.down.weight",
                              "gelu.up.weight", "gelu.down.weight"));
      expect_info(h, swiglu.down().weight(), "swiglu.down.weight", {kWidth, kHidden},
                  ParameterRole::kWeight, kHidden, kWidth, {0, 1}, 1);
      const Value x = h.graph.input("x", {5, kWidth});
      const Value y_swiglu = swiglu(x), y_gelu = gelu_mlp(x);
      std::mt19937 rng(7);
      const Tensor xt = random_normal({5, kWidth}, rng);
      Session run(h, {y_swiglu, y_gelu});
      run.exec.bind(x, xt);
      run.exec.run();

      const bool unit = scheme == Scheme::kUMuP;
      const double up_alpha = unit ? 1 / std::sqrt(double{kWidth}) : 1.0;
      const double down_alpha = unit ? 1 / std::sqrt(double{kHidden}) : 1.0;
      expect_near_all(to_vec(run.exec.get(y_swiglu)),
                      swiglu_ref(to_vec(xt), kWidth, kHidden, run.param(swiglu.up().weight()),
                                 run.param(swiglu.gate().weight()),
                                 run.param(swiglu.down().weight()), up_alpha, down_alpha, m,
                                 unit ? silu_glu_scale(m) : 1.0),
                      2e-5, "swiglu");
      Vec hidden = linear_ref(to_vec(xt), kWidth, run.param(gelu_mlp.up().weight()), kHidden,
                              nullptr, up_alpha);
      for (double& v : hidden) v = (unit ? gelu_alpha(m) : 1.0) * v * normal_cdf(m * v);
      expect_near_all(to_vec(run.exec.get(y_gelu)),
                      linear_ref(hidden, kHidden, run.param(gelu_mlp.down().weight()), kWidth,
                                 nullptr, down_alpha),
                      2e-5, "gelu mlp");
    }
  }
  Harness h(Scheme::kSP);
  EXPECT_THAT([&] { SwiGluMlp(h.model, "m", {.width = 4, .ffn_act_mult = 0.0}); },
              ThrowsMessage<Error>(HasSubstr("SwiGluMlp 'm': ffn_act_mult must be finite and positive, got 0")));
}

// ---- TransformerLayer ---------------------------------------------------------------------------

TEST(TransformerLayerModule, ForwardMatchesComposedReference) {
  constexpr std::int64_t kBatch = 2, kSeq = 4, kWidth = 8, kHeads = 2, kHidden = 16;
  const UmupHyperparameters hp{.ffn_act_mult = 2.0,
                               .attn_softmax_mult = 3.0,
                               .residual_mult = 0.5,
                               .residual_attn_ratio = 2.0};
  for (const Scheme scheme : kSchemes) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.residual_blocks = 3});
    const TransformerLayerConfig config{
        .width = kWidth, .heads = kHeads, .hyperparameters = hp, .index = 1, .layers = 3};
    set_base_shapes(h.parametrization, [&](Model& base) {
      TransformerLayer(base, "layer", {.width = 4, .heads = 1, .hyperparameters = hp, .index = 1,
                                       .layers = 3});
    });
    const TransformerLayer layer(h.model, "layer", config);
    EXPECT_THAT(parameter_names(h.model),
                ElementsAre("layer.attn.qkv.weight", "layer.attn.out.weight",
                            "layer.mlp.up.weight", "layer.mlp.gate.weight",
                            "layer.mlp.down.weight"));
    for (const ModelParameter& p : h.model.parameters()) {
      EXPECT_EQ(info_of(h, p.value).depth, std::optional<int>(1)) << p.rule.name;
    }
    EXPECT_NEAR(layer.tau_attention(), tau_ref(3, 2, 0.5, 2.0), 1e-12);
    EXPECT_NEAR(layer.tau_mlp(), tau_ref(3, 3, 0.5, 2.0), 1e-12);

    const Value x = h.graph.input("x", {kBatch, kSeq, kWidth});
    const Value y = layer(x);
    std::mt19937 rng(8);
    const Tensor xt = random_normal({kBatch, kSeq, kWidth}, rng);
    Session run(h, {y});
    run.exec.bind(x, xt);
    run.exec.run();

    const bool unit = scheme == Scheme::kUMuP;
    const double d = double{kWidth / kHeads};
    const double logit = hp.attn_softmax_mult * (scheme == Scheme::kSP ? 1 / std::sqrt(d) : 1 / d);
    const double lin = unit ? 1 / std::sqrt(double{kWidth}) : 1.0;
    const Vec x0 = to_vec(xt);
    const Vec attn = attention_ref(
        rms_norm_ref(x0, kWidth, nullptr, kDefaultNormEps), kBatch, kSeq, kWidth, kHeads,
        run.param(layer.attention().qkv().weight()), run.param(layer.attention().out().weight()),
        lin, logit, unit ? causal_attention_scale(kWidth / kHeads, kSeq, logit * d) : 1.0);
    const Vec x1 = residual_ref(x0, attn, tau_ref(3, 2, 0.5, 2.0), unit);
    const Vec mlp = swiglu_ref(rms_norm_ref(x1, kWidth, nullptr, kDefaultNormEps), kWidth, kHidden,
                               run.param(h.model.parameters()[2].value),
                               run.param(h.model.parameters()[3].value),
                               run.param(h.model.parameters()[4].value), lin,
                               unit ? 1 / std::sqrt(double{kHidden}) : 1.0, hp.ffn_act_mult,
                               unit ? silu_glu_scale(hp.ffn_act_mult) : 1.0);
    expect_near_all(to_vec(run.exec.get(y)),
                    residual_ref(x1, mlp, tau_ref(3, 3, 0.5, 2.0), unit), 3e-5, "layer");
  }
}

// In a unit-scaled layer the attention projections are constrained to the output scale and the
// MLP's three linears unconstrained, so each linear's (α, β_x) is (1/√in, 1/√in) or
// (1/√in, 1/√out) (arXiv 2303.11257 §5.1; ratios cancel along the MLP branch).
TEST(TransformerLayerModule, UnitScaledLinearsHaveTheirConstraints) {
  Harness h(Scheme::kUMuP, {.residual_blocks = 1});
  const TransformerLayer layer(h.model, "layer", {.width = 16, .heads = 2, .mlp_expansion = 4});
  layer(h.graph.input("x", {2, 3, 16}));
  std::vector<std::pair<double, double>> scales;  // (α, β_x) per linear, in recording order
  for (const Node& node : h.graph.nodes()) {
    if (node.op->name != "linear") continue;
    EXPECT_EQ(node.attrs.get_enum<Constraint>("linear", "constraint"),
              scales.size() < 2 ? Constraint::kToOutputScale : Constraint::kNone);
    scales.emplace_back(node.attrs.get_double("linear", "alpha"),
                        node.attrs.get_double("linear", "beta_x"));
  }
  const double r16 = 1 / std::sqrt(16.0), r64 = 1 / std::sqrt(64.0);
  ASSERT_EQ(scales.size(), 5u);  // qkv, out, up, gate, down
  const std::pair<double, double> expected[] = {{r16, r16}, {r16, r16}, {r16, r64}, {r16, r64}, {r64, r16}};
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(scales[i].first, expected[i].first, 1e-7) << "linear " << i;
    EXPECT_NEAR(scales[i].second, expected[i].second, 1e-7) << "linear " << i;
  }
  Harness wrong(Scheme::kUMuP, {.residual_blocks = 2});
  EXPECT_THAT([&] { TransformerLayer(wrong.model, "l", {.width = 16, .heads = 2}); },
              ThrowsMessage<Error>(HasSubstr("a u-muP model of 1 layers needs a parametrization "
                                             "with residual_blocks = 1")));
}

// The input gradient of a layer is the exact gradient of its forward in every scheme: in a
// unit-scaled graph the residual ops weight the branch in the backward pass and every op inside
// the branch has β/α ratios that cancel (arXiv 2303.11257 §5.1), so no constant is left over.
// Checked against a central difference of Σ g·y along a random direction.
TEST(TransformerLayerModule, InputGradientIsTheTrueGradient) {
  constexpr std::int64_t kBatch = 2, kSeq = 4, kWidth = 8;
  for (const Scheme scheme : kSchemes) {
    for (const MlpKind mlp : {MlpKind::kSwiGlu, MlpKind::kGelu}) {
      SCOPED_TRACE(std::string(scheme_name(scheme)));
      Harness h(scheme, {.residual_blocks = 2});
      const TransformerLayerConfig config{
          .width = kWidth, .heads = 2, .mlp = mlp, .index = 1, .layers = 2};
      set_base_shapes(h.parametrization, [&](Model& base) {
        TransformerLayer(base, "layer", {.width = 4, .heads = 1, .mlp = mlp, .index = 1, .layers = 2});
      });
      const TransformerLayer layer(h.model, "layer", config);
      const Value x = h.graph.input("x", {kBatch, kSeq, kWidth});
      const Value g = h.graph.input("g", {kBatch, kSeq, kWidth});
      const Value y = layer(x);
      const Value wrt[] = {x};
      const Value dx = autodiff(h.graph, y, wrt, {.seed = g})[0];
      std::mt19937 rng(13);
      Tensor xt = random_normal({kBatch, kSeq, kWidth}, rng);
      const Tensor gt = random_normal({kBatch, kSeq, kWidth}, rng);
      const Tensor direction = random_normal({kBatch, kSeq, kWidth}, rng);
      Session run(h, {y, dx});
      run.exec.bind(x, xt);
      run.exec.bind(g, gt);
      run.exec.run();
      double analytic = 0;
      for (std::int64_t i = 0; i < xt.numel(); ++i) {
        analytic += double{run.exec.get(dx).data()[i]} * direction[i];
      }
      const Tensor x0 = xt;
      const auto objective = [&](double step) {
        for (std::int64_t i = 0; i < xt.numel(); ++i) {
          xt[i] = static_cast<float>(x0[i] + step * direction[i]);
        }
        run.exec.run();
        double total = 0;
        for (std::int64_t i = 0; i < xt.numel(); ++i) total += double{run.exec.get(y).data()[i]} * gt[i];
        return total;
      };
      const double eps = 1e-2;
      const double numeric = (objective(eps) - objective(-eps)) / (2 * eps);
      EXPECT_NEAR(analytic, numeric, 5e-3 * std::max(1.0, std::abs(numeric)));
    }
  }
}

TEST(TransformerLayerModule, TauRuleMatchesTheReferenceTestVector) {
  // (α_res, r, L) = (1, 1, 4): τ_i = 1/√(4+i).
  Harness h(Scheme::kSP);
  for (int i = 0; i < 4; ++i) {
    const TransformerLayer layer(h.model, fmt::format("l{}", i),
                                 {.width = 4, .heads = 1, .index = i, .layers = 4});
    EXPECT_NEAR(layer.tau_attention(), 1 / std::sqrt(4.0 + 2 * i), 1e-12);
    EXPECT_NEAR(layer.tau_mlp(), 1 / std::sqrt(5.0 + 2 * i), 1e-12);
  }
  EXPECT_THAT([&] { TransformerLayer(h.model, "bad", {.width = 4, .index = 2, .layers = 2}); },
              ThrowsMessage<Error>(HasSubstr("TransformerLayer 'bad': index 2 must be in [0, layers)")));
}

// ---- TransformerDecoder -------------------------------------------------------------------------

DecoderConfig small_decoder() {
  return {.vocab = 256, .width = 32, .depth = 2, .heads = 2};
}

TEST(TransformerDecoderModule, ParameterNamesShapesAndMetadata) {
  for (const Scheme scheme : kSchemes) {
    SCOPED_TRACE(std::string(scheme_name(scheme)));
    Harness h(scheme, {.residual_blocks = 2});
    DecoderConfig config = small_decoder();
    config.norm_affine = true;
    DecoderConfig base = config;
    base.width = 16;
    base.heads = 1;
    TransformerDecoder::set_base_shapes(h.parametrization, base);
    const TransformerDecoder decoder(h.model, "", config);
    std::vector<std::string> expected = {"embedding.weight"};
    for (int i = 0; i < 2; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      for (const char* leaf : {"attn_norm.weight", "attn.qkv.weight", "attn.out.weight",
                               "mlp_norm.weight", "mlp.up.weight", "mlp.gate.weight",
                               "mlp.down.weight"}) {
        expected.push_back(p + leaf);
      }
    }
    expected.push_back("final_norm.weight");
    expected.push_back("readout.weight");
    EXPECT_EQ(parameter_names(h.model), expected);
    const auto& params = h.model.parameters();
    expect_info(h, params[0].value, "embedding.weight", {256, 32}, ParameterRole::kEmbedding, 256,
                32, {1}, std::nullopt);
    expect_info(h, params[8].value, "layers.1.attn_norm.weight", {32}, ParameterRole::kNorm, 32, 32,
                {0}, 1);
    expect_info(h, params[14].value, "layers.1.mlp.down.weight", {32, 64}, ParameterRole::kWeight,
                64, 32, {0, 1}, 1);
    expect_info(h, params[16].value, "readout.weight", {256, 32}, ParameterRole::kOutput, 32, 256,
                {1}, std::nullopt);
    if (scheme == Scheme::kMuP) {
      EXPECT_NEAR(h.model.rule(params[16].value).multiplier, 0.5, 1e-12);  // 1/m_w, m_w = 2
      EXPECT_NEAR(h.model.rule(params[14].value).adam_lr_factor, 0.5, 1e-12);  // 1/m_in
    }
    if (scheme == Scheme::kUMuP) {
      EXPECT_NEAR(h.model.rule(params[14].value).adam_lr_factor, 1 / std::sqrt(2.0) / 8.0, 1e-12);
    }
  }
}

TEST(TransformerDecoderModule, UmupLossAtInitIsNearLnVocab) {
  Harness h(Scheme::kUMuP, {.residual_blocks = 2});
  const TransformerDecoder decoder(h.model, "", small_decoder());
  const Value ids = h.graph.input("ids", {2, 16}, DType::kI32);
  const Value targets = h.graph.input("targets", {2, 16}, DType::kI32);
  const Value loss = decoder.loss(ids, targets);
  EXPECT_EQ(loss.shape(), Shape{});
  const Value logits = decoder.logits(ids);
  std::mt19937 rng(9);
  const Tensor id_values = random_ids({2, 16}, 256, rng), target_values = random_ids({2, 16}, 256, rng);
  Session run(h, {loss, logits});
  run.exec.bind(ids, id_values);
  run.exec.bind(targets, target_values);
  run.exec.run();
  // Logits α = 1/width on unit activations have std 1/√width, so the loss is ln V plus about
  // var/2 = 1/64.
  EXPECT_NEAR(run.exec.get(loss).data()[0], std::log(256.0), 0.05);
  // And it is the mean cross-entropy of the logits, computed here in double.
  const ConstTensorView z = run.exec.get(logits);
  double total = 0;
  for (int t = 0; t < 32; ++t) {
    double top = -INFINITY, sum = 0;
    for (int v = 0; v < 256; ++v) top = std::max(top, double{z.data()[t * 256 + v]});
    for (int v = 0; v < 256; ++v) sum += std::exp(z.data()[t * 256 + v] - top);
    total += top + std::log(sum) - z.data()[t * 256 + target_values.data_as<std::int32_t>()[t]];
  }
  EXPECT_NEAR(run.exec.get(loss).data()[0], total / 32, 1e-4);
}

// Each hyperparameter reaches its op: the recorded attribute changes, and so does the loss.
TEST(TransformerDecoderModule, HyperparametersReachTheOps) {
  struct Recorded {
    std::vector<double> act, attn, tau;
    double loss_mult = 0;
    float loss = 0;
  };
  const auto record = [](Scheme scheme, const UmupHyperparameters& hp) {
    Harness h(scheme, {.residual_blocks = 2});
    DecoderConfig config = small_decoder();
    config.hyperparameters = hp;
    DecoderConfig base = config;
    base.width = 16;
    TransformerDecoder::set_base_shapes(h.parametrization, base);
    const TransformerDecoder decoder(h.model, "", config);
    const Value ids = h.graph.input("ids", {2, 8}, DType::kI32);
    const Value loss = decoder.loss(ids, ids);
    Recorded r;
    for (const Node& node : h.graph.nodes()) {
      const std::string op(node.op->name);
      if (op == "silu_glu") r.act.push_back(node.attrs.get_double(op, "mult"));
      if (op == "scaled_dot_product_attention") r.attn.push_back(node.attrs.get_double(op, "mult"));
      if (op == "residual_add") r.tau.push_back(node.attrs.get_double(op, "tau"));
      if (op == "cross_entropy") r.loss_mult = node.attrs.get_double(op, "mult");
    }
    std::mt19937 rng(10);
    const Tensor id_values = random_ids({2, 8}, 256, rng);
    Session run(h, {loss});
    run.exec.bind(ids, id_values);
    run.exec.run();
    r.loss = run.exec.get(loss).data()[0];
    return r;
  };
  const UmupHyperparameters hp{.ffn_act_mult = 3.0,
                               .attn_softmax_mult = 4.0,
                               .residual_mult = 2.0,
                               .residual_attn_ratio = 0.25,
                               .loss_softmax_mult = 0.5};
  const Recorded r = record(Scheme::kUMuP, hp);
  EXPECT_THAT(r.act, ElementsAre(3.0, 3.0));
  EXPECT_THAT(r.attn, ElementsAre(4.0, 4.0));  // 1/d_head logits: mult = α_attn
  ASSERT_EQ(r.tau.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.tau[static_cast<std::size_t>(i)], tau_ref(2, i, 2.0, 0.25), 1e-12);
  EXPECT_EQ(r.loss_mult, 0.5);
  // SP: 1/√d_head logits, so the op's mult is α_attn·√d_head.
  EXPECT_THAT(record(Scheme::kSP, hp).attn, ElementsAre(4.0 * 4.0, 4.0 * 4.0));

  // Changing any one of them changes the u-μP loss.
  const float base_loss = record(Scheme::kUMuP, {}).loss;
  UmupHyperparameters one;
  for (double UmupHyperparameters::*field :
       {&UmupHyperparameters::ffn_act_mult, &UmupHyperparameters::attn_softmax_mult,
        &UmupHyperparameters::residual_mult, &UmupHyperparameters::residual_attn_ratio,
        &UmupHyperparameters::loss_softmax_mult}) {
    one = {};
    one.*field = 4.0;
    EXPECT_GT(std::abs(record(Scheme::kUMuP, one).loss - base_loss), 1e-4);
  }
}

TEST(TransformerDecoderModule, ClearErrors) {
  Harness wrong_blocks(Scheme::kUMuP, {.residual_blocks = 3});
  EXPECT_THAT([&] { TransformerDecoder(wrong_blocks.model, "", small_decoder()); },
              ThrowsMessage<Error>(HasSubstr("a u-muP model of 2 layers needs a parametrization "
                                             "with residual_blocks = 2")));
  EXPECT_TRUE(wrong_blocks.model.parameters().empty());
  Harness h(Scheme::kSP);
  DecoderConfig config = small_decoder();
  config.heads = 3;
  EXPECT_THAT([&] { TransformerDecoder(h.model, "lm", config); },
              ThrowsMessage<Error>(HasSubstr("TransformerDecoder 'lm': width 32 is not divisible by heads 3")));
  config = small_decoder();
  config.hyperparameters.residual_mult = 0.0;
  EXPECT_THAT([&] { TransformerDecoder(h.model, "lm", config); },
              ThrowsMessage<Error>(HasSubstr("hyperparameter residual_mult must be finite and positive")));
  const TransformerDecoder decoder(h.model, "", small_decoder());
  const Value ids = h.graph.input("ids", {2, 4}, DType::kI32);
  const Value short_targets = h.graph.input("t", {2, 3}, DType::kI32);
  EXPECT_THAT([&] { decoder.loss(ids, short_targets); },
              ThrowsMessage<Error>(HasSubstr("targets [2, 3] must be i32 of the ids' shape [2, 4]")));
}

// ---- MlpClassifier ------------------------------------------------------------------------------

TEST(MlpClassifierModule, ParametersForwardAndLoss) {
  for (const Scheme scheme : kSchemes) {
    for (const ClassifierActivation act : {ClassifierActivation::kGelu, ClassifierActivation::kRelu}) {
      SCOPED_TRACE(std::string(scheme_name(scheme)));
      Harness h(scheme);
      const MlpClassifierConfig config{.inputs = 7,
                                       .hidden = {12, 12},
                                       .classes = 5,
                                       .activation = act,
                                       .bias = true,
                                       .hyperparameters = {.ffn_act_mult = 2.0}};
      MlpClassifierConfig base = config;
      base.hidden = {6, 6};
      MlpClassifier::set_base_shapes(h.parametrization, base);
      const MlpClassifier mlp(h.model, "", config);
      EXPECT_THAT(parameter_names(h.model),
                  ElementsAre("layers.0.weight", "layers.0.bias", "layers.1.weight",
                              "layers.1.bias", "readout.weight", "readout.bias"));
      const auto& p = h.model.parameters();
      expect_info(h, p[0].value, "layers.0.weight", {12, 7}, ParameterRole::kInput, 7, 12, {0},
                  std::nullopt);
      expect_info(h, p[2].value, "layers.1.weight", {12, 12}, ParameterRole::kWeight, 12, 12,
                  {0, 1}, std::nullopt);
      expect_info(h, p[4].value, "readout.weight", {5, 12}, ParameterRole::kOutput, 12, 5, {1},
                  std::nullopt);
      expect_info(h, p[5].value, "readout.bias", {5}, ParameterRole::kBias, 12, 5, {},
                  std::nullopt);

      const Value x = h.graph.input("x", {4, 7});
      const Value labels = h.graph.input("labels", {4}, DType::kI32);
      const Value logits = mlp.logits(x);
      const Value loss = mlp.loss(x, labels);
      std::mt19937 rng(12);
      const Tensor xt = random_normal({4, 7}, rng), lt = random_ids({4}, 5, rng);
      Session run(h, {logits, loss});
      run.exec.bind(x, xt);
      run.exec.bind(labels, lt);
      run.exec.run();

      const bool unit = scheme == Scheme::kUMuP;
      const double mult_out = scheme == Scheme::kMuP ? 0.5 : (unit ? 1 / 12.0 : 1.0);
      Vec a = to_vec(xt);
      std::int64_t in = 7;
      for (int layer = 0; layer < 2; ++layer) {
        const Vec b = run.param(p[static_cast<std::size_t>(2 * layer + 1)].value);
        a = linear_ref(a, in, run.param(p[static_cast<std::size_t>(2 * layer)].value), 12, &b,
                       unit ? 1 / std::sqrt(double(in)) : 1.0);
        for (double& v : a) {
          v = act == ClassifierActivation::kRelu ? std::max(v, 0.0)
                                                  : (unit ? gelu_alpha(2.0) : 1.0) * v * normal_cdf(2 * v);
        }
        in = 12;
      }
      const Vec readout_bias = run.param(p[5].value);
      const Vec z = linear_ref(a, 12, run.param(p[4].value), 5, &readout_bias, mult_out);
      expect_near_all(to_vec(run.exec.get(logits)), z, 2e-5, "classifier logits");
      double total = 0;
      for (int r = 0; r < 4; ++r) {
        double sum = 0;
        for (int c = 0; c < 5; ++c) sum += std::exp(z[static_cast<std::size_t>(r * 5 + c)]);
        total += std::log(sum) - z[static_cast<std::size_t>(r * 5 + lt.data_as<std::int32_t>()[r])];
      }
      EXPECT_NEAR(run.exec.get(loss).data()[0], total / 4, 1e-5);
    }
  }
  Harness h(Scheme::kUMuP);
  EXPECT_THAT([&] { MlpClassifier(h.model, "c", {.inputs = 4, .classes = 2}); },
              ThrowsMessage<Error>(HasSubstr("MlpClassifier 'c': needs at least one hidden layer")));
}

// ---- the three schemes side by side --------------------------------------------------------------

// One hidden Linear(16 → 16) with base shape [8, 8]: SP init U std 1/√48 = 0.1443, mult 1, LR 1;
// μP init σ(8)·√(8/16) = 1/√48 too, mult 1, Adam LR 1/m_in = 0.5; u-μP init 1, mult 1/4, LR 1/4.
TEST(CompareParametrizations, OneRowPerParameterWithEachSchemesNumbers) {
  const std::string table = compare_parametrizations(
      [](Model& m) { Linear(m, "h", {.in = 16, .out = 16}); },
      [](Model& m) { Linear(m, "h", {.in = 8, .out = 8}); });
  std::istringstream lines(table);
  std::string header, row, total;
  std::getline(lines, header);
  std::getline(lines, row);
  std::getline(lines, total);
  EXPECT_THAT(header, AllOf(HasSubstr("SP"), HasSubstr("muP"), HasSubstr("u-muP")));
  std::vector<std::string> numbers;
  std::istringstream cells(row);
  for (std::string cell; cells >> cell;) {
    if (cell != "|") numbers.push_back(cell);
  }
  const std::vector<std::string> expected = {"h.weight", "weight", "[16,", "16]", "0.1443", "1",
                                             "1", "0.1443", "1", "0.5", "1", "0.25", "0.25"};
  EXPECT_EQ(numbers, expected) << row;
  EXPECT_EQ(total, "256 parameters (1 tensors)");
}

}  // namespace
}  // namespace unitscale

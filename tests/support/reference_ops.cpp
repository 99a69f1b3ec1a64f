// Double-precision reference forwards of every op (see reference_ops.hpp). Each function below is
// transcribed from the formula block in the op's header comment, quoted above it; shapes are
// checked here too (independently of the ops' shape inference), so a mismatch between the
// kernel's output shape and the documented one shows up in the comparison.
#include "reference_ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace unitscale::testing {
namespace {

using Dims = std::vector<std::int64_t>;

[[noreturn]] void fail(std::string_view op, const std::string& what) {
  throw std::invalid_argument("reference " + std::string(op) + ": " + what);
}

Dims dims_of(const Shape& s) { return Dims(s.dims().begin(), s.dims().end()); }

// The product of the first `count` dims (all by default).
std::int64_t product(const Dims& d, std::optional<std::size_t> count = std::nullopt) {
  std::int64_t n = 1;
  const std::size_t end = count.value_or(d.size());
  for (std::size_t i = 0; i < end; ++i) n *= d[i];
  return n;
}

// Row-major strides.
Dims strides_of(const Dims& d) {
  Dims s(d.size(), 1);
  for (std::size_t i = d.size(); i-- > 1;) s[i - 1] = s[i] * d[i];
  return s;
}

int resolve_axis(std::string_view op, std::int64_t axis, std::size_t rank) {
  const auto r = static_cast<std::int64_t>(rank);
  const std::int64_t a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r) fail(op, "axis " + std::to_string(axis) + " out of range");
  return static_cast<int>(a);
}

double attr_double(const Attributes& attrs, std::string_view op, std::string_view name,
                   double fallback) {
  return attrs.has(name) ? attrs.get_double(op, name) : fallback;
}
std::int64_t attr_int(const Attributes& attrs, std::string_view op, std::string_view name,
                      std::int64_t fallback) {
  return attrs.has(name) ? attrs.get_int(op, name) : fallback;
}
std::string attr_string(const Attributes& attrs, std::string_view op, std::string_view name,
                        std::string fallback) {
  return attrs.has(name) ? std::string(attrs.get_enum_name(op, name)) : fallback;
}

const RefTensor& need(std::string_view op, const RefInputs& in, std::size_t i) {
  if (i >= in.size() || !in[i]) fail(op, "input " + std::to_string(i) + " is missing");
  return *in[i];
}
const RefTensor* maybe(const RefInputs& in, std::size_t i) {
  return i < in.size() && in[i] ? &*in[i] : nullptr;
}

std::int64_t to_index(std::string_view op, double value) {
  if (!(std::floor(value) == value) || std::abs(value) > 9.0e15) {
    fail(op, "index value " + std::to_string(value) + " is not an integer");
  }
  return static_cast<std::int64_t>(value);
}

// NumPy broadcasting of two dims lists.
Dims broadcast(std::string_view op, const Dims& a, const Dims& b) {
  const std::size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) fail(op, "shapes do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// The flat index into an operand of dims `operand` (row-major strides `stride`) that multi-index
// `index` of the broadcast result (dims `out`) reads.
std::int64_t broadcast_source(const Dims& index, const Dims& out, const Dims& operand,
                              const Dims& stride) {
  const std::size_t offset = out.size() - operand.size();
  std::int64_t flat = 0;
  for (std::size_t i = 0; i < operand.size(); ++i) {
    if (operand[i] != 1) flat += index[i + offset] * stride[i];
  }
  return flat;
}

// The multi-index of flat index `flat` in dims `d`, written to `index` (resized to d's rank).
void unravel(std::int64_t flat, const Dims& d, Dims& index) {
  index.resize(d.size());
  for (std::size_t i = d.size(); i-- > 0;) {
    index[i] = d[i] == 0 ? 0 : flat % d[i];
    flat = d[i] == 0 ? 0 : flat / d[i];
  }
}

std::int64_t ravel(const Dims& index, const Dims& d) {
  std::int64_t flat = 0;
  for (std::size_t i = 0; i < d.size(); ++i) flat = flat * d[i] + index[i];
  return flat;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// ---------------------------------------------------------------------------------------------
// matmul:  out[..., M, N] = α · L[..., M, K] · R[..., K, N], batch dims broadcast as in NumPy.
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_matmul(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const RefTensor& l = need("matmul", in, 0);
  const RefTensor& r = need("matmul", in, 1);
  const Dims ld = dims_of(l.shape), rd = dims_of(r.shape);
  if (ld.size() < 2 || rd.size() < 2) fail("matmul", "operands need rank >= 2");
  const std::int64_t m = ld[ld.size() - 2], k = ld.back(), n = rd.back();
  if (rd[rd.size() - 2] != k) fail("matmul", "inner dims differ");
  const Dims lb(ld.begin(), ld.end() - 2), rb(rd.begin(), rd.end() - 2);
  const Dims ob = broadcast("matmul", lb, rb);
  Dims od = ob;
  od.push_back(m);
  od.push_back(n);
  const double alpha = attr_double(attrs, "matmul", "alpha", 1.0);
  RefTensor out{Shape(od)};
  const std::int64_t batches = product(ob);
  Dims index;
  for (std::int64_t b = 0; b < batches; ++b) {
    unravel(b, ob, index);
    const std::int64_t bl = broadcast_source(index, ob, lb, strides_of(lb));
    const std::int64_t br = broadcast_source(index, ob, rb, strides_of(rb));
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < k; ++p) s += l[(bl * m + i) * k + p] * r[(br * k + p) * n + j];
        out[(b * m + i) * n + j] = alpha * s;
      }
    }
  }
  return {out};
}

// ---------------------------------------------------------------------------------------------
// linear, linear_readout:  y = α · (x · Wᵀ + b),  x [..., in], W [out, in], b [out] (optional).
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_linear_named(std::string_view op, const RefInputs& in,
                                        const Attributes& attrs) {
  const RefTensor& x = need(op, in, 0);
  const RefTensor& w = need(op, in, 1);
  const RefTensor* b = maybe(in, 2);
  const Dims xd = dims_of(x.shape), wd = dims_of(w.shape);
  if (xd.empty() || wd.size() != 2 || wd[1] != xd.back()) fail(op, "bad shapes");
  // rows: the product of x's leading dims (not numel / fan_in, which divides by zero for in = 0,
  // where y = α·b as in the op: an empty sum).
  const std::int64_t fan_in = xd.back(), fan_out = wd[0];
  const std::int64_t rows = product(xd, xd.size() - 1);
  if (b != nullptr && (b->shape.rank() != 1 || b->numel() != fan_out)) fail(op, "bad bias");
  const double alpha = attr_double(attrs, op, "alpha", 1.0);
  Dims yd = xd;
  yd.back() = fan_out;
  RefTensor y{Shape(yd)};
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t o = 0; o < fan_out; ++o) {
      double s = b != nullptr ? (*b)[o] : 0.0;
      for (std::int64_t i = 0; i < fan_in; ++i) s += x[r * fan_in + i] * w[o * fan_in + i];
      y[r * fan_out + o] = alpha * s;
    }
  }
  return {y};
}
std::vector<RefTensor> ref_linear(const RefInputs& in, const Attributes& a, const RefContext&) {
  return ref_linear_named("linear", in, a);
}
std::vector<RefTensor> ref_linear_readout(const RefInputs& in, const Attributes& a,
                                          const RefContext&) {
  return ref_linear_named("linear_readout", in, a);
}

// ---------------------------------------------------------------------------------------------
// conv1d (cross-correlation, zero padding p, stride s, dilation d, g groups):
//   y[n, o, t] = α · (b[o] + Σ_{c,j} W[o, c, j] · x[n, c', t·s + j·d − p]),
//   c' = group(o)·C_in/g + c, x = 0 outside [0, L),  L_out = ⌊(L + 2p − d·(k − 1) − 1) / s⌋ + 1
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_conv1d(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const std::string_view op = "conv1d";
  const RefTensor& x = need(op, in, 0);
  const RefTensor& w = need(op, in, 1);
  const RefTensor* bias = maybe(in, 2);
  const std::int64_t s = attr_int(attrs, op, "stride", 1), p = attr_int(attrs, op, "padding", 0),
                     d = attr_int(attrs, op, "dilation", 1), g = attr_int(attrs, op, "groups", 1);
  const Dims xd = dims_of(x.shape), wd = dims_of(w.shape);
  if (xd.size() < 2 || wd.size() != 3) fail(op, "bad ranks");
  const std::int64_t c_in = xd[xd.size() - 2], len = xd.back();
  const std::int64_t c_out = wd[0], c_group = wd[1], k = wd[2];
  if (c_group * g != c_in || c_out % g != 0) fail(op, "groups do not match");
  const std::int64_t l_out = (len + 2 * p - d * (k - 1) - 1) / s + 1;
  if (l_out < 1) fail(op, "input shorter than the kernel");
  const std::int64_t batch = product(xd, xd.size() - 2);
  const std::int64_t out_per_group = c_out / g;
  const double alpha = attr_double(attrs, op, "alpha", 1.0);
  Dims yd = xd;
  yd[yd.size() - 2] = c_out;
  yd.back() = l_out;
  RefTensor y{Shape(yd)};
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t o = 0; o < c_out; ++o) {
      const std::int64_t group = o / out_per_group;
      for (std::int64_t t = 0; t < l_out; ++t) {
        double acc = bias != nullptr ? (*bias)[o] : 0.0;
        for (std::int64_t c = 0; c < c_group; ++c) {
          const std::int64_t channel = group * c_group + c;
          for (std::int64_t j = 0; j < k; ++j) {
            const std::int64_t pos = t * s + j * d - p;
            if (pos < 0 || pos >= len) continue;
            acc += w[(o * c_group + c) * k + j] * x[(n * c_in + channel) * len + pos];
          }
        }
        y[(n * c_out + o) * l_out + t] = alpha * acc;
      }
    }
  }
  return {y};
}

// ---------------------------------------------------------------------------------------------
// add: out = α·(a + b); mul: out = a·b (NumPy broadcasting); scale: y = α·x.
// ---------------------------------------------------------------------------------------------
template <class F>
RefTensor broadcast_binary(std::string_view op, const RefTensor& a, const RefTensor& b, F f) {
  const Dims ad = dims_of(a.shape), bd = dims_of(b.shape);
  const Dims od = broadcast(op, ad, bd);
  const Dims as = strides_of(ad), bs = strides_of(bd);
  RefTensor out{Shape(od)};
  Dims index;
  for (std::int64_t e = 0; e < out.numel(); ++e) {
    unravel(e, od, index);
    out[e] = f(a[broadcast_source(index, od, ad, as)], b[broadcast_source(index, od, bd, bs)]);
  }
  return out;
}

std::vector<RefTensor> ref_add(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const double alpha = attr_double(attrs, "add", "alpha", 1.0);
  return {broadcast_binary("add", need("add", in, 0), need("add", in, 1),
                           [alpha](double a, double b) { return alpha * (a + b); })};
}
std::vector<RefTensor> ref_mul(const RefInputs& in, const Attributes&, const RefContext&) {
  return {broadcast_binary("mul", need("mul", in, 0), need("mul", in, 1),
                           [](double a, double b) { return a * b; })};
}

template <class F>
RefTensor map_unary(const RefTensor& x, F f) {
  RefTensor y{x.shape};
  for (std::int64_t e = 0; e < x.numel(); ++e) y[e] = f(x[e]);
  return y;
}

std::vector<RefTensor> ref_scale(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const double alpha = attr_double(attrs, "scale", "alpha", 1.0);
  return {map_unary(need("scale", in, 0), [alpha](double v) { return alpha * v; })};
}

// ---------------------------------------------------------------------------------------------
// Activations (m = mult, default 1):
//   relu:      y = max(x, 0)
//   gelu:      y = α · x·Φ(m·x)
//     tanh:    y = α · ½x·(1 + tanh u),  u = √(2/π)·(m·x + 0.044715·(m·x)³)
//   silu:      y = α · x·σ(m·x)
//   silu_glu:  y = α · x·g′·σ(m·g′)
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_relu(const RefInputs& in, const Attributes&, const RefContext&) {
  return {map_unary(need("relu", in, 0), [](double v) { return v > 0 ? v : 0.0; })};
}

std::vector<RefTensor> ref_gelu(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const double m = attr_double(attrs, "gelu", "mult", 1.0);
  const double alpha = attr_double(attrs, "gelu", "alpha", 1.0);
  const std::string approximate = attr_string(attrs, "gelu", "approximate", "none");
  if (approximate == "none") {
    return {map_unary(need("gelu", in, 0), [&](double x) {
      return alpha * x * 0.5 * std::erfc(-m * x / std::numbers::sqrt2);
    })};
  }
  if (approximate == "tanh") {
    const double c = std::sqrt(2.0 / std::numbers::pi);
    return {map_unary(need("gelu", in, 0), [&](double x) {
      const double mx = m * x;
      const double u = c * (mx + 0.044715 * mx * mx * mx);
      return alpha * 0.5 * x * (1.0 + std::tanh(u));
    })};
  }
  fail("gelu", "unknown approximation " + approximate);
}

std::vector<RefTensor> ref_silu(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const double m = attr_double(attrs, "silu", "mult", 1.0);
  const double alpha = attr_double(attrs, "silu", "alpha", 1.0);
  return {map_unary(need("silu", in, 0), [&](double x) { return alpha * x * sigmoid(m * x); })};
}

std::vector<RefTensor> ref_silu_glu(const RefInputs& in, const Attributes& attrs,
                                    const RefContext&) {
  const RefTensor& x = need("silu_glu", in, 0);
  const RefTensor& gate = need("silu_glu", in, 1);
  if (x.shape != gate.shape) fail("silu_glu", "x and gate differ in shape");
  const double m = attr_double(attrs, "silu_glu", "mult", 1.0);
  const double alpha = attr_double(attrs, "silu_glu", "alpha", 1.0);
  RefTensor y{x.shape};
  for (std::int64_t e = 0; e < x.numel(); ++e) y[e] = alpha * x[e] * gate[e] * sigmoid(m * gate[e]);
  return {y};
}

// ---------------------------------------------------------------------------------------------
// softmax over the last dimension:  y = α · softmax(m·x)
// ---------------------------------------------------------------------------------------------
void softmax_row(const double* z, double* out, std::int64_t n, double scale) {
  double top = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < n; ++j) top = std::max(top, z[j]);
  double sum = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    out[j] = std::exp(z[j] - top);
    sum += out[j];
  }
  for (std::int64_t j = 0; j < n; ++j) out[j] = scale * out[j] / sum;
}

std::vector<RefTensor> ref_softmax(const RefInputs& in, const Attributes& attrs,
                                   const RefContext&) {
  const RefTensor& x = need("softmax", in, 0);
  if (x.shape.rank() < 1) fail("softmax", "rank 0");
  const double m = attr_double(attrs, "softmax", "mult", 1.0);
  const double alpha = attr_double(attrs, "softmax", "alpha", 1.0);
  const std::int64_t n = x.shape.dims().back();
  RefTensor y{x.shape};
  std::vector<double> z(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < x.numel() / n; ++r) {
    for (std::int64_t j = 0; j < n; ++j) z[static_cast<std::size_t>(j)] = m * x[r * n + j];
    softmax_row(z.data(), y.v.data() + r * n, n, alpha);
  }
  return {y};
}

// ---------------------------------------------------------------------------------------------
// dropout:  training: y_i = α · keep_i · x_i / (1 − p);  eval: y_i = α · x_i
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_dropout(const RefInputs& in, const Attributes& attrs,
                                   const RefContext& context) {
  const RefTensor& x = need("dropout", in, 0);
  const double p = attrs.get_double("dropout", "p");
  const double alpha = attr_double(attrs, "dropout", "alpha", 1.0);
  const std::string mode = attr_string(attrs, "dropout", "mode", "training");
  const auto seed = static_cast<std::uint64_t>(attr_int(attrs, "dropout", "seed", 0));
  if (mode == "eval") return {map_unary(x, [&](double v) { return alpha * v; })};
  if (mode != "training") fail("dropout", "unknown mode " + mode);
  if (p > 0 && !context.keeps) fail("dropout", "p > 0 in training needs RefContext::keeps");
  RefTensor y{x.shape};
  for (std::int64_t e = 0; e < x.numel(); ++e) {
    const bool keep = p == 0 || context.keeps(seed, e, p);
    y[e] = keep ? alpha * x[e] / (1.0 - p) : 0.0;
  }
  return {y};
}

// ---------------------------------------------------------------------------------------------
// layer_norm:  μ = mean(x), rstd = 1/√(var(x) + ε), x̂ = (x − μ)·rstd, y = α·(x̂·w + b)
// rms_norm:    rstd = 1/√(mean(x²) + ε),  x̂ = x·rstd,  y = α·x̂·w
// over the last dimension; w and b optional (1 and 0 when absent); ε = "eps", default 1e-5.
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_norm(std::string_view op, bool centre, const RefInputs& in,
                                const Attributes& attrs) {
  const RefTensor& x = need(op, in, 0);
  const RefTensor* w = maybe(in, 1);
  const RefTensor* b = centre ? maybe(in, 2) : nullptr;
  if (x.shape.rank() < 1) fail(op, "rank 0");
  const std::int64_t d = x.shape.dims().back();
  for (const RefTensor* param : {w, b}) {
    if (param != nullptr && (param->shape.rank() != 1 || param->numel() != d)) {
      fail(op, "affine parameter shape");
    }
  }
  const double eps = attr_double(attrs, op, "eps", 1e-5);
  const double alpha = attr_double(attrs, op, "alpha", 1.0);
  RefTensor y{x.shape};
  for (std::int64_t r = 0; r < x.numel() / d; ++r) {
    const double* row = x.v.data() + r * d;
    double mu = 0;
    if (centre) {
      for (std::int64_t j = 0; j < d; ++j) mu += row[j];
      mu /= static_cast<double>(d);
    }
    double ms = 0;
    for (std::int64_t j = 0; j < d; ++j) ms += (row[j] - mu) * (row[j] - mu);
    ms /= static_cast<double>(d);
    const double rstd = 1.0 / std::sqrt(ms + eps);
    for (std::int64_t j = 0; j < d; ++j) {
      const double xhat = (row[j] - mu) * rstd;
      y[r * d + j] = alpha * (xhat * (w != nullptr ? (*w)[j] : 1.0) + (b != nullptr ? (*b)[j] : 0.0));
    }
  }
  return {y};
}
std::vector<RefTensor> ref_layer_norm(const RefInputs& in, const Attributes& a, const RefContext&) {
  return ref_norm("layer_norm", true, in, a);
}
std::vector<RefTensor> ref_rms_norm(const RefInputs& in, const Attributes& a, const RefContext&) {
  return ref_norm("rms_norm", false, in, a);
}

// ---------------------------------------------------------------------------------------------
// residual_split: branch = x, skip = x;  residual_add: y = α_r·r + α_s·s (equal shapes).
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_residual_split(const RefInputs& in, const Attributes&,
                                          const RefContext&) {
  const RefTensor& x = need("residual_split", in, 0);
  return {x, x};
}

std::vector<RefTensor> ref_residual_add(const RefInputs& in, const Attributes& attrs,
                                        const RefContext&) {
  const RefTensor& r = need("residual_add", in, 0);
  const RefTensor& s = need("residual_add", in, 1);
  if (r.shape != s.shape) fail("residual_add", "shapes differ");
  const double ar = attr_double(attrs, "residual_add", "alpha_residual", 1.0);
  const double as = attr_double(attrs, "residual_add", "alpha_skip", 1.0);
  RefTensor y{r.shape};
  for (std::int64_t e = 0; e < y.numel(); ++e) y[e] = ar * r[e] + as * s[e];
  return {y};
}

// ---------------------------------------------------------------------------------------------
// embedding:  y[..., :] = α·table[ids[...], :],  ids [...], table [V, d], y [..., d]
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_embedding(const RefInputs& in, const Attributes& attrs,
                                     const RefContext&) {
  const RefTensor& ids = need("embedding", in, 0);
  const RefTensor& table = need("embedding", in, 1);
  if (table.shape.rank() != 2) fail("embedding", "table must be [V, d]");
  const std::int64_t vocab = table.shape.dims()[0], d = table.shape.dims()[1];
  const double alpha = attr_double(attrs, "embedding", "alpha", 1.0);
  Dims yd = dims_of(ids.shape);
  yd.push_back(d);
  RefTensor y{Shape(yd)};
  for (std::int64_t n = 0; n < ids.numel(); ++n) {
    const std::int64_t id = to_index("embedding", ids[n]);
    if (id < 0 || id >= vocab) fail("embedding", "id out of range");
    for (std::int64_t j = 0; j < d; ++j) y[n * d + j] = alpha * table[id * d + j];
  }
  return {y};
}

// ---------------------------------------------------------------------------------------------
// scaled_dot_product_attention, per slice of the leading dims (m = "mult"):
//   S = (m/d)·q·kᵀ (causal: S_ij = −∞ for j > i, top-left aligned),  P = softmax_rows(S),
//   P̃ = P ∘ M/(1−p) (M_e = keeps(seed, e, p), e the flat index in [..., s_q, s_k]),  y = α·P̃·v
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_attention(const RefInputs& in, const Attributes& attrs,
                                     const RefContext& context) {
  const std::string_view op = "scaled_dot_product_attention";
  const RefTensor& q = need(op, in, 0);
  const RefTensor& k = need(op, in, 1);
  const RefTensor& v = need(op, in, 2);
  const Dims qd = dims_of(q.shape), kd = dims_of(k.shape), vd = dims_of(v.shape);
  const std::size_t rank = qd.size();
  if (rank < 2 || kd.size() != rank || vd.size() != rank) fail(op, "ranks differ");
  if (!std::equal(qd.begin(), qd.end() - 2, kd.begin()) ||
      !std::equal(qd.begin(), qd.end() - 2, vd.begin())) {
    fail(op, "leading dims differ");
  }
  const std::int64_t s_q = qd[rank - 2], d = qd.back(), s_k = kd[rank - 2], d_v = vd.back();
  if (kd.back() != d || vd[rank - 2] != s_k) fail(op, "bad shapes");
  const double m = attr_double(attrs, op, "mult", 1.0);
  const double alpha = attr_double(attrs, op, "alpha", 1.0);
  const double p = attr_double(attrs, op, "dropout", 0.0);
  const auto seed = static_cast<std::uint64_t>(attr_int(attrs, op, "seed", 0));
  const std::string mask = attr_string(attrs, op, "mask", "none");
  if (mask != "none" && mask != "causal") fail(op, "unknown mask " + mask);
  if (p > 0 && !context.keeps) fail(op, "dropout > 0 needs RefContext::keeps");
  const bool causal = mask == "causal";
  const std::int64_t slices = product(qd, rank - 2);
  Dims yd = qd;
  yd.back() = d_v;
  RefTensor y{Shape(yd)};
  std::vector<double> scores(static_cast<std::size_t>(s_k)), probs(static_cast<std::size_t>(s_k));
  for (std::int64_t b = 0; b < slices; ++b) {
    for (std::int64_t i = 0; i < s_q; ++i) {
      for (std::int64_t j = 0; j < s_k; ++j) {
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c) dot += q[(b * s_q + i) * d + c] * k[(b * s_k + j) * d + c];
        scores[static_cast<std::size_t>(j)] = causal && j > i
                                                  ? -std::numeric_limits<double>::infinity()
                                                  : m / static_cast<double>(d) * dot;
      }
      softmax_row(scores.data(), probs.data(), s_k, 1.0);
      for (std::int64_t j = 0; j < s_k; ++j) {
        const std::int64_t e = (b * s_q + i) * s_k + j;
        const bool keep = p == 0 || context.keeps(seed, e, p);
        probs[static_cast<std::size_t>(j)] = keep ? probs[static_cast<std::size_t>(j)] / (1.0 - p) : 0.0;
      }
      for (std::int64_t c = 0; c < d_v; ++c) {
        double acc = 0;
        for (std::int64_t j = 0; j < s_k; ++j) acc += probs[static_cast<std::size_t>(j)] * v[(b * s_k + j) * d_v + c];
        y[(b * s_q + i) * d_v + c] = alpha * acc;
      }
    }
  }
  return {y};
}

// ---------------------------------------------------------------------------------------------
// cross_entropy:  ℓ_b = logsumexp(m·z_b) − m·z_b[y_b],  loss = r·Σ_{b valid} ℓ_b,
//   r = 1/B_valid ("mean", default) or 1 ("sum"); rows with y_b = ignore_index (default −100)
//   are not valid. logits [B, V] with labels [B], or [V] with [].
// mse_loss:  loss = r·Σ (a − b)²,  r = 1/numel ("mean", default) or 1 ("sum").
// ---------------------------------------------------------------------------------------------
struct CrossEntropyRows {
  std::int64_t rows, vocab, valid;
  std::vector<std::int64_t> labels;  // ignore_index for ignored rows
  std::int64_t ignore_index;
};

CrossEntropyRows cross_entropy_rows(const RefInputs& in, const Attributes& attrs) {
  const std::string_view op = "cross_entropy";
  const RefTensor& z = need(op, in, 0);
  const RefTensor& labels = need(op, in, 1);
  const bool batched = z.shape.rank() == 2 && labels.shape.rank() == 1 &&
                       labels.shape.dims()[0] == z.shape.dims()[0];
  const bool single = z.shape.rank() == 1 && labels.shape.rank() == 0;
  if (!batched && !single) fail(op, "logits and labels do not match");
  CrossEntropyRows rows{};
  rows.vocab = z.shape.dims().back();
  rows.rows = z.numel() / rows.vocab;
  rows.ignore_index = attr_int(attrs, op, "ignore_index", -100);
  for (std::int64_t b = 0; b < rows.rows; ++b) {
    const std::int64_t label = to_index(op, labels[b]);
    if (label != rows.ignore_index && (label < 0 || label >= rows.vocab)) fail(op, "bad label");
    rows.labels.push_back(label);
    rows.valid += label != rows.ignore_index;
  }
  return rows;
}

double reduction_factor(std::string_view op, const Attributes& attrs, std::int64_t count) {
  const std::string reduction = attr_string(attrs, op, "reduction", "mean");
  if (reduction == "sum") return 1.0;
  if (reduction == "mean") return 1.0 / static_cast<double>(count);
  fail(op, "unknown reduction " + reduction);
}

std::vector<RefTensor> ref_cross_entropy(const RefInputs& in, const Attributes& attrs,
                                         const RefContext&) {
  const RefTensor& z = need("cross_entropy", in, 0);
  const CrossEntropyRows rows = cross_entropy_rows(in, attrs);
  const double m = attr_double(attrs, "cross_entropy", "mult", 1.0);
  double total = 0;
  for (std::int64_t b = 0; b < rows.rows; ++b) {
    const std::int64_t label = rows.labels[static_cast<std::size_t>(b)];
    if (label == rows.ignore_index) continue;
    const double* row = z.v.data() + b * rows.vocab;
    double top = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < rows.vocab; ++j) top = std::max(top, m * row[j]);
    double sum = 0;
    for (std::int64_t j = 0; j < rows.vocab; ++j) sum += std::exp(m * row[j] - top);
    total += top + std::log(sum) - m * row[label];
  }
  RefTensor loss{Shape{}};
  loss[0] = reduction_factor("cross_entropy", attrs, rows.valid) * total;
  return {loss};
}

std::vector<RefTensor> ref_mse_loss(const RefInputs& in, const Attributes& attrs,
                                    const RefContext&) {
  const RefTensor& a = need("mse_loss", in, 0);
  const RefTensor& b = need("mse_loss", in, 1);
  if (a.shape != b.shape) fail("mse_loss", "shapes differ");
  double total = 0;
  for (std::int64_t e = 0; e < a.numel(); ++e) total += (a[e] - b[e]) * (a[e] - b[e]);
  RefTensor loss{Shape{}};
  loss[0] = reduction_factor("mse_loss", attrs, a.numel()) * total;
  return {loss};
}

// ---------------------------------------------------------------------------------------------
// Primitives:
//   reshape {shape}: y = x with a new shape (one −1 inferred)
//   transpose {dim0, dim1}: dims dim0 and dim1 swapped
//   slice {axis, start, end}: y = x[..., start:end, ...] (negative start/end count from the end)
//   concat {axis}: y = [a, b] along axis
//   sum / mean {axes, keepdim}: Σ (or Σ/N) over axes (absent or empty: all)
//   max {axis, keepdim}: max along axis
//   exp, log, sqrt; where(cond, a, b) = cond ≠ 0 ? a : b
// ---------------------------------------------------------------------------------------------
std::vector<RefTensor> ref_reshape(const RefInputs& in, const Attributes& attrs,
                                   const RefContext&) {
  const RefTensor& x = need("reshape", in, 0);
  Dims dims = attrs.get_ints("reshape", "shape");
  std::int64_t known = 1;
  std::size_t inferred = dims.size();
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      inferred = i;
    } else {
      known *= dims[i];
    }
  }
  if (inferred < dims.size()) dims[inferred] = x.numel() / known;
  if (product(dims) != x.numel()) fail("reshape", "element counts differ");
  return {RefTensor(Shape(dims), x.v)};
}

std::vector<RefTensor> ref_transpose(const RefInputs& in, const Attributes& attrs,
                                     const RefContext&) {
  const RefTensor& x = need("transpose", in, 0);
  const Dims xd = dims_of(x.shape);
  const auto d0 = static_cast<std::size_t>(
      resolve_axis("transpose", attrs.get_int("transpose", "dim0"), xd.size()));
  const auto d1 = static_cast<std::size_t>(
      resolve_axis("transpose", attrs.get_int("transpose", "dim1"), xd.size()));
  Dims yd = xd;
  std::swap(yd[d0], yd[d1]);
  RefTensor y{Shape(yd)};
  Dims index;
  for (std::int64_t e = 0; e < x.numel(); ++e) {
    unravel(e, xd, index);
    std::swap(index[d0], index[d1]);
    y[ravel(index, yd)] = x[e];
  }
  return {y};
}

std::vector<RefTensor> ref_slice(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const RefTensor& x = need("slice", in, 0);
  const Dims xd = dims_of(x.shape);
  const auto axis =
      static_cast<std::size_t>(resolve_axis("slice", attrs.get_int("slice", "axis"), xd.size()));
  const std::int64_t size = xd[axis];
  std::int64_t start = attrs.get_int("slice", "start"), end = attrs.get_int("slice", "end");
  if (start < 0) start += size;
  if (end < 0) end += size;
  if (start < 0 || end > size || start > end) fail("slice", "range out of bounds");
  Dims yd = xd;
  yd[axis] = end - start;
  RefTensor y{Shape(yd)};
  Dims index;
  for (std::int64_t e = 0; e < y.numel(); ++e) {
    unravel(e, yd, index);
    index[axis] += start;
    y[e] = x[ravel(index, xd)];
  }
  return {y};
}

std::vector<RefTensor> ref_concat(const RefInputs& in, const Attributes& attrs,
                                  const RefContext&) {
  const RefTensor& a = need("concat", in, 0);
  const RefTensor& b = need("concat", in, 1);
  const Dims ad = dims_of(a.shape), bd = dims_of(b.shape);
  if (ad.size() != bd.size()) fail("concat", "ranks differ");
  const auto axis =
      static_cast<std::size_t>(resolve_axis("concat", attrs.get_int("concat", "axis"), ad.size()));
  Dims yd = ad;
  yd[axis] = ad[axis] + bd[axis];
  RefTensor y{Shape(yd)};
  Dims index;
  for (std::int64_t e = 0; e < y.numel(); ++e) {
    unravel(e, yd, index);
    if (index[axis] < ad[axis]) {
      y[e] = a[ravel(index, ad)];
    } else {
      index[axis] -= ad[axis];
      y[e] = b[ravel(index, bd)];
    }
  }
  return {y};
}

std::vector<RefTensor> ref_reduce_sum(std::string_view op, bool mean, const RefInputs& in,
                                      const Attributes& attrs) {
  const RefTensor& x = need(op, in, 0);
  const Dims xd = dims_of(x.shape);
  const Dims axes = attrs.has("axes") ? attrs.get_ints(op, "axes") : Dims{};
  std::vector<bool> reduced(xd.size(), axes.empty());
  for (const std::int64_t a : axes) {
    const auto axis = static_cast<std::size_t>(resolve_axis(op, a, xd.size()));
    if (reduced[axis]) fail(op, "repeated axis");
    reduced[axis] = true;
  }
  const bool keepdim = attr_int(attrs, op, "keepdim", 0) != 0;
  Dims kept_dims, yd;  // kept_dims: x's dims with the reduced ones set to 1
  std::int64_t count = 1;
  for (std::size_t i = 0; i < xd.size(); ++i) {
    kept_dims.push_back(reduced[i] ? 1 : xd[i]);
    if (reduced[i]) count *= xd[i];
    if (!reduced[i] || keepdim) yd.push_back(reduced[i] ? 1 : xd[i]);
  }
  RefTensor y{Shape(yd)};
  Dims index;
  for (std::int64_t e = 0; e < x.numel(); ++e) {
    unravel(e, xd, index);
    for (std::size_t i = 0; i < xd.size(); ++i) {
      if (reduced[i]) index[i] = 0;
    }
    y[ravel(index, kept_dims)] += x[e];
  }
  if (mean) {
    for (double& v : y.v) v /= static_cast<double>(count);
  }
  return {y};
}
std::vector<RefTensor> ref_sum(const RefInputs& in, const Attributes& a, const RefContext&) {
  return ref_reduce_sum("sum", false, in, a);
}
std::vector<RefTensor> ref_mean(const RefInputs& in, const Attributes& a, const RefContext&) {
  return ref_reduce_sum("mean", true, in, a);
}

std::vector<RefTensor> ref_max(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  const RefTensor& x = need("max", in, 0);
  const Dims xd = dims_of(x.shape);
  const auto axis =
      static_cast<std::size_t>(resolve_axis("max", attrs.get_int("max", "axis"), xd.size()));
  if (xd[axis] == 0) fail("max", "empty axis");
  const bool keepdim = attr_int(attrs, "max", "keepdim", 0) != 0;
  Dims kept_dims = xd, yd;
  kept_dims[axis] = 1;
  for (std::size_t i = 0; i < xd.size(); ++i) {
    if (i != axis || keepdim) yd.push_back(i == axis ? 1 : xd[i]);
  }
  RefTensor y{Shape(yd)};
  std::fill(y.v.begin(), y.v.end(), -std::numeric_limits<double>::infinity());
  Dims index;
  for (std::int64_t e = 0; e < x.numel(); ++e) {
    unravel(e, xd, index);
    index[axis] = 0;
    double& best = y[ravel(index, kept_dims)];
    // As the op: NaN wins (std::max would let a NaN lose to an earlier number), and among equal
    // values the first is kept (the sign of a zero).
    if (x[e] > best || (std::isnan(x[e]) && !std::isnan(best))) best = x[e];
  }
  return {y};
}

std::vector<RefTensor> ref_exp(const RefInputs& in, const Attributes&, const RefContext&) {
  return {map_unary(need("exp", in, 0), [](double v) { return std::exp(v); })};
}
std::vector<RefTensor> ref_log(const RefInputs& in, const Attributes&, const RefContext&) {
  return {map_unary(need("log", in, 0), [](double v) { return std::log(v); })};
}
std::vector<RefTensor> ref_sqrt(const RefInputs& in, const Attributes&, const RefContext&) {
  return {map_unary(need("sqrt", in, 0), [](double v) { return std::sqrt(v); })};
}

std::vector<RefTensor> ref_where(const RefInputs& in, const Attributes&, const RefContext&) {
  const RefTensor& cond = need("where", in, 0);
  const RefTensor& a = need("where", in, 1);
  const RefTensor& b = need("where", in, 2);
  if (cond.shape != a.shape || a.shape != b.shape) fail("where", "shapes differ");
  RefTensor y{a.shape};
  for (std::int64_t e = 0; e < y.numel(); ++e) y[e] = cond[e] != 0.0 ? a[e] : b[e];  // NaN ≠ 0
  return {y};
}

// cast into f32 (the only target whose values are smooth in x): y = x · scale.
std::vector<RefTensor> ref_cast(const RefInputs& in, const Attributes& attrs, const RefContext&) {
  if (attrs.get_enum_name("cast", "dtype") != "f32") fail("cast", "the reference covers casts to f32");
  const double scale = attrs.get_double("cast", "scale", 1.0);
  return {map_unary(need("cast", in, 0), [scale](double v) { return v * scale; })};
}

// round_to_format with format f32 (no rounding, so the identity, whose straight-through gradient
// is the true one); the rounding itself is checked against the format layer in its own tests.
std::vector<RefTensor> ref_round_to_format(const RefInputs& in, const Attributes& attrs,
                                           const RefContext&) {
  if (attrs.get_enum_name("round_to_format", "format") != "f32" ||
      (attrs.has("gradient_format") &&
       attrs.get_enum_name("round_to_format", "gradient_format") != "f32")) {
    fail("round_to_format", "the reference covers format f32 (the identity)");
  }
  return {map_unary(need("round_to_format", in, 0), [](double v) { return v; })};
}

// dynamic_rescale: the identity on values (it moves data into scales under scale propagation).
std::vector<RefTensor> ref_dynamic_rescale(const RefInputs& in, const Attributes&,
                                           const RefContext&) {
  return {map_unary(need("dynamic_rescale", in, 0), [](double v) { return v; })};
}

// ---------------------------------------------------------------------------------------------
// The table: name, input names (for "beta_<input>"), scale attributes, forward.
// ---------------------------------------------------------------------------------------------
using RefForwardFn = std::vector<RefTensor> (*)(const RefInputs&, const Attributes&,
                                                const RefContext&);

struct RefOp {
  std::string_view name;
  std::vector<std::string_view> inputs;
  std::vector<std::string_view> scales;
  RefForwardFn forward;
};

const std::vector<RefOp>& table() {
  static const std::vector<RefOp> ops = {
      {"matmul", {"left", "right"}, {"alpha", "beta_left", "beta_right"}, ref_matmul},
      {"linear", {"x", "weight", "bias"}, {"alpha", "beta_x", "beta_weight", "beta_bias"}, ref_linear},
      {"linear_readout", {"x", "weight", "bias"}, {"alpha", "beta_x", "beta_weight", "beta_bias"},
       ref_linear_readout},
      {"conv1d", {"x", "weight", "bias"}, {"alpha", "beta_x", "beta_weight", "beta_bias"}, ref_conv1d},
      {"add", {"a", "b"}, {"alpha", "beta_a", "beta_b"}, ref_add},
      {"mul", {"a", "b"}, {}, ref_mul},
      {"scale", {"x"}, {"alpha", "beta_x"}, ref_scale},
      {"relu", {"x"}, {}, ref_relu},
      {"gelu", {"x"}, {"alpha", "beta_x"}, ref_gelu},
      {"silu", {"x"}, {"alpha", "beta_x"}, ref_silu},
      {"silu_glu", {"x", "gate"}, {"alpha", "beta_x", "beta_gate"}, ref_silu_glu},
      {"softmax", {"x"}, {"alpha", "beta_x"}, ref_softmax},
      {"dropout", {"x"}, {"alpha", "beta_x"}, ref_dropout},
      {"layer_norm", {"x", "weight", "bias"}, {"alpha", "beta_x", "beta_weight", "beta_bias"},
       ref_layer_norm},
      {"rms_norm", {"x", "weight"}, {"alpha", "beta_x", "beta_weight"}, ref_rms_norm},
      {"residual_split", {"x"}, {"beta_branch", "beta_skip"}, ref_residual_split},
      {"residual_add", {"residual", "skip"}, {"alpha_residual", "alpha_skip"}, ref_residual_add},
      {"embedding", {"ids", "table"}, {"alpha", "beta_table"}, ref_embedding},
      {"scaled_dot_product_attention", {"q", "k", "v"}, {"alpha", "beta_q", "beta_k", "beta_v"},
       ref_attention},
      {"cross_entropy", {"logits", "labels"}, {"beta_logits"}, ref_cross_entropy},
      {"mse_loss", {"a", "b"}, {"beta_a", "beta_b"}, ref_mse_loss},
      {"reshape", {"x"}, {}, ref_reshape},
      {"transpose", {"x"}, {}, ref_transpose},
      {"slice", {"x"}, {}, ref_slice},
      {"concat", {"a", "b"}, {}, ref_concat},
      {"sum", {"x"}, {}, ref_sum},
      {"mean", {"x"}, {}, ref_mean},
      {"max", {"x"}, {}, ref_max},
      {"exp", {"x"}, {}, ref_exp},
      {"log", {"x"}, {}, ref_log},
      {"sqrt", {"x"}, {}, ref_sqrt},
      {"where", {"cond", "a", "b"}, {}, ref_where},
      {"cast", {"x"}, {}, ref_cast},
      {"round_to_format", {"x"}, {}, ref_round_to_format},
      {"dynamic_rescale", {"x"}, {}, ref_dynamic_rescale},
  };
  return ops;
}

const RefOp& find(std::string_view name) {
  for (const RefOp& op : table()) {
    if (op.name == name) return op;
  }
  throw std::invalid_argument("no reference for op '" + std::string(name) + "'");
}

}  // namespace

RefTensor::RefTensor(Shape s) : shape(std::move(s)), v(static_cast<std::size_t>(shape.numel()), 0.0) {}

RefTensor::RefTensor(Shape s, std::vector<double> values) : shape(std::move(s)), v(std::move(values)) {
  if (static_cast<std::int64_t>(v.size()) != shape.numel()) {
    throw std::invalid_argument("RefTensor: " + std::to_string(v.size()) + " values for shape " +
                                shape.to_string());
  }
}

std::span<const std::string_view> reference_op_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> n;
    for (const RefOp& op : table()) n.push_back(op.name);
    return n;
  }();
  return names;
}

bool has_reference(std::string_view op) {
  return std::any_of(table().begin(), table().end(), [&](const RefOp& r) { return r.name == op; });
}

std::vector<RefTensor> reference_forward(std::string_view op, const RefInputs& inputs,
                                         const Attributes& attrs, const RefContext& context) {
  return find(op).forward(inputs, attrs, context);
}

std::span<const std::string_view> reference_scale_names(std::string_view op) {
  return find(op).scales;
}

Attributes without_scales(std::string_view op, const Attributes& attrs) {
  const auto scales = reference_scale_names(op);
  Attributes out;
  for (const auto& [name, value] : attrs.entries()) {
    if (std::find(scales.begin(), scales.end(), name) == scales.end()) out.set(name, value);
  }
  return out;
}

std::vector<std::vector<double>> reference_gradient_factors(std::string_view op,
                                                            const RefInputs& inputs,
                                                            const Attributes& attrs,
                                                            int output_count) {
  const RefOp& ref = find(op);
  const auto outputs = static_cast<std::size_t>(output_count);
  const auto beta = [&](std::string_view name) {
    return attr_double(attrs, op, "beta_" + std::string(name), 1.0);
  };
  std::vector<std::vector<double>> factors;
  for (std::size_t i = 0; i < ref.inputs.size(); ++i) {
    // The default (op_def.hpp, docs/unit_scaling.md): dx_i = β_i · J_iᵀ g.
    factors.emplace_back(outputs, beta(ref.inputs[i]));
  }
  if (op == "residual_split") {
    // dx = β_branch·g_b + β_skip·g_s: one factor per output.
    factors[0] = {beta("branch"), beta("skip")};
  } else if (op == "residual_add") {
    // dr = g, ds = g: the forward weights α_r, α_s are not applied in the backward.
    factors = {{1.0}, {1.0}};
  } else if (op == "cross_entropy" || op == "mse_loss") {
    // Unit mode ("gradient" = "unit") drops the forward-only factors: cross_entropy's m and r,
    // mse_loss's r. (The kernels apply β in both modes.)
    if (attr_string(attrs, op, "gradient", "true") == "unit") {
      double dropped = 1.0;
      if (op == "cross_entropy") {
        const CrossEntropyRows rows = cross_entropy_rows(inputs, attrs);
        dropped = attr_double(attrs, op, "mult", 1.0) * reduction_factor(op, attrs, rows.valid);
      } else {
        dropped = reduction_factor(op, attrs, need(op, inputs, 0).numel());
      }
      for (auto& f : factors) {
        for (double& v : f) v /= dropped;
      }
    }
  }
  return factors;
}

}  // namespace unitscale::testing

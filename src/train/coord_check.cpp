#include "unitscale/train/coord_check.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numbers>
#include <set>
#include <tuple>
#include <utility>

#include "unitscale/analysis/line_plot.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/language_model.hpp"

namespace unitscale {
namespace {

constexpr std::string_view kModule = "coord check";

// mean|x| of a standard normal: the l1 a unit-scaled tensor has.
const double kUnitL1 = std::sqrt(2.0 / std::numbers::pi);

void check_config(const CoordCheckConfig& c) {
  if (c.widths.empty()) throw Error(fmt::format("{}: no widths given", kModule));
  if (c.schemes.empty()) throw Error(fmt::format("{}: no schemes given", kModule));
  if (c.depth < 1 || c.seeds < 1 || c.steps < 1) {
    throw Error(fmt::format("{}: depth ({}), seeds ({}) and steps ({}) must all be at least 1",
                            kModule, c.depth, c.seeds, c.steps));
  }
  if (c.batch < 1 || c.seq < 1 || c.vocab < 1 || c.head_dim < 1) {
    throw Error(
        fmt::format("{}: batch ({}), seq ({}), vocab ({}) and head_dim ({}) must all be "
                    "at least 1",
                    kModule, c.batch, c.seq, c.vocab, c.head_dim));
  }
  std::set<std::int64_t> seen;
  for (const std::int64_t w : c.widths) {
    if (w < 1 || w % c.head_dim != 0) {
      throw Error(fmt::format("{}: width {} must be a positive multiple of head_dim {}", kModule, w,
                              c.head_dim));
    }
    if (!seen.insert(w).second) throw Error(fmt::format("{}: width {} given twice", kModule, w));
  }
  const bool mup = std::find(c.schemes.begin(), c.schemes.end(), Scheme::kMuP) != c.schemes.end();
  if (mup && (c.mup_base_width < 1 || c.mup_base_width % c.head_dim != 0)) {
    throw Error(fmt::format("{}: the muP base width {} must be a positive multiple of head_dim {}",
                            kModule, c.mup_base_width, c.head_dim));
  }
  for (const Scheme s : c.schemes) {
    const double lr = coord_check_lr(c, s);
    if (!std::isfinite(lr) || lr <= 0) {
      throw Error(fmt::format("{}: the {} learning rate must be finite and positive, got {}",
                              kModule, scheme_name(s), lr));
    }
  }
}

void check_batch(const CoordCheckConfig& c, const Tensor& ids, const Tensor& targets) {
  const Shape expected{c.batch, c.seq};
  for (const auto& [name, tensor] :
       {std::pair<std::string_view, const Tensor*>{"ids", &ids}, {"targets", &targets}}) {
    if (tensor->dtype() != DType::kI32 || tensor->shape() != expected) {
      throw Error(fmt::format("{}: {} must be i32 {} (batch x seq), got {} {}", kModule, name,
                              expected.to_string(), dtype_name(tensor->dtype()),
                              tensor->shape().to_string()));
    }
    for (const std::int32_t id : tensor->span_as<std::int32_t>()) {
      if (id < 0 || id >= c.vocab) {
        throw Error(fmt::format("{}: {} holds the id {}, outside [0, vocab = {})", kModule, name,
                                id, c.vocab));
      }
    }
  }
}

DecoderConfig decoder_config(const CoordCheckConfig& c, Scheme scheme, std::int64_t width) {
  DecoderConfig d = byte_decoder_config(scheme, width, c.depth, c.head_dim);
  d.vocab = c.vocab;
  return d;
}

struct Stats {
  double l1;
  double rms;
};

Stats stats_of(ConstTensorView v) {
  double sum_abs = 0, sum_sq = 0;
  for (const float x : v.span()) {
    sum_abs += std::abs(static_cast<double>(x));
    sum_sq += static_cast<double>(x) * x;
  }
  const auto n = static_cast<double>(v.numel());
  return {sum_abs / n, std::sqrt(sum_sq / n)};
}

// One model: trains it for `steps` steps, recording each traced module at every step.
void run_one(const CoordCheckConfig& c, Scheme scheme, std::int64_t width, std::uint64_t seed,
             const Tensor& ids, const Tensor& targets, std::vector<CoordRecord>& out) {
  const auto start = std::chrono::steady_clock::now();
  Parametrization parametrization(
      scheme, {.embedding_lr_exponent = c.embedding_lr_exponent, .residual_blocks = c.depth});
  const DecoderConfig config = decoder_config(c, scheme, width);
  if (scheme == Scheme::kMuP) {
    TransformerDecoder::set_base_shapes(parametrization,
                                        decoder_config(c, scheme, c.mup_base_width));
  }
  Graph graph(parametrization.op_scaling());
  Model model(graph, parametrization, {.seed = seed});
  const TransformerDecoder decoder(model, "", config);
  const Value id_input = graph.input("ids", ids.shape(), DType::kI32);
  const Value target_input = graph.input("targets", targets.shape(), DType::kI32);
  DecoderTrace trace;
  const Value loss = decoder.loss(id_input, target_input, &trace);

  std::vector<std::pair<std::string, Value>> modules = {{"embedding", trace.embedding}};
  for (std::size_t i = 0; i < trace.residual.size(); ++i) {
    modules.emplace_back(fmt::format("layers.{}.attn", i), trace.attention_branch[i]);
    modules.emplace_back(fmt::format("layers.{}.mlp", i), trace.mlp_branch[i]);
    modules.emplace_back(fmt::format("layers.{}.residual", i), trace.residual[i]);
  }
  modules.emplace_back("logits", trace.logits);

  const OptimizerStep step = record_training_step(model, loss,
                                                  {.kind = OptimizerKind::kAdam,
                                                   .lr = coord_check_lr(c, scheme),
                                                   .beta1 = c.beta1,
                                                   .beta2 = c.beta2,
                                                   .eps = c.eps,
                                                   .log = [](std::string_view) {}});
  std::vector<Value> requested = {loss};
  for (const auto& m : modules) requested.push_back(m.second);
  Executor exec(graph, step.outputs(requested));
  model.initialize(exec);
  exec.bind(id_input, ids);
  exec.bind(target_input, targets);

  std::vector<float> losses;
  for (int t = 1; t <= c.steps; ++t) {
    // One run is forward, backward and update: the forward values it returns are those of the
    // parameters before this run's update, i.e. after t − 1 updates.
    exec.run();
    // A non-finite loss is recorded, not thrown: a blow-up is what a coord check is for, and
    // the other runs stay usable (the affected l1 values and slopes come out inf or NaN, and a
    // NaN slope fails every criterion).
    losses.push_back(exec.get(loss).data()[0]);
    for (const auto& [name, value] : modules) {
      const Stats s = stats_of(exec.get(value));
      out.push_back({.scheme = scheme,
                     .width = width,
                     .seed = seed,
                     .module = name,
                     .t = t,
                     .l1 = s.l1,
                     .rms = s.rms});
    }
  }
  if (c.progress) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string loss_text;
    for (const float l : losses) loss_text += fmt::format(" {:.3f}", l);
    c.progress(fmt::format("{:<6} width {:>5} seed {}: loss{}  ({:.1f} s)", scheme_name(scheme),
                           width, seed, loss_text, seconds));
  }
}

bool is_hidden(CoordModuleKind kind) { return kind != CoordModuleKind::kLogits; }
bool is_branch(CoordModuleKind kind) {
  return kind == CoordModuleKind::kAttentionBranch || kind == CoordModuleKind::kMlpBranch;
}

// Orders modules as the model runs them: embedding, then layer by layer attn, mlp, residual, then
// the logits.
std::tuple<int, int, int> module_order(std::string_view module) {
  const CoordModuleKind kind = coord_module_kind(module);
  if (kind == CoordModuleKind::kEmbedding) return {0, 0, 0};
  if (kind == CoordModuleKind::kLogits) return {2, 0, 0};
  const std::string_view rest = module.substr(7);
  const int layer = std::stoi(std::string(rest.substr(0, rest.find('.'))));
  return {1, layer, static_cast<int>(kind)};
}

bool module_less(const std::string& a, const std::string& b) {
  return module_order(a) < module_order(b);
}

int scheme_order(Scheme s) { return static_cast<int>(s); }

std::string number(double v) {
  if (std::isnan(v)) return "nan";
  return fmt::format("{:.6g}", v);
}

}  // namespace

double coord_check_lr(const CoordCheckConfig& config, Scheme scheme) {
  switch (scheme) {
    case Scheme::kSP:
      return config.sp_lr;
    case Scheme::kMuP:
      return config.mup_lr;
    case Scheme::kUMuP:
      return config.umup_lr;
  }
  throw Error(fmt::format("{}: unknown scheme", kModule));
}

CoordModuleKind coord_module_kind(std::string_view module) {
  if (module == "embedding") return CoordModuleKind::kEmbedding;
  if (module == "logits") return CoordModuleKind::kLogits;
  if (module.starts_with("layers.")) {
    const std::string_view rest = module.substr(7);
    const std::size_t dot = rest.find('.');
    const bool digits = dot != 0 && dot != std::string_view::npos &&
                        std::all_of(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(dot),
                                    [](char ch) { return ch >= '0' && ch <= '9'; });
    if (digits) {
      const std::string_view what = rest.substr(dot + 1);
      if (what == "attn") return CoordModuleKind::kAttentionBranch;
      if (what == "mlp") return CoordModuleKind::kMlpBranch;
      if (what == "residual") return CoordModuleKind::kResidual;
    }
  }
  throw Error(
      fmt::format("{}: '{}' is not a module name (embedding, layers.<i>.attn, "
                  "layers.<i>.mlp, layers.<i>.residual or logits)",
                  kModule, module));
}

CoordBatch coord_check_batch(std::span<const unsigned char> bytes, std::int64_t batch,
                             std::int64_t seq) {
  if (batch < 1 || seq < 1) {
    throw Error(fmt::format("{}: batch ({}) and seq ({}) must be at least 1", kModule, batch, seq));
  }
  const std::int64_t needed = batch * (seq + 1);
  if (static_cast<std::int64_t>(bytes.size()) < needed) {
    throw Error(fmt::format("{}: a batch of {} x {} needs {} bytes ({} windows of seq + 1), got {}",
                            kModule, batch, seq, needed, batch, bytes.size()));
  }
  CoordBatch b{Tensor({batch, seq}, DType::kI32), Tensor({batch, seq}, DType::kI32)};
  std::int32_t* ids = b.ids.data_as<std::int32_t>();
  std::int32_t* targets = b.targets.data_as<std::int32_t>();
  for (std::int64_t r = 0; r < batch; ++r) {
    for (std::int64_t s = 0; s < seq; ++s) {
      const auto at = static_cast<std::size_t>(r * (seq + 1) + s);
      ids[r * seq + s] = bytes[at];
      targets[r * seq + s] = bytes[at + 1];
    }
  }
  return b;
}

std::vector<CoordRecord> run_coord_check(const CoordCheckConfig& config, const Tensor& ids,
                                         const Tensor& targets) {
  check_config(config);
  check_batch(config, ids, targets);
  std::vector<CoordRecord> records;
  for (const Scheme scheme : config.schemes) {
    for (const std::int64_t width : config.widths) {
      for (int i = 0; i < config.seeds; ++i) {
        run_one(config, scheme, width, config.first_seed + static_cast<std::uint64_t>(i), ids,
                targets, records);
      }
    }
  }
  return records;
}

std::vector<CoordMean> coord_check_means(std::span<const CoordRecord> records) {
  struct Sum {
    double l1 = 0, rms = 0;
    int n = 0;
  };
  // Keyed in (scheme, width, module, t) order; modules sort as the model runs them.
  auto less = [](const std::tuple<int, std::int64_t, std::string, int>& a,
                 const std::tuple<int, std::int64_t, std::string, int>& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) < std::get<0>(b);
    if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
    if (std::get<2>(a) != std::get<2>(b)) return module_less(std::get<2>(a), std::get<2>(b));
    return std::get<3>(a) < std::get<3>(b);
  };
  std::map<std::tuple<int, std::int64_t, std::string, int>, Sum, decltype(less)> sums(less);
  for (const CoordRecord& r : records) {
    Sum& s = sums[{scheme_order(r.scheme), r.width, r.module, r.t}];
    s.l1 += r.l1;
    s.rms += r.rms;
    ++s.n;
  }
  std::vector<CoordMean> means;
  means.reserve(sums.size());
  for (const auto& [key, s] : sums) {
    means.push_back({.scheme = static_cast<Scheme>(std::get<0>(key)),
                     .width = std::get<1>(key),
                     .module = std::get<2>(key),
                     .t = std::get<3>(key),
                     .l1 = s.l1 / s.n,
                     .rms = s.rms / s.n,
                     .seeds = s.n});
  }
  return means;
}

std::vector<CoordSlope> coord_check_slopes(std::span<const CoordMean> means,
                                           std::int64_t min_fit_width) {
  std::set<std::int64_t> fitted;
  for (const CoordMean& m : means) {
    if (m.width >= min_fit_width) fitted.insert(m.width);
  }
  if (fitted.size() < 2) {
    throw Error(fmt::format("{}: a slope needs at least two widths >= {}, got {}", kModule,
                            min_fit_width, fitted.size()));
  }
  // (scheme, module, t) → the (log2 width, log2 l1) points, in the means' order.
  struct Points {
    std::vector<double> x, y;
    bool valid = true;
  };
  std::vector<std::tuple<Scheme, std::string, int>> order;
  std::map<std::tuple<int, std::string, int>, Points> points;
  for (const CoordMean& m : means) {
    if (m.width < min_fit_width) continue;
    const auto key = std::make_tuple(scheme_order(m.scheme), m.module, m.t);
    auto [it, inserted] = points.try_emplace(key);
    if (inserted) order.emplace_back(m.scheme, m.module, m.t);
    Points& p = it->second;
    p.x.push_back(std::log2(static_cast<double>(m.width)));
    if (!(m.l1 > 0) || !std::isfinite(m.l1)) p.valid = false;
    p.y.push_back(p.valid ? std::log2(m.l1) : 0.0);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b))
      return scheme_order(std::get<0>(a)) < scheme_order(std::get<0>(b));
    if (std::get<1>(a) != std::get<1>(b)) return module_less(std::get<1>(a), std::get<1>(b));
    return std::get<2>(a) < std::get<2>(b);
  });
  std::vector<CoordSlope> slopes;
  for (const auto& [scheme, module, t] : order) {
    const Points& p = points.at({scheme_order(scheme), module, t});
    const auto n = static_cast<double>(p.x.size());
    double mx = 0, my = 0;
    for (std::size_t i = 0; i < p.x.size(); ++i) {
      mx += p.x[i];
      my += p.y[i];
    }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0;
    for (std::size_t i = 0; i < p.x.size(); ++i) {
      sxy += (p.x[i] - mx) * (p.y[i] - my);
      sxx += (p.x[i] - mx) * (p.x[i] - mx);
    }
    const double slope = p.valid && p.x.size() >= 2 && sxx > 0
                             ? sxy / sxx
                             : std::numeric_limits<double>::quiet_NaN();
    slopes.push_back({.scheme = scheme,
                      .module = module,
                      .t = t,
                      .slope = slope,
                      .widths = static_cast<int>(p.x.size())});
  }
  return slopes;
}

std::string_view coord_criterion_description(int criterion) {
  switch (criterion) {
    case 1:
      return "muP and u-muP: |slope| <= 0.1 at t >= 2 (embedding, branches, residual)";
    case 2:
      return "muP and u-muP: logits slope <= 0.1 at every t (must not grow)";
    case 3:
      return "SP: slope >= 0.4 at t >= 3 for the logits and for at least one branch";
    case 4:
      return "u-muP at t = 1: hidden l1 within sqrt(2/pi) +- 0.15 at every width";
    default:
      break;
  }
  throw Error(fmt::format("{}: there is no criterion {} (1 to 4)", kModule, criterion));
}

std::vector<CoordCriterion> evaluate_coord_check(std::span<const CoordSlope> slopes,
                                                 std::span<const CoordMean> means) {
  std::vector<CoordCriterion> out;
  // Comparisons are written so that a NaN slope fails.
  for (const CoordSlope& s : slopes) {
    if (s.scheme == Scheme::kSP) continue;
    const CoordModuleKind kind = coord_module_kind(s.module);
    if (is_hidden(kind) && s.t >= 2) {
      out.push_back({.criterion = 1,
                     .scheme = s.scheme,
                     .module = s.module,
                     .t = s.t,
                     .value = s.slope,
                     .pass = std::abs(s.slope) <= kCoordFlatSlope});
    }
  }
  for (const CoordSlope& s : slopes) {
    if (s.scheme == Scheme::kSP || coord_module_kind(s.module) != CoordModuleKind::kLogits)
      continue;
    out.push_back({.criterion = 2,
                   .scheme = s.scheme,
                   .module = s.module,
                   .t = s.t,
                   .value = s.slope,
                   .pass = s.slope <= kCoordFlatSlope});
  }
  // Criterion 3, per t: the logits, then the largest branch slope.
  std::map<int, const CoordSlope*> best_branch;
  for (const CoordSlope& s : slopes) {
    if (s.scheme != Scheme::kSP || s.t < 3) continue;
    const CoordModuleKind kind = coord_module_kind(s.module);
    if (kind == CoordModuleKind::kLogits) {
      out.push_back({.criterion = 3,
                     .scheme = s.scheme,
                     .module = s.module,
                     .t = s.t,
                     .value = s.slope,
                     .pass = s.slope >= kCoordGrowthSlope});
    } else if (is_branch(kind)) {
      const CoordSlope*& best = best_branch[s.t];
      if (best == nullptr || std::isnan(best->slope) || s.slope > best->slope) best = &s;
    }
  }
  for (const auto& [t, s] : best_branch) {
    out.push_back({.criterion = 3,
                   .scheme = s->scheme,
                   .module = s->module,
                   .t = t,
                   .value = s->slope,
                   .pass = s->slope >= kCoordGrowthSlope});
  }
  for (const CoordMean& m : means) {
    if (m.scheme != Scheme::kUMuP || m.t != 1 || !is_hidden(coord_module_kind(m.module))) continue;
    out.push_back({.criterion = 4,
                   .scheme = m.scheme,
                   .module = m.module,
                   .t = 1,
                   .width = m.width,
                   .value = m.l1,
                   .pass = std::abs(m.l1 - kUnitL1) <= kCoordUnitL1Tolerance});
  }
  return out;
}

std::string coord_check_csv(std::span<const CoordRecord> records) {
  std::string csv = "scheme,width,seed,module,t,l1,rms\n";
  for (const CoordRecord& r : records) {
    csv += fmt::format("{},{},{},{},{},{},{}\n", scheme_name(r.scheme), r.width, r.seed, r.module,
                       r.t, number(r.l1), number(r.rms));
  }
  return csv;
}

std::string coord_slopes_csv(std::span<const CoordSlope> slopes) {
  std::string csv = "scheme,module,t,slope,widths\n";
  for (const CoordSlope& s : slopes) {
    csv += fmt::format("{},{},{},{},{}\n", scheme_name(s.scheme), s.module, s.t, number(s.slope),
                       s.widths);
  }
  return csv;
}

std::string coord_criteria_csv(std::span<const CoordCriterion> criteria) {
  std::string csv = "criterion,scheme,module,t,width,value,pass\n";
  for (const CoordCriterion& c : criteria) {
    csv += fmt::format("{},{},{},{},{},{},{}\n", c.criterion, scheme_name(c.scheme), c.module, c.t,
                       c.width, number(c.value), c.pass ? "PASS" : "FAIL");
  }
  return csv;
}

void write_coord_check_csv(const std::filesystem::path& path,
                           std::span<const CoordRecord> records) {
  write_file_atomically(path, coord_check_csv(records));
}

void write_coord_slopes_csv(const std::filesystem::path& path, std::span<const CoordSlope> slopes) {
  write_file_atomically(path, coord_slopes_csv(slopes));
}

void write_coord_criteria_csv(const std::filesystem::path& path,
                              std::span<const CoordCriterion> criteria) {
  write_file_atomically(path, coord_criteria_csv(criteria));
}

std::string coord_slopes_table(std::span<const CoordSlope> slopes) {
  std::set<int> steps;
  for (const CoordSlope& s : slopes) steps.insert(s.t);
  std::string table = fmt::format("{:<6}  {:<18}", "scheme", "module");
  for (const int t : steps) table += fmt::format("  {:>7}", fmt::format("t={}", t));
  table += "\n";
  // Rows in the slopes' order (scheme, module, t): a row ends where the module changes.
  for (std::size_t i = 0; i < slopes.size();) {
    const CoordSlope& first = slopes[i];
    std::map<int, double> row;
    std::size_t j = i;
    for (;
         j < slopes.size() && slopes[j].scheme == first.scheme && slopes[j].module == first.module;
         ++j) {
      row[slopes[j].t] = slopes[j].slope;
    }
    table += fmt::format("{:<6}  {:<18}", scheme_name(first.scheme), first.module);
    for (const int t : steps) {
      const auto it = row.find(t);
      table +=
          it == row.end() ? fmt::format("  {:>7}", "-") : fmt::format("  {:>+7.3f}", it->second);
    }
    table += "\n";
    i = j;
  }
  return table;
}

std::string coord_criteria_table(std::span<const CoordCriterion> criteria) {
  std::string table = fmt::format("{:<2}  {:<6}  {:<18}  {:>2}  {:>5}  {:>8}  {}\n", "#", "scheme",
                                  "module", "t", "width", "value", "result");
  std::map<int, std::pair<int, int>> counts;  // criterion → (passed, total)
  for (const CoordCriterion& c : criteria) {
    table += fmt::format("{:<2}  {:<6}  {:<18}  {:>2}  {:>5}  {:>+8.3f}  {}\n", c.criterion,
                         scheme_name(c.scheme), c.module, c.t,
                         c.width == 0 ? std::string("-") : std::to_string(c.width), c.value,
                         c.pass ? "PASS" : "FAIL");
    auto& [passed, total] = counts[c.criterion];
    passed += c.pass ? 1 : 0;
    ++total;
  }
  for (const auto& [criterion, count] : counts) {
    table += fmt::format("criterion {}: {} ({}/{} rows pass)  {}\n", criterion,
                         count.first == count.second ? "PASS" : "FAIL", count.first, count.second,
                         coord_criterion_description(criterion));
  }
  return table;
}

std::string coord_check_svg(std::span<const CoordMean> means, int t) {
  if (means.empty()) throw Error(fmt::format("{}: no measurements to plot", kModule));
  if (t == 0) {
    for (const CoordMean& m : means) t = std::max(t, m.t);
  }
  std::vector<Scheme> schemes;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const CoordMean& m : means) {
    if (m.t != t) continue;
    if (std::find(schemes.begin(), schemes.end(), m.scheme) == schemes.end()) {
      schemes.push_back(m.scheme);
    }
    if (m.l1 > 0 && std::isfinite(m.l1)) {
      lo = std::min(lo, m.l1);
      hi = std::max(hi, m.l1);
    }
  }
  if (schemes.empty() || !(lo <= hi)) {
    throw Error(fmt::format("{}: nothing to plot at step t = {}", kModule, t));
  }
  std::sort(schemes.begin(), schemes.end(),
            [](Scheme a, Scheme b) { return scheme_order(a) < scheme_order(b); });
  // A shared y range (whole powers of two around the data) makes the panels comparable.
  const double y_min = std::exp2(std::floor(std::log2(lo))),
               y_max = std::exp2(std::ceil(std::log2(hi)));
  constexpr int kPanelWidth = 600, kPanelHeight = 440;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n",
      kPanelWidth * static_cast<int>(schemes.size()), kPanelHeight);
  for (std::size_t p = 0; p < schemes.size(); ++p) {
    std::vector<std::string> modules;
    std::map<std::string, Series> series;
    for (const CoordMean& m : means) {
      if (m.t != t || m.scheme != schemes[p]) continue;
      Series fresh;
      fresh.label = m.module;
      auto [it, inserted] = series.try_emplace(m.module, std::move(fresh));
      if (inserted) modules.push_back(m.module);
      it->second.x.push_back(static_cast<double>(m.width));
      it->second.y.push_back(m.l1);
    }
    std::sort(modules.begin(), modules.end(), module_less);
    LinePlot plot(fmt::format("{}: mean |x| at t = {}", scheme_name(schemes[p]), t));
    plot.x_axis({.label = "width", .scale = AxisScale::kLog2})
        .y_axis({.label = "mean |x| (seed mean)",
                 .scale = AxisScale::kLog2,
                 .min = y_min,
                 .max = y_max});
    for (const std::string& module : modules) plot.add(std::move(series.at(module)));
    std::string panel = plot.to_svg(kPanelWidth, kPanelHeight);
    // Nest each panel's own <svg> at its offset: one file, no rendering of our own.
    const std::size_t open = panel.find("<svg ");
    if (open == std::string::npos) throw Error(fmt::format("{}: unexpected plot SVG", kModule));
    panel.insert(open + 5, fmt::format("x=\"{}\" y=\"0\" ", kPanelWidth * static_cast<int>(p)));
    svg += panel.substr(open);
    if (!svg.ends_with('\n')) svg += '\n';
  }
  svg += "</svg>\n";
  return svg;
}

void save_coord_check_svg(const std::filesystem::path& path, std::span<const CoordMean> means,
                          int t) {
  write_file_atomically(path, coord_check_svg(means, t));
}

}  // namespace unitscale

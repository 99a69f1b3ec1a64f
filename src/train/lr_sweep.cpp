#include "unitscale/train/lr_sweep.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

#include <fmt/format.h>

#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/train/language_model.hpp"
#include "unitscale/train/trainer.hpp"

namespace unitscale {

namespace {

// The columns every table has; tables written before the precision experiments have only these.
constexpr std::string_view kBaseHeader =
    "experiment,scheme,width,depth,lr,log2_lr,ffn_act_mult,attn_softmax_mult,residual_mult,"
    "residual_attn_ratio,loss_softmax_mult,seed,steps,batch,sequence_length,warmup,"
    "validation_loss,train_loss_last,diverged,seconds,tokens_per_second";
constexpr std::size_t kBaseFields = 21;
// Then the precision and the operand shares at the first and last step (empty for fp32 runs).
constexpr std::string_view kShareClasses[] = {"x", "w", "grad"};
constexpr std::string_view kShareKinds[] = {"underflow", "subnormal", "saturate"};

std::string header() {
  std::string h = std::string(kBaseHeader) + ",precision";
  for (const std::string_view step : {"first", "last"}) {
    for (const std::string_view c : kShareClasses) {
      for (const std::string_view k : kShareKinds) h += fmt::format(",{}_{}_{}", step, c, k);
    }
  }
  return h;
}
constexpr std::size_t kShareFields = 2 * 3 * 3;

std::string shares_csv(const std::optional<MatmulOperandShares>& shares) {
  std::string out;
  for (const FormatFractions* f : {shares ? &shares->inputs : nullptr,
                                   shares ? &shares->weights : nullptr,
                                   shares ? &shares->gradients : nullptr}) {
    if (f == nullptr) {
      out += ",,,";
    } else {
      out += fmt::format(",{:.9g},{:.9g},{:.9g}", f->underflow, f->subnormal, f->saturate);
    }
  }
  return out;
}

// Nine fields (x, w, grad × underflow, subnormal, saturate), all empty for none.
std::optional<MatmulOperandShares> shares_from(const std::vector<std::string>& f,
                                               std::size_t first) {
  if (f[first].empty()) return std::nullopt;
  auto fractions = [&](std::size_t at, DType format) {
    return FormatFractions{.format = format,
                           .underflow = std::stod(f[at]),
                           .subnormal = std::stod(f[at + 1]),
                           .saturate = std::stod(f[at + 2])};
  };
  return MatmulOperandShares{fractions(first, DType::kE4M3FN), fractions(first + 3, DType::kE4M3FN),
                             fractions(first + 6, DType::kE5M2)};
}

Scheme scheme_named(std::string_view name, const std::string& where) {
  for (const Scheme s : {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP}) {
    if (scheme_name(s) == name) return s;
  }
  throw Error(fmt::format("{}: unknown scheme '{}'", where, name));
}

bool is_default(double alpha) { return alpha == 1.0; }

int non_default_alphas(const UmupHyperparameters& a) {
  return !is_default(a.ffn_act_mult) + !is_default(a.attn_softmax_mult) +
         !is_default(a.residual_mult) + !is_default(a.residual_attn_ratio) +
         !is_default(a.loss_softmax_mult);
}


std::string loss_text(const SweepResult& r) {
  if (r.diverged) return "diverged";
  if (r.seeds > 1) return fmt::format("{:.4f}, mean of {} seeds", r.validation_loss, r.seeds);
  return fmt::format("{:.4f}", r.validation_loss);
}

// The runs of one width (or depth) and the best of them.
struct GroupBest {
  std::string label;
  std::vector<SweepResult> rows = {};
  std::optional<SweepResult> best = std::nullopt;
};

const SweepResult* at_lr(const std::vector<SweepResult>& rows, double lr) {
  for (const SweepResult& r : rows) {
    if (r.point.lr == lr) return &r;
  }
  return nullptr;
}

// "η* within a factor of 2 across the groups": the largest over the smallest optimum ≤ 2.
Criterion optimum_spread(const std::string& name, const std::vector<GroupBest>& groups) {
  Criterion c{.name = name};
  double lo = INFINITY, hi = 0;
  bool complete = true;
  for (const GroupBest& g : groups) {
    if (!g.best || g.best->diverged) {
      complete = false;
      c.detail += fmt::format("{}: {}; ", g.label, g.best ? "every run diverged" : "no runs");
      continue;
    }
    lo = std::min(lo, g.best->point.lr);
    hi = std::max(hi, g.best->point.lr);
    c.detail += fmt::format("{}: η* = {} (loss {}); ", g.label, learning_rate_text(g.best->point.lr),
                            loss_text(*g.best));
  }
  c.pass = complete && hi / lo <= 2.0;
  if (complete) c.detail += fmt::format("spread {}×", hi / lo);
  return c;
}

// "The loss at the first group's η* is within `tolerance` of each group's best loss".
Criterion transferred_loss(const std::string& name, const std::vector<GroupBest>& groups,
                           double tolerance) {
  Criterion c{.name = name, .pass = true};
  if (groups.empty() || !groups[0].best || groups[0].best->diverged) {
    return {.name = name, .pass = false, .detail = "no optimum at the transfer source"};
  }
  const double source_lr = groups[0].best->point.lr;
  for (const GroupBest& g : groups) {
    const SweepResult* r = at_lr(g.rows, source_lr);
    if (!g.best || r == nullptr || r->diverged) {
      c.pass = false;
      c.detail += fmt::format("{}: no finite run at η = {}; ", g.label, learning_rate_text(source_lr));
      continue;
    }
    const double gap = (r->validation_loss - g.best->validation_loss) / g.best->validation_loss;
    c.pass = c.pass && gap <= tolerance;
    c.detail += fmt::format("{}: {:.4f} at η = {} vs best {:.4f} (+{:.2f}%); ", g.label,
                            r->validation_loss, learning_rate_text(source_lr), g.best->validation_loss,
                            100 * gap);
  }
  return c;
}

}  // namespace

std::string SweepPoint::key() const {
  const UmupHyperparameters& a = alphas;
  return fmt::format("{}|{}|{}|{}|{:.17g}|{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}|{}|{}|{}|{}|{}",
                     experiment, scheme_name(scheme), width, depth, lr, a.ffn_act_mult,
                     a.attn_softmax_mult, a.residual_mult, a.residual_attn_ratio,
                     a.loss_softmax_mult, seed, steps, batch, sequence_length, warmup) +
         (precision == "fp32" ? std::string() : "|" + precision);
}

std::string learning_rate_text(double lr) {
  const double e = std::log2(lr);
  return e == std::round(e) ? fmt::format("2^{}", static_cast<int>(e)) : fmt::format("{:.4g}", lr);
}

double ranking_loss(const SweepResult& r) {
  return r.diverged || !std::isfinite(r.validation_loss) ? INFINITY : r.validation_loss;
}

SweepResult run_sweep_point(const SweepPoint& p, const TextCorpus& corpus,
                            ProgressMode progress, std::vector<float>* losses) {
  LanguageModelTask task({.scheme = p.scheme,
                          .width = p.width,
                          .depth = p.depth,
                          .head_dim = 32,
                          .mup_base_width = 64,
                          .hyperparameters = p.alphas,
                          .sequence_length = p.sequence_length,
                          .batch = p.batch,
                          .seed = p.seed,
                          .lr = p.lr,
                          .steps = p.steps,
                          .warmup = p.warmup,
                          .precision = PrecisionConfig::parse(p.precision)},
                         corpus);
  // Low precision: track the first and the last step's tensors (the others run untracked).
  const bool track = p.precision != "fp32";
  std::optional<ScaleTracker> tracker;
  std::optional<MatmulOperandShares> first_shares, last_shares;
  TrainerOptions options{.steps = p.steps,
                         .progress = progress,
                         .out = progress == ProgressMode::kQuiet ? nullptr : stderr,
                         .handle_interrupt = false};
  if (track) {
    options.after_step = [&](std::int64_t step) {
      if (step == 1) first_shares = matmul_operand_shares(*tracker, task.model().graph());
      if (step == p.steps) last_shares = matmul_operand_shares(*tracker, task.model().graph());
      tracker->set_recording(step + 1 == p.steps);
    };
  }
  Trainer trainer(task, options);
  if (track) tracker = track_scales(trainer.executor(), task.model().graph());
  const TrainingResult run = trainer.run();
  if (losses != nullptr) *losses = run.losses;
  SweepResult r{.point = p,
                .seconds = run.seconds,
                .tokens_per_second = run.items_per_second,
                .first_step_shares = first_shares,
                .last_step_shares = last_shares};
  const std::size_t n = run.losses.size();
  const std::size_t last = std::min<std::size_t>(100, n);
  r.train_loss_last =
      last == 0 ? NAN
                : std::accumulate(run.losses.end() - static_cast<std::ptrdiff_t>(last),
                                  run.losses.end(), 0.0) /
                      static_cast<double>(last);
  r.validation_loss = run.validation_loss.value_or(NAN);
  r.diverged = run.reason == StopReason::kNonFiniteLoss || !std::isfinite(r.validation_loss) ||
               r.validation_loss > std::log(256.0);
  return r;
}

SweepResult run_missing_point(SweepTable& table, const std::filesystem::path& path,
                              const SweepPoint& p, const TextCorpus& corpus,
                              std::vector<float>* losses) {
  if (losses != nullptr) losses->clear();
  if (const SweepResult* done = table.find(p)) return *done;
  const bool terminal = ::isatty(::fileno(stderr)) == 1;
  const SweepResult r = run_sweep_point(
      p, corpus, terminal ? ProgressMode::kBar : ProgressMode::kQuiet, losses);
  table.add(r);
  table.save(path);
  fmt::print("{} {:<5} d={:<4} L={} η={:<5} α={},{},{},{},{} {}: validation {} (train {:.4f}), "
             "{:.0f} s, {:.0f} tok/s\n",
             p.experiment, scheme_name(p.scheme), p.width, p.depth, learning_rate_text(p.lr),
             p.alphas.ffn_act_mult, p.alphas.attn_softmax_mult, p.alphas.residual_mult,
             p.alphas.residual_attn_ratio, p.alphas.loss_softmax_mult, p.precision,
             r.diverged ? "diverged" : fmt::format("{:.4f}", r.validation_loss), r.train_loss_last,
             r.seconds, r.tokens_per_second);
  std::fflush(stdout);
  return r;
}

SweepTable SweepTable::load(const std::filesystem::path& path) {
  SweepTable table;
  std::ifstream in(path);
  if (!in) return table;
  std::string line;
  int line_number = 0;
  std::size_t expected_fields = kBaseFields;
  while (std::getline(in, line)) {
    ++line_number;
    if (line_number == 1) {
      if (line != kBaseHeader && line != header()) {
        throw Error(fmt::format("{}:1: not a sweep table (the header differs)", path.string()));
      }
      expected_fields = line == kBaseHeader ? kBaseFields : kBaseFields + 1 + kShareFields;
      continue;
    }
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string field; std::getline(fields, field, ',');) f.push_back(field);
    if (!line.empty() && line.back() == ',') f.emplace_back();  // getline drops a last empty field
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    if (f.size() != expected_fields) {
      throw Error(fmt::format("{}: expected {} fields, got {}", where, expected_fields, f.size()));
    }
    try {
      SweepResult r;
      SweepPoint& p = r.point;
      p.experiment = f[0];
      p.scheme = scheme_named(f[1], where);
      p.width = std::stoll(f[2]);
      p.depth = std::stoi(f[3]);
      p.lr = std::stod(f[4]);
      p.alphas = {std::stod(f[6]), std::stod(f[7]), std::stod(f[8]), std::stod(f[9]),
                  std::stod(f[10])};
      p.seed = std::stoull(f[11]);
      p.steps = std::stoll(f[12]);
      p.batch = std::stoll(f[13]);
      p.sequence_length = std::stoll(f[14]);
      p.warmup = std::stoll(f[15]);
      r.validation_loss = std::stod(f[16]);
      r.train_loss_last = std::stod(f[17]);
      r.diverged = f[18] == "1";
      r.seconds = std::stod(f[19]);
      r.tokens_per_second = std::stod(f[20]);
      if (f.size() > kBaseFields) {
        p.precision = f[kBaseFields];
        r.first_step_shares = shares_from(f, kBaseFields + 1);
        r.last_step_shares = shares_from(f, kBaseFields + 1 + 9);
      }
      table.add(r);
    } catch (const std::logic_error& e) {  // std::stod and friends
      throw Error(fmt::format("{}: a field is not a number ({})", where, e.what()));
    }
  }
  return table;
}

std::string SweepTable::csv() const {
  std::string out = header() + "\n";
  for (const SweepResult& r : results_) {
    const SweepPoint& p = r.point;
    const UmupHyperparameters& a = p.alphas;
    out += fmt::format(
        "{},{},{},{},{:.17g},{:g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{},{},{},{},{},{:.9g},"
        "{:.9g},{},{:.2f},{:.1f},{}{}{}\n",
        p.experiment, scheme_name(p.scheme), p.width, p.depth, p.lr, std::log2(p.lr),
        a.ffn_act_mult, a.attn_softmax_mult, a.residual_mult, a.residual_attn_ratio,
        a.loss_softmax_mult, p.seed, p.steps, p.batch, p.sequence_length, p.warmup,
        r.validation_loss, r.train_loss_last, r.diverged ? 1 : 0, r.seconds, r.tokens_per_second,
        p.precision, shares_csv(r.first_step_shares), shares_csv(r.last_step_shares));
  }
  return out;
}

void SweepTable::save(const std::filesystem::path& path) const {
  write_file_atomically(path, csv());
}

const SweepResult* SweepTable::find(const SweepPoint& point) const {
  const std::string key = point.key();
  for (const SweepResult& r : results_) {
    if (r.point.key() == key) return &r;
  }
  return nullptr;
}

void SweepTable::add(const SweepResult& result) {
  const std::string key = result.point.key();
  for (SweepResult& r : results_) {
    if (r.point.key() == key) {
      r = result;
      return;
    }
  }
  results_.push_back(result);
}

std::vector<SweepResult> SweepTable::select(
    const std::function<bool(const SweepResult&)>& filter) const {
  std::vector<SweepResult> rows;
  std::vector<std::string> unseeded_keys;  // parallel to rows
  for (const SweepResult& r : results_) {
    if (!filter(r)) continue;
    SweepPoint unseeded = r.point;
    unseeded.seed = 0;
    const auto at = std::find(unseeded_keys.begin(), unseeded_keys.end(), unseeded.key());
    if (at == unseeded_keys.end()) {
      unseeded_keys.push_back(unseeded.key());
      rows.push_back(r);
      continue;
    }
    SweepResult& merged = rows[static_cast<std::size_t>(at - unseeded_keys.begin())];
    const double n = merged.seeds;
    auto mean_with = [n](double mean, double value) { return (mean * n + value) / (n + 1); };
    merged.validation_loss = mean_with(merged.validation_loss, r.validation_loss);
    merged.train_loss_last = mean_with(merged.train_loss_last, r.train_loss_last);
    merged.tokens_per_second = mean_with(merged.tokens_per_second, r.tokens_per_second);
    merged.diverged = merged.diverged || r.diverged;
    merged.seconds += r.seconds;
    merged.seeds += r.seeds;
  }
  std::stable_sort(rows.begin(), rows.end(), [](const SweepResult& a, const SweepResult& b) {
    return a.point.lr < b.point.lr;
  });
  return rows;
}

std::optional<SweepResult> best_of(const std::vector<SweepResult>& rows) {
  if (rows.empty()) return std::nullopt;
  const auto best = std::min_element(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    const double la = ranking_loss(a), lb = ranking_loss(b);
    return la < lb || (la == lb && a.point.lr < b.point.lr);
  });
  return *best;
}

std::string criteria_markdown(const std::vector<Criterion>& criteria) {
  std::string out = "| criterion | result | numbers |\n|---|---|---|\n";
  for (const Criterion& c : criteria) {
    std::string_view detail = c.detail;  // lists end in "; " as they are built
    while (detail.ends_with(' ') || detail.ends_with(';')) detail.remove_suffix(1);
    out += fmt::format("| {} | {} | {} |\n", c.name,
                       c.report_only ? "report" : (c.pass ? "PASS" : "FAIL"), detail);
  }
  return out;
}

std::vector<Criterion> evaluate_lr_transfer(const SweepTable& table,
                                            const std::vector<std::int64_t>& widths) {
  auto groups_of = [&](Scheme scheme) {
    std::vector<GroupBest> groups;
    for (const std::int64_t w : widths) {
      GroupBest g{.label = fmt::format("d={}", w)};
      g.rows = table.select([&](const SweepResult& r) {
        return r.point.experiment == "E3" && r.point.scheme == scheme && r.point.width == w;
      });
      g.best = best_of(g.rows);
      groups.push_back(std::move(g));
    }
    return groups;
  };
  std::vector<Criterion> out;
  int number = 1;
  for (const Scheme scheme : {Scheme::kUMuP, Scheme::kMuP}) {
    const auto groups = groups_of(scheme);
    Criterion spread = optimum_spread("", groups);
    Criterion loss = transferred_loss("", groups, 0.01);
    out.push_back({.name = fmt::format("{}. {}: η* within 2× across widths, and the d={} optimum "
                                       "within 1% of each width's best",
                                       number++, scheme_display_name(scheme), widths.front()),
                   .pass = spread.pass && loss.pass,
                   .detail = spread.detail + "; " + loss.detail});
  }
  {
    const auto groups = groups_of(Scheme::kSP);
    Criterion c = optimum_spread("", groups);
    const auto& first = groups.front().best;
    const auto& last = groups.back().best;
    c.name = fmt::format("3. SP: η* at d={} at least one grid point below d={}", widths.back(),
                         widths.front());
    c.pass = first && last && !first->diverged && !last->diverged &&
             last->point.lr <= first->point.lr / 2;
    out.push_back(c);
  }
  for (const Scheme scheme : {Scheme::kUMuP, Scheme::kMuP}) {
    const auto groups = groups_of(scheme);
    Criterion c{.name = fmt::format("4. {}: wider is better at the transferred η",
                                    scheme_display_name(scheme)),
                .pass = groups.front().best && !groups.front().best->diverged};
    if (!c.pass) {
      c.detail = "no optimum at the transfer source";
    } else {
      const double lr = groups.front().best->point.lr;
      double previous = INFINITY;
      for (const GroupBest& g : groups) {
        const SweepResult* r = at_lr(g.rows, lr);
        const double loss = r != nullptr ? ranking_loss(*r) : INFINITY;
        c.pass = c.pass && loss < previous;
        c.detail += fmt::format("{}: {}; ", g.label, r != nullptr ? loss_text(*r) : "missing");
        previous = loss;
      }
      c.detail += fmt::format("at η = {}", learning_rate_text(lr));
    }
    out.push_back(c);
  }
  {
    Criterion c{.name = "5. u-μP η* against SP η* (expected near 2^0, 2^7–2^10 above SP)",
                .pass = true,
                .report_only = true};
    const auto umup = groups_of(Scheme::kUMuP);
    const auto sp = groups_of(Scheme::kSP);
    for (std::size_t i = 0; i < widths.size(); ++i) {
      if (umup[i].best && sp[i].best) {
        c.detail += fmt::format("{}: u-μP {} vs SP {} (ratio 2^{:g}); ", umup[i].label,
                                learning_rate_text(umup[i].best->point.lr), learning_rate_text(sp[i].best->point.lr),
                                std::log2(umup[i].best->point.lr / sp[i].best->point.lr));
      }
    }
    out.push_back(c);
  }
  return out;
}

std::vector<Criterion> evaluate_independent_search(const SweepTable& table) {
  const auto rows = table.select([](const SweepResult& r) { return r.point.experiment == "E4"; });
  const SweepResult* defaults = nullptr;
  const SweepResult* combined = nullptr;
  const SweepResult* best_single = nullptr;
  for (const SweepResult& r : rows) {
    const int changed = non_default_alphas(r.point.alphas);
    if (changed == 0) defaults = &r;
    if (changed > 1) combined = &r;
    if (changed == 1 && (best_single == nullptr || ranking_loss(r) < ranking_loss(*best_single))) {
      best_single = &r;
    }
  }
  auto describe = [](const SweepResult& r) {
    const UmupHyperparameters& a = r.point.alphas;
    std::string changed;
    const std::pair<const char*, double> named[] = {
        {"α_ffn-act", a.ffn_act_mult},       {"α_attn-softmax", a.attn_softmax_mult},
        {"α_res", a.residual_mult},          {"α_res-attn-ratio", a.residual_attn_ratio},
        {"α_loss-softmax", a.loss_softmax_mult}};
    for (const auto& [name, value] : named) {
      if (!is_default(value)) changed += fmt::format("{}{} = {}", changed.empty() ? "" : ", ", name, learning_rate_text(value));
    }
    return fmt::format("{} ({})", loss_text(r), changed.empty() ? "defaults" : changed);
  };
  std::vector<Criterion> out;
  Criterion c1{.name = "1. best single-α improvement over the defaults ≤ 2%"};
  if (defaults != nullptr && best_single != nullptr && !defaults->diverged) {
    const double gain = (defaults->validation_loss - ranking_loss(*best_single)) /
                        defaults->validation_loss;
    c1.pass = gain <= 0.02;
    c1.detail = fmt::format("defaults {}; best single {}; improvement {:.2f}%",
                            describe(*defaults), describe(*best_single), 100 * gain);
  } else {
    c1.detail = "the defaults run or the single-α runs are missing or diverged";
  }
  out.push_back(c1);
  Criterion c2{.name = "2. combined run ≤ best single-α run + 0.5%"};
  if (combined != nullptr && best_single != nullptr && !best_single->diverged) {
    const double gap = (ranking_loss(*combined) - best_single->validation_loss) /
                       best_single->validation_loss;
    c2.pass = gap <= 0.005;
    c2.detail = fmt::format("combined {}; best single {}; gap {:+.2f}%", describe(*combined),
                            describe(*best_single), 100 * gap);
  } else {
    c2.detail = "the combined run or the single-α runs are missing";
  }
  out.push_back(c2);
  return out;
}

std::vector<Criterion> evaluate_depth_transfer(const SweepTable& table,
                                               const std::vector<int>& depths) {
  std::vector<GroupBest> groups;
  for (const int depth : depths) {
    GroupBest g{.label = fmt::format("L={}", depth)};
    g.rows = table.select([&](const SweepResult& r) {
      return r.point.experiment == "E6" && r.point.scheme == Scheme::kUMuP &&
             r.point.depth == depth;
    });
    g.best = best_of(g.rows);
    groups.push_back(std::move(g));
  }
  std::vector<Criterion> out;
  Criterion spread = optimum_spread("u-μP: η* within one grid point (2×) across depths", groups);
  out.push_back(spread);
  Criterion report{.name = "loss against depth at the transferred η (expected non-increasing)",
                   .pass = true,
                   .report_only = true};
  if (groups.front().best) {
    const double lr = groups.front().best->point.lr;
    for (const GroupBest& g : groups) {
      const SweepResult* r = at_lr(g.rows, lr);
      report.detail += fmt::format("{}: {}; ", g.label, r != nullptr ? loss_text(*r) : "missing");
    }
    report.detail += fmt::format("at η = {}", learning_rate_text(lr));
  }
  out.push_back(report);
  return out;
}

namespace {

// The E5 row of (scheme, width, η, precision), from any experiment; null if there is none.
std::optional<SweepResult> precision_row(const SweepTable& table, Scheme scheme,
                                         std::int64_t width, double lr,
                                         std::string_view precision) {
  const std::vector<SweepResult> rows = table.select([&](const SweepResult& r) {
    return r.point.scheme == scheme && r.point.width == width && r.point.lr == lr &&
           r.point.precision == precision && r.point.depth == 2 &&
           non_default_alphas(r.point.alphas) == 0;
  });
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::string gap_text(const std::optional<double>& gap) {
  if (!gap) return "missing";
  if (std::isinf(*gap)) return "diverged";
  return fmt::format("{:+.2f}%", 100 * *gap);
}

}  // namespace

std::optional<double> precision_gap(const SweepTable& table, Scheme scheme, std::int64_t width,
                                    double lr, std::string_view precision) {
  const auto fp32 = precision_row(table, scheme, width, lr, "fp32");
  const auto low = precision_row(table, scheme, width, lr, precision);
  if (!fp32 || !low || fp32->diverged) return std::nullopt;
  if (low->diverged) return INFINITY;
  return (low->validation_loss - fp32->validation_loss) / fp32->validation_loss;
}

std::vector<Criterion> evaluate_fp8_training(
    const SweepTable& table, const std::vector<std::int64_t>& widths,
    const std::function<double(Scheme, std::int64_t)>& lr_star) {
  auto gap = [&](Scheme scheme, std::int64_t width, std::string_view precision, double lr_factor = 1) {
    return precision_gap(table, scheme, width, lr_star(scheme, width) * lr_factor, precision);
  };
  std::vector<Criterion> out;

  Criterion umup{.name = "u-μP: FP8 within 2% of fp32 at every width", .pass = true};
  for (const std::int64_t w : widths) {
    const auto g = gap(Scheme::kUMuP, w, "fp8");
    umup.pass = umup.pass && g && *g <= 0.02;
    umup.detail += fmt::format("d={}: {}; ", w, gap_text(g));
  }
  out.push_back(umup);

  Criterion sp{.name = "SP: FP8 gap larger than u-μP's at every width, ≥ 2× it at the widest "
                       "(or SP diverges)",
               .pass = true};
  for (const std::int64_t w : widths) {
    const auto s = gap(Scheme::kSP, w, "fp8");
    const auto u = gap(Scheme::kUMuP, w, "fp8");
    const bool larger = s && u && *s > *u;
    const bool widest = w == widths.back();
    const bool twice = s && u && (std::isinf(*s) || *s >= 2 * std::max(*u, 0.0));
    sp.pass = sp.pass && larger && (!widest || twice);
    sp.detail += fmt::format("d={}: SP {} vs u-μP {}; ", w, gap_text(s), gap_text(u));
  }
  out.push_back(sp);

  Criterion underflow{.name = "SP's E5M2 gradient underflow ≥ 10× u-μP's (every width, first and "
                              "last step)",
                      .pass = true};
  for (const std::int64_t w : widths) {
    const auto s = precision_row(table, Scheme::kSP, w, lr_star(Scheme::kSP, w), "fp8");
    const auto u = precision_row(table, Scheme::kUMuP, w, lr_star(Scheme::kUMuP, w), "fp8");
    for (const bool first : {true, false}) {
      const auto share = [&](const std::optional<SweepResult>& r) -> std::optional<double> {
        if (!r) return std::nullopt;
        const auto& shares = first ? r->first_step_shares : r->last_step_shares;
        if (!shares) return std::nullopt;
        return shares->gradients.underflow;
      };
      const auto ss = share(s), us = share(u);
      const bool ok = ss && us && *ss > 0 && *ss >= 10 * *us;
      underflow.pass = underflow.pass && ok;
      underflow.detail += fmt::format(
          "d={} {} step: SP {} vs u-μP {}; ", w, first ? "first" : "last",
          ss ? fmt::format("{:.3g}%", 100 * *ss) : "missing",
          us ? fmt::format("{:.3g}%", 100 * *us) : "missing");
    }
  }
  out.push_back(underflow);

  // Reports: μP, the other arms, and FP8 one grid point below η*.
  const std::pair<std::string_view, std::string_view> arms[] = {
      {"fp8", "FP8"}, {"fp8-critical", "FP8, critical matmuls in fp32"}, {"fp16", "FP16"}};
  for (const Scheme scheme : {Scheme::kSP, Scheme::kMuP, Scheme::kUMuP}) {
    for (const auto& [precision, label] : arms) {
      if (scheme != Scheme::kMuP && precision == "fp8") continue;  // decided above
      Criterion c{.name = fmt::format("{}: {} gap at η*", scheme_display_name(scheme), label),
                  .pass = true,
                  .report_only = true};
      for (const std::int64_t w : widths) {
        c.detail += fmt::format("d={}: {}; ", w, gap_text(gap(scheme, w, precision)));
      }
      out.push_back(c);
    }
    Criterion below{.name = fmt::format("{}: FP8 gap at η*/2", scheme_display_name(scheme)),
                    .pass = true,
                    .report_only = true};
    for (const std::int64_t w : widths) {
      below.detail += fmt::format("d={}: {}; ", w, gap_text(gap(scheme, w, "fp8", 0.5)));
    }
    out.push_back(below);
  }
  return out;
}

}  // namespace unitscale

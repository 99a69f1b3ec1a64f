// The LR-sweep table and the E3/E4/E6 criteria, decided on made-up tables whose answers are known.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "unitscale/error.hpp"
#include "unitscale/train/lr_sweep.hpp"

namespace us = unitscale;
namespace fs = std::filesystem;

namespace {

us::SweepResult row(const char* experiment, us::Scheme scheme, std::int64_t width, int depth,
                    int log2_lr, double loss, bool diverged = false) {
  us::SweepResult r;
  r.point = {.experiment = experiment, .scheme = scheme, .width = width, .depth = depth,
             .lr = std::ldexp(1.0, log2_lr)};
  r.validation_loss = loss;
  r.train_loss_last = loss + 0.01;
  r.diverged = diverged;
  return r;
}

// A bowl over the grid around `best_log2` with minimum `floor`.
void add_bowl(us::SweepTable& t, us::Scheme scheme, std::int64_t width, int from, int to,
              int best_log2, double floor) {
  for (int e = from; e <= to; ++e) {
    t.add(row("E3", scheme, width, 2, e, floor + 0.02 * (e - best_log2) * (e - best_log2)));
  }
}

const us::Criterion& named(const std::vector<us::Criterion>& cs, const std::string& prefix) {
  for (const auto& c : cs) {
    if (c.name.rfind(prefix, 0) == 0) return c;
  }
  throw std::runtime_error("no criterion " + prefix);
}

TEST(SweepTable, RoundTripsThroughCsvAndReplacesByKey) {
  us::SweepTable t;
  us::SweepResult a = row("E3", us::Scheme::kUMuP, 128, 2, -3, 1.2345678901);
  a.point.alphas.residual_mult = 0.25;
  a.seconds = 12.5;
  t.add(a);
  t.add(row("E3", us::Scheme::kSP, 64, 2, -9, 2.0, true));
  const fs::path path = fs::temp_directory_path() / ("unitscale_sweep_" + std::to_string(::getpid()) + ".csv");
  t.save(path);
  const us::SweepTable back = us::SweepTable::load(path);
  ASSERT_EQ(back.results().size(), 2u);
  const us::SweepResult* found = back.find(a.point);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->point.lr, 0.125);
  EXPECT_EQ(found->point.alphas.residual_mult, 0.25);
  EXPECT_NEAR(found->validation_loss, 1.2345678901, 1e-8);
  EXPECT_TRUE(back.results()[1].diverged);
  us::SweepResult again = a;
  again.validation_loss = 1.0;
  t.add(again);
  EXPECT_EQ(t.results().size(), 2u);
  EXPECT_EQ(t.find(a.point)->validation_loss, 1.0);

  std::ofstream(path, std::ios::app) << "E3,SP,64,2,notanumber\n";
  try {
    us::SweepTable::load(path);
    FAIL();
  } catch (const us::Error& e) {
    EXPECT_NE(std::string(e.what()).find(":4:"), std::string::npos) << e.what();
  }
  fs::remove(path);
  EXPECT_TRUE(us::SweepTable::load(path).results().empty());  // no file: an empty table
}

TEST(SweepTable, BestOfRanksDivergedRunsLastAndBreaksTiesTowardTheSmallerLr) {
  EXPECT_FALSE(us::best_of({}).has_value());
  const auto best = us::best_of({row("E3", us::Scheme::kSP, 64, 2, -5, 1.0, true),
                                 row("E3", us::Scheme::kSP, 64, 2, -6, 1.5),
                                 row("E3", us::Scheme::kSP, 64, 2, -8, 1.5)});
  EXPECT_EQ(best->point.lr, std::ldexp(1.0, -8));
}

TEST(LrTransferCriteria, DecideTheTextbookOutcome) {
  us::SweepTable t;
  // u-μP: optimum at 2^0 at every width, wider better. μP: drifts 2^-8 → 2^-6 (4×). SP: drifts
  // down two grid points.
  for (const auto& [w, floor] : {std::pair{64, 2.0}, {128, 1.9}, {256, 1.8}}) {
    add_bowl(t, us::Scheme::kUMuP, w, -4, 3, 0, floor);
  }
  add_bowl(t, us::Scheme::kMuP, 64, -12, -5, -8, 2.0);
  add_bowl(t, us::Scheme::kMuP, 128, -12, -5, -7, 1.9);
  add_bowl(t, us::Scheme::kMuP, 256, -12, -5, -6, 1.8);
  add_bowl(t, us::Scheme::kSP, 64, -12, -5, -8, 2.0);
  add_bowl(t, us::Scheme::kSP, 128, -12, -5, -9, 1.95);
  add_bowl(t, us::Scheme::kSP, 256, -12, -5, -10, 1.9);
  const auto c = us::evaluate_lr_transfer(t, {64, 128, 256});
  EXPECT_TRUE(named(c, "1.").pass) << named(c, "1.").detail;
  EXPECT_FALSE(named(c, "2.").pass) << named(c, "2.").detail;
  EXPECT_TRUE(named(c, "3.").pass) << named(c, "3.").detail;
  EXPECT_TRUE(named(c, "4. u-μP").pass);
  EXPECT_TRUE(named(c, "5.").report_only);
  EXPECT_NE(named(c, "5.").detail.find("ratio 2^10"), std::string::npos) << named(c, "5.").detail;
}

TEST(LrTransferCriteria, OnePercentToleranceAndWiderIsBetterBite) {
  us::SweepTable t;
  // Optimum 2^0 at d=64 but 2^1 at d=256, where 2^0 is 1.5% worse: within 2×, not within 1%.
  add_bowl(t, us::Scheme::kUMuP, 64, -2, 2, 0, 2.0);
  t.add(row("E3", us::Scheme::kUMuP, 256, 2, -1, 2.2));
  t.add(row("E3", us::Scheme::kUMuP, 256, 2, 0, 1.0 * 2.03));
  t.add(row("E3", us::Scheme::kUMuP, 256, 2, 1, 2.0));
  t.add(row("E3", us::Scheme::kUMuP, 256, 2, 2, 2.1));
  const auto c = us::evaluate_lr_transfer(t, {64, 256});
  EXPECT_FALSE(named(c, "1.").pass) << named(c, "1.").detail;
  // At the transferred η = 2^0, d=256 (2.03) is worse than d=64 (2.0).
  EXPECT_FALSE(named(c, "4. u-μP").pass);
}

TEST(IndependentSearchCriteria, TwoPercentAndHalfAPercent) {
  us::SweepTable t;
  auto e4 = [](double loss, us::UmupHyperparameters a) {
    us::SweepResult r = row("E4", us::Scheme::kUMuP, 128, 2, 0, loss);
    r.point.alphas = a;
    return r;
  };
  t.add(e4(2.0, {}));
  t.add(e4(1.97, {.residual_mult = 0.5}));  // 1.5% better: within 2%
  t.add(e4(2.05, {.attn_softmax_mult = 4}));
  t.add(e4(1.985, {.attn_softmax_mult = 1, .residual_mult = 0.5, .loss_softmax_mult = 2}));
  auto c = us::evaluate_independent_search(t);
  EXPECT_TRUE(c[0].pass) << c[0].detail;
  EXPECT_FALSE(c[1].pass) << c[1].detail;  // 1.985 > 1.97 × 1.005
  t.add(e4(1.95, {.loss_softmax_mult = 2}));  // now 2.5% better than the defaults
  c = us::evaluate_independent_search(t);
  EXPECT_FALSE(c[0].pass) << c[0].detail;
}

TEST(DepthTransferCriteria, OneGridPoint) {
  us::SweepTable t;
  auto e6 = [&](int depth, int best) {
    for (int e = -2; e <= 2; ++e) {
      t.add(row("E6", us::Scheme::kUMuP, 128, depth, e, 2.0 + 0.05 * (e - best) * (e - best)));
    }
  };
  e6(2, 0);
  e6(4, 1);
  e6(8, 0);
  EXPECT_TRUE(us::evaluate_depth_transfer(t, {2, 4, 8})[0].pass);
  e6(8, -1);
  EXPECT_FALSE(us::evaluate_depth_transfer(t, {2, 4, 8})[0].pass);  // 2^-1 .. 2^1: 4×
}

TEST(SweepTable, SelectAveragesTheSeedsOfAPoint) {
  us::SweepTable t;
  // L = 8: seed 0 puts η* at 2^1 (4× the 2^-1 of L = 2: FAIL); seeds 1 and 2 favour 2^0.
  auto seeded = [](int depth, int log2_lr, double loss, std::uint64_t seed) {
    us::SweepResult r = row("E6", us::Scheme::kUMuP, 128, depth, log2_lr, loss);
    r.point.seed = seed;
    r.seconds = 10;
    return r;
  };
  for (int e = -2; e <= 2; ++e) t.add(seeded(2, e, 2.0 + 0.05 * (e + 1) * (e + 1), 0));
  for (int e = -2; e <= 2; ++e) t.add(seeded(8, e, 2.0 + 0.05 * (e - 1) * (e - 1), 0));
  EXPECT_FALSE(us::evaluate_depth_transfer(t, {2, 8})[0].pass);
  t.add(seeded(8, 0, 1.95, 1));
  t.add(seeded(8, 1, 2.10, 1));
  t.add(seeded(8, 0, 1.96, 2));
  t.add(seeded(8, 1, 2.08, 2));
  EXPECT_EQ(t.results().size(), 14u);  // the table keeps every run

  const auto rows = t.select([](const us::SweepResult& r) { return r.point.depth == 8; });
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[2].point.lr, 1.0);
  EXPECT_EQ(rows[2].seeds, 3);
  EXPECT_NEAR(rows[2].validation_loss, (2.05 + 1.95 + 1.96) / 3, 1e-12);
  EXPECT_NEAR(rows[2].train_loss_last, (2.06 + 1.96 + 1.97) / 3, 1e-12);
  EXPECT_EQ(rows[2].seconds, 30);
  EXPECT_EQ(rows[3].seeds, 3);
  EXPECT_NEAR(rows[3].validation_loss, (2.0 + 2.10 + 2.08) / 3, 1e-12);
  EXPECT_EQ(rows[0].seeds, 1);
  const auto criteria = us::evaluate_depth_transfer(t, {2, 8});
  EXPECT_TRUE(criteria[0].pass) << criteria[0].detail;  // 2^-1 .. 2^0 on the means
  EXPECT_NE(criteria[0].detail.find("mean of 3 seeds"), std::string::npos) << criteria[0].detail;

  us::SweepResult diverged = seeded(8, 0, NAN, 3);
  diverged.diverged = true;
  t.add(diverged);
  const auto with_divergence = t.select([](const us::SweepResult& r) { return r.point.depth == 8; });
  EXPECT_TRUE(with_divergence[2].diverged);  // one diverged seed makes the point diverged
}

// A row of the precision experiment E5 at width `width`, with a gradient underflow share at the
// first and the last step.
us::SweepResult precision_row(us::Scheme scheme, std::int64_t width, int log2_lr,
                              const char* precision, double loss, double grad_underflow = 0) {
  us::SweepResult r = row("E5", scheme, width, 2, log2_lr, loss);
  r.point.precision = precision;
  if (std::string(precision) != "fp32") {
    us::MatmulOperandShares shares;
    shares.gradients = {.format = us::DType::kE5M2, .underflow = grad_underflow};
    r.first_step_shares = shares;
    shares.gradients.underflow = grad_underflow / 2;
    r.last_step_shares = shares;
  }
  return r;
}

TEST(SweepTable, PrecisionAndOperandSharesRoundTripAndOldTablesStillLoad) {
  us::SweepTable t;
  us::SweepResult fp8 = precision_row(us::Scheme::kSP, 64, -8, "fp8", 3.25, 0.4);
  fp8.first_step_shares->inputs = {.format = us::DType::kE4M3FN, .underflow = 0.01,
                                   .subnormal = 0.02, .saturate = 0.03};
  t.add(fp8);
  t.add(precision_row(us::Scheme::kSP, 64, -8, "fp32", 2.6));
  // The fp32 point keeps the key it had before precisions existed; fp8 is another point.
  EXPECT_EQ(t.results().size(), 2u);
  EXPECT_EQ(t.find(precision_row(us::Scheme::kSP, 64, -8, "fp32", 0).point)->validation_loss, 2.6);
  const fs::path path =
      fs::temp_directory_path() / ("unitscale_precision_" + std::to_string(::getpid()) + ".csv");
  t.save(path);
  const us::SweepTable back = us::SweepTable::load(path);
  const us::SweepResult* r = back.find(fp8.point);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->point.precision, "fp8");
  ASSERT_TRUE(r->first_step_shares && r->last_step_shares);
  EXPECT_DOUBLE_EQ(r->first_step_shares->gradients.underflow, 0.4);
  EXPECT_DOUBLE_EQ(r->last_step_shares->gradients.underflow, 0.2);
  EXPECT_DOUBLE_EQ(r->first_step_shares->inputs.saturate, 0.03);
  EXPECT_FALSE(back.find(precision_row(us::Scheme::kSP, 64, -8, "fp32", 0).point)->first_step_shares);

  // A table written before the precision column: 21 fields, every row fp32.
  std::ofstream(path) << "experiment,scheme,width,depth,lr,log2_lr,ffn_act_mult,attn_softmax_mult,"
                         "residual_mult,residual_attn_ratio,loss_softmax_mult,seed,steps,batch,"
                         "sequence_length,warmup,validation_loss,train_loss_last,diverged,seconds,"
                         "tokens_per_second\n"
                         "E3,SP,64,2,0.00390625,-8,1,1,1,1,1,0,1000,16,64,100,2.59,2.6,0,8.2,130000\n";
  const us::SweepTable old = us::SweepTable::load(path);
  ASSERT_EQ(old.results().size(), 1u);
  EXPECT_EQ(old.results()[0].point.precision, "fp32");
  EXPECT_EQ(old.results()[0].validation_loss, 2.59);
  fs::remove(path);
}

// E5 on a made-up table: u-μP's FP8 gap 0.5% and 1.5%, SP's 10% and 30%; SP's gradients underflow
// 40% against u-μP's 1% (first step) and 0.5% (last).
TEST(Fp8TrainingCriteria, DecideTheTextbookOutcomeAndBiteOnEachMargin) {
  auto table = [](double umup_gap_256, double sp_gap_256, double sp_underflow) {
    us::SweepTable t;
    for (const auto& [w, umup_gap, sp_gap] :
         {std::tuple{64, 0.005, 0.10}, std::tuple{256, umup_gap_256, sp_gap_256}}) {
      t.add(precision_row(us::Scheme::kUMuP, w, -1, "fp32", 2.0));
      t.add(precision_row(us::Scheme::kUMuP, w, -1, "fp8", 2.0 * (1 + umup_gap), 0.01));
      t.add(precision_row(us::Scheme::kSP, w, -8, "fp32", 2.0));
      t.add(precision_row(us::Scheme::kSP, w, -8, "fp8", 2.0 * (1 + sp_gap), sp_underflow));
    }
    return t;
  };
  auto lr_star = [](us::Scheme s, std::int64_t) {
    return s == us::Scheme::kUMuP ? 0.5 : std::ldexp(1.0, -8);
  };
  const auto pass = us::evaluate_fp8_training(table(0.015, 0.30, 0.4), {64, 256}, lr_star);
  EXPECT_TRUE(named(pass, "u-μP: FP8 within 2%").pass) << named(pass, "u-μP").detail;
  EXPECT_TRUE(named(pass, "SP: FP8 gap larger").pass) << named(pass, "SP: FP8 gap").detail;
  EXPECT_TRUE(named(pass, "SP's E5M2 gradient underflow").pass);
  EXPECT_TRUE(named(pass, "μP: FP8 gap at η*").report_only);
  EXPECT_NE(named(pass, "μP: FP8 gap at η*").detail.find("missing"), std::string::npos);
  // Each margin bites: u-μP at +2.5%; SP at d=256 only 1.5× u-μP's gap; SP's underflow 5× u-μP's
  // at the first step (0.05 against 0.01).
  EXPECT_FALSE(named(us::evaluate_fp8_training(table(0.025, 0.30, 0.4), {64, 256}, lr_star),
                     "u-μP: FP8 within 2%").pass);
  EXPECT_FALSE(named(us::evaluate_fp8_training(table(0.015, 0.0225, 0.4), {64, 256}, lr_star),
                     "SP: FP8 gap larger").pass);
  EXPECT_FALSE(named(us::evaluate_fp8_training(table(0.015, 0.30, 0.05), {64, 256}, lr_star),
                     "SP's E5M2 gradient underflow").pass);
}

}  // namespace

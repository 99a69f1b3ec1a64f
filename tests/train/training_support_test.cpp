// What the training programs are made of besides the Trainer: the command-line parser, the
// progress reporter and the metrics log.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/train/command_line.hpp"
#include "unitscale/train/metrics_log.hpp"
#include "unitscale/train/progress.hpp"

namespace us = unitscale;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const us::Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct Parsed {
  std::int64_t width = 128;
  double lr = 1.0;
  std::string scheme = "umup";
  std::string data = "fortunes";
  bool resume = false;
};

us::CommandLine make_cli(Parsed& p) {
  us::CommandLine cli("prog", "A program.");
  cli.section("Model")
      .option("--width", &p.width, "N", "width", 1)
      .option("--lr", &p.lr, "ETA", "learning rate")
      .choice("--scheme", &p.scheme, {"umup", "mup", "sp"}, "parametrization")
      .option("--data", &p.data, "PATH", "data")
      .flag("--resume", &p.resume, "resume");
  return cli;
}

bool parse(us::CommandLine& cli, std::vector<const char*> args) {
  args.insert(args.begin(), "prog");
  return cli.parse(static_cast<int>(args.size()), args.data());
}

TEST(CommandLine, ParsesEveryKindOfOptionAndKeepsDefaults) {
  Parsed p;
  us::CommandLine cli = make_cli(p);
  ASSERT_TRUE(parse(cli, {"--width", "256", "--lr=2^-8", "--scheme", "sp", "--resume"}));
  EXPECT_EQ(p.width, 256);
  EXPECT_EQ(p.lr, 1.0 / 256);
  EXPECT_EQ(p.scheme, "sp");
  EXPECT_TRUE(p.resume);
  EXPECT_EQ(p.data, "fortunes");
  EXPECT_TRUE(cli.given("--lr"));
  EXPECT_FALSE(cli.given("--data"));
  EXPECT_EQ(us::CommandLine::parse_number("x", "0.125"), 0.125);
  EXPECT_EQ(us::CommandLine::parse_number("x", "2^3"), 8.0);
}

TEST(CommandLine, BadInputNamesTheOptionAndWhatItExpected) {
  Parsed p;
  us::CommandLine cli = make_cli(p);
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--width", "0"}); }), "--width needs an integer ≥ 1, got '0'"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--width", "12x"}); }), "--width"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--lr", "fast"}); }), "--lr needs a number"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--lr", "2^x"}); }), "2^E"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--scheme", "ntk"}); }), "umup|mup|sp"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--depth", "2"}); }), "unknown option '--depth'"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--width"}); }), "--width needs a value"));
  EXPECT_TRUE(contains(error_of([&] { parse(cli, {"--resume=yes"}); }), "takes no value"));
  EXPECT_THROW(cli.flag("--resume", &p.resume, "again"), us::Error);
}

TEST(CommandLine, ListsSplitAtCommasAndIntegersAreChecked) {
  EXPECT_EQ(us::CommandLine::split_list("sp,mup,umup"),
            (std::vector<std::string>{"sp", "mup", "umup"}));
  EXPECT_EQ(us::CommandLine::split_list("a,,b"), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(us::CommandLine::split_list(""), (std::vector<std::string>{""}));
  EXPECT_EQ(us::CommandLine::parse_positive_integers("--widths", "256,64,128"),
            (std::vector<std::int64_t>{256, 64, 128}));  // the given order
  for (const char* bad : {"64,", "64,0", "64,-8", "64,1.5", "64,x", "2^6"}) {
    EXPECT_TRUE(contains(
        error_of([&] { us::CommandLine::parse_positive_integers("--widths", bad); }),
        "--widths: '"))
        << bad;
  }
  EXPECT_TRUE(contains(error_of([] { us::CommandLine::parse_positive_integers("--hidden", "512,0"); }),
                       "--hidden: '0' is not a positive integer (in '512,0')"));
}

TEST(CommandLine, HelpListsEveryOptionWithItsDefault) {
  Parsed p;
  p.lr = std::ldexp(1.0, -8);
  us::CommandLine cli = make_cli(p);
  const std::string help = cli.help();
  EXPECT_TRUE(contains(help, "usage: prog [options]"));
  EXPECT_TRUE(contains(help, "Model:"));
  EXPECT_TRUE(contains(help, "(default 128)"));
  EXPECT_TRUE(contains(help, "(default 2^-8)"));
  EXPECT_TRUE(contains(help, "--scheme umup|mup|sp"));
  EXPECT_TRUE(contains(help, "(default fortunes)"));
}

TEST(Progress, FormatsDurationsAndRates) {
  EXPECT_EQ(us::ProgressReporter::format_duration(42.4), "42s");
  EXPECT_EQ(us::ProgressReporter::format_duration(185), "3m05s");
  EXPECT_EQ(us::ProgressReporter::format_duration(3720), "1h02m");
  EXPECT_EQ(us::ProgressReporter::format_duration(-1), "?");
  EXPECT_EQ(us::ProgressReporter::format_rate(789), "789");
  EXPECT_EQ(us::ProgressReporter::format_rate(12345), "12.3k");
  EXPECT_EQ(us::ProgressReporter::format_rate(4.56e6), "4.56M");
}

std::string captured(const std::function<void(std::FILE*)>& write) {
  char* buffer = nullptr;
  std::size_t size = 0;
  std::FILE* f = ::open_memstream(&buffer, &size);
  write(f);
  std::fclose(f);
  std::string out(buffer, size);
  std::free(buffer);
  return out;
}

TEST(Progress, PlainLinesAtTheFirstEveryNthAndLastStep) {
  const std::string out = captured([](std::FILE* f) {
    us::ProgressReporter p({.total_steps = 10, .mode = us::ProgressMode::kLines, .out = f,
                            .line_every = 4});
    p.start();
    for (int step = 1; step <= 10; ++step) p.update(step, 5.0 - 0.1 * step, 100.0 * step);
    p.message("step 10: validation loss 3.5000");
    p.finish();
  });
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5);  // steps 1, 4, 8, 10 and the message
  EXPECT_TRUE(contains(out, "step  1/10  loss 4.9000"));
  EXPECT_TRUE(contains(out, "step  4/10"));
  EXPECT_TRUE(contains(out, "step  8/10"));
  EXPECT_TRUE(contains(out, "step 10/10  loss 4.0000"));
  EXPECT_FALSE(contains(out, "step  5/10"));
  EXPECT_FALSE(contains(out, "\r"));  // a log file gets no carriage returns
}

TEST(Progress, BarRedrawsOneLineAndMessagesDoNotGarbleIt) {
  const std::string out = captured([](std::FILE* f) {
    us::ProgressReporter p({.total_steps = 4, .mode = us::ProgressMode::kBar, .out = f});
    p.start();
    p.update(1, 5.0, 10);
    p.message("hello");
    p.update(4, 4.0, 40);
    p.finish();
  });
  EXPECT_TRUE(contains(out, "\r"));
  EXPECT_TRUE(contains(out, "\r\x1b[Khello\n"));
  EXPECT_TRUE(contains(out, "100% [########################]"));
  EXPECT_EQ(out.back(), '\n');
}

TEST(MetricsLog, CsvJsonAndRestoreUpToACheckpoint) {
  const fs::path dir = fs::temp_directory_path() / ("unitscale_metrics_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    us::MetricsLog log(dir);
    for (int step = 1; step <= 5; ++step) {
      us::MetricRecord r{.step = step, .train_loss = 6.0 - step, .lr_multiplier = 0.5};
      if (step == 3) r.validation_loss = 2.5;
      if (step == 5) r.train_loss = std::nan("");
      log.add(r);
    }
    log.write();
    const std::string csv = log.csv();
    EXPECT_TRUE(contains(csv, "step,train_loss,validation_loss,lr_multiplier"));
    EXPECT_TRUE(contains(csv, "\n3,3,2.5,0.5,"));
    EXPECT_TRUE(contains(log.json_lines(), "\"train_loss\":null"));  // JSON has no NaN
  }
  us::MetricsLog resumed(dir);
  resumed.restore(3);
  ASSERT_EQ(resumed.records().size(), 3u);
  EXPECT_EQ(resumed.records()[2].validation_loss, 2.5);
  EXPECT_EQ(resumed.records()[1].train_loss, 4.0);
  EXPECT_TRUE(fs::exists(dir / "loss.svg"));
  fs::remove_all(dir);
}

}  // namespace

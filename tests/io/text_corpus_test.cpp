// The text corpus (io/text_corpus.hpp): which files a directory contributes and in what order,
// the '%' splitting and '\n' joining, the train/validation split, and the two window readers.
// Every expected string is written out in closed form from the synthetic files the test makes.

#include "unitscale/io/text_corpus.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "../support/error_message.hpp"
#include "../support/temp_directory.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using TempDir = testing_support::TempDirectory;
using testing_support::message_of;

// --- load_text_corpus ---------------------------------------------------------------------------

TEST(TextCorpus, DirectoryReadsSortedTextFilesSplitAtPercentLinesAndJoinsWithOneNewline) {
  TempDir dir;
  dir.write("b", "B1\n%\nB2\n%%\nB3\n");                           // "%%" is not a separator
  dir.write("a", "A1 line1\nA1 line2\n%\n%\nA2\n\n\n%\n");          // empty entry, trailing \n
  dir.write("Z", "Z1");                                             // 'Z' < 'a' in byte order
  dir.write("a.dat", std::string("\x00\x00\x00\x02\xff", 5));       // strfile index: skipped
  fs::create_symlink("a", dir.path() / "a.u8");                    // duplicate link: skipped
  fs::create_directory(dir.path() / "off");                        // subdirectory: skipped
  dir.write("off/c", "C1\n%\nC2\n");

  const TextCorpus corpus = load_text_corpus(dir.path(), {.validation_every = 0});
  EXPECT_EQ(corpus.files, (std::vector<fs::path>{dir.path() / "Z", dir.path() / "a",
                                                 dir.path() / "b"}));
  EXPECT_EQ(corpus.entries, 5);
  EXPECT_EQ(corpus.text, "Z1\nA1 line1\nA1 line2\nA2\nB1\nB2\n%%\nB3");
  EXPECT_EQ(corpus.train, corpus.text);
  EXPECT_EQ(corpus.validation, "");
}

// "e1", "e2", ... over two files, so the entry count runs on across files.
std::string entries_text(int first, int last) {
  std::string text;
  for (int k = first; k <= last; ++k) text += fmt::format("e{}\n%\n", k);
  return text;
}

TEST(TextCorpus, EveryNthEntryCountedOverAllFilesIsValidation) {
  TempDir dir;
  dir.write("f1", entries_text(1, 30));
  dir.write("f2", entries_text(31, 45));
  for (const std::int64_t every : {20, 3, 7}) {
    const TextCorpus corpus = load_text_corpus(dir.path(), {.validation_every = every});
    std::string text, train, validation;
    for (int k = 1; k <= 45; ++k) {
      const std::string entry = fmt::format("e{}", k);
      text += (k > 1 ? "\n" : "") + entry;
      std::string& split = k % every == 0 ? validation : train;
      split += (split.empty() ? "" : "\n") + entry;
    }
    EXPECT_EQ(corpus.entries, 45);
    EXPECT_EQ(corpus.text, text);
    EXPECT_EQ(corpus.train, train) << "every " << every;
    EXPECT_EQ(corpus.validation, validation) << "every " << every;
  }
  // The default is every 20th: entries 20 and 40.
  EXPECT_EQ(load_text_corpus(dir.path()).validation, "e20\ne40");
}

TEST(TextCorpus, FileIsReadVerbatimAndSplitByBytes) {
  TempDir dir;
  std::string bytes = "first line\n%\nnot a separator in a plain file\n";
  while (bytes.size() < 100) bytes += static_cast<char>('a' + bytes.size() % 26);
  bytes += std::string("\x00\xff", 2);  // any byte survives
  const fs::path file = dir.write("book.txt", bytes);

  const TextCorpus corpus = load_text_corpus(file);
  EXPECT_EQ(corpus.files, std::vector<fs::path>{file});
  EXPECT_EQ(corpus.entries, 1);
  EXPECT_EQ(corpus.text, bytes);
  // 102 bytes, every 20th: the last 102 / 20 = 5 bytes are validation.
  EXPECT_EQ(corpus.train, bytes.substr(0, 97));
  EXPECT_EQ(corpus.validation, bytes.substr(97));

  const TextCorpus whole = load_text_corpus(file, {.validation_every = 0});
  EXPECT_EQ(whole.train, bytes);
  EXPECT_EQ(whole.validation, "");
}

TEST(TextCorpus, DirectoryWithFewerEntriesThanTheSplitIsSplitByBytes) {
  TempDir dir;
  dir.write("only", "one\n%\ntwo\n%\nthree\n");
  const TextCorpus corpus = load_text_corpus(dir.path(), {.validation_every = 4});
  EXPECT_EQ(corpus.entries, 3);
  EXPECT_EQ(corpus.text, "one\ntwo\nthree");  // 13 bytes: the last 13 / 4 = 3 are validation
  EXPECT_EQ(corpus.train, "one\ntwo\nth");
  EXPECT_EQ(corpus.validation, "ree");
}

TEST(TextCorpus, ErrorsNameThePath) {
  TempDir dir;
  const fs::path missing = dir.path() / "nowhere";
  EXPECT_THAT(message_of([&] { load_text_corpus(missing); }),
              HasSubstr(missing.string() + " does not exist"));
  const fs::path empty = dir.write("empty.txt", "");
  EXPECT_THAT(message_of([&] { load_text_corpus(empty); }), HasSubstr(empty.string()));
  EXPECT_THAT(message_of([&] { load_text_corpus(empty); }), HasSubstr("empty"));
  EXPECT_THAT(message_of([&] { load_text_corpus(dir.write("x", "x"), {.validation_every = 1}); }),
              HasSubstr("validation_every"));
  EXPECT_THROW(load_text_corpus(dir.path() / "x", {.validation_every = -20}), Error);
}

TEST(TextCorpus, DirectoryWithoutTextIsAnError) {
  TempDir dir;
  fs::create_directory(dir.path() / "sub");
  dir.write("a.dat", "index");
  EXPECT_THAT(message_of([&] { load_text_corpus(dir.path()); }),
              HasSubstr("has no text files"));
  dir.write("blank", "%\n\n%\n");
  EXPECT_THAT(message_of([&] { load_text_corpus(dir.path()); }), HasSubstr("hold no text"));
}

TEST(TextCorpus, MissingFortunesSuggestsTheDebianPackage) {
  if (fs::exists(kFortunesDirectory)) GTEST_SKIP() << "the fortunes package is installed";
  EXPECT_THAT(message_of([] { load_text_corpus(kFortunesDirectory); }),
              HasSubstr("apt-get install fortunes"));
}

TEST(TextCorpus, RealFortunes) {
  if (!fs::is_directory(kFortunesDirectory)) GTEST_SKIP() << "the fortunes package is missing";
  const TextCorpus corpus = load_text_corpus(kFortunesDirectory);
  EXPECT_TRUE(std::is_sorted(corpus.files.begin(), corpus.files.end()));
  for (const fs::path& f : corpus.files) {
    EXPECT_NE(f.extension(), ".dat");
    EXPECT_NE(f.extension(), ".u8");
  }
  EXPECT_GT(corpus.entries, 1000);
  // Whole entries, every 20th: the two splits plus one joining '\n' per entry make the text.
  EXPECT_EQ(corpus.train.size() + corpus.validation.size() + 1, corpus.text.size());
  const double share = static_cast<double>(corpus.validation.size()) /
                       static_cast<double>(corpus.text.size());
  EXPECT_NEAR(share, 0.05, 0.01);
  std::printf("fortunes: %zu files, %lld entries, %zu bytes (train %zu, validation %zu)\n",
              corpus.files.size(), static_cast<long long>(corpus.entries), corpus.text.size(),
              corpus.train.size(), corpus.validation.size());
}

// --- TextWindowSampler --------------------------------------------------------------------------

// Byte i of the stream is i mod 256, so a window's content follows from its offset alone, and
// bytes above 127 check that ids are unsigned.
std::string counting_stream(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i % 256);
  return s;
}

struct Batch {
  std::vector<std::int32_t> ids, targets;
  bool operator==(const Batch&) const = default;
};

Batch draw(const TextWindowSampler& sampler, std::int64_t step, std::int64_t batch) {
  const auto n = static_cast<std::size_t>(batch * sampler.sequence_length());
  Batch out{std::vector<std::int32_t>(n), std::vector<std::int32_t>(n)};
  sampler.sample(step, batch, out.ids, out.targets);
  return out;
}

TEST(TextWindowSampler, RowsAreTheWindowsAtTheirOffsetsWithTargetsShiftedByOne) {
  const std::int64_t S = 16, batch = 8;
  const std::string stream = counting_stream(5000);
  const TextWindowSampler sampler(stream, S, 42);
  for (std::int64_t step = 0; step < 20; ++step) {
    const Batch b = draw(sampler, step, batch);
    for (std::int64_t r = 0; r < batch; ++r) {
      const std::int64_t offset = sampler.offset(step, batch, r);
      ASSERT_GE(offset, 0);
      ASSERT_LE(offset + S + 1, static_cast<std::int64_t>(stream.size()));
      for (std::int64_t j = 0; j < S; ++j) {
        const auto at = static_cast<std::size_t>(r * S + j);
        EXPECT_EQ(b.ids[at], (offset + j) % 256);
        EXPECT_EQ(b.targets[at], (offset + j + 1) % 256);
      }
    }
  }
}

TEST(TextWindowSampler, BatchIsAFunctionOfSeedAndStepOnly) {
  const std::string stream = counting_stream(10000);
  const TextWindowSampler a(stream, 32, 7), b(stream, 32, 7), other_seed(stream, 32, 8);
  // Steps drawn forwards from one sampler and backwards from another agree: no hidden state.
  std::vector<Batch> forwards, backwards(10);
  for (std::int64_t t = 0; t < 10; ++t) forwards.push_back(draw(a, t, 4));
  for (std::int64_t t = 9; t >= 0; --t) backwards[static_cast<std::size_t>(t)] = draw(b, t, 4);
  EXPECT_EQ(forwards, backwards);
  EXPECT_EQ(draw(a, 3, 4), forwards[3]);  // drawing again changes nothing
  // Different steps and seeds give different batches (8 equal offsets by chance: ~1e-30).
  for (std::int64_t t = 1; t < 10; ++t) EXPECT_NE(forwards[0], forwards[static_cast<std::size_t>(t)]);
  EXPECT_NE(draw(other_seed, 0, 4), forwards[0]);
  // The owned copy outlives the caller's string.
  std::string temporary = counting_stream(100);
  const TextWindowSampler owner(std::move(temporary), 4, 1);
  temporary.assign(100, 'x');
  EXPECT_EQ(draw(owner, 0, 1).ids[1], (owner.offset(0, 1, 0) + 1) % 256);
}

TEST(TextWindowSampler, OffsetsAreUniformOverEveryStart) {
  // 100 possible starts, 100,000 draws (1000 per start). Chi-square with 99 degrees of freedom
  // has mean 99 and standard deviation sqrt(198) = 14.1; the bound 170 is five standard
  // deviations out (p about 1e-5), so only a biased sampler fails it. The draws are
  // deterministic, so the test is not flaky either way.
  const std::int64_t S = 4, starts = 100, batch = 50, steps = 2000;
  const TextWindowSampler sampler(counting_stream(static_cast<std::size_t>(S + starts)), S, 2024);
  std::vector<std::int64_t> counts(starts, 0);
  for (std::int64_t t = 0; t < steps; ++t) {
    for (std::int64_t b = 0; b < batch; ++b) ++counts[static_cast<std::size_t>(sampler.offset(t, batch, b))];
  }
  const double expected = static_cast<double>(batch * steps) / static_cast<double>(starts);
  double chi2 = 0;
  for (const std::int64_t c : counts) {
    EXPECT_GT(c, 0) << "a start never drawn";
    chi2 += (static_cast<double>(c) - expected) * (static_cast<double>(c) - expected) / expected;
  }
  EXPECT_LT(chi2, 170.0);
  std::printf("chi-square over %lld starts: %.1f (99 degrees of freedom)\n",
              static_cast<long long>(starts), chi2);
}

TEST(TextWindowSampler, ShortestStreamHasOneWindow) {
  const TextWindowSampler sampler("abcde", 4, 3);
  const Batch b = draw(sampler, 5, 2);
  EXPECT_EQ(b.ids, (std::vector<std::int32_t>{'a', 'b', 'c', 'd', 'a', 'b', 'c', 'd'}));
  EXPECT_EQ(b.targets, (std::vector<std::int32_t>{'b', 'c', 'd', 'e', 'b', 'c', 'd', 'e'}));
}

TEST(TextWindowSampler, Errors) {
  EXPECT_THAT(message_of([] { TextWindowSampler("abcd", 4, 0); }),
              HasSubstr("the stream has 4 bytes, fewer than one window of sequence_length + 1 = 5"));
  EXPECT_THAT(message_of([] { TextWindowSampler("abcd", 0, 0); }), HasSubstr("sequence_length"));
  const TextWindowSampler sampler(counting_stream(100), 4, 0);
  std::vector<std::int32_t> ids(8), targets(8), short_targets(7);
  EXPECT_NO_THROW(sampler.sample(0, 2, ids, targets));
  EXPECT_THAT(message_of([&] { sampler.sample(0, 2, ids, short_targets); }),
              HasSubstr("2 x 4 = 8 elements, got 8 and 7"));
  EXPECT_THROW(sampler.sample(0, 3, ids, targets), Error);
  EXPECT_THROW(sampler.sample(-1, 2, ids, targets), Error);
  EXPECT_THROW(sampler.sample(0, 0, {}, {}), Error);
}

// --- SequentialWindows --------------------------------------------------------------------------

TEST(SequentialWindows, WindowsAtStrideSPredictEveryByteOnce) {
  // n = 23, S = 5: floor(22 / 5) = 4 windows, covering bytes [0, 6), [5, 11), [10, 16), [15, 21);
  // bytes 21 and 22 ((n - 1) mod S = 2) are left out.
  const std::int64_t S = 5;
  const std::string stream = counting_stream(23);
  const SequentialWindows windows(stream, S);
  ASSERT_EQ(windows.count(), 4);
  std::vector<std::int32_t> ids(4 * S), targets(4 * S);
  windows.fill(0, 4, ids, targets);
  std::multiset<std::int32_t> predicted(targets.begin(), targets.end());
  for (std::int64_t i = 0; i < 4; ++i) {
    for (std::int64_t j = 0; j < S; ++j) {
      EXPECT_EQ(ids[static_cast<std::size_t>(i * S + j)], i * S + j);
      EXPECT_EQ(targets[static_cast<std::size_t>(i * S + j)], i * S + j + 1);
    }
  }
  for (std::int32_t byte = 1; byte <= 20; ++byte) EXPECT_EQ(predicted.count(byte), 1u) << byte;

  // A sub-range is the same rows.
  std::vector<std::int32_t> ids2(2 * S), targets2(2 * S);
  windows.fill(2, 2, ids2, targets2);
  EXPECT_TRUE(std::equal(ids2.begin(), ids2.end(), ids.begin() + 2 * S));
  EXPECT_TRUE(std::equal(targets2.begin(), targets2.end(), targets.begin() + 2 * S));

  EXPECT_EQ(SequentialWindows(counting_stream(6), 5).count(), 1);
  EXPECT_EQ(SequentialWindows(counting_stream(11), 5).count(), 2);
  EXPECT_EQ(SequentialWindows(counting_stream(10), 5).count(), 1);
}

TEST(SequentialWindows, Errors) {
  EXPECT_THROW(SequentialWindows("abc", 3), Error);
  EXPECT_THROW(SequentialWindows("abc", 0), Error);
  const SequentialWindows windows(counting_stream(23), 5);
  std::vector<std::int32_t> ten(10), five(5);
  EXPECT_THAT(message_of([&] { windows.fill(3, 2, ten, ten); }),
              HasSubstr("windows 3 .. 4 are not within the 4 windows"));
  EXPECT_THROW(windows.fill(-1, 1, five, five), Error);
  EXPECT_THROW(windows.fill(0, 0, {}, {}), Error);
  EXPECT_THROW(windows.fill(0, 2, ten, five), Error);
}

}  // namespace
}  // namespace unitscale

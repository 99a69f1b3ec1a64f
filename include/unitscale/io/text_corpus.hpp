#pragma once
// The byte-level text corpus: loading, the train/validation split, and the windows a language
// model trains and is evaluated on.
//
// The corpus of the experiments is the Debian package `fortunes` (kFortunesDirectory): many
// small files of short texts separated by lines holding only '%'. The model is byte-level
// (vocabulary 256), so the corpus is kept as raw bytes: no decoding, no normalisation, and a
// token id is a byte read as unsigned (0..255).
//
// The split is by entry rather than by byte so that no fortune is cut in two with one half in
// each split: entry k (1-based, counted over the whole corpus in file order) is validation when
// k % validation_every == 0. Training windows are then drawn with replacement from the training
// stream by a counter-based generator (TextWindowSampler), and the validation set is every
// non-overlapping window of the validation stream (SequentialWindows).

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace unitscale {

// Where the Debian package `fortunes` puts its texts (`apt-get install fortunes`).
inline constexpr std::string_view kFortunesDirectory = "/usr/share/games/fortunes";

struct TextCorpusOptions {
  // Entry k (1-based) with k % validation_every == 0 goes to the validation split: 20 holds out
  // 5%. 0 means no validation split (everything is training). 1 would leave no training text and
  // is refused, as is a negative value.
  std::int64_t validation_every = 20;
};

struct TextCorpus {
  // The files read, in the order read (sorted by file name for a directory).
  std::vector<std::filesystem::path> files;
  // How many entries the text has (1 for a single file, which is not split; see below).
  std::int64_t entries = 0;
  // Every entry joined with one '\n': the whole corpus, as the coord check's batch reads it.
  std::string text;
  // The training and validation entries, each joined with one '\n'. Without a validation split
  // (validation_every == 0) `train` equals `text` and `validation` is empty.
  std::string train;
  std::string validation;
};

// Loads a text corpus from a directory of fortune files or from one plain text file.
//
// A directory is read as the fortunes package lays it out: its regular files (not recursively:
// subdirectories such as the package's `off/` are skipped), except `*.dat` (strfile's binary
// indexes) and `*.u8` (symlinks to the same texts), in sorted file-name order (byte order, so the
// result does not depend on the locale or the file system). Each file is split into entries at
// lines holding exactly "%"; an entry's trailing newlines are dropped, empty entries are skipped,
// and every entry of every file is joined with one '\n'.
//
// A file is read verbatim as one entry: `text` is its bytes, unchanged, so any text (a book, a
// source file) works. Since one entry cannot be split by entry, a corpus with fewer than
// validation_every entries is split by bytes instead: the last text.size() / validation_every
// bytes are validation and the rest training (train + validation == text).
//
// Throws unitscale::Error naming the path when it does not exist (for kFortunesDirectory with the
// hint `apt-get install fortunes`), when a file cannot be read, when the corpus has no text at
// all, or when the options are invalid.
TextCorpus load_text_corpus(const std::filesystem::path& file_or_directory,
                            const TextCorpusOptions& options = {});

// A small built-in "text" (words of a 14-word vocabulary, 5% of them held out), for seconds-long
// smoke runs of the examples: a model learns something from it in a few steps, and the test suite
// needs no data package.
TextCorpus synthetic_text_corpus();

// Training windows: `batch` rows of S + 1 consecutive bytes, drawn uniformly with replacement
// from the n - S possible start offsets of the stream.
//
// Row b of step t starts at offset floor(u · (n - S)) with u = counter_uniform(seed,
// "text-window", t · batch + b) (nn/init.hpp), so a step's batch is a pure function of (seed,
// step, batch): a resumed run needs no generator state, and steps may be drawn in any order or
// twice. (u has 32 random bits, so the offsets are uniform up to a relative bias of about
// (n - S) / 2^32, 0.06% for the 2.4 MB fortunes corpus.)
//
// The sampler owns a copy of the stream (a few MB for the fortunes), so it outlives the corpus it
// came from; pass an rvalue to move the text in instead of copying it.
class TextWindowSampler {
 public:
  // Throws unitscale::Error if sequence_length < 1 or the stream is shorter than
  // sequence_length + 1 bytes (there would be no window to draw).
  TextWindowSampler(std::string stream, std::int64_t sequence_length, std::uint64_t seed);

  // Fills ids and targets, each [batch · S] row-major: row b is the window starting at
  // offset(step, b); ids are its first S bytes and targets its last S (ids shifted by one), as
  // unsigned byte values 0..255. Throws unitscale::Error if step < 0, batch < 1 or a span does
  // not hold exactly batch · S elements.
  void sample(std::int64_t step, std::int64_t batch, std::span<std::int32_t> ids,
              std::span<std::int32_t> targets) const;
  // Rows [first, first + rows) of sample(step, batch): one data-parallel rank's shard of the
  // batch. Throws unitscale::Error if the rows are not within [0, batch) or a span does not hold
  // exactly rows · S elements.
  void sample_rows(std::int64_t step, std::int64_t batch, std::int64_t first, std::int64_t rows,
                   std::span<std::int32_t> ids, std::span<std::int32_t> targets) const;

  // The start offset of row b of step `step` (what sample uses; exposed for tests and logs).
  std::int64_t offset(std::int64_t step, std::int64_t batch, std::int64_t b) const;

  std::int64_t sequence_length() const { return sequence_length_; }
  std::uint64_t seed() const { return seed_; }
  std::int64_t stream_size() const { return static_cast<std::int64_t>(stream_.size()); }

 private:
  std::string stream_;
  std::int64_t sequence_length_;
  std::uint64_t seed_;
};

// The validation windows: window i covers bytes [i·S, i·S + S + 1) of the stream, for i in
// [0, count()) with count() = floor((n - 1) / S). Consecutive windows share one byte (the last
// target of one is the first id of the next), so every byte after the first is predicted exactly
// once over the whole set; the (n - 1) mod S bytes after the last full window are not evaluated,
// so every evaluated window has the full context length.
//
// Owns a copy of the stream, as TextWindowSampler does.
class SequentialWindows {
 public:
  // Throws unitscale::Error if sequence_length < 1 or the stream is shorter than
  // sequence_length + 1 bytes (an empty validation set is almost surely a mistake).
  SequentialWindows(std::string stream, std::int64_t sequence_length);

  std::int64_t count() const;
  std::int64_t sequence_length() const { return sequence_length_; }

  // Fills ids and targets, each [n · S] row-major, with windows first .. first + n - 1 (ids and
  // targets as in TextWindowSampler::sample). Throws unitscale::Error if n < 1, the range is not
  // within [0, count()), or a span does not hold exactly n · S elements.
  void fill(std::int64_t first, std::int64_t n, std::span<std::int32_t> ids,
            std::span<std::int32_t> targets) const;

 private:
  std::string stream_;
  std::int64_t sequence_length_;
};

}  // namespace unitscale

#include "unitscale/io/text_corpus.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <system_error>

#include "unitscale/error.hpp"
#include "unitscale/nn/init.hpp"

namespace unitscale {
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("text corpus: cannot open {} for reading", path.string()));
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw Error(fmt::format("text corpus: error while reading {}", path.string()));
  return bytes;
}

// The files of a fortunes directory, in the order they are read (see the header for why each
// kind of file is skipped).
std::vector<fs::path> fortune_files(const fs::path& directory) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string ext = it->path().extension().string();
    // is_regular_file follows symlinks, like the old reader did: only *.u8 links are excluded.
    if (it->is_regular_file() && ext != ".dat" && ext != ".u8") files.push_back(it->path());
  }
  if (ec) {
    throw Error(fmt::format("text corpus: cannot list directory {}: {}", directory.string(),
                            ec.message()));
  }
  // Byte order of the names, so the corpus does not depend on the locale or the file system.
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();
  });
  return files;
}

// Calls visit(entry) for each entry of a fortune file: the lines between lines holding exactly
// "%", without trailing newlines, skipping empty ones.
template <typename Visit>
void for_each_fortune(std::string_view text, Visit&& visit) {
  std::string entry;
  const auto flush = [&] {
    while (!entry.empty() && entry.back() == '\n') entry.pop_back();
    if (!entry.empty()) visit(std::string_view(entry));
    entry.clear();
  };
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t newline = text.find('\n', start);
    const std::size_t end = newline == std::string_view::npos ? text.size() : newline;
    const std::string_view line = text.substr(start, end - start);
    if (line == "%") {
      flush();
    } else {
      entry.append(line);
      entry += '\n';
    }
    start = end + 1;
  }
  flush();
}

void append_joined(std::string& out, std::string_view entry) {
  if (!out.empty()) out += '\n';
  out += entry;
}

}  // namespace

TextCorpus load_text_corpus(const fs::path& file_or_directory, const TextCorpusOptions& options) {
  const std::string where = file_or_directory.string();
  const std::int64_t every = options.validation_every;
  if (every < 0 || every == 1) {
    throw Error(fmt::format(
        "load_text_corpus({}): validation_every must be 0 (no validation split) or at least 2, "
        "got {}",
        where, every));
  }
  std::error_code ec;
  if (!fs::exists(file_or_directory, ec)) {
    if (file_or_directory == fs::path(kFortunesDirectory)) {
      throw Error(fmt::format(
          "load_text_corpus: the fortunes corpus {} is missing: install it with `apt-get install "
          "fortunes`",
          where));
    }
    throw Error(fmt::format("load_text_corpus: {} does not exist", where));
  }

  TextCorpus corpus;
  // Entries are routed to train or validation as they are read, so the corpus is held once per
  // split and never as a list of entries.
  const auto add_entry = [&](std::string_view entry) {
    ++corpus.entries;
    append_joined(corpus.text, entry);
    const bool held_out = every > 0 && corpus.entries % every == 0;
    append_joined(held_out ? corpus.validation : corpus.train, entry);
  };

  if (fs::is_directory(file_or_directory)) {
    corpus.files = fortune_files(file_or_directory);
    if (corpus.files.empty()) {
      throw Error(fmt::format(
          "load_text_corpus: directory {} has no text files (regular files other than *.dat and "
          "*.u8)",
          where));
    }
    for (const fs::path& file : corpus.files) for_each_fortune(read_bytes(file), add_entry);
    if (corpus.text.empty()) {
      throw Error(fmt::format("load_text_corpus: the files of {} hold no text", where));
    }
  } else {
    corpus.files = {file_or_directory};
    corpus.text = read_bytes(file_or_directory);
    if (corpus.text.empty()) throw Error(fmt::format("load_text_corpus: {} is empty", where));
    corpus.entries = 1;
    if (every == 0) corpus.train = corpus.text;
  }

  // Too few entries to hold out whole ones (always so for a single file): split by bytes.
  if (every > 0 && corpus.entries < every) {
    const std::size_t held = corpus.text.size() / static_cast<std::size_t>(every);
    corpus.train = corpus.text.substr(0, corpus.text.size() - held);
    corpus.validation = corpus.text.substr(corpus.text.size() - held);
  }
  return corpus;
}

namespace {

void check_window_length(std::string_view who, std::int64_t stream_size,
                         std::int64_t sequence_length) {
  if (sequence_length < 1) {
    throw Error(fmt::format("{}: sequence_length must be at least 1, got {}", who,
                            sequence_length));
  }
  if (stream_size < sequence_length + 1) {
    throw Error(fmt::format(
        "{}: the stream has {} bytes, fewer than one window of sequence_length + 1 = {} bytes", who,
        stream_size, sequence_length + 1));
  }
}

void check_spans(std::string_view who, std::int64_t rows, std::int64_t sequence_length,
                 std::span<std::int32_t> ids, std::span<std::int32_t> targets) {
  const auto expected = static_cast<std::size_t>(rows * sequence_length);
  if (ids.size() != expected || targets.size() != expected) {
    throw Error(fmt::format(
        "{}: ids and targets must each hold {} x {} = {} elements, got {} and {}", who, rows,
        sequence_length, expected, ids.size(), targets.size()));
  }
}

// Row `row` of ids/targets from the S + 1 bytes at `offset`: ids the first S, targets the last S.
void fill_row(std::string_view stream, std::int64_t offset, std::int64_t sequence_length,
              std::int64_t row, std::span<std::int32_t> ids, std::span<std::int32_t> targets) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(stream.data()) + offset;
  const auto base = static_cast<std::size_t>(row * sequence_length);
  for (std::int64_t j = 0; j < sequence_length; ++j) {
    ids[base + static_cast<std::size_t>(j)] = bytes[j];
    targets[base + static_cast<std::size_t>(j)] = bytes[j + 1];
  }
}

}  // namespace

TextWindowSampler::TextWindowSampler(std::string stream, std::int64_t sequence_length,
                                     std::uint64_t seed)
    : stream_(std::move(stream)), sequence_length_(sequence_length), seed_(seed) {
  check_window_length("TextWindowSampler", stream_size(), sequence_length_);
}

std::int64_t TextWindowSampler::offset(std::int64_t step, std::int64_t batch,
                                       std::int64_t b) const {
  if (step < 0 || batch < 1 || b < 0 || b >= batch) {
    throw Error(fmt::format(
        "TextWindowSampler::offset: need step >= 0 and 0 <= b < batch, got step {}, batch {}, "
        "b {}",
        step, batch, b));
  }
  const std::int64_t starts = stream_size() - sequence_length_;
  const auto index = static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(batch) +
                     static_cast<std::uint64_t>(b);
  const double u = counter_uniform(seed_, "text-window", index);  // in (0, 1)
  // u < 1 so the floor is below `starts`; the min guards the last rounding of the product.
  return std::min(static_cast<std::int64_t>(std::floor(u * static_cast<double>(starts))),
                  starts - 1);
}

void TextWindowSampler::sample(std::int64_t step, std::int64_t batch, std::span<std::int32_t> ids,
                               std::span<std::int32_t> targets) const {
  if (step < 0 || batch < 1) {
    throw Error(fmt::format("TextWindowSampler::sample: need step >= 0 and batch >= 1, got {} "
                            "and {}",
                            step, batch));
  }
  sample_rows(step, batch, 0, batch, ids, targets);
}

void TextWindowSampler::sample_rows(std::int64_t step, std::int64_t batch, std::int64_t first,
                                    std::int64_t rows, std::span<std::int32_t> ids,
                                    std::span<std::int32_t> targets) const {
  if (first < 0 || rows < 1 || first + rows > batch) {
    throw Error(
        fmt::format("TextWindowSampler::sample_rows: rows {} .. {} are not within the "
                    "batch of {}",
                    first, first + rows - 1, batch));
  }
  check_spans("TextWindowSampler::sample", rows, sequence_length_, ids, targets);
  for (std::int64_t r = 0; r < rows; ++r) {
    fill_row(stream_, offset(step, batch, first + r), sequence_length_, r, ids, targets);
  }
}

SequentialWindows::SequentialWindows(std::string stream, std::int64_t sequence_length)
    : stream_(std::move(stream)), sequence_length_(sequence_length) {
  check_window_length("SequentialWindows", static_cast<std::int64_t>(stream_.size()),
                      sequence_length_);
}

std::int64_t SequentialWindows::count() const {
  return (static_cast<std::int64_t>(stream_.size()) - 1) / sequence_length_;
}

void SequentialWindows::fill(std::int64_t first, std::int64_t n, std::span<std::int32_t> ids,
                             std::span<std::int32_t> targets) const {
  if (n < 1 || first < 0 || first > count() - n) {
    throw Error(fmt::format(
        "SequentialWindows::fill: windows {} .. {} are not within the {} windows [0, {})", first,
        first + n - 1, count(), count()));
  }
  check_spans("SequentialWindows::fill", n, sequence_length_, ids, targets);
  for (std::int64_t i = 0; i < n; ++i) {
    fill_row(stream_, (first + i) * sequence_length_, sequence_length_, i, ids, targets);
  }
}

TextCorpus synthetic_text_corpus() {
  const std::vector<std::string> words = {"the", "cat", "sat", "on", "a", "mat", "and",
                                          "dog", "ran", "to", "it", "was", "not", "so"};
  TextCorpus corpus;
  for (int i = 0; i < 6000; ++i) {
    const auto w = static_cast<std::size_t>(
        counter_uniform(1, "smoke-corpus", static_cast<std::uint64_t>(i)) *
        static_cast<double>(words.size()));
    std::string& split = i % 20 == 19 ? corpus.validation : corpus.train;
    split += words[std::min(w, words.size() - 1)] + (i % 9 == 8 ? "\n" : " ");
  }
  corpus.text = corpus.train + corpus.validation;
  corpus.entries = 1;
  return corpus;
}

}  // namespace unitscale

#include "unitscale/io/idx.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "unitscale/error.hpp"

namespace unitscale {
namespace fs = std::filesystem;

namespace {

// The whole file, decompressed if it is gzipped. zlib's gzread passes a file without the gzip
// magic through unchanged, so one path reads both; concatenated gzip members are read in turn.
std::vector<std::uint8_t> read_decompressed(const fs::path& path) {
  const std::string name = path.string();
  if (!fs::is_regular_file(path)) {
    throw Error(fmt::format("read_idx: {} does not exist or is not a regular file", name));
  }
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(name.c_str(), "rb"), &gzclose);
  if (!file) throw Error(fmt::format("read_idx: cannot open {} for reading", name));
  gzbuffer(file.get(), 1u << 18);

  std::vector<std::uint8_t> bytes;
  constexpr std::size_t kChunk = 1u << 20;
  for (;;) {
    const std::size_t size = bytes.size();
    bytes.resize(size + kChunk);
    const int got = gzread(file.get(), bytes.data() + size, static_cast<unsigned>(kChunk));
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file.get(), &code);
      throw Error(fmt::format("read_idx: {}: corrupt gzip stream after {} decompressed bytes: {}",
                              name, size, message));
    }
    bytes.resize(size + static_cast<std::size_t>(got));
    if (got == 0) break;
  }
  // gzread stops without an error at the end of the input; Z_BUF_ERROR tells that the input
  // ended inside a gzip stream, i.e. the .gz file is truncated.
  int code = Z_OK;
  gzerror(file.get(), &code);
  if (code == Z_BUF_ERROR) {
    throw Error(fmt::format(
        "read_idx: {}: the gzip stream ends early, after {} decompressed bytes (truncated file?)",
        name, bytes.size()));
  }
  if (code != Z_OK) {
    throw Error(fmt::format("read_idx: {}: gzip error after {} decompressed bytes: {}", name,
                            bytes.size(), gzerror(file.get(), &code)));
  }
  return bytes;
}

std::uint32_t big_endian_u32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

}  // namespace

IdxArray read_idx(const fs::path& path) {
  const std::string name = path.string();
  std::vector<std::uint8_t> bytes = read_decompressed(path);
  const auto size = static_cast<std::int64_t>(bytes.size());
  const auto truncated = [&](std::string_view what, std::int64_t expected, std::int64_t offset) {
    return Error(fmt::format(
        "read_idx: {}: truncated {}: expected {} bytes at offset {}, the stream ends at {}", name,
        what, expected, offset, size));
  };

  if (size < 4) throw truncated("header (the magic number)", 4, 0);
  const std::uint32_t magic = big_endian_u32(bytes.data());
  const int rank = bytes[3];
  if (bytes[0] != 0 || bytes[1] != 0 || rank == 0) {
    throw Error(fmt::format(
        "read_idx: {}: bad magic number 0x{:08X} at offset 0: an IDX file starts with 0x0000TTNN "
        "(TT the element type, NN >= 1 dimensions), e.g. 0x00000803 for images",
        name, magic));
  }
  if (bytes[2] != 0x08) {
    throw Error(fmt::format(
        "read_idx: {}: unsupported element type 0x{:02X} at offset 2 (magic 0x{:08X}): only "
        "0x08 (unsigned byte) is supported",
        name, bytes[2], magic));
  }
  const std::int64_t header = 4 + 4 * std::int64_t{rank};
  if (size < header) throw truncated("header (the dimensions)", 4 * std::int64_t{rank}, 4);

  IdxArray array;
  array.data_offset = header;
  // The element count saturates instead of overflowing: any count past the stream is an error.
  std::int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const std::int64_t dim = big_endian_u32(bytes.data() + 4 + 4 * i);
    array.dims.push_back(dim);
    count = (dim != 0 && count > std::numeric_limits<std::int64_t>::max() / dim)
                ? std::numeric_limits<std::int64_t>::max()
                : count * dim;
  }
  if (size - header < count) {
    throw truncated(fmt::format("data of dimensions [{}]", fmt::join(array.dims, ", ")), count,
                    header);
  }
  if (size - header > count) {
    throw Error(fmt::format(
        "read_idx: {}: trailing garbage: {} bytes after the data of dimensions [{}], at offset {} "
        "(the stream ends at {})",
        name, size - header - count, fmt::join(array.dims, ", "), header + count, size));
  }
  // Drop the header in place rather than copy the data (47 MB for the training images).
  bytes.erase(bytes.begin(), bytes.begin() + header);
  array.data = std::move(bytes);
  return array;
}

namespace {

// `<directory>/<prefix>-<kind>`, gzipped or not (see the header).
fs::path dataset_file(const fs::path& directory, std::string_view prefix, std::string_view kind) {
  const fs::path raw = directory / fmt::format("{}-{}", prefix, kind);
  fs::path gz = raw;
  gz += ".gz";
  if (fs::exists(gz)) return gz;
  if (fs::exists(raw)) return raw;
  throw Error(fmt::format("load_idx_image_dataset: missing {} (nor an unpacked {})", gz.string(),
                          raw.string()));
}

struct Split {
  IdxArray images, labels;
  fs::path images_path, labels_path;
};

// Reads one split's image and label files and checks them against each other and the classes.
Split read_split(const fs::path& directory, std::string_view prefix, std::int64_t classes) {
  Split split;
  split.images_path = dataset_file(directory, prefix, "images-idx3-ubyte");
  split.labels_path = dataset_file(directory, prefix, "labels-idx1-ubyte");
  split.images = read_idx(split.images_path);
  split.labels = read_idx(split.labels_path);
  if (split.images.dims.size() != 3) {
    throw Error(fmt::format("load_idx_image_dataset: {}: expected images of dimensions [N, H, W], "
                            "got [{}]",
                            split.images_path.string(), fmt::join(split.images.dims, ", ")));
  }
  if (split.labels.dims.size() != 1) {
    throw Error(fmt::format("load_idx_image_dataset: {}: expected labels of dimensions [N], got "
                            "[{}]",
                            split.labels_path.string(), fmt::join(split.labels.dims, ", ")));
  }
  if (split.images.dims[0] != split.labels.dims[0]) {
    throw Error(fmt::format("load_idx_image_dataset: {} has {} images but {} has {} labels",
                            split.images_path.string(), split.images.dims[0],
                            split.labels_path.string(), split.labels.dims[0]));
  }
  for (std::size_t i = 0; i < split.labels.data.size(); ++i) {
    if (split.labels.data[i] >= classes) {
      throw Error(fmt::format(
          "load_idx_image_dataset: {}: label {} of image {} (at offset {}) is not below the {} "
          "classes",
          split.labels_path.string(), split.labels.data[i], i,
          split.labels.data_offset + static_cast<std::int64_t>(i), classes));
    }
  }
  return split;
}

// Images [rows, H·W] and labels [rows] from rows first .. first + rows - 1 of a split, each
// pixel mapped through `table` (the standardised value of each byte).
void copy_rows(const Split& split, std::int64_t first, std::int64_t rows,
               const std::array<float, 256>& table, Tensor& images, Tensor& labels) {
  const std::int64_t pixels = split.images.dims[1] * split.images.dims[2];
  images = Tensor(Shape{rows, pixels});
  labels = Tensor(Shape{rows}, DType::kI32);
  const std::uint8_t* in = split.images.data.data() + first * pixels;
  float* out = images.data();
  for (std::int64_t i = 0; i < rows * pixels; ++i) out[i] = table[in[i]];
  std::int32_t* label = labels.data_as<std::int32_t>();
  for (std::int64_t i = 0; i < rows; ++i) {
    label[i] = split.labels.data[static_cast<std::size_t>(first + i)];
  }
}

}  // namespace

ImageClassificationData load_idx_image_dataset(const fs::path& directory,
                                               std::string_view train_prefix,
                                               std::string_view test_prefix,
                                               const ImageDatasetOptions& options) {
  if (options.classes < 1 || options.classes > 256) {
    throw Error(fmt::format(
        "load_idx_image_dataset: classes must be in [1, 256] (labels are bytes), got {}",
        options.classes));
  }
  const Split train = read_split(directory, train_prefix, options.classes);
  const Split test = read_split(directory, test_prefix, options.classes);
  const std::int64_t height = train.images.dims[1], width = train.images.dims[2];
  if (test.images.dims[1] != height || test.images.dims[2] != width) {
    throw Error(fmt::format("load_idx_image_dataset: {} has {} x {} images but {} has {} x {}",
                            train.images_path.string(), height, width, test.images_path.string(),
                            test.images.dims[1], test.images.dims[2]));
  }
  const std::int64_t n_train = train.images.dims[0];
  const std::int64_t holdout = options.validation_holdout;
  if (holdout < 0 || holdout >= n_train) {
    throw Error(fmt::format(
        "load_idx_image_dataset: validation_holdout must be in [0, {}) for the {} images of {}, "
        "got {}",
        n_train, n_train, train.images_path.string(), holdout));
  }
  const std::int64_t kept = n_train - holdout;

  // The statistics from a histogram of the kept training bytes: exact counts, then two short
  // sums in double (the two-pass variance, no cancellation).
  const std::int64_t pixels = height * width;
  std::array<std::int64_t, 256> histogram{};
  for (std::int64_t i = 0; i < kept * pixels; ++i) {
    ++histogram[train.images.data[static_cast<std::size_t>(i)]];
  }
  const auto total = static_cast<double>(kept * pixels);
  double mean = 0;
  for (std::size_t v = 0; v < 256; ++v) {
    mean += static_cast<double>(histogram[v]) * (static_cast<double>(v) / 255.0);
  }
  mean /= total;
  double variance = 0;
  for (std::size_t v = 0; v < 256; ++v) {
    const double d = static_cast<double>(v) / 255.0 - mean;
    variance += static_cast<double>(histogram[v]) * d * d;
  }
  const double std_dev = std::sqrt(variance / total);
  if (!(std_dev > 0)) {
    throw Error(fmt::format(
        "load_idx_image_dataset: the training pixels of {} are all equal: no standard deviation "
        "to standardise with",
        train.images_path.string()));
  }

  std::array<float, 256> table{};
  for (std::size_t v = 0; v < 256; ++v) {
    table[v] = static_cast<float>((static_cast<double>(v) / 255.0 - mean) / std_dev);
  }

  ImageClassificationData data;
  data.pixel_mean = mean;
  data.pixel_std = std_dev;
  data.classes = options.classes;
  data.height = height;
  data.width = width;
  copy_rows(train, 0, kept, table, data.train_images, data.train_labels);
  copy_rows(train, kept, holdout, table, data.validation_images, data.validation_labels);
  copy_rows(test, 0, test.images.dims[0], table, data.test_images, data.test_labels);
  return data;
}

ImageClassificationData load_fashion_mnist(const ImageDatasetOptions& options,
                                           const fs::path& directory) {
  if (!fs::is_directory(directory)) {
    throw Error(fmt::format(
        "load_fashion_mnist: {} is missing{}", directory.string(),
        directory == fs::path(kFashionMnistDirectory)
            ? ": install Fashion-MNIST with `apt-get install dataset-fashion-mnist`"
            : ""));
  }
  return load_idx_image_dataset(directory, "train", "t10k", options);
}

}  // namespace unitscale

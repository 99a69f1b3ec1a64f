// IDX files and image datasets (io/idx.hpp): a synthetic 3-image dataset written raw and gzipped,
// its header values, the standardisation against statistics computed here independently, and
// every kind of corrupt file, whose error must name the file and the offset.

#include "unitscale/io/idx.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../support/error_message.hpp"
#include "../support/temp_directory.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Bytes = std::vector<std::uint8_t>;

using TempDir = testing_support::TempDirectory;
using testing_support::message_of;

// An IDX file's bytes: magic 0x0000TTNN, big-endian dims, data.
Bytes idx_bytes(const std::vector<std::uint32_t>& dims, const Bytes& data,
                std::uint8_t type = 0x08) {
  Bytes out = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) {
    for (const int shift : {24, 16, 8, 0}) out.push_back(static_cast<std::uint8_t>(d >> shift));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_raw(const fs::path& path, const Bytes& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const fs::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.string().c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

Bytes read_raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The synthetic dataset: 3 training and 2 test images of 2 x 3 pixels, 10 classes.
const Bytes kTrainPixels = {0, 255, 10, 20, 30, 40,     // image 0
                            128, 64, 32, 16, 8, 4,      // image 1
                            200, 201, 202, 203, 0, 1};  // image 2
const Bytes kTrainLabels = {3, 9, 0};
const Bytes kTestPixels = {1, 2, 3, 4, 5, 6, 255, 255, 0, 0, 100, 50};
const Bytes kTestLabels = {7, 1};

void write_dataset(const fs::path& dir, bool gz, const Bytes& train_labels = kTrainLabels) {
  const auto write = [&](const std::string& name, const Bytes& bytes) {
    if (gz) {
      write_gz(dir / (name + ".gz"), bytes);
    } else {
      write_raw(dir / name, bytes);
    }
  };
  write("train-images-idx3-ubyte", idx_bytes({3, 2, 3}, kTrainPixels));
  write("train-labels-idx1-ubyte",
        idx_bytes({static_cast<std::uint32_t>(train_labels.size())}, train_labels));
  write("t10k-images-idx3-ubyte", idx_bytes({2, 2, 3}, kTestPixels));
  write("t10k-labels-idx1-ubyte", idx_bytes({2}, kTestLabels));
}

// --- read_idx -----------------------------------------------------------------------------------

TEST(ReadIdx, RoundTripRawAndGzipped) {
  TempDir dir;
  for (const bool gz : {false, true}) {
    const fs::path images = dir.path() / (gz ? "images.gz" : "images");
    const fs::path labels = dir.path() / (gz ? "labels.gz" : "labels");
    const Bytes image_file = idx_bytes({3, 2, 3}, kTrainPixels);
    if (gz) {
      write_gz(images, image_file);
      write_gz(labels, idx_bytes({3}, kTrainLabels));
      const Bytes on_disk = read_raw(images);
      ASSERT_GE(on_disk.size(), 2u);
      EXPECT_EQ(on_disk[0], 0x1f);  // really gzipped
      EXPECT_EQ(on_disk[1], 0x8b);
    } else {
      write_raw(images, image_file);
      write_raw(labels, idx_bytes({3}, kTrainLabels));
    }
    // The header as the format says: magic 0x00000803, then 3, 2, 3 as big-endian u32.
    EXPECT_EQ(Bytes(image_file.begin(), image_file.begin() + 16),
              (Bytes{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3}));
    const IdxArray a = read_idx(images);
    EXPECT_EQ(a.dims, (std::vector<std::int64_t>{3, 2, 3}));
    EXPECT_EQ(a.data, kTrainPixels);
    EXPECT_EQ(a.data_offset, 16);
    const IdxArray l = read_idx(labels);
    EXPECT_EQ(l.dims, (std::vector<std::int64_t>{3}));
    EXPECT_EQ(l.data, kTrainLabels);
    EXPECT_EQ(l.data_offset, 8);
  }
}

TEST(ReadIdx, LargeDimensionsAreBigEndian) {
  TempDir dir;
  const fs::path file = dir.path() / "wide";
  const Bytes data(0x0102, 7);
  write_raw(file, idx_bytes({0x0102}, data));
  const IdxArray a = read_idx(file);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{258}));
  EXPECT_EQ(a.data, data);
}

// The message of read_idx on a raw file holding `bytes` (or gzipped).
std::string read_error(const fs::path& file, const Bytes& bytes, bool gz = false) {
  if (gz) {
    write_gz(file, bytes);
  } else {
    write_raw(file, bytes);
  }
  return message_of([&] { read_idx(file); });
}

TEST(ReadIdx, CorruptFilesNameTheFileAndTheOffset) {
  TempDir dir;
  const fs::path f = dir.path() / "bad-images-idx3-ubyte";
  const Bytes good = idx_bytes({3, 2, 3}, kTrainPixels);
  for (const bool gz : {false, true}) {
    SCOPED_TRACE(gz ? "gzipped" : "raw");
    const std::string name = f.string();

    Bytes bad_magic = good;
    bad_magic[0] = 1;
    std::string m = read_error(f, bad_magic, gz);
    EXPECT_THAT(m, HasSubstr(name));
    EXPECT_THAT(m, HasSubstr("bad magic number 0x01000803 at offset 0"));

    Bytes no_dims = good;
    no_dims[3] = 0;
    EXPECT_THAT(read_error(f, no_dims, gz), HasSubstr("bad magic number 0x00000800 at offset 0"));

    Bytes float_type = good;
    float_type[2] = 0x0D;
    m = read_error(f, float_type, gz);
    EXPECT_THAT(m, HasSubstr(name));
    EXPECT_THAT(m, HasSubstr("unsupported element type 0x0D at offset 2"));

    m = read_error(f, Bytes(good.begin(), good.begin() + 2), gz);
    EXPECT_THAT(m, HasSubstr(name));
    EXPECT_THAT(m, HasSubstr("expected 4 bytes at offset 0, the stream ends at 2"));

    m = read_error(f, Bytes(good.begin(), good.begin() + 10), gz);
    EXPECT_THAT(m, HasSubstr("truncated header (the dimensions): expected 12 bytes at offset 4, "
                             "the stream ends at 10"));

    m = read_error(f, Bytes(good.begin(), good.end() - 8), gz);  // 10 of the 18 data bytes
    EXPECT_THAT(m, HasSubstr(name));
    EXPECT_THAT(m, HasSubstr("truncated data of dimensions [3, 2, 3]: expected 18 bytes at offset "
                             "16, the stream ends at 26"));

    Bytes trailing = good;
    trailing.push_back(0);
    trailing.push_back(0);
    m = read_error(f, trailing, gz);
    EXPECT_THAT(m, HasSubstr(name));
    EXPECT_THAT(m, HasSubstr("trailing garbage: 2 bytes after the data of dimensions [3, 2, 3], at "
                             "offset 34"));
  }
}

TEST(ReadIdx, TruncatedGzipIsAnError) {
  TempDir dir;
  const fs::path f = dir.path() / "cut.gz";
  // Enough incompressible-ish data that the cut lands inside the deflate stream.
  Bytes data(4000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 2654435761u >> 13);
  write_gz(f, idx_bytes({4000}, data));
  Bytes gz = read_raw(f);
  gz.resize(gz.size() / 2);
  write_raw(f, gz);
  const std::string m = message_of([&] { read_idx(f); });
  EXPECT_THAT(m, HasSubstr(f.string()));
  EXPECT_THAT(m, HasSubstr("the gzip stream ends early, after"));
  EXPECT_THAT(m, HasSubstr("decompressed bytes"));
}

TEST(ReadIdx, MissingFile) {
  TempDir dir;
  EXPECT_THAT(message_of([&] { read_idx(dir.path() / "none"); }),
              HasSubstr((dir.path() / "none").string()));
}

// --- load_idx_image_dataset ---------------------------------------------------------------------

// The population mean and standard deviation of bytes / 255, straight from the definition.
std::pair<double, double> pixel_stats(const Bytes& pixels) {
  double sum = 0;
  for (const std::uint8_t p : pixels) sum += p / 255.0;
  const double mean = sum / static_cast<double>(pixels.size());
  double squares = 0;
  for (const std::uint8_t p : pixels) squares += (p / 255.0 - mean) * (p / 255.0 - mean);
  return {mean, std::sqrt(squares / static_cast<double>(pixels.size()))};
}

void expect_standardised(const Tensor& images, const Bytes& pixels, double mean, double std_dev) {
  ASSERT_EQ(images.numel(), static_cast<std::int64_t>(pixels.size()));
  for (std::size_t i = 0; i < pixels.size(); ++i) {
    const double expected = (pixels[i] / 255.0 - mean) / std_dev;
    EXPECT_NEAR(images.data()[i], expected, 1e-6 * (1 + std::abs(expected))) << "pixel " << i;
  }
}

std::vector<std::int32_t> labels_of(const Tensor& labels) {
  const auto* p = labels.data_as<std::int32_t>();
  return {p, p + labels.numel()};
}

TEST(ImageDataset, LoadsStandardisesAndSplits) {
  for (const bool gz : {false, true}) {
    SCOPED_TRACE(gz ? "gzipped" : "raw");
    TempDir dir;
    write_dataset(dir.path(), gz);
    const ImageClassificationData d = load_idx_image_dataset(dir.path());
    const auto [mean, std_dev] = pixel_stats(kTrainPixels);
    EXPECT_NEAR(d.pixel_mean, mean, 1e-12);
    EXPECT_NEAR(d.pixel_std, std_dev, 1e-12);
    EXPECT_EQ(d.height, 2);
    EXPECT_EQ(d.width, 3);
    EXPECT_EQ(d.classes, 10);
    EXPECT_EQ(d.train_images.shape(), (Shape{3, 6}));
    EXPECT_EQ(d.train_labels.shape(), (Shape{3}));
    EXPECT_EQ(d.train_labels.dtype(), DType::kI32);
    EXPECT_EQ(d.validation_images.shape(), (Shape{0, 6}));
    EXPECT_EQ(d.validation_labels.shape(), (Shape{0}));
    EXPECT_EQ(d.test_images.shape(), (Shape{2, 6}));
    expect_standardised(d.train_images, kTrainPixels, mean, std_dev);
    expect_standardised(d.test_images, kTestPixels, mean, std_dev);  // the training statistics
    EXPECT_EQ(labels_of(d.train_labels), (std::vector<std::int32_t>{3, 9, 0}));
    EXPECT_EQ(labels_of(d.test_labels), (std::vector<std::int32_t>{7, 1}));
  }
}

TEST(ImageDataset, HoldoutIsTheLastTrainingImagesAndTakesNoPartInTheStatistics) {
  TempDir dir;
  write_dataset(dir.path(), true);
  const ImageClassificationData d =
      load_idx_image_dataset(dir.path(), "train", "t10k", {.validation_holdout = 1});
  const Bytes kept(kTrainPixels.begin(), kTrainPixels.begin() + 12);
  const Bytes held(kTrainPixels.begin() + 12, kTrainPixels.end());
  const auto [mean, std_dev] = pixel_stats(kept);
  EXPECT_NEAR(d.pixel_mean, mean, 1e-12);
  EXPECT_NEAR(d.pixel_std, std_dev, 1e-12);
  expect_standardised(d.train_images, kept, mean, std_dev);
  expect_standardised(d.validation_images, held, mean, std_dev);
  EXPECT_EQ(labels_of(d.train_labels), (std::vector<std::int32_t>{3, 9}));
  EXPECT_EQ(labels_of(d.validation_labels), (std::vector<std::int32_t>{0}));

  EXPECT_THAT(message_of([&] {
                load_idx_image_dataset(dir.path(), "train", "t10k", {.validation_holdout = 3});
              }),
              HasSubstr("validation_holdout must be in [0, 3)"));
  EXPECT_THROW(load_idx_image_dataset(dir.path(), "train", "t10k", {.validation_holdout = -1}),
               Error);
}

TEST(ImageDataset, LabelOutOfRangeNamesTheFileAndOffset) {
  TempDir dir;
  write_dataset(dir.path(), true, {3, 10, 0});  // label 10 of image 1, at offset 8 + 1
  const std::string m = message_of([&] { load_idx_image_dataset(dir.path()); });
  EXPECT_THAT(m, HasSubstr((dir.path() / "train-labels-idx1-ubyte.gz").string()));
  EXPECT_THAT(m, HasSubstr("label 10 of image 1 (at offset 9) is not below the 10 classes"));
  // With more classes the same file is fine.
  EXPECT_NO_THROW(load_idx_image_dataset(dir.path(), "train", "t10k", {.classes = 11}));
}

TEST(ImageDataset, CountMismatchNamesBothFiles) {
  TempDir dir;
  write_dataset(dir.path(), false, {3, 9});
  const std::string m = message_of([&] { load_idx_image_dataset(dir.path()); });
  EXPECT_THAT(m, HasSubstr((dir.path() / "train-images-idx3-ubyte").string() + " has 3 images"));
  EXPECT_THAT(m, HasSubstr((dir.path() / "train-labels-idx1-ubyte").string() + " has 2 labels"));
}

TEST(ImageDataset, WrongRanksAndSizesAndMissingFiles) {
  TempDir dir;
  write_dataset(dir.path(), false);
  write_raw(dir.path() / "t10k-images-idx3-ubyte", idx_bytes({2, 3, 2}, kTestPixels));
  EXPECT_THAT(message_of([&] { load_idx_image_dataset(dir.path()); }),
              HasSubstr("has 2 x 3 images but"));
  write_raw(dir.path() / "t10k-images-idx3-ubyte", idx_bytes({2, 6}, kTestPixels));
  EXPECT_THAT(message_of([&] { load_idx_image_dataset(dir.path()); }),
              HasSubstr("expected images of dimensions [N, H, W], got [2, 6]"));
  fs::remove(dir.path() / "t10k-images-idx3-ubyte");
  EXPECT_THAT(message_of([&] { load_idx_image_dataset(dir.path()); }),
              HasSubstr("missing " + (dir.path() / "t10k-images-idx3-ubyte.gz").string()));
  EXPECT_THAT(message_of([&] { load_fashion_mnist({}, dir.path() / "absent"); }),
              HasSubstr((dir.path() / "absent").string() + " is missing"));
}

TEST(ImageDataset, ConstantPixelsCannotBeStandardised) {
  TempDir dir;
  write_dataset(dir.path(), false);
  write_raw(dir.path() / "train-images-idx3-ubyte", idx_bytes({3, 2, 3}, Bytes(18, 7)));
  EXPECT_THAT(message_of([&] { load_idx_image_dataset(dir.path()); }),
              HasSubstr("are all equal"));
}

// --- the real Fashion-MNIST, when the Debian package is installed -------------------------------

TEST(FashionMnist, MissingDirectorySuggestsTheDebianPackage) {
  if (fs::exists(kFashionMnistDirectory)) GTEST_SKIP() << "dataset-fashion-mnist is installed";
  EXPECT_THAT(message_of([] { load_fashion_mnist(); }),
              HasSubstr("apt-get install dataset-fashion-mnist"));
}

TEST(FashionMnist, RealData) {
  const fs::path dir(kFashionMnistDirectory);
  if (!fs::is_directory(dir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const IdxArray images = read_idx(dir / "train-images-idx3-ubyte.gz");
  EXPECT_EQ(images.dims, (std::vector<std::int64_t>{60000, 28, 28}));
  const IdxArray test_labels = read_idx(dir / "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(test_labels.dims, (std::vector<std::int64_t>{10000}));
  std::uint64_t checksum = 0;
  for (std::size_t i = 0; i < 28 * 28; ++i) checksum += images.data[i];
  std::printf("Fashion-MNIST: sum of the bytes of training image 0 = %llu\n",
              static_cast<unsigned long long>(checksum));

  const ImageClassificationData d = load_fashion_mnist({.validation_holdout = 5000});
  EXPECT_EQ(d.train_images.shape(), (Shape{55000, 784}));
  EXPECT_EQ(d.validation_images.shape(), (Shape{5000, 784}));
  EXPECT_EQ(d.test_images.shape(), (Shape{10000, 784}));
  std::vector<std::int64_t> per_class(10, 0);
  for (const std::int32_t l : labels_of(d.test_labels)) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++per_class[static_cast<std::size_t>(l)];
  }
  for (const std::int64_t c : per_class) EXPECT_EQ(c, 1000);  // the test set is balanced
  std::printf("Fashion-MNIST: training pixel mean %.6f, std %.6f\n", d.pixel_mean, d.pixel_std);
}

}  // namespace
}  // namespace unitscale

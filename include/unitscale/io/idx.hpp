#pragma once
// IDX files (the MNIST family's format) and the image-classification datasets stored in them.
//
// An IDX file is a 4-byte magic number 0x0000TTNN (TT the element type, NN the number of
// dimensions), NN big-endian u32 dimension sizes, then the elements in row-major order. The
// datasets ship gzipped (`train-images-idx3-ubyte.gz`, ...). Only unsigned bytes (TT = 0x08) are
// read: that is what every image and label file of MNIST and Fashion-MNIST holds, and a reader
// for the other types would be untested code.
//
// The experiments use Fashion-MNIST from the Debian package `dataset-fashion-mnist`: 60,000
// training and 10,000 test images of 28 × 28 pixels in 10 classes. Pixels are divided by 255 and
// then standardised with the mean and standard deviation of the training pixels, so the inputs
// of a unit-scaled model have unit scale as the method assumes.

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

// One IDX array: its dimensions and its elements (unsigned bytes, row-major).
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
  // Where the data starts in the (decompressed) file, 4 + 4 · dims.size(): element i is at byte
  // data_offset + i, which is how errors about an element (a bad label) name its offset.
  std::int64_t data_offset = 0;
};

// Reads an IDX file, gzipped (it starts with the gzip magic 1f 8b) or raw.
//
// Throws unitscale::Error naming the file and, for a malformed content, the byte offset in the
// decompressed stream where it went wrong: a bad magic number (its first two bytes must be 0, it
// needs at least one dimension), an element type other than 0x08, a header or data shorter than
// it says (expected N bytes at offset X, the stream ends at Y), bytes after the data (trailing
// garbage), a gzip stream that is corrupt or ends early. Also when the file cannot be opened.
IdxArray read_idx(const std::filesystem::path& path);

// Where the Debian package `dataset-fashion-mnist` puts the dataset.
inline constexpr std::string_view kFashionMnistDirectory = "/usr/share/datasets/fashion-mnist";

struct ImageDatasetOptions {
  // The last `validation_holdout` training images (and labels) become the validation split
  // (5000 is the usual choice for Fashion-MNIST), so hyperparameters can be chosen without
  // looking at the test set. 0: no validation split.
  std::int64_t validation_holdout = 0;
  // Labels must be in [0, classes).
  std::int64_t classes = 10;
};

// An image-classification dataset ready for a model: images [N, H·W] fp32, standardised; labels
// [N] i32. Each split has its own N (the validation split has 0 rows without a hold-out).
struct ImageClassificationData {
  Tensor train_images, train_labels;
  Tensor validation_images, validation_labels;
  Tensor test_images, test_labels;  // for the final numbers only
  // The mean and standard deviation (population, divided by the pixel count) of the training
  // split's pixels after dividing by 255, computed in double. Every split, validation and test
  // included, is standardised with these: pixel ↦ (byte / 255 − pixel_mean) / pixel_std.
  double pixel_mean = 0, pixel_std = 1;
  std::int64_t classes = 10, height = 28, width = 28;
};

// Loads `<directory>/<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` for the
// training prefix and the test prefix (each file also found without the `.gz`, as the raw file a
// user unpacked). The statistics are computed over the training split only, after the hold-out,
// so nothing about the validation or test images leaks into the preprocessing.
//
// Throws unitscale::Error (naming the file, and the offset where relevant) if a file is missing or
// malformed (read_idx), an image file is not [N, H, W] or a label file not [N], the image and
// label counts differ, the training and test image sizes differ, a label is not below
// options.classes (naming the label file and the label's offset), the hold-out is negative or
// leaves no training image, or the training pixels are all equal (no standard deviation).
ImageClassificationData load_idx_image_dataset(const std::filesystem::path& directory,
                                               std::string_view train_prefix = "train",
                                               std::string_view test_prefix = "t10k",
                                               const ImageDatasetOptions& options = {});

// Fashion-MNIST from `directory` (the Debian package's by default). When the directory is
// missing, the error says how to install it: `apt-get install dataset-fashion-mnist`.
ImageClassificationData load_fashion_mnist(
    const ImageDatasetOptions& options = {},
    const std::filesystem::path& directory = std::filesystem::path(kFashionMnistDirectory));

}  // namespace unitscale

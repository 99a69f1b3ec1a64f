#pragma once
// safetensors, the tensor file format of Hugging Face (and of PyTorch, JAX and others through
// the `safetensors` package), so that unitscale's weights and checkpoints open anywhere:
//
//   [8 bytes]  N, the header length, a little-endian u64
//   [N bytes]  a UTF-8 JSON object:
//                {"__metadata__": {"key": "value", ...},          (optional, strings only)
//                 "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   [rest]     the tensors' bytes: row-major, little-endian, each at [begin, end) relative to the
//              start of this part, back to back in offset order with no gaps and nothing after.
//
// The writer pads the header with spaces so that the data starts 8-byte aligned, as the reference
// implementation does. dtypes map as F32 = f32, F16 = f16, BF16 = bf16, F8_E4M3 = e4m3fn,
// F8_E5M2 = e5m2, F8_E8M0 = e8m0fnu, I32 = i32; the FNUZ formats have no safetensors name and are
// refused. The reader checks the whole layout before it returns anything, and every error names
// the file and, where there is one, the tensor and the byte offset in the file.

#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

struct SafetensorsEntry {
  std::string name;
  ConstTensorView tensor;
};

// Writes the tensors, in the given order, and `metadata` to `path` atomically (see
// atomic_write.hpp). Throws unitscale::Error, writing nothing, if a name is empty, repeated or
// "__metadata__", if a tensor has no safetensors dtype, or if a name or metadata string is not
// valid UTF-8.
void write_safetensors(const std::filesystem::path& path,
                       std::span<const SafetensorsEntry> tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::filesystem::path path;  // where it was read from, for error messages
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order (by offset)

  // The tensor called `name`, or nullptr.
  const Tensor* find(std::string_view name) const;
  // The tensor called `name`; throws unitscale::Error naming the file and the tensor if there is
  // none.
  const Tensor& at(std::string_view name) const;
};

// Reads a whole safetensors file. Throws unitscale::Error naming the file (and the offset) if it
// cannot be read or breaks the format: too short, a header length past the end, malformed JSON or
// a malformed entry, an unsupported dtype, a shape whose size disagrees with its offsets, offsets
// out of order, overlapping, leaving gaps or past the end, or bytes after the last tensor.
SafetensorsFile read_safetensors(const std::filesystem::path& path);

// The safetensors name of a dtype ("F8_E4M3" for e4m3fn), or an empty view if it has none.
std::string_view safetensors_dtype_name(DType dtype);

}  // namespace unitscale

#include "unitscale/io/safetensors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// The file holds little-endian bytes and tensors are copied to and from it unchanged.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O copies tensor bytes as they are: little-endian hosts only");

using Json = nlohmann::json;

constexpr std::size_t kLengthBytes = 8;
constexpr std::string_view kMetadataKey = "__metadata__";
// The reference implementation refuses larger headers (a guard against absurd allocations).
constexpr std::uint64_t kMaxHeaderLength = 100'000'000;

struct DTypeName {
  DType dtype;
  std::string_view name;
};
// F8_E8M0 is the name the safetensors package gives the MX block-scale format (DeepSeek's
// checkpoints use it); the FNUZ formats have none.
constexpr std::array<DTypeName, 7> kDTypeNames = {{
    {DType::kF32, "F32"},
    {DType::kF16, "F16"},
    {DType::kBF16, "BF16"},
    {DType::kE4M3FN, "F8_E4M3"},
    {DType::kE5M2, "F8_E5M2"},
    {DType::kE8M0FNU, "F8_E8M0"},
    {DType::kI32, "I32"},
}};

std::string supported_dtype_names() {
  std::string names;
  for (const DTypeName& entry : kDTypeNames) {
    if (!names.empty()) names += ", ";
    names += entry.name;
  }
  return names;
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (const DTypeName& entry : kDTypeNames) {
    if (entry.name == name) return entry.dtype;
  }
  return std::nullopt;
}

std::span<const std::byte> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

// ---- Writing ----

void check_entries(const std::filesystem::path& path, std::span<const SafetensorsEntry> tensors) {
  std::set<std::string_view> names;
  for (const SafetensorsEntry& entry : tensors) {
    if (entry.name.empty()) {
      throw Error(fmt::format("write_safetensors {}: a tensor has an empty name", path.string()));
    }
    if (entry.name == kMetadataKey) {
      throw Error(fmt::format("write_safetensors {}: '{}' is reserved for the metadata and cannot "
                              "name a tensor", path.string(), kMetadataKey));
    }
    if (!names.insert(entry.name).second) {
      throw Error(fmt::format("write_safetensors {}: two tensors are named '{}'", path.string(),
                              entry.name));
    }
    if (safetensors_dtype_name(entry.tensor.dtype()).empty()) {
      throw Error(fmt::format("write_safetensors {}: tensor '{}' is {}, which safetensors cannot "
                              "store (it stores {})", path.string(), entry.name,
                              dtype_name(entry.tensor.dtype()), supported_dtype_names()));
    }
    if (!entry.tensor.present() && entry.tensor.byte_size() > 0) {
      throw Error(fmt::format("write_safetensors {}: tensor '{}' ({}) has no data", path.string(),
                              entry.name, entry.tensor.shape().to_string()));
    }
  }
}

// The JSON header, padded with spaces to a multiple of 8 bytes so that the data after the 8-byte
// length starts 8-byte aligned.
std::string header_json(const std::filesystem::path& path,
                        std::span<const SafetensorsEntry> tensors,
                        const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  std::uint64_t offset = 0;
  for (const SafetensorsEntry& entry : tensors) {
    const std::uint64_t end = offset + entry.tensor.byte_size();
    header[entry.name] = {
        {"dtype", safetensors_dtype_name(entry.tensor.dtype())},
        {"shape", std::vector<std::int64_t>(entry.tensor.shape().dims().begin(),
                                            entry.tensor.shape().dims().end())},
        {"data_offsets", {offset, end}},
    };
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {
    // Names and metadata must be UTF-8 (JSON strings are); the dump checks it.
    throw Error(fmt::format("write_safetensors {}: a tensor name or metadata string is not valid "
                            "UTF-8 ({})", path.string(), e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// ---- Reading ----

// What the header says about one tensor, checked for form but not yet against the others.
struct HeaderEntry {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin;
  std::uint64_t end;
};

class Reader {
 public:
  explicit Reader(const std::filesystem::path& path) : path_(path) {}

  SafetensorsFile read() {
    std::error_code error;
    const std::uint64_t size = std::filesystem::file_size(path_, error);
    if (error) fail(fmt::format("cannot open it: {}", error.message()));
    std::ifstream in(path_, std::ios::binary);
    if (!in) fail(fmt::format("cannot open it: {}", std::strerror(errno)));
    if (size < kLengthBytes) {
      fail(fmt::format("{} bytes is too short for the 8-byte header length", size));
    }
    std::array<unsigned char, kLengthBytes> length_bytes{};
    read_bytes(in, 0, length_bytes.data(), kLengthBytes);
    std::uint64_t header_length = 0;
    for (std::size_t i = 0; i < kLengthBytes; ++i) {
      header_length |= std::uint64_t{length_bytes[i]} << (8 * i);
    }
    if (header_length > kMaxHeaderLength) {
      fail(fmt::format("the header length at offset 0 is {} bytes, more than the format's limit "
                       "of {}", header_length, kMaxHeaderLength));
    }
    if (header_length > size - kLengthBytes) {
      fail(fmt::format("the header length at offset 0 is {} bytes, but only {} bytes follow it",
                       header_length, size - kLengthBytes));
    }
    std::string text(header_length, '\0');
    read_bytes(in, kLengthBytes, text.data(), text.size());
    data_start_ = kLengthBytes + header_length;

    SafetensorsFile file;
    file.path = path_;
    std::vector<HeaderEntry> entries = parse_header(text, file.metadata);
    check_layout(entries, size - data_start_);
    file.tensors.reserve(entries.size());
    for (HeaderEntry& entry : entries) {
      Tensor tensor(std::move(entry.shape), entry.dtype);
      read_bytes(in, data_start_ + entry.begin, tensor.bytes(), tensor.byte_size());
      file.tensors.emplace_back(std::move(entry.name), std::move(tensor));
    }
    return file;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("read_safetensors {}: {}", path_.string(), what));
  }
  [[noreturn]] void fail_entry(const std::string& name, const std::string& what) const {
    fail(fmt::format("tensor '{}': {}", name, what));
  }

  void read_bytes(std::ifstream& in, std::uint64_t offset, void* out, std::size_t count) const {
    if (count == 0) return;
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(static_cast<char*>(out), static_cast<std::streamsize>(count));
    if (!in) {
      fail(fmt::format("cannot read {} bytes at offset {}: {}", count, offset,
                       std::strerror(errno)));
    }
  }

  // Parses the header, rejecting repeated keys (which JSON parsers disagree on: the reference
  // implementation refuses them, nlohmann keeps the last), and checks each entry's form.
  std::vector<HeaderEntry> parse_header(const std::string& text,
                                        std::map<std::string, std::string>& metadata) const {
    std::vector<std::set<std::string>> open_objects;
    std::optional<std::string> repeated;
    const Json::parser_callback_t track_keys = [&](int, Json::parse_event_t event, Json& parsed) {
      if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
      if (event == Json::parse_event_t::object_end) open_objects.pop_back();
      if (event == Json::parse_event_t::key) {
        std::string key = parsed.get<std::string>();
        if (!open_objects.back().insert(key).second && !repeated) repeated = std::move(key);
      }
      return true;
    };
    Json header;
    try {
      header = Json::parse(text, track_keys);
    } catch (const Json::parse_error& e) {
      // e.byte counts from 1 within the header, which starts after the 8-byte length.
      fail(fmt::format("malformed JSON header at offset {}: {}",
                       kLengthBytes + (e.byte > 0 ? e.byte - 1 : 0), e.what()));
    }
    if (repeated) fail(fmt::format("the header repeats the key '{}'", *repeated));
    if (!header.is_object()) {
      fail(fmt::format("the header at offset {} is a JSON {}, not an object", kLengthBytes,
                       header.type_name()));
    }
    std::vector<HeaderEntry> entries;
    for (auto& [key, value] : header.items()) {
      if (key == kMetadataKey) {
        parse_metadata(value, metadata);
      } else {
        entries.push_back(parse_entry(key, value));
      }
    }
    return entries;
  }

  void parse_metadata(const Json& value, std::map<std::string, std::string>& metadata) const {
    if (!value.is_object()) {
      fail(fmt::format("'{}' is a JSON {}, not an object of strings", kMetadataKey,
                       value.type_name()));
    }
    for (const auto& [key, item] : value.items()) {
      if (!item.is_string()) {
        fail(fmt::format("metadata '{}' is a JSON {}, not a string", key, item.type_name()));
      }
      metadata.emplace(key, item.get<std::string>());
    }
  }

  HeaderEntry parse_entry(const std::string& name, const Json& value) const {
    if (name.empty()) fail("a tensor has an empty name");
    if (!value.is_object()) {
      fail_entry(name, fmt::format("the entry is a JSON {}, not an object", value.type_name()));
    }
    for (const auto& [key, item] : value.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        fail_entry(name, fmt::format("unknown key '{}' (expected dtype, shape, data_offsets)", key));
      }
    }
    const Json* dtype_json = member(name, value, "dtype");
    if (!dtype_json->is_string()) fail_entry(name, "dtype is not a string");
    const std::string dtype_text = dtype_json->get<std::string>();
    const std::optional<DType> dtype = dtype_from_safetensors_name(dtype_text);
    if (!dtype) {
      fail_entry(name, fmt::format("unsupported dtype '{}' (unitscale reads {})", dtype_text,
                                   supported_dtype_names()));
    }
    const std::vector<std::uint64_t> dims = unsigned_array(name, value, "shape");
    std::vector<std::int64_t> signed_dims;
    for (const std::uint64_t d : dims) {
      if (d > static_cast<std::uint64_t>(INT64_MAX)) fail_entry(name, "a dimension is too large");
      signed_dims.push_back(static_cast<std::int64_t>(d));
    }
    std::optional<Shape> shape;
    try {
      shape.emplace(std::move(signed_dims));
    } catch (const Error& e) {
      fail_entry(name, fmt::format("bad shape: {}", e.what()));
    }
    const std::vector<std::uint64_t> offsets = unsigned_array(name, value, "data_offsets");
    if (offsets.size() != 2) {
      fail_entry(name, fmt::format("data_offsets has {} numbers, expected 2 [begin, end]",
                                   offsets.size()));
    }
    return {name, *dtype, std::move(*shape), offsets[0], offsets[1]};
  }

  const Json* member(const std::string& name, const Json& value, const char* key) const {
    const auto it = value.find(key);
    if (it == value.end()) fail_entry(name, fmt::format("no '{}'", key));
    return &*it;
  }

  std::vector<std::uint64_t> unsigned_array(const std::string& name, const Json& value,
                                            const char* key) const {
    const Json* array = member(name, value, key);
    if (!array->is_array()) fail_entry(name, fmt::format("{} is not an array", key));
    std::vector<std::uint64_t> numbers;
    for (const Json& item : *array) {
      if (!item.is_number_unsigned()) {
        fail_entry(name, fmt::format("{} holds {}, not a non-negative integer", key, item.dump()));
      }
      numbers.push_back(item.get<std::uint64_t>());
    }
    return numbers;
  }

  // Sorts the entries by offset and checks that they tile the data exactly: each tensor's span
  // matches its shape and dtype, starts where the previous one ended, and the last ends at the
  // end of the file.
  void check_layout(std::vector<HeaderEntry>& entries, std::uint64_t data_size) const {
    std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t expected_begin = 0;
    for (const HeaderEntry& entry : entries) {
      if (entry.end < entry.begin) {
        fail_entry(entry.name, fmt::format("data_offsets [{}, {}] end before they begin",
                                           entry.begin, entry.end));
      }
      // Checked before the offsets are turned into file offsets, which cannot then overflow.
      if (entry.end > data_size) {
        fail_entry(entry.name, fmt::format("data_offsets [{}, {}] run past the end of the file: "
                                           "the data has {} bytes, from offset {}", entry.begin,
                                           entry.end, data_size, data_start_));
      }
      const std::uint64_t file_begin = data_start_ + entry.begin;
      if (entry.begin < expected_begin) {
        fail_entry(entry.name, fmt::format("data at offset {} overlaps the previous tensor, which "
                                           "ends at offset {}", file_begin,
                                           data_start_ + expected_begin));
      }
      if (entry.begin > expected_begin) {
        fail_entry(entry.name, fmt::format("data starts at offset {}, leaving a gap of {} bytes "
                                           "after offset {}", file_begin,
                                           entry.begin - expected_begin,
                                           data_start_ + expected_begin));
      }
      // Compared by division so that a huge shape cannot overflow.
      const std::uint64_t span = entry.end - entry.begin;
      const std::uint64_t element = dtype_size(entry.dtype);
      const auto numel = static_cast<std::uint64_t>(entry.shape.numel());
      if (span % element != 0 || span / element != numel) {
        fail_entry(entry.name, fmt::format("shape {} of {} needs {} elements, but data_offsets "
                                           "[{}, {}] span {} bytes ({} bytes each)",
                                           entry.shape.to_string(),
                                           safetensors_dtype_name(entry.dtype), numel,
                                           entry.begin, entry.end, span, element));
      }
      expected_begin = entry.end;
    }
    if (expected_begin < data_size) {
      fail(fmt::format("{} trailing bytes after the last tensor, from offset {}",
                       data_size - expected_begin, data_start_ + expected_begin));
    }
  }

  const std::filesystem::path& path_;
  std::uint64_t data_start_ = 0;
};

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  for (const DTypeName& entry : kDTypeNames) {
    if (entry.dtype == dtype) return entry.name;
  }
  return {};
}

void write_safetensors(const std::filesystem::path& path,
                       std::span<const SafetensorsEntry> tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_entries(path, tensors);
  const std::string header = header_json(path, tensors, metadata);
  std::array<std::byte, kLengthBytes> length{};
  for (std::size_t i = 0; i < kLengthBytes; ++i) {
    length[i] = static_cast<std::byte>((std::uint64_t{header.size()} >> (8 * i)) & 0xff);
  }
  std::vector<std::span<const std::byte>> pieces = {length, as_bytes(header)};
  for (const SafetensorsEntry& entry : tensors) {
    if (entry.tensor.byte_size() > 0) pieces.emplace_back(entry.tensor.bytes(), entry.tensor.byte_size());
  }
  write_file_atomically(path, pieces);
}

SafetensorsFile read_safetensors(const std::filesystem::path& path) { return Reader(path).read(); }

const Tensor* SafetensorsFile::find(std::string_view name) const {
  for (const auto& [tensor_name, tensor] : tensors) {
    if (tensor_name == name) return &tensor;
  }
  return nullptr;
}

const Tensor& SafetensorsFile::at(std::string_view name) const {
  if (const Tensor* tensor = find(name)) return *tensor;
  throw Error(fmt::format("{}: no tensor named '{}' (the file has {} tensors)", path.string(),
                          name, tensors.size()));
}

}  // namespace unitscale

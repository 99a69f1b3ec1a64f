#include "unitscale/io/safetensors.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../support/temp_directory.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/half.hpp"

namespace unitscale {
namespace {

using namespace testing;
using testing_support::read_file;
using testing_support::TempDirectory;
using testing_support::write_file;

// ---- Building tensors and files by hand ----

// Every code of a 16- or 8-bit format in turn (through the format's own from_bits), so that NaNs,
// infinities, subnormals and negative zero all go through the file.
template <class T>
Tensor all_codes(Shape shape) {
  Tensor t(std::move(shape), dtype_of<T>);
  auto values = t.span_as<T>();
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = FormatTraits<T>::from_bits(static_cast<typename FormatTraits<T>::Bits>(i));
  }
  return t;
}

Tensor random_bytes(Shape shape, DType dtype, std::uint32_t seed) {
  Tensor t(std::move(shape), dtype);
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < t.byte_size(); ++i) t.bytes()[i] = static_cast<std::byte>(rng());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.byte_size() == b.byte_size() &&
         (a.byte_size() == 0 || std::memcmp(a.bytes(), b.bytes(), a.byte_size()) == 0);
}

std::string u64_le(std::uint64_t n) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return bytes;
}

// A file exactly as the public spec lays it out: length, header, data.
std::string spec_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

// ---- A tiny reader independent of ours (no JSON library), to check the layout we write ----

struct ScannedTensor {
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

std::size_t skip_spaces(const std::string& s, std::size_t i) {
  while (i < s.size() && s[i] == ' ') ++i;
  return i;
}

// The value after `"key":` in `object`: a quoted string (unquoted) or a [..] array (as text).
std::string scan_value(const std::string& object, const std::string& key) {
  const std::size_t at = object.find("\"" + key + "\"");
  if (at == std::string::npos) return {};
  std::size_t i = skip_spaces(object, at + key.size() + 2);
  if (object[i] != ':') return {};
  i = skip_spaces(object, i + 1);
  const char close = object[i] == '"' ? '"' : ']';
  const std::size_t end = object.find(close, i + 1);
  return object.substr(i + 1, end - i - 1);
}

std::vector<std::uint64_t> scan_numbers(const std::string& list) {
  std::vector<std::uint64_t> numbers;
  std::size_t i = 0;
  while (i < list.size()) {
    if (list[i] >= '0' && list[i] <= '9') {
      std::size_t used = 0;
      numbers.push_back(std::stoull(list.substr(i), &used));
      i += used;
    } else {
      ++i;
    }
  }
  return numbers;
}

ScannedTensor scan_tensor(const std::string& header, const std::string& name) {
  const std::size_t key = header.find("\"" + name + "\"");
  EXPECT_NE(key, std::string::npos) << name;
  const std::size_t open = header.find('{', key);
  const std::string object = header.substr(open, header.find('}', open) - open + 1);
  ScannedTensor t;
  t.dtype = scan_value(object, "dtype");
  t.shape = scan_numbers(scan_value(object, "shape"));
  const std::vector<std::uint64_t> offsets = scan_numbers(scan_value(object, "data_offsets"));
  EXPECT_EQ(offsets.size(), 2u) << name;
  if (offsets.size() == 2) {
    t.begin = offsets[0];
    t.end = offsets[1];
  }
  return t;
}

// ---- Round trips ----

TEST(Safetensors, EverySupportedDTypeRoundTripsBitExactly) {
  TempDirectory dir;
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", random_bytes({3, 5, 7}, DType::kF32, 1)},
      {"f16", all_codes<float16>({256, 256})},
      {"bf16", all_codes<bfloat16>({65536})},
      {"e4m3", all_codes<float8_e4m3fn>({16, 16})},
      {"e5m2", all_codes<float8_e5m2>({2, 128})},
      {"e8m0", all_codes<float8_e8m0fnu>({256})},
      {"i32", Tensor(Shape{4}, std::vector<std::int32_t>{INT32_MIN, -1, 0, INT32_MAX})},
      {"scalar", Tensor(Shape{}, std::vector<float>{-0.0f})},
      {"empty", Tensor(Shape{0, 3}, DType::kBF16)},
      {"odd", random_bytes({3}, DType::kE5M2, 2)},  // leaves the next tensor unaligned: allowed
      {"after_odd", random_bytes({2, 2}, DType::kF32, 3)},
  };
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, tensor] : tensors) entries.push_back({name, tensor.view()});
  const auto path = dir / "all.safetensors";
  write_safetensors(path, entries);

  const SafetensorsFile file = read_safetensors(path);
  EXPECT_EQ(file.path, path);
  EXPECT_TRUE(file.metadata.empty());
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    // File order is offset order, which is the order written.
    EXPECT_EQ(file.tensors[i].first, tensors[i].first);
    EXPECT_TRUE(same_bytes(file.tensors[i].second, tensors[i].second)) << tensors[i].first;
  }
  EXPECT_EQ(&file.at("e4m3"), file.find("e4m3"));
  EXPECT_EQ(file.find("nope"), nullptr);
  EXPECT_THAT([&] { file.at("nope"); },
              ThrowsMessage<Error>(AllOf(HasSubstr(path.string()), HasSubstr("'nope'"))));
}

TEST(Safetensors, MetadataRoundTrips) {
  TempDirectory dir;
  const Tensor w = Tensor::filled({2}, 1.5f);
  const SafetensorsEntry entries[] = {{"w", w.view()}};
  const std::map<std::string, std::string> metadata = {
      {"step", "100"},
      {"config", R"({"width": 64, "name": "quote\" and \\ backslash"})"},
      {"empty", ""},
      {"unicode", "μP ✓"},
  };
  write_safetensors(dir / "m.safetensors", entries, metadata);
  EXPECT_EQ(read_safetensors(dir / "m.safetensors").metadata, metadata);
}

TEST(Safetensors, NoTensorsIsAValidFile) {
  TempDirectory dir;
  write_safetensors(dir / "none.safetensors", {}, {{"k", "v"}});
  const SafetensorsFile file = read_safetensors(dir / "none.safetensors");
  EXPECT_TRUE(file.tensors.empty());
  EXPECT_EQ(file.metadata.at("k"), "v");
}

// The layout we write, checked by the independent scanner: the 8-byte length, a space-padded
// header that makes the data 8-byte aligned, and each tensor's bytes at its offsets.
TEST(Safetensors, TheWrittenLayoutFollowsThePublicFormat) {
  TempDirectory dir;
  for (const std::string& name : {std::string("a"), std::string("ab"), std::string("abcdefg")}) {
    const Tensor x = random_bytes({3, 2}, DType::kF32, 4);
    const Tensor y = all_codes<float8_e4m3fn>({5});
    const Tensor z = all_codes<bfloat16>({3});
    const SafetensorsEntry entries[] = {{name, x.view()}, {"y", y.view()}, {"z", z.view()}};
    const auto path = dir / (name + ".safetensors");
    write_safetensors(path, entries, {{"note", "hi"}});

    const std::string bytes = read_file(path);
    ASSERT_GE(bytes.size(), 8u);
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= std::uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
    ASSERT_LE(8 + n, bytes.size());
    EXPECT_EQ((8 + n) % 8, 0u) << "data start must be 8-byte aligned";
    const std::string header = bytes.substr(8, n);
    EXPECT_EQ(header.front(), '{');
    EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}')) << "padding is spaces only";
    EXPECT_NE(header.find(R"("__metadata__":{"note":"hi"})"), std::string::npos) << header;
    const std::string data = bytes.substr(8 + n);
    EXPECT_EQ(data.size(), x.byte_size() + y.byte_size() + z.byte_size());

    const struct {
      std::string name;
      const Tensor* tensor;
      const char* dtype;
      std::uint64_t begin;
    } expected[] = {{name, &x, "F32", 0}, {"y", &y, "F8_E4M3", 24}, {"z", &z, "BF16", 29}};
    for (const auto& e : expected) {
      const ScannedTensor t = scan_tensor(header, e.name);
      EXPECT_EQ(t.dtype, e.dtype) << e.name;
      EXPECT_THAT(t.shape, ElementsAreArray(e.tensor->shape().dims())) << e.name;
      EXPECT_EQ(t.begin, e.begin) << e.name;
      EXPECT_EQ(t.end, e.begin + e.tensor->byte_size()) << e.name;
      EXPECT_EQ(data.substr(t.begin, t.end - t.begin),
                std::string(reinterpret_cast<const char*>(e.tensor->bytes()), e.tensor->byte_size()))
          << e.name;
    }
  }
}

// A file built by hand from the spec: no padding, spaces in the JSON, keys in another order, the
// metadata between tensors and the tensors listed out of offset order.
TEST(Safetensors, ReadsAFileBuiltFromTheSpec) {
  TempDirectory dir;
  const std::string header =
      R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}, "__metadata__":{"format":"pt"},)"
      R"( "a" : {"data_offsets":[0,8],"shape":[2, 2],"dtype":"BF16"}})";
  ASSERT_NE(header.size() % 8, 0u);
  // bf16 1, -2, 0.5, 3 and int32 7, -1, little-endian.
  const std::string data("\x80\x3f\x00\xc0\x00\x3f\x40\x40"
                         "\x07\x00\x00\x00\xff\xff\xff\xff", 16);
  write_file(dir / "spec.safetensors", spec_file(header, data));

  const SafetensorsFile file = read_safetensors(dir / "spec.safetensors");
  EXPECT_THAT(file.metadata, ElementsAre(Pair("format", "pt")));
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].first, "a");
  EXPECT_EQ(file.tensors[1].first, "b");
  const Tensor& a = file.at("a");
  EXPECT_EQ(a.shape(), (Shape{2, 2}));
  ASSERT_EQ(a.dtype(), DType::kBF16);
  std::vector<float> a_values;
  for (const bfloat16 v : a.span_as<bfloat16>()) a_values.push_back(static_cast<float>(v));
  EXPECT_THAT(a_values, ElementsAre(1.0f, -2.0f, 0.5f, 3.0f));
  EXPECT_THAT(file.at("b").span_as<std::int32_t>(), ElementsAre(7, -1));
}

// ---- Refusals when writing ----

TEST(Safetensors, WritingRefusesWhatTheFormatCannotHoldAndLeavesTheTarget) {
  TempDirectory dir;
  const auto path = dir / "t.safetensors";
  write_file(path, "old");
  const Tensor f32 = Tensor::filled({2}, 1.0f);
  const Tensor fnuz(Shape{2}, DType::kE4M3FNUZ);
  const auto refuses = [&](std::vector<SafetensorsEntry> entries, const std::string& message) {
    EXPECT_THAT([&] { write_safetensors(path, entries); },
                ThrowsMessage<Error>(AllOf(HasSubstr(path.string()), HasSubstr(message))));
  };
  refuses({{"w", f32.view()}, {"q", fnuz.view()}}, "tensor 'q' is e4m3fnuz");
  refuses({{"w", f32.view()}, {"w", f32.view()}}, "two tensors are named 'w'");
  refuses({{"", f32.view()}}, "empty name");
  refuses({{"__metadata__", f32.view()}}, "reserved");
  refuses({{"w", ConstTensorView(nullptr, Shape{2})}}, "'w' ([2]) has no data");
  refuses({{"bad\xff", f32.view()}}, "not valid UTF-8");
  EXPECT_EQ(read_file(path), "old");
  EXPECT_THAT(dir.entries(), ElementsAre("t.safetensors"));
}

// ---- Refusals when reading ----

struct Corruption {
  const char* what;
  std::string bytes;
  const char* message;
};

TEST(Safetensors, EveryKindOfCorruptionIsAnErrorNamingTheFile) {
  TempDirectory dir;
  const std::string four_bytes(4, '\1');  // data for one [1] f32 / [4] e4m3
  const auto tensor = [](const std::string& dtype, const std::string& shape, int begin, int end) {
    return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":[)" +
           std::to_string(begin) + "," + std::to_string(end) + "]}";
  };
  const std::vector<Corruption> cases = {
      {"empty", "", "0 bytes is too short for the 8-byte header length"},
      {"short", std::string("\x05\x00\x00", 3), "3 bytes is too short"},
      {"header past end", u64_le(100) + "{}", "header length at offset 0 is 100 bytes, but only 2"},
      {"huge header length", u64_le(~std::uint64_t{0}) + "{}", "header length"},
      {"header beyond the format's limit", u64_le(100'000'001) + "{}",
       "more than the format's limit of 100000000"},
      {"bad JSON", spec_file(R"({"a":{"dtype":"F32",,}})", ""), "malformed JSON header at offset 28"},
      {"not JSON", spec_file("hello", ""), "malformed JSON header at offset 8"},
      {"not an object", spec_file("[1, 2]", ""), "is a JSON array, not an object"},
      {"repeated key", spec_file(R"({"a":)" + tensor("F32", "[1]", 0, 4) + R"(,"a":)" +
                                     tensor("F32", "[1]", 4, 8) + "}",
                                 four_bytes + four_bytes),
       "repeats the key 'a'"},
      {"unknown dtype", spec_file(R"({"a":)" + tensor("F64", "[]", 0, 8) + "}", std::string(8, 0)),
       "tensor 'a': unsupported dtype 'F64'"},
      {"FNUZ is not a safetensors dtype",
       spec_file(R"({"a":)" + tensor("F8_E4M3FNUZ", "[4]", 0, 4) + "}", four_bytes),
       "unsupported dtype 'F8_E4M3FNUZ'"},
      {"entry not an object", spec_file(R"({"a":[0,4]})", four_bytes), "tensor 'a': the entry is"},
      {"unknown key", spec_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})",
                                four_bytes),
       "unknown key 'x'"},
      {"missing shape", spec_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", four_bytes),
       "tensor 'a': no 'shape'"},
      {"negative dim", spec_file(R"({"a":)" + tensor("F32", "[-1]", 0, 4) + "}", four_bytes),
       "shape holds -1"},
      {"float offset", spec_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})",
                                 four_bytes),
       "data_offsets holds 4.0"},
      {"three offsets",
       spec_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}})", four_bytes),
       "data_offsets has 3 numbers"},
      {"metadata not strings", spec_file(R"({"__metadata__":{"step":1}})", ""),
       "metadata 'step' is a JSON number"},
      {"size mismatch", spec_file(R"({"a":)" + tensor("F32", "[2]", 0, 4) + "}", four_bytes),
       "shape [2] of F32 needs 2 elements, but data_offsets [0, 4] span 4 bytes"},
      {"end before begin", spec_file(R"({"a":)" + tensor("F32", "[1]", 4, 0) + "}", four_bytes),
       "end before they begin"},
      {"gap", spec_file(R"({"a":)" + tensor("F32", "[1]", 4, 8) + "}", four_bytes + four_bytes),
       "leaving a gap of 4 bytes"},
      {"overlap", spec_file(R"({"a":)" + tensor("F32", "[2]", 0, 8) + R"(,"b":)" +
                                tensor("F32", "[1]", 4, 8) + "}",
                            four_bytes + four_bytes),
       "overlaps the previous tensor"},
      {"past the end", spec_file(R"({"a":)" + tensor("F32", "[2]", 0, 8) + "}", four_bytes),
       "data_offsets [0, 8] run past the end of the file: the data has 4 bytes"},
      {"huge offsets", spec_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":)"
                                 R"([18446744073709551615,18446744073709551615]}})", ""),
       "run past the end of the file"},
      {"trailing bytes", spec_file(R"({"a":)" + tensor("F32", "[1]", 0, 4) + "}", four_bytes + "x"),
       "1 trailing bytes after the last tensor"},
      {"data but no tensors", spec_file("{}", four_bytes), "4 trailing bytes"},
  };
  for (const Corruption& c : cases) {
    const auto path = dir / "bad.safetensors";
    write_file(path, c.bytes);
    EXPECT_THAT([&] { read_safetensors(path); },
                ThrowsMessage<Error>(AllOf(HasSubstr(path.string()), HasSubstr(c.message))))
        << c.what;
  }
  EXPECT_THAT([&] { read_safetensors(dir.path()); },
              ThrowsMessage<Error>(AllOf(HasSubstr(dir.path().string()), HasSubstr("cannot open"))));
  EXPECT_THAT([&] { read_safetensors(dir / "missing.safetensors"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("missing.safetensors"), HasSubstr("cannot open"))));
}

// Every truncation of a valid file is caught, wherever it cuts.
TEST(Safetensors, EveryTruncationIsAnError) {
  TempDirectory dir;
  const Tensor x = random_bytes({3}, DType::kF32, 5);
  const Tensor y = all_codes<float8_e5m2>({4});
  const SafetensorsEntry entries[] = {{"x", x.view()}, {"y", y.view()}};
  write_safetensors(dir / "ok.safetensors", entries, {{"k", "v"}});
  const std::string bytes = read_file(dir / "ok.safetensors");
  const auto path = dir / "cut.safetensors";
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    write_file(path, bytes.substr(0, size));
    EXPECT_THAT([&] { read_safetensors(path); }, ThrowsMessage<Error>(HasSubstr(path.string())))
        << "cut at " << size;
  }
  write_file(path, bytes + std::string(1, '\0'));
  EXPECT_THAT([&] { read_safetensors(path); }, ThrowsMessage<Error>(HasSubstr("trailing")));
}

// Changing any header byte either breaks the file, which is then an error naming it, or makes
// another valid file (a renamed tensor, say), whose tensors still match their offsets.
TEST(Safetensors, CorruptedHeaderBytesNeverGoUnchecked) {
  TempDirectory dir;
  const Tensor x = random_bytes({2, 3}, DType::kBF16, 6);
  const Tensor y = Tensor(Shape{2}, std::vector<std::int32_t>{1, 2});
  const SafetensorsEntry entries[] = {{"x", x.view()}, {"y", y.view()}};
  write_safetensors(dir / "ok.safetensors", entries, {{"k", "v"}});
  const std::string bytes = read_file(dir / "ok.safetensors");
  std::uint64_t header_length = 0;
  for (int i = 0; i < 8; ++i) {
    header_length |= std::uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  const auto path = dir / "flipped.safetensors";
  int errors = 0;
  for (std::size_t at = 0; at < 8 + header_length; ++at) {
    for (const char c : {'\0', '"', '{', ']', ':', '9', '\xff'}) {
      std::string changed = bytes;
      if (changed[at] == c) continue;
      changed[at] = c;
      write_file(path, changed);
      try {
        const SafetensorsFile file = read_safetensors(path);
        std::size_t total = 0;
        for (const auto& [name, tensor] : file.tensors) total += tensor.byte_size();
        EXPECT_EQ(total, x.byte_size() + y.byte_size()) << "byte " << at << " set to " << int(c);
      } catch (const Error& e) {
        ++errors;
        EXPECT_THAT(e.what(), HasSubstr(path.string()));
      }
    }
  }
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace unitscale

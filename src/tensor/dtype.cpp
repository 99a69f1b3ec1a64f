#include "unitscale/tensor/dtype.hpp"

#include <array>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;       // short name
  std::string_view long_name;  // format catalogue / ONNX spelling
};

constexpr std::array kDTypes{
    DTypeEntry{DType::kF32, "f32", "float32"},
    DTypeEntry{DType::kF16, "f16", "float16"},
    DTypeEntry{DType::kBF16, "bf16", "bfloat16"},
    DTypeEntry{DType::kE4M3FN, "e4m3fn", "float8_e4m3fn"},
    DTypeEntry{DType::kE5M2, "e5m2", "float8_e5m2"},
    DTypeEntry{DType::kE4M3FNUZ, "e4m3fnuz", "float8_e4m3fnuz"},
    DTypeEntry{DType::kE5M2FNUZ, "e5m2fnuz", "float8_e5m2fnuz"},
    DTypeEntry{DType::kE8M0FNU, "e8m0fnu", "float8_e8m0fnu"},
    DTypeEntry{DType::kI32, "i32", "int32"},
};

constexpr std::array kAllDTypes = [] {
  std::array<DType, kDTypes.size()> all{};
  for (std::size_t i = 0; i < kDTypes.size(); ++i) all[i] = kDTypes[i].dtype;
  return all;
}();

}  // namespace

std::span<const DType> all_dtypes() { return kAllDTypes; }

std::string_view dtype_name(DType dtype) {
  return kDTypes[static_cast<std::size_t>(dtype)].name;
}

DType dtype_from_name(std::string_view name) {
  std::string valid;
  for (const DTypeEntry& entry : kDTypes) {
    if (entry.name == name || entry.long_name == name) return entry.dtype;
    valid += (valid.empty() ? "" : ", ") + std::string(entry.name);
  }
  throw Error("unknown dtype '" + std::string(name) + "'; valid names: " + valid);
}

std::optional<FormatSpec> dtype_format(DType dtype) {
  switch (dtype) {
    case DType::kF16: return kFloat16;
    case DType::kBF16: return kBFloat16;
    case DType::kE4M3FN: return kFloat8E4M3FN;
    case DType::kE5M2: return kFloat8E5M2;
    case DType::kE4M3FNUZ: return kFloat8E4M3FNUZ;
    case DType::kE5M2FNUZ: return kFloat8E5M2FNUZ;
    case DType::kE8M0FNU: return kFloat8E8M0FNU;
    case DType::kF32:
    case DType::kI32: return std::nullopt;
  }
  return std::nullopt;
}

std::string DTypeSet::to_string() const {
  if (*this == all()) return "any dtype";
  std::string text;
  int remaining = 0;
  for (const DType d : all_dtypes()) remaining += contains(d) ? 1 : 0;
  for (const DType d : all_dtypes()) {
    if (!contains(d)) continue;
    --remaining;
    if (!text.empty()) text += remaining == 0 ? " or " : ", ";
    text += dtype_name(d);
  }
  return text;
}

}  // namespace unitscale

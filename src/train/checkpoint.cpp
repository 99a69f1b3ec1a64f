#include "unitscale/train/checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include "unitscale/error.hpp"
#include "unitscale/io/safetensors.hpp"

namespace unitscale {
namespace {

constexpr std::string_view kPrefix = "step-";
constexpr std::string_view kSuffix = ".safetensors";

std::optional<std::int64_t> parse_step(std::string_view text) {
  std::int64_t step = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), step);
  if (error != std::errc() || end != text.data() + text.size() || step < 0) return std::nullopt;
  return step;
}

// The step of a file named like CheckpointDirectory::path_for's (8 digits or more), else nullopt:
// other files in the directory, including the temporary files of an interrupted save, are never
// taken for checkpoints.
std::optional<std::int64_t> step_of_file_name(std::string_view name) {
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) return std::nullopt;
  const std::string_view digits =
      name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (digits.size() < 8 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return parse_step(digits);
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string joined;
  for (const std::string& item : items) {
    if (!joined.empty()) joined += separator;
    joined += item;
  }
  return joined;
}

// Checks that the names are distinct and non-empty and that every value is a state the executor
// keeps; `caller` and `path` go into the error.
void check_values(std::string_view caller, const std::filesystem::path& path,
                  const Executor& executor, std::span<const CheckpointValue> values) {
  std::set<std::string_view> names;
  for (const CheckpointValue& value : values) {
    if (value.name.empty()) {
      throw Error(fmt::format("{} {}: a value (%{}) has an empty name", caller, path.string(),
                              value.value.id()));
    }
    if (!names.insert(value.name).second) {
      throw Error(fmt::format("{} {}: two values are named '{}'", caller, path.string(),
                              value.name));
    }
    if (!executor.has_state(value.value)) {
      throw Error(fmt::format("{} {}: '{}' (%{}) is not a state value that this executor keeps",
                              caller, path.string(), value.name, value.value.id()));
    }
  }
}

std::string describe(const Shape& shape, DType dtype) {
  return fmt::format("{} {}", shape.to_string(), dtype_name(dtype));
}

}  // namespace

std::vector<CheckpointValue> checkpoint_values(std::span<const Value> values) {
  std::vector<CheckpointValue> named;
  named.reserve(values.size());
  for (const Value& value : values) {
    const ValueInfo& info = value.graph().info(value);
    if (info.kind != ValueKind::kState) {
      throw Error(fmt::format("checkpoint_values: %{} ('{}') is not a state value", value.id(),
                              info.name));
    }
    if (info.name.empty()) {
      throw Error(fmt::format("checkpoint_values: state %{} has no name", value.id()));
    }
    named.push_back({info.name, value});
  }
  return named;
}

CheckpointDirectory::CheckpointDirectory(std::filesystem::path directory, int keep_last)
    : directory_(std::move(directory)), keep_last_(keep_last) {
  if (keep_last_ < 1) {
    throw Error(fmt::format("CheckpointDirectory {}: keep_last must be at least 1, got {}",
                            directory_.string(), keep_last_));
  }
  std::error_code error;
  std::filesystem::create_directories(directory_, error);
  if (error) {
    throw Error(fmt::format("CheckpointDirectory: cannot create {}: {}", directory_.string(),
                            error.message()));
  }
}

std::filesystem::path CheckpointDirectory::path_for(std::int64_t step) const {
  return directory_ / fmt::format("{}{:08}{}", kPrefix, step, kSuffix);
}

std::filesystem::path CheckpointDirectory::save(std::int64_t step, const Executor& executor,
                                                std::span<const CheckpointValue> values,
                                                std::map<std::string, std::string> metadata) const {
  if (step < 0) {
    throw Error(fmt::format("CheckpointDirectory::save {}: step must be >= 0, got {}",
                            directory_.string(), step));
  }
  const std::filesystem::path path = path_for(step);
  const std::string step_text = std::to_string(step);
  if (const auto it = metadata.find(kCheckpointStepKey);
      it != metadata.end() && it->second != step_text) {
    throw Error(fmt::format("CheckpointDirectory::save {}: metadata has step={}, but the step is "
                            "{}", path.string(), it->second, step_text));
  }
  metadata[kCheckpointStepKey] = step_text;
  check_values("CheckpointDirectory::save", path, executor, values);
  std::vector<SafetensorsEntry> entries;
  entries.reserve(values.size());
  for (const CheckpointValue& value : values) {
    entries.push_back({value.name, executor.state(value.value)});
  }
  write_safetensors(path, entries, metadata);

  std::vector<std::filesystem::path> older = checkpoints();
  std::erase(older, path);
  const std::size_t keep_others = static_cast<std::size_t>(keep_last_) - 1;
  for (std::size_t i = 0; i + keep_others < older.size(); ++i) {
    std::error_code error;
    std::filesystem::remove(older[i], error);
    if (error) {
      throw Error(fmt::format("CheckpointDirectory::save: saved {}, but cannot delete the old "
                              "checkpoint {}: {}", path.string(), older[i].string(),
                              error.message()));
    }
  }
  return path;
}

std::vector<std::filesystem::path> CheckpointDirectory::checkpoints() const {
  std::vector<std::pair<std::int64_t, std::filesystem::path>> found;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory_, error)) {
    if (!entry.is_regular_file()) continue;
    if (const auto step = step_of_file_name(entry.path().filename().string())) {
      found.emplace_back(*step, entry.path());
    }
  }
  if (error) {
    throw Error(fmt::format("CheckpointDirectory: cannot list {}: {}", directory_.string(),
                            error.message()));
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> paths;
  paths.reserve(found.size());
  for (auto& [step, path] : found) paths.push_back(std::move(path));
  return paths;
}

std::optional<std::filesystem::path> CheckpointDirectory::latest() const {
  std::vector<std::filesystem::path> paths = checkpoints();
  if (paths.empty()) return std::nullopt;
  return std::move(paths.back());
}

LoadedCheckpoint load_checkpoint(const std::filesystem::path& path, Executor& executor,
                                 std::span<const CheckpointValue> values,
                                 const std::map<std::string, std::string>& expected) {
  check_values("load_checkpoint", path, executor, values);
  SafetensorsFile file = read_safetensors(path);

  // A different configuration explains every other mismatch, so it is reported first.
  std::vector<std::string> differences;
  for (const auto& [key, value] : expected) {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end()) {
      differences.push_back(fmt::format("checkpoint {} has no {}, this run has {}", path.string(),
                                        key, value));
    } else if (it->second != value) {
      differences.push_back(fmt::format("checkpoint {} was written with {}={}, this run has {}",
                                        path.string(), key, it->second, value));
    }
  }
  if (!differences.empty()) throw Error(join(differences, "; "));

  std::vector<std::string> missing;
  std::vector<std::string> mismatched;
  std::set<std::string_view> named;
  for (const CheckpointValue& value : values) {
    named.insert(value.name);
    const ConstTensorView state = executor.state(value.value);
    const Tensor* tensor = file.find(value.name);
    if (tensor == nullptr) {
      missing.push_back(value.name);
    } else if (tensor->shape() != state.shape() || tensor->dtype() != state.dtype()) {
      mismatched.push_back(fmt::format("'{}' is {} in the file, {} in this run", value.name,
                                       describe(tensor->shape(), tensor->dtype()),
                                       describe(state.shape(), state.dtype())));
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : file.tensors) {
    if (!named.contains(name)) unexpected.push_back(name);
  }
  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back("missing tensors: " + join(missing, ", "));
  if (!unexpected.empty()) {
    problems.push_back("tensors this run does not have: " + join(unexpected, ", "));
  }
  problems.insert(problems.end(), mismatched.begin(), mismatched.end());
  if (!problems.empty()) {
    throw Error(fmt::format("checkpoint {} does not match this run: {}", path.string(),
                            join(problems, "; ")));
  }

  LoadedCheckpoint loaded;
  const auto step_it = file.metadata.find(kCheckpointStepKey);
  if (step_it == file.metadata.end()) {
    throw Error(fmt::format("checkpoint {} has no '{}' metadata", path.string(),
                            kCheckpointStepKey));
  }
  const std::optional<std::int64_t> step = parse_step(step_it->second);
  if (!step) {
    throw Error(fmt::format("checkpoint {}: metadata step='{}' is not a non-negative integer",
                            path.string(), step_it->second));
  }
  loaded.step = *step;

  // Everything is checked: set_state cannot fail from here on, so the load is all-or-nothing.
  for (const CheckpointValue& value : values) executor.set_state(value.value, *file.find(value.name));
  loaded.metadata = std::move(file.metadata);
  return loaded;
}

}  // namespace unitscale

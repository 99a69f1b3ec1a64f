#pragma once
// Training checkpoints: the executor's state values (trained parameters, optimizer moments, step
// counters; see Graph::state) saved under names in a safetensors file, with metadata strings
// beside them (the step, and whatever the trainer adds: seed, config JSON, parametrization).
// Being plain safetensors, a checkpoint opens in PyTorch too (benchmarks/compare/
// load_checkpoint_torch.py).
//
//   CheckpointDirectory checkpoints("runs/a/checkpoints", /*keep_last=*/3);
//   const auto values = checkpoint_values(state_values);           // named as in the graph
//   checkpoints.save(step, executor, values, {{"seed", "1"}});     // step-00000100.safetensors
//   ...
//   if (auto path = checkpoints.latest()) {
//     LoadedCheckpoint loaded = load_checkpoint(*path, executor, values, {{"seed", "1"}});
//     executor.set_step(...);   // the trainer decides how its step maps to the executor's
//   }
//
// Saving is atomic (a crash leaves the previous checkpoints intact) and loading is all-or-nothing
// (a mismatched file leaves the executor as it was).

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "unitscale/graph/executor.hpp"

namespace unitscale {

// A state value and the name of its tensor in the file.
struct CheckpointValue {
  std::string name;
  Value value;
};

// The values under their graph names (Graph::state's name). Throws unitscale::Error if one is not
// a state value or has an empty name; repeated names are refused when saving and loading.
std::vector<CheckpointValue> checkpoint_values(std::span<const Value> values);

// The metadata key under which save() records the step.
inline constexpr const char* kCheckpointStepKey = "step";

class CheckpointDirectory {
 public:
  // Creates `directory` if it does not exist. keep_last >= 1 checkpoints are kept.
  explicit CheckpointDirectory(std::filesystem::path directory, int keep_last = 3);

  const std::filesystem::path& directory() const { return directory_; }
  // <directory>/step-<step, 8 digits or more>.safetensors
  std::filesystem::path path_for(std::int64_t step) const;

  // Writes the values' current states and `metadata` plus "step" to path_for(step), atomically,
  // then deletes the oldest checkpoints (files named like path_for's, nothing else) so that
  // keep_last remain; the file just written is always kept, even if older checkpoints have higher
  // steps. Returns its path. Throws unitscale::Error if step < 0, a value is not a state of the
  // executor, `metadata` has a "step" that differs from `step`, or the file cannot be written.
  std::filesystem::path save(std::int64_t step, const Executor& executor,
                             std::span<const CheckpointValue> values,
                             std::map<std::string, std::string> metadata = {}) const;

  // The checkpoints in the directory, by increasing step.
  std::vector<std::filesystem::path> checkpoints() const;
  std::optional<std::filesystem::path> latest() const;

 private:
  std::filesystem::path directory_;
  int keep_last_;
};

struct LoadedCheckpoint {
  std::int64_t step = 0;
  std::map<std::string, std::string> metadata;  // including "step"
};

// Loads the checkpoint at `path` into the executor's states. All-or-nothing: it first checks that
// the file is valid, that every value has a tensor of that name with the state's shape and dtype,
// that the file has no tensor the values do not name, and that every key of `expected` has the
// same value in the file's metadata; only then does it copy. Throws unitscale::Error naming the
// file and listing every mismatch (or "checkpoint X was written with <key>=<a>, this run has
// <b>"), leaving the executor's states untouched.
LoadedCheckpoint load_checkpoint(const std::filesystem::path& path, Executor& executor,
                                 std::span<const CheckpointValue> values,
                                 const std::map<std::string, std::string>& expected = {});

}  // namespace unitscale

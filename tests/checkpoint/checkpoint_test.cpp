#include "unitscale/train/checkpoint.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../support/temp_directory.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/io/safetensors.hpp"

namespace unitscale {
namespace {

using namespace testing;
using testing_support::read_file;
using testing_support::TempDirectory;
using testing_support::write_file;

Tensor random_tensor(Shape shape, DType dtype, std::uint32_t seed) {
  Tensor t(std::move(shape), dtype);
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < t.byte_size(); ++i) t.bytes()[i] = static_cast<std::byte>(rng());
  return t;
}

std::string bytes_of(ConstTensorView view) {
  return {reinterpret_cast<const char*>(view.bytes()), view.byte_size()};
}

// A graph whose executor keeps two states (a parameter and a BF16 optimizer moment), requested
// as outputs so that they have storage without any op.
struct Model {
  explicit Model(Shape w_shape = {2, 3}, DType m_dtype = DType::kBF16)
      : w(graph.state("w", std::move(w_shape))),
        m(graph.state("m", {4}, std::nullopt, m_dtype)),
        executor(graph, std::vector<Value>{w, m}) {}
  std::string state_bytes() const {
    return bytes_of(executor.state(w)) + bytes_of(executor.state(m));
  }
  std::vector<CheckpointValue> values() const { return checkpoint_values(std::vector{w, m}); }

  Graph graph;
  Value w, m;
  Executor executor;
};

void randomize(Model& model, std::uint32_t seed) {
  model.executor.set_state(model.w, random_tensor(model.w.shape(), model.w.dtype(), seed));
  model.executor.set_state(model.m, random_tensor(model.m.shape(), model.m.dtype(), seed + 1));
}

TEST(Checkpoint, ValuesAreNamedAsInTheGraph) {
  Model model;
  const std::vector<CheckpointValue> values = model.values();
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[0].name, "w");
  EXPECT_EQ(values[0].value, model.w);
  EXPECT_EQ(values[1].name, "m");
  const Value x = model.graph.input("x", {2});
  EXPECT_THAT([&] { checkpoint_values(std::vector{x}); },
              ThrowsMessage<Error>(HasSubstr("'x') is not a state value")));
}

TEST(Checkpoint, SaveAndLoadRoundTripThroughAnExecutor) {
  TempDirectory dir;
  Model saved;
  randomize(saved, 1);
  const CheckpointDirectory checkpoints(dir / "ckpt");
  EXPECT_FALSE(checkpoints.latest().has_value());
  const auto path = checkpoints.save(42, saved.executor, saved.values(), {{"seed", "7"}});
  EXPECT_EQ(path, dir / "ckpt" / "step-00000042.safetensors");
  EXPECT_EQ(checkpoints.latest(), path);

  Model loaded;
  ASSERT_NE(loaded.state_bytes(), saved.state_bytes());
  const LoadedCheckpoint result =
      load_checkpoint(path, loaded.executor, loaded.values(), {{"seed", "7"}});
  EXPECT_EQ(result.step, 42);
  EXPECT_THAT(result.metadata, ElementsAre(Pair("seed", "7"), Pair("step", "42")));
  EXPECT_EQ(loaded.state_bytes(), saved.state_bytes());

  // A plain safetensors file underneath: names, dtypes and bytes as the states.
  const SafetensorsFile file = read_safetensors(path);
  EXPECT_EQ(file.at("m").dtype(), DType::kBF16);
  EXPECT_EQ(bytes_of(file.at("w")), bytes_of(saved.executor.state(saved.w)));
}

// A checkpoint with a state of every dtype that safetensors stores, holding the values 1.5, -2,
// 0.25, 448 (i32: 1, -2, 0, 448), reads back bit for bit. With UNITSCALE_KEEP_CHECKPOINT=<path>
// the file is also kept there for other tools to open: benchmarks/compare/load_checkpoint_torch.py.
TEST(Checkpoint, EveryDTypeRoundTripsAndCanBeKeptForOtherTools) {
  TempDirectory dir;
  Graph graph;
  std::vector<Value> states;
  for (const DType dtype : all_dtypes()) {
    if (safetensors_dtype_name(dtype).empty()) continue;
    states.push_back(graph.state(std::string("state_") + std::string(dtype_name(dtype)), {2, 2},
                                 std::nullopt, dtype));
  }
  Executor executor(graph, states);
  const float values[] = {1.5f, -2.0f, 0.25f, 448.0f};
  for (const Value state : states) {
    Tensor t(Shape{2, 2}, state.dtype());
    for (int i = 0; i < 4; ++i) {
      switch (state.dtype()) {
        case DType::kF32: t.data()[i] = values[i]; break;
        case DType::kI32: t.data_as<std::int32_t>()[i] = i == 2 ? 0 : static_cast<int>(values[i]); break;
        case DType::kF16: t.data_as<float16>()[i] = float16(values[i]); break;
        case DType::kBF16: t.data_as<bfloat16>()[i] = bfloat16(values[i]); break;
        case DType::kE4M3FN: t.data_as<float8_e4m3fn>()[i] = convert<float8_e4m3fn>(values[i]); break;
        case DType::kE5M2: t.data_as<float8_e5m2>()[i] = convert<float8_e5m2>(values[i]); break;
        case DType::kE8M0FNU:  // powers of two only: 1, 2, 0.25, 256
          t.data_as<float8_e8m0fnu>()[i] = float8_e8m0fnu::from_bits(
              static_cast<std::uint8_t>(127 + std::array{0, 1, -2, 8}[static_cast<std::size_t>(i)]));
          break;
        default: FAIL() << dtype_name(state.dtype());
      }
    }
    executor.set_state(state, t);
  }
  const std::map<std::string, std::string> config = {{"seed", "7"}, {"config", R"({"width": 64})"}};
  const auto path = CheckpointDirectory(dir.path()).save(12, executor, checkpoint_values(states), config);

  Executor loaded(graph, states);
  EXPECT_EQ(load_checkpoint(path, loaded, checkpoint_values(states), config).step, 12);
  for (const Value state : states) {
    const ConstTensorView expected = executor.state(state);
    const ConstTensorView got = loaded.state(state);
    ASSERT_EQ(got.dtype(), state.dtype());
    EXPECT_EQ(std::memcmp(got.bytes(), expected.bytes(), expected.byte_size()), 0)
        << dtype_name(state.dtype());
  }
  if (const char* keep = std::getenv("UNITSCALE_KEEP_CHECKPOINT")) {
    std::filesystem::copy_file(path, keep, std::filesystem::copy_options::overwrite_existing);
  }
}

TEST(Checkpoint, SaveKeepsTheLastCheckpointsOnly) {
  TempDirectory dir;
  Model model;
  const CheckpointDirectory checkpoints(dir.path(), 3);
  // Files that only look like checkpoints are left alone.
  write_file(dir / "notes.txt", "n");
  write_file(dir / "step-1.safetensors", "short digits");
  write_file(dir / "step-00000001.safetensors.bak", "b");
  for (const std::int64_t step : {5, 1, 20, 3, 100000000}) {
    randomize(model, static_cast<std::uint32_t>(step));
    checkpoints.save(step, model.executor, model.values());
  }
  EXPECT_THAT(checkpoints.checkpoints(),
              ElementsAre(dir / "step-00000005.safetensors", dir / "step-00000020.safetensors",
                          dir / "step-100000000.safetensors"));
  EXPECT_EQ(checkpoints.latest(), dir / "step-100000000.safetensors");
  EXPECT_THAT(dir.entries(), Contains("notes.txt"));
  EXPECT_THAT(dir.entries(), Contains("step-1.safetensors"));
  EXPECT_THAT(dir.entries(), Contains("step-00000001.safetensors.bak"));
  EXPECT_EQ(dir.entries().size(), 6u);  // no temporary files either

  // A step below the existing ones (a run restarted from an earlier point) is kept all the same.
  checkpoints.save(2, model.executor, model.values());
  EXPECT_THAT(checkpoints.checkpoints(),
              ElementsAre(dir / "step-00000002.safetensors", dir / "step-00000020.safetensors",
                          dir / "step-100000000.safetensors"));
}

TEST(Checkpoint, SaveRefusesBadArguments) {
  TempDirectory dir;
  Model model;
  const CheckpointDirectory checkpoints(dir.path());
  EXPECT_THAT([&] { checkpoints.save(-1, model.executor, model.values()); },
              ThrowsMessage<Error>(HasSubstr("step must be >= 0")));
  EXPECT_THAT([&] { checkpoints.save(3, model.executor, model.values(), {{"step", "4"}}); },
              ThrowsMessage<Error>(HasSubstr("metadata has step=4, but the step is 3")));
  const std::vector<CheckpointValue> twice = {{"w", model.w}, {"w", model.m}};
  EXPECT_THAT([&] { checkpoints.save(3, model.executor, twice); },
              ThrowsMessage<Error>(HasSubstr("two values are named 'w'")));
  Model other;
  EXPECT_THAT([&] { checkpoints.save(3, model.executor, other.values()); },
              ThrowsMessage<Error>(HasSubstr("not a state value that this executor keeps")));
  EXPECT_TRUE(checkpoints.checkpoints().empty());
  EXPECT_THAT([&] { CheckpointDirectory(dir.path(), 0); },
              ThrowsMessage<Error>(HasSubstr("keep_last must be at least 1")));
}

// Every mismatch is found before anything is copied: the executor's states and the file stay as
// they were.
TEST(Checkpoint, AMismatchedCheckpointChangesNothing) {
  TempDirectory dir;
  Model source;
  randomize(source, 3);
  const CheckpointDirectory checkpoints(dir.path());
  const auto path = checkpoints.save(9, source.executor, source.values(), {{"width", "64"}});
  const std::string file_bytes = read_file(path);

  const auto refuses = [&](Model& target, std::vector<CheckpointValue> values,
                           const std::map<std::string, std::string>& expected,
                           std::vector<std::string> messages) {
    randomize(target, 11);
    const std::string before = target.state_bytes();
    std::vector<Matcher<std::string>> all = {HasSubstr(path.string())};
    for (const std::string& message : messages) all.push_back(HasSubstr(message));
    EXPECT_THAT([&] { load_checkpoint(path, target.executor, values, expected); },
                ThrowsMessage<Error>(AllOfArray(all)));
    EXPECT_EQ(target.state_bytes(), before);
    EXPECT_EQ(read_file(path), file_bytes);
  };

  Model same;
  refuses(same, {{"w", same.w}, {"m", same.m}}, {{"width", "128"}},
          {"was written with width=64, this run has 128"});
  refuses(same, same.values(), {{"depth", "4"}}, {"has no depth, this run has 4"});
  refuses(same, {{"w", same.w}, {"moment", same.m}}, {},
          {"missing tensors: moment", "tensors this run does not have: m"});
  refuses(same, {{"w", same.w}}, {}, {"tensors this run does not have: m"});
  Model transposed(Shape{3, 2});
  refuses(transposed, transposed.values(), {}, {"'w' is [2, 3] f32 in the file, [3, 2] f32"});
  Model fp16(Shape{2, 3}, DType::kF16);
  refuses(fp16, fp16.values(), {}, {"'m' is [4] bf16 in the file, [4] f16 in this run"});

  // And a matching load still works after all that.
  const LoadedCheckpoint loaded = load_checkpoint(path, same.executor, same.values(), {{"width", "64"}});
  EXPECT_EQ(loaded.step, 9);
  EXPECT_EQ(same.state_bytes(), source.state_bytes());
}

TEST(Checkpoint, AFileWithoutAStepIsRefused) {
  TempDirectory dir;
  Model model;
  const SafetensorsEntry entries[] = {{"w", model.executor.state(model.w)},
                                      {"m", model.executor.state(model.m)}};
  write_safetensors(dir / "foreign.safetensors", entries, {{"step", "x1"}});
  EXPECT_THAT([&] { load_checkpoint(dir / "foreign.safetensors", model.executor, model.values()); },
              ThrowsMessage<Error>(HasSubstr("metadata step='x1' is not a non-negative integer")));
  write_safetensors(dir / "foreign.safetensors", entries);
  EXPECT_THAT([&] { load_checkpoint(dir / "foreign.safetensors", model.executor, model.values()); },
              ThrowsMessage<Error>(HasSubstr("has no 'step' metadata")));
}

}  // namespace
}  // namespace unitscale

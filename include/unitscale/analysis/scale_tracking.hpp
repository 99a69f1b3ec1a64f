#pragma once
// Scale tracking: what a training step's tensors look like next to the number formats they would
// be stored in. Unit scaling (arXiv 2303.11257) and u-μP (arXiv 2407.17465) train in FP8 without
// loss scaling because activations, weights and gradients stay near scale 1, inside E4M3's and
// E5M2's ranges; the standard parametrization's gradients sit orders of magnitude lower, below
// E5M2's smallest subnormal. track_scales shows that, per tensor, from a real step:
//
//   ScaleTracker tracker = track_scales(executor, graph);      // an executor observer
//   executor.run();                                            // a training step
//   fmt::print("{}", tracker.table());                         // also csv(), json()
//   tracker.save_chart("scales.svg", "u-μP decoder, step 1");  // the reference library's chart
//
// Each run() replaces the record: the forward and backward node outputs in execution order (f32
// values; the low-precision outputs of casts are left out), then the parameters as the step found
// them (the state values with parameter metadata, read before the update changes them).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/tensor/dtype.hpp"

namespace unitscale {

// Where |x| falls against one format's range, as fractions of all numel elements (so zeros and
// values inside the range make up the rest). With round-to-nearest-even:
//   underflow  0 < |x| ≤ min_subnormal / 2: rounds to zero;
//   subnormal  min_subnormal / 2 < |x| < min_normal: lands among the subnormals (fewer bits);
//   saturate   |x| > max finite: clamps to ±max (or overflows, by the cast's policy).
struct FormatFractions {
  DType format = DType::kE4M3FN;
  double underflow = 0;
  double subnormal = 0;
  double saturate = 0;
};

enum class TensorRole { kActivation, kGradient, kWeight };
std::string_view tensor_role_name(TensorRole role);  // "activation", "gradient", "weight"

struct TensorScale {
  int value = -1;     // the value's id in the graph
  std::string label;  // its name, or "op %id"; gradients "∇ " + the forward value's label
  TensorRole role = TensorRole::kActivation;
  std::int64_t numel = 0;
  double mean_abs = 0;
  double rms = 0;
  double std = 0;   // about the mean
  double amax = 0;  // largest |x|
  double amin = 0;  // smallest non-zero |x| (0 if every element is zero)
  double non_finite = 0;  // fraction of NaN and ±Inf elements, left out of the statistics above
  std::vector<FormatFractions> formats;
};

struct ScaleTrackingOptions {
  std::vector<DType> formats = {DType::kE4M3FN, DType::kE5M2, DType::kF16};
  bool activations = true;  // forward node outputs
  bool gradients = true;    // backward node outputs
  bool weights = true;      // parameters as the step found them
};

// The statistics of `x` (f32), against each of `formats` (floating dtypes other than f32).
TensorScale measure_scale(ConstTensorView x, const std::vector<DType>& formats);

// The range of a format: smallest subnormal (= min_normal without subnormals), smallest normal,
// largest finite value.
struct FormatRange {
  double min_subnormal = 0;
  double min_normal = 0;
  double max = 0;
};
FormatRange format_range(DType format);  // throws unitscale::Error for f32 and i32

class ScaleTracker {
 public:
  // The latest run's tensors: activations and gradients in execution order, then weights.
  const std::vector<TensorScale>& scales() const;
  // How many runs have been recorded.
  std::uint64_t runs() const;
  // While off, runs are not recorded (the observer returns at once: a training loop tracks every
  // Nth step at almost no cost in between). On at first.
  void set_recording(bool on);
  bool recording() const;
  // The formats each tensor is measured against (ScaleTrackingOptions::formats).
  const std::vector<DType>& formats() const;

  // A fixed-width text table: label, role, numel, RMS, amax, amin, and per format the underflow,
  // subnormal and saturate percentages.
  std::string table() const;
  // One row per tensor; the columns of TensorScale, the fractions as <format>_underflow etc.
  std::string csv() const;
  // {"runs": N, "tensors": [{...}, ...]}.
  std::string json() const;
  // One row per tensor in order, x = log2 of its RMS (marker) with a bar from amin to amax;
  // forward, backward and weight markers differ; vertical lines at each format's smallest
  // subnormal, smallest normal and largest value.
  std::string chart_svg(const std::string& title) const;
  void save_chart(const std::filesystem::path& path, const std::string& title) const;  // atomic

 private:
  friend ScaleTracker track_scales(Executor&, const Graph&, ScaleTrackingOptions);
  struct State;
  explicit ScaleTracker(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;  // shared with the executor's observer
};

// Several SVG charts (e.g. chart_svg()'s, of SP and u-μP side by side) in one SVG document,
// `columns` per row (0: all in one row); each keeps its own size, placed in a grid whose columns
// and rows are as wide and tall as their largest chart. Throws unitscale::Error for a chart that
// is not an <svg> element with width and height.
std::string charts_side_by_side(const std::vector<std::string>& charts, int columns = 0);

// What an FP8 step does to its matmuls' operands, per class: the share of all elements of every
// recorded linear's input x and weight W (against `inputs`, E4M3 by default) and of its output's
// gradient (against `gradients`, E5M2) that underflow, land among the subnormals or saturate,
// weighted by numel over the matmuls. These are the operands simulate_format rounds, and the
// classes the FP8 experiments report (docs/results.md, E5). Both formats must be among the
// tracker's; throws unitscale::Error otherwise, or if the latest run recorded no linear.
struct MatmulOperandShares {
  FormatFractions inputs, weights, gradients;
};
MatmulOperandShares matmul_operand_shares(const ScaleTracker& tracker, Graph& graph,
                                          DType inputs = DType::kE4M3FN,
                                          DType gradients = DType::kE5M2);

// Adds an observer to `executor` (which must run `graph`) that records every following run.
// The tracker may be moved and may outlive the executor; the executor's observer keeps its state.
// Throws unitscale::Error if a format is f32 or i32.
ScaleTracker track_scales(Executor& executor, const Graph& graph,
                          ScaleTrackingOptions options = {});

}  // namespace unitscale

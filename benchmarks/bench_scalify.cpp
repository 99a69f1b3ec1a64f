// Scale propagation (graph/propagate_scales.hpp): the cost of a scaled training step against the
// fp32 step, the memory it takes, and the time of the pass itself.
//
// The model is bench_train's: the u-μP byte-level decoder (vocab 256, depth 4, heads of 32, SwiGLU
// ×2, RMSNorm, NoPE causal attention), batch 16 × 128 tokens, one full AdamW step (forward,
// backward, clipping-free update) per Executor::run, at widths 256 and 1024.
//
// Rows:
//   step/fp32/width:d          the fp32 step: the baseline every ratio divides by
//   step/scalify_fp16/width:d  the step after propagate_scales(ScalePolicy::fp16()): every value
//                              the step computes stored as FP16 data with a propagated scale
//   step/scalify_fp8/width:d   ScalePolicy::fp8(): E4M3 matmul operands, E5M2 matmul gradients,
//                              FP16 elsewhere; the GEMMs take the stored codes
//   step/scalify_fp8_f16_weights/width:d   fp8 with FP16 master weights (ScalePolicy::parameters)
//   step/scalify_fp8_compact/width:d   fp8 with FP16 master weights, the weights cast again for
//                              the backward (ScalePolicy::recast_weights_for_backward), Adam's m
//                              in E4M3 (first_moment, as FP8-LM) and E4M3 copies of what the
//                              norms and activations save for the backward (saved_activations):
//                              the smallest footprint
//   propagate_scales/nodes:n   the pass alone on a decoder training graph of n nodes (forward,
//                              backward, update): the graph is rebuilt untimed before each pass
//
// Counters:
//   tokens/s, step_ms       throughput and time of one step
//   vs_fp32                 this row's step time ÷ the fp32 row's of the same width (run the fp32
//                           row first; below 1 is faster)
//   arena_MiB               Executor::peak_bytes(): the planned arena of activations, gradients
//                           and temporaries (parameters and Adam's moments are states outside it)
//   peak_rss_MiB, rss_growth_MiB   measured: the process's peak resident set during the row, and
//                           that peak minus the resident set before the row was built
//                           (support/memory_probe.hpp); one row per process gives the cleanest
//                           figure: --benchmark_filter='step/fp32/width:1024/'
//   nodes, pass_ms          (pass rows) the graph's node count and the pass's time

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "support/bench_context.hpp"
#include "support/memory_probe.hpp"
#include "support/random_tokens.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/propagate_scales.hpp"
#include "unitscale/nn/init.hpp"
#include "unitscale/nn/model.hpp"
#include "unitscale/nn/parametrization.hpp"
#include "unitscale/nn/transformer.hpp"
#include "unitscale/optim/optimizer.hpp"
#include "unitscale/train/language_model.hpp"

namespace unitscale {
namespace {

constexpr std::int64_t kBatch = 16, kSeq = 128, kVocab = 256, kHeadDim = 32;
constexpr std::int64_t kTokens = kBatch * kSeq;
constexpr std::int64_t kWidths[] = {256, 1024};

enum class Variant { kFp32, kScalifyFp16, kScalifyFp8, kScalifyFp8F16Weights, kScalifyFp8Compact };

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kFp32:
      return "step/fp32";
    case Variant::kScalifyFp16:
      return "step/scalify_fp16";
    case Variant::kScalifyFp8:
      return "step/scalify_fp8";
    case Variant::kScalifyFp8F16Weights:
      return "step/scalify_fp8_f16_weights";
    case Variant::kScalifyFp8Compact:
      return "step/scalify_fp8_compact";
  }
  return "?";
}

// A u-μP decoder's AdamW training step, optionally scaled, with an executor ready to run.
struct StepRun {
  Parametrization parametrization;
  Graph graph;
  Model model;
  TransformerDecoder decoder;
  Value ids, targets, loss, loss_out;
  Tensor id_data = bench::random_tokens({kBatch, kSeq}, kVocab, 1);
  Tensor target_data = bench::random_tokens({kBatch, kSeq}, kVocab, 2);
  std::unique_ptr<Executor> exec;

  StepRun(std::int64_t width, int depth, const std::optional<ScalePolicy>& policy,
          bool make_executor = true)
      : parametrization(Scheme::kUMuP, {.residual_blocks = depth}),
        graph(parametrization.op_scaling()),
        model(graph, parametrization, {.seed = 1}),
        decoder(model, "", byte_decoder_config(Scheme::kUMuP, width, depth, kHeadDim)),
        ids(graph.input("ids", Shape{kBatch, kSeq}, DType::kI32)),
        targets(graph.input("targets", Shape{kBatch, kSeq}, DType::kI32)),
        loss(decoder.loss(ids, targets)),
        loss_out(loss) {
    const OptimizerStep step = record_training_step(
        model, loss, {.kind = OptimizerKind::kAdamW, .lr = 0.1, .log = [](std::string_view) {}});
    std::vector<Value> outputs = step.outputs({loss});
    std::optional<ScaledGraph> scaled;
    if (policy) {
      scaled = propagate_scales(graph, outputs, *policy);
      outputs = scaled->outputs();
      loss_out = scaled->output(loss);
    }
    if (!make_executor) return;
    exec = std::make_unique<Executor>(graph, outputs);
    model.initialize(*exec, scaled ? &*scaled : nullptr);
    exec->bind(ids, id_data);
    exec->bind(targets, target_data);
  }
};

std::map<std::int64_t, double>& fp32_step_seconds() {
  static std::map<std::int64_t, double> s;
  return s;
}

void bm_step(benchmark::State& state, Variant variant, std::int64_t width) {
  const bench::MemoryProbe memory;
  std::optional<ScalePolicy> policy;
  if (variant == Variant::kScalifyFp16) policy = ScalePolicy::fp16();
  if (variant == Variant::kScalifyFp8) policy = ScalePolicy::fp8();
  if (variant == Variant::kScalifyFp8F16Weights || variant == Variant::kScalifyFp8Compact) {
    policy = ScalePolicy::fp8();
    policy->parameters = DType::kF16;
  }
  if (variant == Variant::kScalifyFp8Compact) {
    policy->recast_weights_for_backward = true;
    policy->first_moment = DType::kE4M3FN;
    policy->saved_activations = DType::kE4M3FN;
  }
  StepRun run(width, 4, policy);
  run.exec->run();  // untimed: first touch, GEMM plans
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    run.exec->run();
    benchmark::ClobberMemory();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double per_step =
      seconds / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  if (!std::isfinite(run.exec->get(run.loss_out).data()[0])) {
    state.SkipWithError("the loss is not finite");
  }
  state.SetItemsProcessed(state.iterations() * kTokens);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kTokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["step_ms"] = per_step * 1e3;
  if (variant == Variant::kFp32) {
    fp32_step_seconds()[width] = per_step;
  } else if (const auto it = fp32_step_seconds().find(width); it != fp32_step_seconds().end()) {
    state.counters["vs_fp32"] = per_step / it->second;
  }
  state.counters["arena_MiB"] = static_cast<double>(run.exec->peak_bytes()) / (1024.0 * 1024.0);
  memory.report(state);
}

// The pass on a decoder graph of `depth` blocks at width 64 (its node count does not depend on
// the width).
void bm_pass(benchmark::State& state, int depth) {
  double nodes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto run = std::make_unique<StepRun>(64, depth, std::nullopt, /*make_executor=*/false);
    const std::vector<Value> outputs = {run->loss};
    nodes = static_cast<double>(run->graph.nodes().size());
    state.ResumeTiming();
    const ScaledGraph scaled = propagate_scales(run->graph, outputs, ScalePolicy::fp8());
    benchmark::DoNotOptimize(scaled.scaled_nodes());
    state.PauseTiming();
    run.reset();
    state.ResumeTiming();
  }
  state.counters["nodes"] = nodes;
}

void add_rows() {
  benchmark::AddCustomContext(
      "model",
      "u-muP byte-level decoder: vocab 256, depth 4, heads width/32, SwiGLU x2, RMSNorm, "
      "NoPE causal attention; batch 16 x 128 tokens; AdamW");
  benchmark::AddCustomContext("peak_rss", bench::peak_rss_resettable()
                                              ? "per row (VmHWM reset before each row)"
                                              : "process lifetime: run rows one per process");
  for (const std::int64_t w : kWidths) {
    for (const Variant v : {Variant::kFp32, Variant::kScalifyFp16, Variant::kScalifyFp8,
                            Variant::kScalifyFp8F16Weights, Variant::kScalifyFp8Compact}) {
      const std::string name = std::string(variant_name(v)) + "/width:" + std::to_string(w);
      benchmark::RegisterBenchmark(name.c_str(), [v, w](benchmark::State& s) { bm_step(s, v, w); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  // Depth 4 (the benchmarked model) and a depth giving about 10,000 nodes.
  for (const int depth : {4, 180}) {
    benchmark::RegisterBenchmark(("propagate_scales/depth:" + std::to_string(depth)).c_str(),
                                 [depth](benchmark::State& s) { bm_pass(s, depth); })
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace unitscale

int main(int argc, char** argv) {
  return unitscale::bench::run_benchmark_program(
      argc, argv, {.default_min_time = 1.0, .add_rows = unitscale::add_rows});
}

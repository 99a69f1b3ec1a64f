#pragma once
// Gradient exchange for data-parallel training: every rank computes the gradients of its shard of
// the batch, and the optimizer update reads their mean over the ranks.
//
//   grads = record_gradient_exchange(graph, grads, {.format = DType::kE5M2});   // graph time
//   GradientExchange exchange(comm);                                            // run time
//   executor.set_gradient_exchange(&exchange);
//
// Each gradient g gets two nodes: gradient_exchange_start(g), which the executor runs as soon as g
// is computed (OpDef::runs_early), hands g to the exchange; gradient_exchange_finish(g, ticket)
// waits for the mean and is what the update reads. With overlap on, a communication thread does the
// exchange while backward goes on with earlier layers' gradients.
//
// What the update reads is the gradient one process would compute on the whole batch. With N
// ranks each computing the gradient of its 1/N of the batch, that is their mean Σ/N for a graph
// whose loss is a mean (SP, μP: Scaling::kUnscaled), and Σ/√N for a unit-scaled graph (u-μP):
// its backward pass scales every sum over the batch by 1/√(tokens), so each rank's gradient is
// √N times its share (ExchangeCombine).
//
// The exchange is a reduce-scatter then an all-gather, so that no rank ever sums in low precision:
//   1. each rank quantises its gradient to `format` (times a dequantisation scale, see
//      ExchangeScaling) and sends chunk j (of size() near-equal chunks) to rank j (all-to-all);
//   2. rank j decodes the size() copies of its chunk, sums them in fp32 in rank order and
//      combines them (Σ/N or Σ/√N): the same bits whatever the transport's reduction order;
//   3. rank j quantises its mean chunk again and every rank gathers all chunks (all-gather) and
//      decodes them.
// Bytes sent per rank and tensor: 2 (size() − 1) chunks, each of n / size() elements of the
// format's width plus a 4-byte scale; fp32 sends 4 bytes per element, BF16 and FP16 2, FP8 1.
//
// Unit-scaled models (u-μP) have gradients near unit scale, so ExchangeScaling::kUnit quantises
// them as they are, with no amax to compute or agree on. Models that are not unit-scaled (SP) need
// kPerTensor: a power-of-two scale per tensor (step 1) and per chunk (step 3) that puts the largest
// |value| just under the format's largest finite value, as other libraries' FP8 all-reduces do.
// Quantisation rounds to nearest even and saturates; the exchange counts the nonzero values that
// became zero (underflow) and those clamped to the largest finite value (saturation).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "unitscale/distributed/communicator.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/attributes.hpp"
#include "unitscale/ops/op_def.hpp"
#include "unitscale/tensor/tensor.hpp"

namespace unitscale {

enum class ExchangeScaling { kUnit, kPerTensor };
std::string_view exchange_scaling_name(ExchangeScaling scaling);  // "unit", "per-tensor"
ExchangeScaling exchange_scaling_from_name(std::string_view name);
template <>
struct EnumAttribute<ExchangeScaling> {
  static const EnumType& type();
};

// How the ranks' gradients make the batch's (see above); record_gradient_exchange takes it from
// the graph's scaling.
enum class ExchangeCombine { kMean, kUnitScaledSum };
std::string_view exchange_combine_name(ExchangeCombine combine);  // "mean", "unit_scaled_sum"
ExchangeCombine exchange_combine_from_name(std::string_view name);
template <>
struct EnumAttribute<ExchangeCombine> {
  static const EnumType& type();
};

struct GradientExchangeOptions {
  // f32, bf16, f16, e5m2 or e4m3fn.
  DType format = DType::kF32;
  ExchangeScaling scaling = ExchangeScaling::kUnit;

  // Throws unitscale::Error naming `owner` and the bad setting (a format the exchange does not
  // use).
  void check(std::string_view owner) const;
  // "e5m2" or "e4m3fn/per-tensor" (the scaling only when it is not unit).
  std::string name() const;
};

// The formats an exchange can use, and parsing of their names ("f32", "bf16", "f16", "e5m2",
// "e4m3"; the dtypes' full names too).
std::span<const DType> exchange_formats();
DType exchange_format_from_name(std::string_view name);

// Inputs (g): f32; output the ticket [1] that finish reads (its value means nothing).
extern const OpDef kGradientExchangeStartOp;
// Inputs (g, ticket): output the ranks' combined g, f32, g's shape.
extern const OpDef kGradientExchangeFinishOp;

// Records the exchange of each gradient (absent ones stay absent) and returns the exchanged
// gradients, in order: the values an optimizer update should read. They combine as the graph's
// scaling says (ExchangeCombine). Throws unitscale::Error if a
// gradient is not f32 or the options are bad.
std::vector<Value> record_gradient_exchange(Graph& graph, std::span<const Value> gradients,
                                            const GradientExchangeOptions& options);

// What the exchange did on this rank since the last take_statistics().
struct ExchangeStatistics {
  std::int64_t tensors = 0;      // exchanges finished
  std::int64_t quantized = 0;    // values quantised (steps 1 and 3; none for fp32)
  std::int64_t underflowed = 0;  // of those, nonzero values that became zero
  std::int64_t saturated = 0;    // of those, values beyond the format's range, clamped
  std::int64_t bytes_sent = 0;   // what this rank sent (headers included)
  double exposed_seconds = 0;    // time the executor waited in finish for an exchange
};

// Runs the exchanges a graph's exchange nodes ask for, over `comm` (which must outlive it). Every
// rank must run the same graph: the exchanges happen in the order the ranks start them, which the
// executor makes the same on every rank.
class GradientExchange {
 public:
  // overlap: exchange on a communication thread while the executor goes on (the default), or in
  // the finish node, on the executor's thread.
  explicit GradientExchange(Communicator& comm, bool overlap = true);
  ~GradientExchange();
  GradientExchange(const GradientExchange&) = delete;
  GradientExchange& operator=(const GradientExchange&) = delete;

  Communicator& communicator() const { return comm_; }
  bool overlap() const { return overlap_; }

  // Called by the exchange nodes' kernels. `gradient` must stay valid until finish(slot) returns
  // (the finish node reads it, so the executor keeps it). A slot is one gradient of the graph.
  void start(int slot, ConstTensorView gradient, const GradientExchangeOptions& options,
             ExchangeCombine combine);
  void finish(int slot, TensorView combined);

  ExchangeStatistics take_statistics();

 private:
  struct Job;
  void run(Job& job);
  void communication_loop();
  Job& job(int slot);

  Communicator& comm_;
  bool overlap_;
  std::vector<std::unique_ptr<Job>> jobs_;  // by slot
  std::mutex mutex_;
  std::condition_variable wake_;  // the thread: a job was queued, or stop
  std::condition_variable done_;  // finish(): a job is done
  std::deque<Job*> queue_;
  bool stopping_ = false;
  ExchangeStatistics statistics_;
  std::thread thread_;
};

}  // namespace unitscale

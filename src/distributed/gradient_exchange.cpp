#include "unitscale/distributed/gradient_exchange.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "unitscale/error.hpp"
#include "unitscale/format/bulk.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {

namespace {

constexpr std::array kExchangeFormats = {DType::kF32, DType::kBF16, DType::kF16, DType::kE5M2,
                                         DType::kE4M3FN};

// A segment: the dequantisation scale (a float), then `chunk` codes, padded to 4 bytes so that the
// next segment's scale stays aligned.
std::size_t segment_bytes(std::size_t chunk, std::size_t code_bytes) {
  return sizeof(float) + (chunk * code_bytes + 3) / 4 * 4;
}

// The dequantisation scale of `values` in `format`: 1 with unit scaling, else per-tensor
// scaling's power of two that puts max |x| just under the format's largest finite value (1 for
// an all-zero or non-finite tensor, whose Inf and NaN pass through for dynamic loss scaling).
float scale_for(std::span<const float> values, DType format, ExchangeScaling scaling) {
  if (scaling == ExchangeScaling::kUnit || format == DType::kF32) return 1.0f;
  return static_cast<float>(amax_scale(amax(values), *dtype_format(format)).scale.value());
}

struct Counts {
  std::int64_t quantized = 0, underflowed = 0, saturated = 0;
};

// Counts what quantising `values` into `codes` lost: a nonzero value whose code is a zero
// underflowed, a finite one beyond `largest` (the format's largest value times the scale)
// saturated.
template <class Code>
void count_losses(std::span<const float> values, const Code* codes, std::uint32_t magnitude_mask,
                  float largest, Counts& counts) {
  std::int64_t underflowed = 0, saturated = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float magnitude = std::fabs(values[i]);
    underflowed += (magnitude > 0.0f && (codes[i] & magnitude_mask) == 0) ? 1 : 0;
    saturated += (magnitude > largest && magnitude <= std::numeric_limits<float>::max()) ? 1 : 0;
  }
  counts.underflowed += underflowed;
  counts.saturated += saturated;
}

// Quantises `values` (at most `chunk` of them; the rest of the segment is zeros) into `segment`
// with dequantisation scale `scale`, counting what it lost.
void encode_segment(std::span<const float> values, std::size_t chunk, DType format, float scale,
                    std::byte* segment, Counts& counts) {
  std::memcpy(segment, &scale, sizeof(float));
  std::byte* codes = segment + sizeof(float);
  const std::size_t code_bytes = dtype_size(format);
  std::memset(codes, 0, segment_bytes(chunk, code_bytes) - sizeof(float));
  if (values.empty()) return;
  if (format == DType::kF32) {
    std::memcpy(codes, values.data(), values.size_bytes());
    return;
  }
  const FormatSpec spec = *dtype_format(format);
  detail::encode_codes(values, codes, values.size(), static_cast<int>(code_bytes), spec,
                       {.scale = scale});
  counts.quantized += static_cast<std::int64_t>(values.size());
  const auto largest = static_cast<float>(format_max(spec)) * scale;
  if (code_bytes == 1) {
    count_losses(values, reinterpret_cast<const std::uint8_t*>(codes), spec.magnitude_mask(),
                 largest, counts);
  } else {
    count_losses(values, reinterpret_cast<const std::uint16_t*>(codes), spec.magnitude_mask(),
                 largest, counts);
  }
}

// out[i] = decode(segment)[i] (accumulate: out[i] += ...), for out.size() ≤ the segment's chunk.
void decode_segment(const std::byte* segment, DType format, std::span<float> out,
                    std::vector<float>& scratch, bool accumulate) {
  if (out.empty()) return;
  float scale = 1;
  std::memcpy(&scale, segment, sizeof(float));
  const std::byte* codes = segment + sizeof(float);
  std::span<float> target = out;
  if (accumulate) {
    scratch.resize(out.size());
    target = scratch;
  }
  if (format == DType::kF32) {
    std::memcpy(target.data(), codes, target.size_bytes());
  } else {
    detail::decode_codes(codes, target.size(), static_cast<int>(dtype_size(format)), target,
                         *dtype_format(format), scale);
  }
  if (accumulate) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] += scratch[i];
  }
}

}  // namespace

std::string_view exchange_scaling_name(ExchangeScaling scaling) {
  return scaling == ExchangeScaling::kUnit ? "unit" : "per-tensor";
}

ExchangeScaling exchange_scaling_from_name(std::string_view name) {
  if (name == "unit") return ExchangeScaling::kUnit;
  if (name == "per-tensor" || name == "per_tensor") return ExchangeScaling::kPerTensor;
  throw Error(fmt::format("unknown exchange scaling '{}' (expected unit or per-tensor)", name));
}

const EnumType& EnumAttribute<ExchangeScaling>::type() {
  return enum_type<ExchangeScaling, exchange_scaling_name, exchange_scaling_from_name>(
      "exchange scaling");
}

std::string_view exchange_combine_name(ExchangeCombine combine) {
  return combine == ExchangeCombine::kMean ? "mean" : "unit_scaled_sum";
}

ExchangeCombine exchange_combine_from_name(std::string_view name) {
  if (name == "mean") return ExchangeCombine::kMean;
  if (name == "unit_scaled_sum") return ExchangeCombine::kUnitScaledSum;
  throw Error(
      fmt::format("unknown exchange combine '{}' (expected mean or unit_scaled_sum)", name));
}

const EnumType& EnumAttribute<ExchangeCombine>::type() {
  return enum_type<ExchangeCombine, exchange_combine_name, exchange_combine_from_name>(
      "exchange combine");
}

std::span<const DType> exchange_formats() { return kExchangeFormats; }

DType exchange_format_from_name(std::string_view name) {
  const DType dtype = name == "e4m3" ? DType::kE4M3FN : dtype_from_name(name);
  GradientExchangeOptions{.format = dtype}.check("gradient exchange");
  return dtype;
}

void GradientExchangeOptions::check(std::string_view owner) const {
  if (std::find(kExchangeFormats.begin(), kExchangeFormats.end(), format) ==
      kExchangeFormats.end()) {
    throw Error(fmt::format("{}: gradients are exchanged in f32, bf16, f16, e5m2 or e4m3fn, not {}",
                            owner, dtype_name(format)));
  }
}

std::string GradientExchangeOptions::name() const {
  if (scaling == ExchangeScaling::kUnit) return std::string(dtype_name(format));
  return fmt::format("{}/{}", dtype_name(format), exchange_scaling_name(scaling));
}

// One gradient's exchange: where its values are while it runs, and its result.
struct GradientExchange::Job {
  enum class State { kIdle, kStarted, kQueued, kDone };
  State state = State::kIdle;
  const float* gradient = nullptr;
  std::size_t size = 0;
  GradientExchangeOptions options;
  ExchangeCombine combine = ExchangeCombine::kMean;
  std::vector<float> combined;
  std::exception_ptr error;
};

GradientExchange::GradientExchange(Communicator& comm, bool overlap)
    : comm_(comm), overlap_(overlap) {}

GradientExchange::~GradientExchange() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

GradientExchange::Job& GradientExchange::job(int slot) {
  if (slot < 0) throw Error(fmt::format("gradient exchange: slot {} is negative", slot));
  const auto index = static_cast<std::size_t>(slot);
  if (index >= jobs_.size()) jobs_.resize(index + 1);
  if (!jobs_[index]) jobs_[index] = std::make_unique<Job>();
  return *jobs_[index];
}

void GradientExchange::start(int slot, ConstTensorView gradient,
                             const GradientExchangeOptions& options, ExchangeCombine combine) {
  options.check("gradient_exchange_start");
  if (gradient.dtype() != DType::kF32) {
    throw Error(fmt::format("gradient_exchange_start: gradients are exchanged from f32, got {}",
                            dtype_name(gradient.dtype())));
  }
  std::unique_lock lock(mutex_);
  Job& j = job(slot);
  if (j.state != Job::State::kIdle) {
    throw Error(fmt::format("gradient exchange: slot {} started again before it finished", slot));
  }
  j.gradient = gradient.data();
  j.size = static_cast<std::size_t>(gradient.numel());
  j.options = options;
  j.combine = combine;
  j.error = nullptr;
  if (!overlap_) {
    j.state = Job::State::kStarted;
    return;
  }
  j.state = Job::State::kQueued;
  queue_.push_back(&j);
  if (!thread_.joinable()) thread_ = std::thread([this] { communication_loop(); });
  lock.unlock();
  wake_.notify_one();
}

void GradientExchange::finish(int slot, TensorView combined) {
  const auto began = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex_);
  Job& j = job(slot);
  if (j.state == Job::State::kIdle) {
    throw Error(fmt::format("gradient exchange: slot {} finished without being started", slot));
  }
  if (j.state == Job::State::kStarted) {
    lock.unlock();
    run(j);
    lock.lock();
  }
  done_.wait(lock, [&] { return j.state == Job::State::kDone; });
  statistics_.exposed_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  j.state = Job::State::kIdle;
  if (j.error) std::rethrow_exception(j.error);
  if (static_cast<std::size_t>(combined.numel()) != j.size || combined.dtype() != DType::kF32) {
    throw Error(
        fmt::format("gradient_exchange_finish: the output must be f32 with {} elements, got "
                    "{} {}",
                    j.size, combined.numel(), dtype_name(combined.dtype())));
  }
  ++statistics_.tensors;
  std::memcpy(combined.data(), j.combined.data(), j.size * sizeof(float));
}

ExchangeStatistics GradientExchange::take_statistics() {
  std::lock_guard lock(mutex_);
  return std::exchange(statistics_, ExchangeStatistics{});
}

void GradientExchange::communication_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, with nothing left to do
    Job* next = queue_.front();
    queue_.pop_front();
    lock.unlock();
    run(*next);
    lock.lock();
  }
}

// The three steps of the file comment, on the calling thread. Marks the job done (with its error,
// if one was thrown) and wakes finish().
void GradientExchange::run(Job& job) {
  Counts counts;
  std::int64_t bytes_sent = 0;
  try {
    const auto ranks = static_cast<std::size_t>(comm_.size());
    const auto rank = static_cast<std::size_t>(comm_.rank());
    const DType format = job.options.format;
    const std::size_t n = job.size;
    const std::size_t chunk = std::max<std::size_t>((n + ranks - 1) / ranks, 1);
    const std::size_t segment = segment_bytes(chunk, dtype_size(format));
    const std::span<const float> gradient(job.gradient, n);
    auto chunk_of = [&](auto values, std::size_t c) {
      const std::size_t first = std::min(c * chunk, n);
      return values.subspan(first, std::min(n, first + chunk) - first);
    };
    std::vector<float> scratch;

    // 1. Quantise, one chunk per rank, and swap chunks.
    const float scale = scale_for(gradient, format, job.options.scaling);
    std::vector<std::byte> send(ranks * segment), receive(ranks * segment);
    for (std::size_t r = 0; r < ranks; ++r) {
      encode_segment(chunk_of(gradient, r), chunk, format, scale, send.data() + r * segment,
                     counts);
    }
    comm_.all_to_all(send, receive);

    // 2. My chunk of the result: the ranks' copies decoded and summed in fp32, in rank order,
    //    then combined.
    std::vector<float> my_chunk(chunk_of(gradient, rank).size(), 0.0f);
    for (std::size_t r = 0; r < ranks; ++r) {
      decode_segment(receive.data() + r * segment, format, my_chunk, scratch, r > 0);
    }
    const double count = static_cast<double>(ranks);
    const auto factor = static_cast<float>(
        1.0 / (job.combine == ExchangeCombine::kMean ? count : std::sqrt(count)));
    for (float& x : my_chunk) x *= factor;

    // 3. Quantise my chunk again and gather every rank's.
    std::vector<std::byte> mine(segment);
    encode_segment(my_chunk, chunk, format, scale_for(my_chunk, format, job.options.scaling),
                   mine.data(), counts);
    comm_.all_gather(mine, std::span(receive));
    job.combined.resize(n);
    const std::span<float> combined(job.combined);
    for (std::size_t r = 0; r < ranks; ++r) {
      decode_segment(receive.data() + r * segment, format, chunk_of(combined, r), scratch, false);
    }
    bytes_sent = static_cast<std::int64_t>(2 * (ranks - 1) * segment);
  } catch (...) {
    job.error = std::current_exception();
  }
  {
    std::lock_guard lock(mutex_);
    statistics_.quantized += counts.quantized;
    statistics_.underflowed += counts.underflowed;
    statistics_.saturated += counts.saturated;
    statistics_.bytes_sent += bytes_sent;
    job.state = Job::State::kDone;
  }
  done_.notify_all();
}

}  // namespace unitscale

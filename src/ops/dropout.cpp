#include "unitscale/ops/dropout.hpp"

#include <fmt/format.h>

#include <cmath>

#include "ops/pointwise_common.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

// splitmix64's output function: a bijection on 64-bit words with good avalanche.
inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// 64 random bits for element `index`: hashing the index before mixing in the key means two seeds
// give unrelated masks (with key ^ index alone, one seed's mask would permute another's).
inline std::uint64_t random_bits(std::uint64_t key, std::uint64_t index) {
  return splitmix64(key ^ splitmix64(index));
}

inline std::uint64_t key_of(std::uint64_t seed) { return splitmix64(seed ^ 0x5DEECE66Dull); }

// An element is dropped iff its bits fall below p·2^64.
inline std::uint64_t drop_threshold(double p) {
  return p <= 0 ? 0 : static_cast<std::uint64_t>(std::ldexp(p, 64));
}

// out_i = keep_i ? factor·in_i : 0.
void apply_mask(const float* in, float* out, std::int64_t n, double p, std::uint64_t seed,
                float factor) {
  const std::uint64_t key = key_of(seed);
  const std::uint64_t threshold = drop_threshold(p);
#pragma omp parallel for schedule(static) if (n > detail::kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) {
    const bool keep = random_bits(key, static_cast<std::uint64_t>(i)) >= threshold;
    out[i] = keep ? factor * in[i] : 0.0f;
  }
}

void scale_copy(const float* in, float* out, std::int64_t n, float factor) {
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelThreshold)
  for (std::int64_t i = 0; i < n; ++i) out[i] = factor * in[i];
}

}  // namespace

std::string_view dropout_mode_name(DropoutMode mode) {
  return mode == DropoutMode::kEval ? "eval" : "training";
}

DropoutMode dropout_mode_from_name(std::string_view name) {
  if (name == "training") return DropoutMode::kTraining;
  if (name == "eval") return DropoutMode::kEval;
  throw Error(fmt::format("dropout: unknown mode '{}' (expected training or eval)", name));
}

std::uint64_t dropout_seed_at_step(std::uint64_t seed, std::uint64_t step) {
  return step == 0 ? seed : splitmix64(seed ^ splitmix64(step ^ 0xD1B54A32D192ED03ull));
}

bool dropout_keeps(std::uint64_t seed, std::int64_t index, double p) {
  return random_bits(key_of(seed), static_cast<std::uint64_t>(index)) >= drop_threshold(p);
}

void dropout_forward(ConstTensorView x, TensorView y, double p, std::uint64_t seed,
                     DropoutMode mode, float alpha) {
  if (mode == DropoutMode::kEval) {
    scale_copy(x.data(), y.data(), y.numel(), alpha);
  } else {
    apply_mask(x.data(), y.data(), y.numel(), p, seed, static_cast<float>(alpha / (1.0 - p)));
  }
}

void dropout_backward(ConstTensorView grad_y, TensorView grad_x, double p, std::uint64_t seed,
                      DropoutMode mode, float beta) {
  if (!present(grad_x)) return;
  if (mode == DropoutMode::kEval) {
    scale_copy(grad_y.data(), grad_x.data(), grad_x.numel(), beta);
  } else {
    apply_mask(grad_y.data(), grad_x.data(), grad_x.numel(), p, seed,
               static_cast<float>(beta / (1.0 - p)));
  }
}

namespace {

double p_of(const Attributes& attrs) {
  const double p = attrs.get_double("dropout", "p");
  if (!(p >= 0.0 && p < 1.0)) {
    throw Error(fmt::format("dropout: p must be in [0, 1), got {}", p));
  }
  return p;
}

DropoutMode mode_of(const Attributes& attrs) {
  return attrs.has("mode") ? dropout_mode_from_name(attrs.get_string("dropout", "mode"))
                           : DropoutMode::kTraining;
}

std::uint64_t seed_of(const Attributes& attrs) {
  return static_cast<std::uint64_t>(attrs.get_int("dropout", "seed", 0));
}

std::uint64_t seed_of(const Attributes& attrs, const KernelContext& context) {
  return dropout_seed_at_step(seed_of(attrs), context.step);
}

std::vector<Shape> infer_dropout(std::span<const Shape* const> in, const Attributes& attrs) {
  p_of(attrs);
  mode_of(attrs);
  seed_of(attrs);
  return {*in[0]};
}

void unit_scale_dropout(std::span<const Shape* const>, Attributes& attrs) {
  const double scale = std::sqrt(1.0 - p_of(attrs));
  attrs.set("alpha", scale).set("beta_x", scale);
}

void dropout_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                    const Attributes& attrs, const KernelContext& context) {
  dropout_forward(in[0], out[0], p_of(attrs), seed_of(attrs, context), mode_of(attrs),
                  scale_of(attrs, "alpha"));
}

// Backward inputs: x (absent), y (absent), grad_y; the mask is recomputed from the seed.
void dropout_backward_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs, const KernelContext& context) {
  dropout_backward(in[2], out[0], p_of(attrs), seed_of(attrs, context), mode_of(attrs),
                   scale_of(attrs, "beta_x"));
}

const OpDef kDropoutBackwardOp{
    .name = "dropout_backward",
    .inputs = {"x?", "y?", "grad_y?"},
    .output_count = 1,
    .kernel = dropout_backward_kernel,
};

}  // namespace

const OpDef kDropoutOp{
    .name = "dropout",
    .inputs = {"x"},
    .infer_shapes = infer_dropout,
    .unit_scale = unit_scale_dropout,
    .kernel = dropout_kernel,
    .backward = &kDropoutBackwardOp,
    .backward_reads = 0b00,
};

}  // namespace unitscale

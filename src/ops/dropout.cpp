#include "unitscale/ops/dropout.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "ops/counter_hash.hpp"
#include "ops/dropout_kernels.hpp"
#include "ops/pointwise_common.hpp"
#include "unitscale/error.hpp"
#include <string>

namespace unitscale {
namespace {

using detail::dropout::mask_bits;

// splitmix64 runs only once per call or per 2^32 elements (keys, step seeds), so its 64-bit
// multiplies cost nothing; the per-element hash is mask_bits (ops/dropout_kernels.hpp).
using detail::splitmix64;

inline std::uint64_t key_of(std::uint64_t seed) { return splitmix64(seed ^ 0x5DEECE66Dull); }

// The two 32-bit round keys of the block of 2^32 indices `block` (the high index bits). Hashing the
// block number before mixing in the key means neighbouring blocks, and the same block under two
// seeds, get unrelated keys.
struct BlockKeys {
  std::uint32_t lo, hi;
};

inline BlockKeys block_keys(std::uint64_t key, std::uint64_t block) {
  const std::uint64_t k = splitmix64(key ^ splitmix64(block));
  return {static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(k >> 32)};
}

// An element is dropped iff its 32 bits fall below ⌊p·2^32⌋, so the drop probability is p to
// within 2^-32.
inline std::uint32_t drop_threshold(double p) {
  if (!(p > 0)) return 0;
  const double t = std::ldexp(p, 32);
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(t);
}

// The reference form of the kernels, for SimdLevel::kScalar (which tests force to cross-check).
void apply_mask_scalar(const float* x, float* y, std::size_t count, std::uint32_t first,
                       std::uint32_t key_lo, std::uint32_t key_hi, std::uint32_t threshold,
                       float factor) {
  for (std::size_t e = 0; e < count; ++e) {
    const std::uint32_t bits = mask_bits(first + static_cast<std::uint32_t>(e), key_lo, key_hi);
    y[e] = bits >= threshold ? factor * x[e] : 0.0f;
  }
}

constexpr detail::dropout::KernelTable kScalarKernels{.apply_mask = apply_mask_scalar};

// The mask kernel for the instruction set the CPU supports (the bulk conversions' choice, which
// tests may force).
const detail::dropout::KernelTable& kernels() {
  using namespace detail::dropout;
  return detail::table_for_active_level(kAvx512Kernels, kAvx2Kernels, kGenericKernels,
                                        kScalarKernels);
}

// out_i = keep_i ? factor·in_i : 0.
void apply_mask(const float* in, float* out, std::int64_t n, double p, std::uint64_t seed,
                float factor) {
  detail::for_each_share(n, [&](std::int64_t begin, std::int64_t count) {
    dropout_apply_mask(in + begin, out + begin, count, begin, p, seed, factor);
  });
}

void scale_copy(const float* in, float* out, std::int64_t n, float factor) {
#pragma omp parallel for simd schedule(static) if (parallel : n > detail::kParallelThreshold)
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

const EnumType& EnumAttribute<DropoutMode>::type() {
  return enum_type<DropoutMode, dropout_mode_name, dropout_mode_from_name>("dropout mode");
}

std::uint64_t dropout_seed_at_step(std::uint64_t seed, std::uint64_t step) {
  return step == 0 ? seed : splitmix64(seed ^ splitmix64(step ^ 0xD1B54A32D192ED03ull));
}

bool dropout_keeps(std::uint64_t seed, std::int64_t index, double p) {
  const auto j = static_cast<std::uint64_t>(index);
  const BlockKeys keys = block_keys(key_of(seed), j >> 32);
  return mask_bits(static_cast<std::uint32_t>(j), keys.lo, keys.hi) >= drop_threshold(p);
}

void dropout_apply_mask(const float* x, float* y, std::int64_t count, std::int64_t first_index,
                        double p, std::uint64_t seed, float factor) {
  const auto apply = kernels().apply_mask;
  const std::uint64_t key = key_of(seed);
  const std::uint32_t threshold = drop_threshold(p);
  auto j = static_cast<std::uint64_t>(first_index);
  // One kernel call per block of 2^32 indices touched (almost always one).
  while (count > 0) {
    const auto low = static_cast<std::uint32_t>(j);
    const std::uint64_t room = (std::uint64_t{1} << 32) - low;
    const auto n = static_cast<std::int64_t>(std::min(static_cast<std::uint64_t>(count), room));
    const BlockKeys keys = block_keys(key, j >> 32);
    apply(x, y, static_cast<std::size_t>(n), low, keys.lo, keys.hi, threshold, factor);
    x += n;
    y += n;
    count -= n;
    j += static_cast<std::uint64_t>(n);
  }
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
  return attrs.get_enum<DropoutMode>("dropout", "mode", DropoutMode::kTraining);
}

std::uint64_t seed_of(const Attributes& attrs) {
  return static_cast<std::uint64_t>(attrs.get_int("dropout", "seed", 0));
}

std::uint64_t seed_of(const Attributes& attrs, const KernelContext& context) {
  return dropout_seed_at_step(seed_of(attrs), context.step);
}

std::vector<Shape> infer_dropout(std::span<const Shape* const> in, const Attributes& attrs) {
  p_of(attrs);  // the range; Graph::apply has checked the types of mode and seed
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

// Scale rules. Training: y = α/(1−p)·x on the kept elements (a fraction 1−p) and 0 elsewhere, so
// rms(y) = α/(1−p)·√(1−p)·rms(x) = α/√(1−p)·rms(x): degree 1 in x, with the factor α/√(1−p)
// (exactly 1 on a unit-scaled graph, where α = √(1−p)). Eval: y = α·x. The backward applies the
// same mask to grad_y with β_x in place of α.
Scale dropout_factor(const ScaleRuleArgs& args, std::string_view scale) {
  const double factor = args.unit_scale(scale);
  if (mode_of(args.attrs) == DropoutMode::kEval) return args.p2(factor);
  return args.p2(factor / std::sqrt(1.0 - p_of(args.attrs)));
}

std::vector<Scale> dropout_scale_rule(const ScaleRuleArgs& args) {
  return {dropout_factor(args, "alpha") * args.scale(0)};
}

// Backward inputs: x (absent), y (absent), grad_y.
std::vector<Scale> dropout_backward_scale_rule(const ScaleRuleArgs& args) {
  return {dropout_factor(args, "beta_x") * args.scale(2)};
}

}  // namespace

const OpDef kDropoutOp{
    .name = "dropout",
    .inputs = {"x"},
    .attributes = {AttributeSpec::real("p", kRequired),
                   AttributeSpec::enumeration<DropoutMode>("mode"),
                   AttributeSpec::integer("seed")},
    .scales = {"alpha", "beta_x"},
    .infer_shapes = infer_dropout,
    .unit_scale = unit_scale_dropout,
    .kernel = dropout_kernel,
    .backward_kernel = dropout_backward_kernel,
    .backward_reads = 0b00,
    .scale_propagation = dropout_scale_rule,
    .backward_scale_propagation = dropout_backward_scale_rule,
};

// ------------------------------------------------------------------------------------------------
// Builders

Value dropout(Value x, const DropoutOptions& options) {
  Graph& graph = x.graph();
  const std::int64_t seed = options.seed.value_or(static_cast<std::int64_t>(graph.nodes().size()));
  const Value inputs[] = {x};
  return graph.apply1(
      kDropoutOp, inputs,
      {{"p", options.p}, {"seed", seed}, {"mode", options.mode}});
}

}  // namespace unitscale

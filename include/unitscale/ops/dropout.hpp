#pragma once
// dropout(p) (arXiv 2303.11257; rules in docs/unit_scaling.md), seeded and reproducible. With
// keep_i ∈ {0, 1} the mask (keep_i = 1 with probability 1 − p), forward and backward side by side
// (g = ∂L/∂y):
//
//   training:  y_i = α · keep_i · x_i / (1 − p)      dx_i = β · keep_i · g_i / (1 − p)
//   eval:      y_i = α · x_i                         dx_i = β · g_i
//
// i.e. inverted dropout, then the unit scale. Unit-scaling rule: a kept unit is x/(1−p) with
// probability 1−p, so the inverted-dropout output has std (1−p)^-½, and so does its gradient:
//   α = β = √(1−p), constraint none (the scales are equal anyway)
// Unit-scaled training output is then keep·x/√(1−p) (unit std), and the eval output √(1−p)·x is
// its expectation. Unscaled (SP) it is plain inverted dropout, identity in eval.
//
// The mask is a pure function of (seed, element index): a counter-based hash of the two (32-bit
// multiply-xorshift rounds, which vectorise on every x86-64 level; see
// src/ops/dropout_kernels.hpp), so the backward recomputes it instead of storing it, and the result
// does not depend on the number of threads or the instruction set. Give each dropout node its own
// seed (the builder derives one from the node's position when none is given). In a graph, the
// node's seed is combined with the executor's step counter (KernelContext::step) through
// dropout_seed_at_step, so every training step draws a fresh mask, and the forward and backward of
// one step agree.

#include <cstdint>
#include <string_view>

#include "unitscale/ops/op_def.hpp"
#include <optional>
#include "unitscale/graph/graph.hpp"

namespace unitscale {

extern const OpDef kDropoutOp;

enum class DropoutMode { kTraining, kEval };
std::string_view dropout_mode_name(DropoutMode mode);  // "training" / "eval"
// Throws unitscale::Error naming dropout and the valid names for anything else.
DropoutMode dropout_mode_from_name(std::string_view name);
template <>
struct EnumAttribute<DropoutMode> {
  static const EnumType& type();
};

// The seed a dropout node with seed `seed` uses at executor step `step`: `seed` itself at step 0
// (so a graph's first run matches a direct dropout_forward call), an unrelated one at later steps.
std::uint64_t dropout_seed_at_step(std::uint64_t seed, std::uint64_t step);

// Whether dropout(p, seed) keeps element `index`: with probability 1 − p, p rounded down to a
// multiple of 2^-32.
bool dropout_keeps(std::uint64_t seed, std::int64_t index, double p);

// The bulk form of dropout_keeps, for ops that apply dropout's mask to pieces of a tensor
// (attention on its probabilities): y[e] = factor·x[e] if dropout_keeps(seed, first_index + e, p),
// else 0, for e in [0, count), vectorised, on the calling thread. x may equal y (in place).
void dropout_apply_mask(const float* x, float* y, std::int64_t count, std::int64_t first_index,
                        double p, std::uint64_t seed, float factor);

// `scale` is α in the forward and β in the backward.
void dropout_forward(ConstTensorView x, TensorView y, double p, std::uint64_t seed,
                     DropoutMode mode, float alpha);
void dropout_backward(ConstTensorView grad_y, TensorView grad_x, double p, std::uint64_t seed,
                      DropoutMode mode, float beta);


// ------------------------------------------------------------------------------------------------
// Builder for dropout.
//
//   Value h = dropout(x, {.p = 0.1, .seed = 42});                     // training, unit-scaled
//   Value h = dropout(x, {.p = 0.1, .mode = DropoutMode::kEval});     // √(1−p)·x when unit-scaled

struct DropoutOptions {
  double p = 0.0;  // drop probability, in [0, 1)
  // The mask is a pure function of (seed, element index). Without a seed, the node's position in
  // the graph is used, so that two dropouts of one graph never share a mask by accident.
  std::optional<std::int64_t> seed = std::nullopt;
  DropoutMode mode = DropoutMode::kTraining;
};

Value dropout(Value x, const DropoutOptions& options);

}  // namespace unitscale

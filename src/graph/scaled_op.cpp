#include "unitscale/graph/scaled_op.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ops/derived_op.hpp"
#include "tensor/workspace.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/dynamic_rescale.hpp"
#include "unitscale/ops/gemm_input_formats.hpp"
#include "unitscale/tensor/scale_policy.hpp"

namespace unitscale {

const EnumType& EnumAttribute<Pow2Rounding>::type() {
  return enum_type<Pow2Rounding, pow2_rounding_name, pow2_rounding_from_name>("p2 rounding");
}

namespace {

// Scales are stored as f32 scalars, and the kernel divides by them in fp32: keeping them within
// [2^-126, 2^126] keeps both a scale and its reciprocal finite normal floats.
constexpr double kSmallestScale = 0x1p-126;
constexpr double kLargestScale = 0x1p126;

float storable(const Scale& s) {
  return static_cast<float>(std::clamp(s.value(), kSmallestScale, kLargestScale));
}

Scale scale_of_input(const ConstTensorView& scale, std::string_view op, std::string_view input) {
  if (!scale.present()) return Scale{};
  const float v = scale.data()[0];
  if (v == 0.0f) return Scale::zero();
  if (!std::isfinite(v) || v < 0.0f) {
    throw Error(
        fmt::format("{}: the scale of input {} is {}, where a scale must be finite and "
                    "positive (has training diverged?)",
                    op, input, v));
  }
  return Scale::of(v);
}

// y = convert(x · factor) through the cast kernel: exact decoding, one fp32 multiply, one rounding.
void convert(ConstTensorView x, TensorView y, float factor, Overflow overflow) {
  const Attributes attrs{
      {"dtype", y.dtype()}, {"scale", static_cast<double>(factor)}, {"overflow", overflow}};
  cast_forward(x, y, attrs, 0);
}

// The statistic a scaled output's measured scale comes from (measured_scale): the largest
// magnitude of a state only its update reads (OpDef::private_states), else the rms (a parameter
// an update writes; a GEMM output under amax scaling, whose operands' data is far from 1).
RescaleStatistic measured_statistic(const OpDef& op, std::size_t o) {
  return ((op.private_states >> o) & 1u) != 0 ? RescaleStatistic::kMax : RescaleStatistic::kL2;
}

// Whether input `i` of `op` is a GEMM operand that its kernel takes as stored codes
// (OpDef::gemm_operands_as_codes): a forward GEMM op's inputs other than its bias, and its backward
// op's x and W and the gradient of its output.
bool takes_codes(const OpDef& op, std::size_t i) {
  if (op.gemm_operands_as_codes) return op.input_name(i) != "bias";
  const OpDef* gemm = op.derived_from;
  if (gemm == nullptr || !gemm->gemm_operands_as_codes || &backward_of(*gemm) != &op) return false;
  const std::size_t forward_inputs = gemm->inputs.size();
  return (i < forward_inputs && gemm->input_name(i) != "bias") ||
         i == forward_inputs + gemm->outputs.size();
}

// Whether output `o` of `op` is a GEMM's result that its kernel can write as codes
// (OpDef::gemm_coded_outputs): of a forward GEMM op, or of its backward op.
bool writes_codes(const OpDef& op, std::size_t o) {
  if (op.gemm_operands_as_codes) return ((op.gemm_coded_outputs >> o) & 1u) != 0;
  const OpDef* gemm = op.derived_from;
  if (gemm == nullptr || !gemm->gemm_operands_as_codes || &backward_of(*gemm) != &op) return false;
  return ((gemm->backward_gemm_coded_outputs >> o) & 1u) != 0;
}

struct ScaledCall {
  const OpDef& outer;
  const OpDef& inner;
  std::size_t n;  // inner inputs
  std::size_t m;  // inner outputs
};

ScaledCall call_of(const KernelContext& context) {
  const OpDef& outer = *context.op;
  const OpDef& inner = *outer.derived_from;
  return {outer, inner, inner.inputs.size(), inner.outputs.size()};
}

// Whether a scaled op's kernel reads input `x` as it is stored: absent, not floating, or fp32
// values without a scale to apply (none, or 1).
bool read_as_stored(const ConstTensorView& x, bool scaled, const Scale& scale) {
  return !x.present() || !is_floating(x.dtype()) ||
         (x.dtype() == DType::kF32 && (!scaled || scale == Scale{}));
}

// Pointwise ops decode, compute and encode this many elements at a time, so that the fp32
// temporaries stay in the core's cache and only the stored data crosses memory. Updates (in-place
// ops, whose measured scales are statistics over blocks of kRescaleStatisticBlock) use chunks of
// that size, so that each chunk is one block of the statistic.
constexpr std::int64_t kPointwiseChunk = 8192;
constexpr auto kUpdateChunk = static_cast<std::int64_t>(kRescaleStatisticBlock);

bool updates_in_place(const OpDef& op) {
  return std::any_of(op.in_place.begin(), op.in_place.end(), [](int i) { return i >= 0; });
}

// Whether input i of an update is a scalar passed whole to every chunk (its lr or gradient
// multiplier) rather than split with the elements.
bool broadcast_to_chunks(const OpDef& inner, std::size_t i, const ConstTensorView& x,
                         std::int64_t elements) {
  const bool aliased = std::find(inner.in_place.begin(), inner.in_place.end(),
                                 static_cast<int>(i)) != inner.in_place.end();
  return updates_in_place(inner) && !aliased && x.numel() == 1 && elements > 1;
}

// The element count a pointwise node's chunks cover: every present input and output has it (an
// update's scalar inputs aside), or 0 when the node cannot run in chunks (an op that is not
// pointwise, broadcasting, a GEMM's measured outputs, or too few elements to split).
std::int64_t pointwise_elements(const OpDef& inner, std::span<const ConstTensorView> in,
                                std::span<const TensorView> out, std::size_t n, std::size_t m,
                                bool measured_outputs) {
  if (!inner.pointwise || inner.runs_on_scaled_data || measured_outputs) return 0;
  std::int64_t elements = -1;
  for (std::size_t o = 0; o < m; ++o) {
    if (!out[o].present()) continue;
    if (elements >= 0 && out[o].numel() != elements) return 0;
    elements = out[o].numel();
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!in[i].present() || broadcast_to_chunks(inner, i, in[i], elements)) continue;
    if (elements >= 0 && in[i].numel() != elements) return 0;
    elements = in[i].numel();
  }
  const std::int64_t chunk = updates_in_place(inner) ? kUpdateChunk : kPointwiseChunk;
  return elements >= 2 * chunk ? elements : 0;
}

template <class View>
View slice_of(const View& v, std::int64_t first, std::int64_t count) {
  if (!v.present()) return {};
  return View(v.bytes() + static_cast<std::size_t>(first) * dtype_size(v.dtype()), Shape{count},
              v.dtype());
}

// A pointwise node, a chunk at a time, the chunks spread over the threads: each input's chunk
// decoded into fp32 (plain fp32 inputs read in place), the op's kernel on the chunks, each
// output's chunk encoded with its scale. The same values as the whole-tensor path, element for
// element.
//
// An update (adam_update, sgd_update) writes its states in place, and a scaled state's new scale
// is measured on its new values before any is stored. So it runs twice: the
// first pass computes the new values into scratch (fp32 states copied there, not updated) and
// keeps each chunk's partial statistic; the second, once the scales are known, computes them
// again (the same bits: the same inputs and kernel) and stores them. Both passes read the states
// as stored, where the whole-tensor path decodes every state and stores its fp32 results once.
class PointwiseChunks {
 public:
  PointwiseChunks(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                  const Attributes& attrs, const KernelContext& context,
                  std::span<const Scale> scales, std::int64_t elements, Overflow overflow)
      : call_(call_of(context)),
        in_(in),
        out_(out),
        attrs_(attrs),
        scales_(scales),
        elements_(elements),
        chunk_(updates_in_place(call_.inner) ? kUpdateChunk : kPointwiseChunk),
        chunks_((elements + chunk_ - 1) / chunk_),
        overflow_(overflow),
        inner_context_(context) {
    inner_context_.op = &call_.inner;
    for (std::size_t i = 0; i < call_.n; ++i) {
      if (in[i].present() && broadcast_to_chunks(call_.inner, i, in[i], elements)) {
        whole_inputs_.push_back(whole_input(i));
      }
    }
  }

  // Output o's data: stored divided by `scale` (its scale is set by the caller).
  void run(std::span<const Scale> out_scales) {
    for_each_chunk([&](std::int64_t c) {
      const Chunk chunk = compute(c, /*store=*/true);
      for (std::size_t o = 0; o < call_.m; ++o) {
        if (!chunk.encode[o]) continue;
        const TensorView y = slice_of(out_[o], chunk.first, chunk.count);
        const bool has_scale = out_[call_.m + o].present();
        if (has_scale && out_scales[o].is_zero()) {
          std::memset(y.bytes(), 0, y.byte_size());
        } else {
          cast_values(ConstTensorView(chunk.out[o].data(), chunk.out[o].shape()), y,
                      has_scale ? 1.0f / storable(out_scales[o]) : 1.0f, overflow_);
        }
      }
    });
  }

  // The first pass of an update: each chunk's partial statistic of the new values of every
  // output in `measured` (measured_statistic), nothing stored. partials[o][c] is chunk c's of
  // output o.
  std::vector<std::vector<double>> measure(const std::vector<bool>& measured) {
    std::vector<std::vector<double>> partials(call_.m);
    for (std::size_t o = 0; o < call_.m; ++o) {
      if (measured[o]) partials[o].assign(static_cast<std::size_t>(chunks_), 0.0);
    }
    for_each_chunk([&](std::int64_t c) {
      const Chunk chunk = compute(c, /*store=*/false);
      for (std::size_t o = 0; o < call_.m; ++o) {
        if (!measured[o]) continue;
        partials[o][static_cast<std::size_t>(c)] =
            rescale_block_partial({chunk.out[o].data(), static_cast<std::size_t>(chunk.count)},
                                  measured_statistic(call_.inner, o));
      }
    });
    return partials;
  }

 private:
  // body(c) for every chunk c, spread over the threads; the first exception is rethrown after.
  template <class Body>
  void for_each_chunk(const Body& body) const {
    std::exception_ptr error;
#pragma omp parallel for schedule(static)
    for (std::int64_t c = 0; c < chunks_; ++c) {
      try {
        body(c);
      } catch (...) {
#pragma omp critical(unitscale_pointwise_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }

  struct Chunk {
    std::int64_t first = 0, count = 0;
    std::vector<TensorView> out;
    std::vector<bool> encode;  // computed in fp32 scratch, to be stored encoded
  };

  // Input i as fp32 values: its chunk decoded into this thread's scratch slot i (or read in place
  // where stored as the kernel reads it; copied anyway when `copy`).
  ConstTensorView chunk_input(std::size_t i, std::int64_t first, std::int64_t count,
                              bool copy) const {
    const ConstTensorView x = slice_of(in_[i], first, count);
    const bool scaled = in_[call_.n + i].present();
    if (read_as_stored(x, scaled, scales_[i]) && !(copy && x.present())) return x;
    float* buffer = detail::Workspace::of_this_thread().take_floats(count);
    if (scales_[i].is_zero()) {
      std::fill_n(buffer, count, 0.0f);
    } else if (x.dtype() == DType::kF32 && (!scaled || scales_[i] == Scale{})) {
      std::memcpy(buffer, x.data(), static_cast<std::size_t>(count) * sizeof(float));
    } else {
      cast_values(x, TensorView(buffer, x.shape()), storable(scales_[i]), Overflow::kNonFinite);
    }
    return ConstTensorView(buffer, x.shape());
  }

  // An input every chunk reads whole (an update's scalar multipliers), as fp32 values.
  struct WholeInput {
    std::size_t index;
    ConstTensorView view;
    std::shared_ptr<Tensor> decoded;  // owns view's data where it had to be decoded
  };
  WholeInput whole_input(std::size_t i) const {
    const ConstTensorView& x = in_[i];
    const bool scaled = in_[call_.n + i].present();
    if (read_as_stored(x, scaled, scales_[i])) return {i, x, nullptr};
    auto values = std::make_shared<Tensor>(x.shape());
    if (!scales_[i].is_zero()) {
      cast_values(x, values->view(), storable(scales_[i]), Overflow::kNonFinite);
    }
    return {i, values->view(), values};
  }

  // Runs the kernel on chunk c. With `store`, plain fp32 outputs (an fp32 state updated in
  // place, an unscaled fp32 result) are written where they live; otherwise every output goes to
  // scratch, and no state changes.
  Chunk compute(std::int64_t c, bool store) const {
    const OpDef& inner = call_.inner;
    const std::size_t n = call_.n, m = call_.m;
    detail::Workspace::of_this_thread().begin();  // the thread's previous chunk is stored
    Chunk chunk;
    chunk.first = c * chunk_;
    chunk.count = std::min(chunk_, elements_ - chunk.first);
    std::vector<ConstTensorView> chunk_in(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (!in_[i].present()) continue;
      const auto whole = std::find_if(whole_inputs_.begin(), whole_inputs_.end(),
                                      [i](const WholeInput& entry) { return entry.index == i; });
      if (whole != whole_inputs_.end()) {
        chunk_in[i] = whole->view;
        continue;
      }
      const bool updated = std::find(inner.in_place.begin(), inner.in_place.end(),
                                     static_cast<int>(i)) != inner.in_place.end();
      chunk_in[i] = chunk_input(i, chunk.first, chunk.count, /*copy=*/updated && !store);
    }
    chunk.out.resize(m);
    chunk.encode.assign(m, false);
    for (std::size_t o = 0; o < m; ++o) {
      if (!out_[o].present()) continue;
      const int alias = o < inner.in_place.size() ? inner.in_place[o] : -1;
      const bool plain_f32 = !out_[m + o].present() && out_[o].dtype() == DType::kF32;
      if (alias >= 0) {  // the kernel updates its input's chunk, wherever that is
        const ConstTensorView& x = chunk_in[static_cast<std::size_t>(alias)];
        chunk.out[o] = TensorView(const_cast<float*>(x.data()), x.shape());
        chunk.encode[o] = !(plain_f32 && store);
        continue;
      }
      chunk.encode[o] = !plain_f32 || !store;
      chunk.out[o] = chunk.encode[o]
                         ? TensorView(detail::Workspace::of_this_thread().take_floats(chunk.count),
                                      Shape{chunk.count})
                         : slice_of(out_[o], chunk.first, chunk.count);
    }
    inner.kernel(chunk_in, chunk.out, attrs_, inner_context_);
    return chunk;
  }

  ScaledCall call_;
  std::span<const ConstTensorView> in_;
  std::span<const TensorView> out_;
  const Attributes& attrs_;
  std::span<const Scale> scales_;
  std::int64_t elements_, chunk_, chunks_;
  Overflow overflow_;
  KernelContext inner_context_;
  std::vector<WholeInput> whole_inputs_;
};

void scaled_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                   const Attributes& attrs, const KernelContext& context) {
  const auto [outer, inner, n, m] = call_of(context);
  const bool on_data = inner.runs_on_scaled_data;
  std::vector<Scale> scales(n);
  std::vector<const Shape*> in_shapes(n), out_shapes(m);
  for (std::size_t i = 0; i < n; ++i) {
    scales[i] = scale_of_input(in[n + i], outer.name, inner.input_name(i));
    in_shapes[i] = in[i].present() ? &in[i].shape() : nullptr;
  }
  for (std::size_t o = 0; o < m; ++o) out_shapes[o] = out[o].present() ? &out[o].shape() : nullptr;
  const auto rounding =
      attrs.get_enum<Pow2Rounding>(outer.name, "p2_rounding", Pow2Rounding::kDown);
  std::vector<Scale> out_scales;
  if (on_data) {  // every output keeps the scale of the value it is made from
    std::size_t source = 0;
    while (source + 1 < n && !in[source].present()) ++source;
    out_scales.assign(m, scales[source]);
  } else {
    const ScaleRuleArgs args{scales, in_shapes, out_shapes, attrs, rounding, in.subspan(0, n)};
    out_scales = inner.scale_propagation(args);
  }
  // Where the output scales are measured instead (the states an update writes, GEMM outputs under
  // amax scaling), values that are not finite keep the rule's scale, and are stored as the
  // overflow policy says.
  // (`op` is captured by name: clang 14 cannot capture a structured binding.)
  const auto measured_scale_of = [&, &op = inner](std::size_t o, double value) {
    return measured_scale(measured_statistic(op, o), value, out[o].dtype(), rounding)
        .value_or(out_scales[o]);
  };

  const bool measure_outputs = attrs.get_int(outer.name, "measured_output_scales", 0) != 0;
  const Overflow overflow =
      attrs.get_enum<Overflow>(outer.name, "storage_overflow", Overflow::kNonFinite);
  if (const std::int64_t elements = pointwise_elements(inner, in, out, n, m, measure_outputs)) {
    PointwiseChunks chunks(in, out, attrs, context, scales, elements, overflow);
    // A scaled state updated in place gets the scale of its new values.
    std::vector<bool> measured(m, false);
    for (std::size_t o = 0; o < m; ++o) {
      measured[o] = out[o].present() && out[m + o].present() && o < inner.in_place.size() &&
                    inner.in_place[o] >= 0;
    }
    if (std::find(measured.begin(), measured.end(), true) != measured.end()) {
      const auto partials = chunks.measure(measured);
      for (std::size_t o = 0; o < m; ++o) {
        if (!measured[o]) continue;
        out_scales[o] = measured_scale_of(
            o, rescale_statistic_of_partials(partials[o], static_cast<std::size_t>(elements),
                                             measured_statistic(inner, o)));
      }
    }
    for (std::size_t o = 0; o < m; ++o) {
      if (out[o].present() && out[m + o].present()) {
        out[m + o].data()[0] = out_scales[o].is_zero() ? 0.0f : storable(out_scales[o]);
      }
    }
    chunks.run(out_scales);
    return;
  }

  detail::Workspace::of_this_thread().begin();
  // The inner kernel's inputs: plain ones as they are, scaled ones materialised in fp32 (on_data:
  // the data alone, decoded only where the op does not take its format).
  std::vector<ConstTensorView> inner_in(n);
  std::vector<float*> materialised(n, nullptr);
  // GEMM operands handed over as their codes, and the codes' scales (KernelContext::code_scales).
  std::vector<bool> as_codes(n, false);
  std::vector<float> code_scales;
  for (std::size_t i = 0; i < n; ++i) {
    const ConstTensorView& x = in[i];
    const bool scaled = in[n + i].present();
    if (x.present() && !on_data && detail::gemm_takes_codes(x.dtype()) && !scales[i].is_zero() &&
        takes_codes(inner, i)) {
      as_codes[i] = true;
      code_scales.resize(n, 1.0f);
      code_scales[i] = scaled ? storable(scales[i]) : 1.0f;
      inner_in[i] = x;
      continue;
    }
    if (read_as_stored(x, scaled, scales[i]) ||
        (on_data && (x.dtype() == DType::kF32 || inner.accepted_dtypes(i).contains(x.dtype())))) {
      inner_in[i] = x;
      continue;
    }
    materialised[i] = detail::Workspace::of_this_thread().take_floats(x.numel());
    if (scales[i].is_zero() && !on_data) {  // a static zero, whatever its data holds
      std::fill_n(materialised[i], x.numel(), 0.0f);
    } else {
      convert(x, TensorView(materialised[i], x.shape()), on_data ? 1.0f : storable(scales[i]),
              Overflow::kNonFinite);
    }
    inner_in[i] = ConstTensorView(materialised[i], x.shape());
  }
  // Outputs: written straight into their storage where it holds what the op produces (plain fp32
  // outputs, a cast's target) or where its GEMM encodes them (a ruled scale known before the
  // kernel runs), otherwise into fp32 scratch (an in-place output into its input's scratch), then
  // stored divided by the scale.
  std::vector<DType> in_dtypes(n, DType::kF32);  // as the op sees them: codes are its values
  for (std::size_t i = 0; i < n; ++i) {
    if (inner_in[i].present() && !as_codes[i]) in_dtypes[i] = inner_in[i].dtype();
  }
  const std::vector<DType> produced = inner.infer_dtypes != nullptr
                                          ? inner.infer_dtypes(in_dtypes, attrs)
                                          : std::vector<DType>(m, DType::kF32);
  std::vector<TensorView> inner_out(m);
  std::vector<bool> direct(m, true);
  std::vector<float> code_factors;
  for (std::size_t o = 0; o < m; ++o) {
    const TensorView& y = out[o];
    if (!y.present()) continue;
    const int alias = o < inner.in_place.size() ? inner.in_place[o] : -1;
    float* alias_buffer = alias >= 0 ? materialised[static_cast<std::size_t>(alias)] : nullptr;
    const bool stored_as_produced = on_data || !out[m + o].present();
    if (stored_as_produced && produced[o] == y.dtype() && alias_buffer == nullptr) {
      inner_out[o] = y;
      continue;
    }
    if (!stored_as_produced && !measure_outputs && alias < 0 && !out_scales[o].is_zero() &&
        detail::gemm_takes_codes(y.dtype()) && writes_codes(inner, o)) {
      code_factors.resize(m, 1.0f);
      code_factors[o] = 1.0f / storable(out_scales[o]);
      inner_out[o] = y;
      continue;
    }
    if (produced[o] != DType::kF32) {
      throw Error(fmt::format("{}: output {} is {}, which cannot be stored as {}", outer.name,
                              inner.outputs[o], dtype_name(produced[o]), dtype_name(y.dtype())));
    }
    direct[o] = false;
    float* buffer = alias_buffer != nullptr
                        ? alias_buffer
                        : detail::Workspace::of_this_thread().take_floats(y.numel());
    inner_out[o] = TensorView(buffer, y.shape());
  }
  KernelContext inner_context = context;
  inner_context.op = &inner;
  inner_context.code_scales = code_scales;
  inner_context.code_factors = code_factors;
  inner_context.code_overflow = overflow;
  inner.kernel(inner_in, inner_out, attrs, inner_context);

  for (std::size_t o = 0; o < m; ++o) {
    if (!out[o].present()) continue;
    const bool has_scale = out[m + o].present();
    Scale s = has_scale ? out_scales[o] : Scale{};
    const bool updates_state = o < inner.in_place.size() && inner.in_place[o] >= 0;
    if (has_scale && (updates_state || measure_outputs)) {
      const ConstTensorView& y = inner_out[o];
      s = measured_scale_of(o, rescale_statistic({y.data(), static_cast<std::size_t>(y.numel())},
                                                 measured_statistic(inner, o)));
    }
    if (has_scale) out[m + o].data()[0] = s.is_zero() ? 0.0f : storable(s);
    if (direct[o]) continue;
    if (s.is_zero()) {  // a static zero: zero data (all-zero bits are +0 in every data format)
      std::memset(out[o].bytes(), 0, out[o].byte_size());
      continue;
    }
    const ConstTensorView y(inner_out[o].data(), inner_out[o].shape());
    convert(y, out[o], on_data || !has_scale ? 1.0f : 1.0f / storable(s), overflow);
  }
}

// The most a scaled kernel call takes from the workspace, following the kernel's choices: per
// chunk of a pointwise node, each input's and output's fp32 chunk; otherwise the inputs it decodes
// into fp32, the outputs it computes in fp32, and what its GEMMs take while they run. An upper
// bound: a scaled fp32 input whose scale turns out to be 1 is read in place.
std::size_t scaled_workspace(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                             const Attributes& attrs, const OpDef& outer) {
  const OpDef& inner = *outer.derived_from;
  const std::size_t n = inner.inputs.size(), m = inner.outputs.size();
  const bool on_data = inner.runs_on_scaled_data;
  const bool measure_outputs = attrs.get_int(outer.name, "measured_output_scales", 0) != 0;
  constexpr std::size_t kAlign = 64;  // what each take may round up by
  const auto floats = [](std::int64_t count) {
    return static_cast<std::size_t>(count) * sizeof(float) + kAlign;
  };
  if (const std::int64_t elements = pointwise_elements(inner, in, out, n, m, measure_outputs)) {
    const std::int64_t chunk =
        std::min(elements, updates_in_place(inner) ? kUpdateChunk : kPointwiseChunk);
    return (n + m) * floats(chunk);
  }
  std::size_t bytes = 0;
  bool all_bf16_exact = true;
  std::vector<const ConstTensorView*> codes;     // GEMM operands handed over as codes
  std::vector<DType> in_dtypes(n, DType::kF32);  // as the op sees them, as in the kernel
  std::vector<bool> decoded(n, false);
  for (std::size_t i = 0; i < n; ++i) {
    const ConstTensorView& x = in[i];
    if (!x.present()) continue;
    const bool scaled = in[n + i].present();
    if (!on_data && detail::gemm_takes_codes(x.dtype()) && takes_codes(inner, i)) {
      codes.push_back(&x);
      all_bf16_exact &= x.dtype() != DType::kF16;
    } else if (read_as_stored(x, scaled, Scale{}) ||
               (on_data &&
                (x.dtype() == DType::kF32 || inner.accepted_dtypes(i).contains(x.dtype())))) {
      in_dtypes[i] = x.dtype();
      // A scaled fp32 input is decoded unless its scale is 1, which only the run knows.
      if (!on_data && scaled && x.dtype() == DType::kF32) bytes += floats(x.numel());
    } else {
      decoded[i] = true;
      bytes += floats(x.numel());
    }
  }
  // Outputs its GEMMs write as codes, panel by panel (as the kernel decides them).
  const auto coded = [&](std::size_t o) {
    const TensorView& y = out[o];
    const int alias = o < inner.in_place.size() ? inner.in_place[o] : -1;
    return y.present() && !on_data && out[m + o].present() && !measure_outputs && alias < 0 &&
           detail::gemm_takes_codes(y.dtype()) && writes_codes(inner, o);
  };
  bool any_coded = false;
  for (std::size_t o = 0; o < m; ++o) any_coded |= coded(o);
  // One GEMM runs at a time, and releases its two widened operands and its output panel when it
  // returns: the two largest widened operands, and the largest panel, bound them. On BF16 units
  // FP8 codes are widened and BF16 ones read as they are, unless the result is computed in panels
  // (a coded output), which copies a panel's block of B and a transposed A packed; else all go to
  // fp32.
  const bool bf16_units = all_bf16_exact && gemm_has_native_bf16();
  std::vector<std::size_t> widened;
  for (const ConstTensorView* x : codes) {
    const bool fp8 = x->dtype() == DType::kE4M3FN || x->dtype() == DType::kE5M2;
    const std::int64_t element_bytes = bf16_units ? (fp8 || any_coded ? 2 : 0) : 4;
    widened.push_back(static_cast<std::size_t>(x->numel() * element_bytes) + kAlign);
  }
  std::sort(widened.rbegin(), widened.rend());
  for (std::size_t k = 0; k < std::min<std::size_t>(2, widened.size()); ++k) bytes += widened[k];
  std::size_t largest_panel = 0;
  const std::vector<DType> produced = inner.infer_dtypes != nullptr
                                          ? inner.infer_dtypes(in_dtypes, attrs)
                                          : std::vector<DType>(m, DType::kF32);
  for (std::size_t o = 0; o < m; ++o) {
    const TensorView& y = out[o];
    if (!y.present()) continue;
    const int alias = o < inner.in_place.size() ? inner.in_place[o] : -1;
    if (alias >= 0 && decoded[static_cast<std::size_t>(alias)]) continue;  // its input's buffer
    const bool stored_as_produced = on_data || !out[m + o].present();
    if (stored_as_produced && produced[o] == y.dtype()) continue;
    if (coded(o)) {
      const std::int64_t rows = y.shape().outer();
      const std::int64_t columns = detail::gemm_output_panel_columns(rows, y.shape().inner());
      largest_panel = std::max(largest_panel, floats(rows * columns));
      continue;
    }
    bytes += floats(y.numel());
  }
  return bytes + largest_panel;
}

}  // namespace

std::optional<Scale> measured_scale(RescaleStatistic statistic, double value, DType storage,
                                    Pow2Rounding rounding) {
  if (value == 0.0) return Scale::zero();
  if (!std::isfinite(value)) return std::nullopt;
  if (statistic != RescaleStatistic::kMax) return Scale::rounded(value, rounding);
  const std::optional<FormatSpec> format = dtype_format(storage);
  if (!format) return std::nullopt;
  const ChosenScale chosen = amax_scale(static_cast<float>(value), *format);
  if (chosen.degenerate) return std::nullopt;
  return chosen.scale;
}

namespace {

using detail::DerivedOp;

void derive_scaled(const OpDef& inner, DerivedOp& derived) {
  OpDef& op = derived.op;
  op.name = derived.keep("scaled_" + std::string(inner.name));
  op.inputs = inner.inputs;
  for (std::size_t i = 0; i < inner.inputs.size(); ++i) {
    op.inputs.push_back(derived.keep(std::string(inner.input_name(i)) + "_scale?"));
  }
  op.outputs = inner.outputs;
  for (const std::string_view output : inner.outputs) {
    op.outputs.push_back(derived.keep(std::string(output) + "_scale"));
  }
  op.attributes = inner.attributes;
  op.attributes.push_back(AttributeSpec::enumeration<Pow2Rounding>("p2_rounding"));
  op.attributes.push_back(AttributeSpec::enumeration<Overflow>("storage_overflow"));
  op.attributes.push_back(AttributeSpec::integer("measured_output_scales"));
  op.scales = inner.scales;
  op.input_dtypes.assign(inner.inputs.size(), DTypeSet::all());
  // A state updated in place keeps its scale in a state too, which the update overwrites.
  op.in_place = inner.in_place;
  op.in_place.resize(2 * inner.outputs.size(), -1);
  for (std::size_t o = 0; o < inner.in_place.size(); ++o) {
    if (inner.in_place[o] >= 0) {
      op.in_place[inner.outputs.size() + o] =
          static_cast<int>(inner.inputs.size()) + inner.in_place[o];
    }
  }
  op.kernel = scaled_kernel;
  op.workspace = scaled_workspace;
  // No prepare hook: it could not tell which op it prepares. GEMM plans are cached by problem, so
  // the first run makes them instead.
  op.derived_from = &inner;
}

std::vector<Shape> infer_materialize(std::span<const Shape* const> in, const Attributes&) {
  if (in[1]->numel() != 1) {
    throw Error(fmt::format("materialize: the scale must have one element, got shape {}",
                            in[1]->to_string()));
  }
  return {*in[0]};
}

void materialize_kernel(std::span<const ConstTensorView> in, std::span<const TensorView> out,
                        const Attributes&, const KernelContext&) {
  const Scale s = scale_of_input(in[1], "materialize", "data");
  if (s.is_zero()) {
    std::memset(out[0].bytes(), 0, out[0].byte_size());
    return;
  }
  convert(in[0], out[0], storable(s), Overflow::kNonFinite);
}

}  // namespace

const OpDef& scaled_of(const OpDef& op) {
  if (op.scale_propagation == nullptr && !op.runs_on_scaled_data) {
    throw Error(fmt::format("propagate_scales: op {} has no scale rule", op.name));
  }
  return detail::derived_op<derive_scaled>(op);
}

bool is_scaled_op(const OpDef& op) { return op.kernel == scaled_kernel || &op == &kMaterializeOp; }

const OpDef kMaterializeOp{
    .name = "materialize",
    .inputs = {"data", "scale"},
    .input_dtypes = {DTypeSet::all(), {DType::kF32}},
    .infer_shapes = infer_materialize,
    .kernel = materialize_kernel,
};

}  // namespace unitscale

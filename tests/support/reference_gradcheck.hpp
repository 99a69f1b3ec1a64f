#pragma once
// gradcheck_reference: checks an op's FP32 forward and backward kernels against the independent
// double-precision reference forwards of reference_ops.hpp.
//
//   1. The forward kernel's outputs must match reference_forward (same shapes, values within FP32
//      rounding), with the node's resolved attributes, so the unit scales are checked too.
//   2. The backward kernel runs with random N(0, 1) output gradients g_k. Its gradient of every
//      differentiable input i must match Σ_k c_ik·J_kiᵀ·g_k, where J_ki is the Jacobian of the
//      *plain* reference (the scale attributes removed: y = f(x)) and c_ik the factor the library's
//      conventions put on that gradient (reference_gradient_factors: β_i for most ops, so a
//      unit-scaled run is checked against β_i times the true VJP of the unscaled op). J_kiᵀ·g_k
//      is computed by central finite differences of the double reference, one input element at a
//      time: ∂/∂x_e Σ_k c_ik·<g_k, f_k(x)>, with step h_e = fd_step·max(|x_e|, rms(x)).
//      In double, the truncation error is O(h²·f''') ≈ 1e-8 relative and the rounding error
//      O(1e-16·|L|/h) ≈ 1e-12, so the reference gradient is exact to ~1e-8, far below FP32.
//
// Error measures, for a kernel vector a against its reference b (per output / per input):
//   relative L2 error    ‖a − b‖₂ / ‖b‖₂                  (0 when both are 0)
//   max element error    max_e |a_e − b_e| / rms(b)        (catches a few wrong elements)
// Default tolerances, derived from FP32 rounding (unit roundoff u = 2^-24 ≈ 6e-8): the kernels
// round every operation to FP32 and accumulate sums of at most a few hundred terms here in float
// lanes (error ≲ √n·u relative to the terms), their exp / erf / tanh are within a few ulps, and
// the cancellation in the normalisation and softmax gradients (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) costs
// about one decimal digit relative to the rms. That predicts errors from ~1e-7 to a few 1e-6;
// measured worst cases over every case of tests/ops/reference_gradcheck_test.cpp, at every SIMD
// level, are
//   forward:   relative L2 1.5e-7,  element / rms 1.6e-6   (matmul and linear, K = 64)
//   gradient:  relative L2 2.9e-7,  element / rms 1.2e-6   (matmul, linear_readout)
// The tolerances (ReferenceCheckOptions) are 1e-5 relative L2 and 4e-5 element / rms for both
// (≈ 170 u and ≈ 700 u): ≥ 25× headroom over the measurements, and 100× below the 1e-3 relative
// perturbation the power tests show is detected (the finite-difference reference itself is exact
// to ~1e-8, see above).
//
// Kernels run at every SIMD level the CPU supports (for_each_simd_level), each checked against the
// same reference.

#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "accuracy.hpp"
#include "op_check.hpp"
#include "reference_ops.hpp"
#include "unitscale/format/detail/simd_level.hpp"
#include "unitscale/ops/dropout.hpp"

namespace unitscale::testing {

// The reference form of an input tensor: the one place that reads an input tensor's data, so that
// integer (i32) id and label tensors need a change here only.
// Every dtype the references read: f32 values and i32 ids or labels, exactly, in double.
inline RefTensor to_ref(const Tensor& t) {
  if (t.dtype() == DType::kI32) {
    const auto s = t.span_as<std::int32_t>();
    return RefTensor(t.shape(), std::vector<double>(s.begin(), s.end()));
  }
  const auto s = t.span();
  return RefTensor(t.shape(), std::vector<double>(s.begin(), s.end()));
}

// The dropout mask the ops document: dropout_keeps at the executor step's seed
// (dropout_seed_at_step). The references take it as given (see reference_ops.hpp).
inline RefContext dropout_context(std::uint64_t step) {
  return {.keeps = [step](std::uint64_t seed, std::int64_t index, double p) {
    return dropout_keeps(dropout_seed_at_step(seed, step), index, p);
  }};
}

struct ReferenceCheckOptions {
  Scaling scaling = Scaling::kUnscaled;  // kUnit: resolve the op's unit scales first
  std::uint64_t step = 0;                // the executor step both kernels see
  unsigned seed = 11;                    // of the random output gradients
  double fd_step = 1e-4;                 // relative finite-difference step
  // FP32-rounding tolerances (see the top of this file for their derivation and the measured
  // errors): relative L2 error, and the largest element error divided by the reference's rms.
  double forward_rtol = 1e-5;
  double forward_elem_tol = 4e-5;
  double grad_rtol = 1e-5;
  double grad_elem_tol = 4e-5;
  std::vector<bool> differentiable = {};  // per input; empty: present and not marked by the op
  // 0: differentiate with respect to every input element; n > 0: at most n of each input's
  // elements, drawn at random (for shapes large enough to reach the kernels' parallel paths).
  std::int64_t max_fd_elements = 0;
  bool all_simd_levels = true;
  // Also run the backward with each differentiable input's gradient requested alone.
  bool single_gradients = true;
};

struct ReferenceCheckResult {
  bool ok = true;
  double forward_error = 0;        // worst relative L2 error of an output
  double forward_elem_error = 0;   // worst element error / rms of an output
  std::vector<double> grad_error;  // per input: relative L2 error (NaN: not checked)
  std::vector<double> grad_elem_error;  // per input: element error / rms (NaN: not checked)
  std::string failures;            // one line per failure
};

namespace reference_detail {

struct VectorError {
  double relative_l2 = 0;
  double element = 0;
  std::int64_t worst = -1;
  bool finite = true;
};

inline VectorError compare(std::span<const float> got, const std::vector<double>& want) {
  VectorError e;
  double diff2 = 0, ref2 = 0, worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    if (!std::isfinite(static_cast<double>(got[i])) || !std::isfinite(want[i])) e.finite = false;
    diff2 += d * d;
    ref2 += want[i] * want[i];
    if (std::abs(d) > worst) {
      worst = std::abs(d);
      e.worst = static_cast<std::int64_t>(i);
    }
  }
  const double rms = want.empty() ? 0.0 : std::sqrt(ref2 / static_cast<double>(want.size()));
  e.relative_l2 = diff2 == 0 ? 0.0 : ref2 == 0 ? std::numeric_limits<double>::infinity()
                                               : std::sqrt(diff2 / ref2);
  e.element = worst == 0 ? 0.0 : rms == 0 ? std::numeric_limits<double>::infinity() : worst / rms;
  if (!e.finite) e.relative_l2 = e.element = std::numeric_limits<double>::infinity();
  return e;
}

inline double max_nan(double a, double b) { return std::isnan(a) ? b : std::max(a, b); }

}  // namespace reference_detail

// Runs the check and returns what it found, without reporting to gtest.
inline ReferenceCheckResult check_against_reference(const OpDef& op,
                                                    std::vector<std::optional<Tensor>> inputs,
                                                    const Attributes& attrs,
                                                    const ReferenceCheckOptions& options = {}) {
  using reference_detail::compare;
  ReferenceCheckResult result;
  std::ostringstream failures;
  const std::size_t n_in = inputs.size();
  result.grad_error.assign(n_in, std::numeric_limits<double>::quiet_NaN());
  result.grad_elem_error.assign(n_in, std::numeric_limits<double>::quiet_NaN());
  auto fail = [&](const std::string& line) {
    result.ok = false;
    failures << op.name << ": " << line << "\n";
  };

  // The resolved attributes, as a node recorded with options.scaling would have them.
  const Attributes resolved = OpRun(op, inputs, attrs, options.scaling).attrs();
  const Attributes plain = without_scales(op.name, resolved);
  const RefContext context = dropout_context(options.step);

  RefInputs ref_in;
  for (const auto& t : inputs) ref_in.push_back(t ? std::optional<RefTensor>(to_ref(*t)) : std::nullopt);
  const std::vector<RefTensor> ref_out = reference_forward(op.name, ref_in, resolved, context);
  if (static_cast<int>(ref_out.size()) != op.output_count()) {
    fail("the reference has " + std::to_string(ref_out.size()) + " outputs, the op " +
         std::to_string(op.output_count()));
    result.failures = failures.str();
    return result;
  }

  // Output gradients, shared by the kernels (FP32) and the reference (the same values in double).
  std::mt19937 rng(options.seed);
  std::vector<Tensor> cotangents;
  for (const RefTensor& y : ref_out) cotangents.push_back(random_normal(y.shape, rng));

  std::vector<bool> wanted(n_in, false);
  for (std::size_t i = 0; i < n_in; ++i) {
    wanted[i] = options.differentiable.empty()
                    ? inputs[i].has_value() && ((op.nondifferentiable_inputs >> i) & 1u) == 0
                    : options.differentiable[i] && inputs[i].has_value();
  }

  // Reference gradients by central differences of the plain (unscaled) double reference.
  const auto factors =
      reference_gradient_factors(op.name, ref_in, resolved, op.output_count());
  std::vector<std::vector<double>> ref_grads(n_in);
  std::vector<std::vector<std::size_t>> elements(n_in);  // the elements checked, ascending
  for (std::size_t i = 0; i < n_in; ++i) {
    if (!wanted[i]) continue;
    RefTensor& x = *ref_in[i];
    std::vector<std::size_t> all(x.v.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    if (options.max_fd_elements > 0 && x.numel() > options.max_fd_elements) {
      std::mt19937 pick(options.seed + 1000u * static_cast<unsigned>(i + 1));
      std::sample(all.begin(), all.end(), std::back_inserter(elements[i]),
                  static_cast<std::size_t>(options.max_fd_elements), pick);
    } else {
      elements[i] = std::move(all);
    }
    double sum_sq = 0;
    for (const double v : x.v) sum_sq += v * v;
    const double rms = x.v.empty() ? 0.0 : std::sqrt(sum_sq / static_cast<double>(x.v.size()));
    const auto loss = [&] {
      const std::vector<RefTensor> y = reference_forward(op.name, ref_in, plain, context);
      double total = 0;
      for (std::size_t k = 0; k < y.size(); ++k) {
        const double c = factors[i][k];
        if (c == 0) continue;
        const auto g = cotangents[k].span();
        double dot = 0;
        for (std::size_t e = 0; e < y[k].v.size(); ++e) dot += static_cast<double>(g[e]) * y[k].v[e];
        total += c * dot;
      }
      return total;
    };
    for (const std::size_t e : elements[i]) {
      const double x0 = x.v[e];
      const double h = options.fd_step * std::max({std::abs(x0), rms, 1e-30});
      x.v[e] = x0 + h;
      const double plus = loss();
      const double up = x.v[e];
      x.v[e] = x0 - h;
      const double minus = loss();
      const double step = up - x.v[e];
      x.v[e] = x0;
      ref_grads[i].push_back((plus - minus) / step);
    }
  }

  const auto run_kernels = [&] {
    const std::string level(detail::simd_level_name(detail::active_simd_level()));
    OpRun run(op, inputs, attrs, options.scaling);
    run.set_step(options.step);
    run.forward();
    for (std::size_t k = 0; k < ref_out.size(); ++k) {
      const Tensor& y = run.output(k);
      if (y.shape() != ref_out[k].shape) {
        fail("output " + std::to_string(k) + " has shape " + y.shape().to_string() +
             ", the reference " + ref_out[k].shape.to_string());
        return;
      }
      const auto e = compare(y.span(), ref_out[k].v);
      result.forward_error = std::max(result.forward_error, e.relative_l2);
      result.forward_elem_error = std::max(result.forward_elem_error, e.element);
      if (e.relative_l2 > options.forward_rtol || e.element > options.forward_elem_tol) {
        std::ostringstream line;
        line.precision(3);
        line << "[" << level << "] forward output " << k << ": relative L2 error "
             << e.relative_l2 << ", worst element " << e.worst << " error " << e.element
             << " of rms (got " << y[e.worst] << ", reference " << ref_out[k][e.worst] << ")";
        fail(line.str());
      }
    }
    // All wanted gradients in one call, then (when there are several) each one alone: kernels
    // often have separate paths for "both gradients" and "one of them".
    std::vector<std::vector<bool>> requests = {wanted};
    if (options.single_gradients && std::count(wanted.begin(), wanted.end(), true) > 1) {
      for (std::size_t i = 0; i < n_in; ++i) {
        if (!wanted[i]) continue;
        requests.emplace_back(n_in, false);
        requests.back()[i] = true;
      }
    }
    for (std::size_t q = 0; q < requests.size(); ++q) {
      const auto grads = run.backward(cotangents, requests[q]);
      for (std::size_t i = 0; i < n_in; ++i) {
        if (!requests[q][i]) continue;
        if (!grads[i]) {
          fail("no gradient for input " + std::to_string(i));
          continue;
        }
        std::vector<float> got;
        for (const std::size_t e : elements[i]) got.push_back((*grads[i])[static_cast<std::int64_t>(e)]);
        const auto e = compare(got, ref_grads[i]);
        result.grad_error[i] = reference_detail::max_nan(result.grad_error[i], e.relative_l2);
        result.grad_elem_error[i] = reference_detail::max_nan(result.grad_elem_error[i], e.element);
        if (e.relative_l2 > options.grad_rtol || e.element > options.grad_elem_tol) {
          std::ostringstream line;
          line.precision(3);
          line << "[" << level << "] d/d input " << i << " (" << op.input_name(i) << ")"
               << (q == 0 ? "" : " requested alone") << ": relative L2 error " << e.relative_l2
               << ", worst element error " << e.element << " of rms (element "
               << elements[i][static_cast<std::size_t>(e.worst)] << ": backward "
               << got[static_cast<std::size_t>(e.worst)]
               << ", finite differences of the reference "
               << ref_grads[i][static_cast<std::size_t>(e.worst)] << ")";
          fail(line.str());
        }
      }
    }
  };
  if (options.all_simd_levels) {
    for_each_simd_level(run_kernels);
  } else {
    run_kernels();
  }
  result.failures = failures.str();
  return result;
}

// check_against_reference, reporting every failure through gtest (non-fatally).
inline ReferenceCheckResult gradcheck_reference(const OpDef& op,
                                                std::vector<std::optional<Tensor>> inputs,
                                                const Attributes& attrs,
                                                const ReferenceCheckOptions& options = {}) {
  ReferenceCheckResult result = check_against_reference(op, std::move(inputs), attrs, options);
  if (!result.ok) ADD_FAILURE() << result.failures;
  return result;
}

}  // namespace unitscale::testing

#include "unitscale/analysis/scale_tracking.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <map>
#include <span>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "analysis/scale_statistics_kernels.hpp"
#include "analysis/svg_text.hpp"
#include "unitscale/atomic_write.hpp"
#include "unitscale/error.hpp"
#include "unitscale/format/detail/codec.hpp"
#include "unitscale/ops/op_def.hpp"

namespace unitscale {

std::string_view tensor_role_name(TensorRole role) {
  switch (role) {
    case TensorRole::kActivation:
      return "activation";
    case TensorRole::kGradient:
      return "gradient";
    case TensorRole::kWeight:
      return "weight";
  }
  return "?";
}

FormatRange format_range(DType format) {
  const std::optional<FormatSpec> spec = dtype_format(format);
  if (!spec) {
    throw Error(fmt::format("format_range: {} is not a low-precision floating format (f16, bf16, "
                            "an 8-bit float)",
                            dtype_name(format)));
  }
  return {.min_subnormal = detail::decode_bits(spec->min_subnormal_code(), *spec),
          .min_normal = detail::decode_bits(spec->min_normal_code(), *spec),
          .max = detail::decode_bits(spec->max_magnitude_code(), *spec)};
}

namespace {

// A format's class boundaries as bit-pattern ranges (scale_statistics_kernels.hpp): lo < |x| ≤ hi
// becomes the unsigned test (|x| − (lo + 1)) < (hi − lo).
detail::FormatClassBits class_bits(const FormatRange& r) {
  auto bits = [](double v) { return std::bit_cast<std::uint32_t>(static_cast<float>(v)); };
  constexpr std::uint32_t kMaxFiniteBits = 0x7f7fffffu;
  // Every limit is a power of two or a format value, exact in float (the formats fit FP32).
  const std::uint32_t half_min_subnormal = bits(r.min_subnormal / 2), min_normal = bits(r.min_normal),
                      max = bits(r.max);
  return {.underflow_lo = 1, .underflow_range = half_min_subnormal,
          .subnormal_lo = half_min_subnormal + 1, .subnormal_range = min_normal - 1 - half_min_subnormal,
          .saturate_lo = max + 1, .saturate_range = kMaxFiniteBits - max};
}

}  // namespace

TensorScale measure_scale(ConstTensorView x, const std::vector<DType>& formats) {
  if (x.dtype() != DType::kF32) {
    throw Error(fmt::format("measure_scale: expects an f32 tensor, got {}", dtype_name(x.dtype())));
  }
  std::vector<detail::FormatClassBits> thresholds;
  for (const DType f : formats) thresholds.push_back(class_bits(format_range(f)));
  const std::int64_t numel = x.numel();
  constexpr std::int64_t kStretch = std::int64_t{1} << 14;  // 64 KiB: stays in L2 between passes
  const std::int64_t stretches = std::max<std::int64_t>(1, (numel + kStretch - 1) / kStretch);
  // Each stretch's moments and its 3 counts per format, scanned in parallel and combined in order,
  // so the result does not depend on the thread count.
  const std::size_t format_count = formats.size();
  std::vector<detail::StretchMoments> moments(static_cast<std::size_t>(stretches));
  std::vector<std::int32_t> counts(static_cast<std::size_t>(stretches) * 3 * format_count);
  const detail::ScaleStatisticsKernels& kernels = detail::scale_statistics_kernels();
  const float* data = x.data();
#pragma omp parallel for schedule(static) if (numel >= 4 * kStretch)
  for (std::int64_t c = 0; c < stretches; ++c) {
    const std::int64_t begin = c * kStretch;
    const auto at = static_cast<std::size_t>(c);
    kernels.scan(data + begin, std::min(kStretch, numel - begin), thresholds.data(),
                 static_cast<int>(format_count), &moments[at], &counts[at * 3 * format_count]);
  }

  detail::StretchMoments total = moments.front();
  for (std::size_t c = 1; c < moments.size(); ++c) {
    const detail::StretchMoments& m = moments[c];
    total.sum += m.sum;
    total.sum_abs += m.sum_abs;
    total.sum_squares += m.sum_squares;
    total.amax = std::max(total.amax, m.amax);
    total.amin = std::min(total.amin, m.amin);
    total.non_finite += m.non_finite;
  }
  // Per format, its underflow, subnormal and saturate counts summed over the stretches.
  std::vector<std::int64_t> class_counts(3 * format_count, 0);
  for (std::size_t i = 0; i < counts.size(); ++i) class_counts[i % class_counts.size()] += counts[i];
  TensorScale s;
  s.numel = numel;
  const double finite = static_cast<double>(std::max<std::int64_t>(numel - total.non_finite, 1));
  const double all = static_cast<double>(std::max<std::int64_t>(numel, 1));
  s.mean_abs = total.sum_abs / finite;
  s.rms = std::sqrt(total.sum_squares / finite);
  const double mean = total.sum / finite;
  s.std = std::sqrt(std::max(0.0, total.sum_squares / finite - mean * mean));
  s.amax = total.amax;
  s.amin = std::isfinite(total.amin) ? total.amin : 0.0;
  s.non_finite = static_cast<double>(total.non_finite) / all;
  for (std::size_t f = 0; f < formats.size(); ++f) {
    s.formats.push_back({.format = formats[f],
                         .underflow = static_cast<double>(class_counts[3 * f]) / all,
                         .subnormal = static_cast<double>(class_counts[3 * f + 1]) / all,
                         .saturate = static_cast<double>(class_counts[3 * f + 2]) / all});
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The tracker
// ---------------------------------------------------------------------------------------------

struct ScaleTracker::State {
  const Graph* graph = nullptr;
  const Executor* executor = nullptr;
  ScaleTrackingOptions options;
  bool recording = true;
  std::uint64_t runs = 0;
  std::uint64_t recording_step = std::numeric_limits<std::uint64_t>::max();
  std::vector<TensorScale> activations_and_gradients;
  std::vector<TensorScale> weights;
  // activations_and_gradients then weights, assembled when asked for (not after every node).
  std::vector<TensorScale> scales;
  bool scales_stale = false;

  const std::vector<TensorScale>& assembled() {
    if (scales_stale) {
      scales = activations_and_gradients;
      scales.insert(scales.end(), weights.begin(), weights.end());
      scales_stale = false;
    }
    return scales;
  }

  std::string label_of(int value) const {
    const ValueInfo& info = graph->info(value);
    if (!info.name.empty()) return info.name;
    if (info.node >= 0) {
      return fmt::format("{} %{}", graph->nodes()[static_cast<std::size_t>(info.node)].op->name,
                         value);
    }
    return fmt::format("%{}", value);
  }

  // The value whose gradient output `o` of backward node `node` is: a backward node's outputs are
  // the gradients of its forward node's inputs; an accumulate_grad node sums the contributions to
  // the gradient of the value it differentiates.
  int gradient_target(const Node& node, std::size_t o) const {
    const int of = node.differentiates;
    if (of < 0) return node.outputs[o];
    if (node.op->name == "accumulate_grad") return of;
    const int forward = graph->info(of).node;
    if (forward < 0) return of;
    const Node& f = graph->nodes()[static_cast<std::size_t>(forward)];
    return o < f.inputs.size() && f.inputs[o] >= 0 ? f.inputs[o] : of;
  }

  // A new run starts: the parameters as this step finds them.
  void start_run() {
    recording_step = executor->step();
    ++runs;
    activations_and_gradients.clear();
    weights.clear();
    scales_stale = true;
    if (!options.weights) return;
    for (int id = 0; id < graph->value_count(); ++id) {
      const ValueInfo& info = graph->info(id);
      if (!info.parameter || info.dtype != DType::kF32) continue;
      const Value v = const_cast<Graph*>(graph)->value(id);
      if (!executor->has_state(v)) continue;
      TensorScale s = measure_scale(executor->state(v), options.formats);
      s.value = id;
      s.label = label_of(id);
      s.role = TensorRole::kWeight;
      weights.push_back(std::move(s));
    }
  }

  void observe(const NodeEvent& event) {
    if (!recording) return;
    if (executor->step() != recording_step) start_run();
    const bool backward = event.phase == Phase::kBackward;
    if (event.phase == Phase::kUpdate || (backward && !options.gradients) ||
        (!backward && !options.activations)) {
      return;
    }
    for (std::size_t o = 0; o < event.outputs.size(); ++o) {
      const TensorView& out = event.outputs[o];
      if (!out.present() || out.dtype() != DType::kF32) continue;
      TensorScale s = measure_scale(out, options.formats);
      s.value = event.node.outputs[o];
      if (backward) {
        s.role = TensorRole::kGradient;
        s.label = "∇ " + label_of(gradient_target(event.node, o));
      } else {
        s.label = label_of(s.value);
      }
      activations_and_gradients.push_back(std::move(s));
    }
    scales_stale = true;
  }
};

ScaleTracker::ScaleTracker(std::shared_ptr<State> state) : state_(std::move(state)) {}

const std::vector<TensorScale>& ScaleTracker::scales() const { return state_->assembled(); }
std::uint64_t ScaleTracker::runs() const { return state_->runs; }
void ScaleTracker::set_recording(bool on) { state_->recording = on; }
bool ScaleTracker::recording() const { return state_->recording; }
const std::vector<DType>& ScaleTracker::formats() const { return state_->options.formats; }

ScaleTracker track_scales(Executor& executor, const Graph& graph, ScaleTrackingOptions options) {
  for (const DType f : options.formats) format_range(f);  // throws naming a bad format
  auto state = std::make_shared<ScaleTracker::State>();
  state->graph = &graph;
  state->executor = &executor;
  state->options = std::move(options);
  executor.add_observer([state](const NodeEvent& event) { state->observe(event); });
  return ScaleTracker(state);
}

MatmulOperandShares matmul_operand_shares(const ScaleTracker& tracker, Graph& graph, DType inputs,
                                          DType gradients) {
  const std::vector<DType>& formats = tracker.formats();
  auto index_of = [&](DType format) {
    const auto at = std::find(formats.begin(), formats.end(), format);
    if (at == formats.end()) {
      throw Error(fmt::format("matmul_operand_shares: the tracker does not measure {} (its formats "
                              "are set by ScaleTrackingOptions::formats)",
                              dtype_name(format)));
    }
    return static_cast<std::size_t>(at - formats.begin());
  };
  const std::size_t input_index = index_of(inputs), gradient_index = index_of(gradients);
  std::map<int, const TensorScale*> by_value;
  for (const TensorScale& s : tracker.scales()) by_value[s.value] = &s;

  // Sums of share × numel per class, then divided by the class's numel.
  struct Sums {
    double underflow = 0, subnormal = 0, saturate = 0, numel = 0;
    void add(const TensorScale& s, std::size_t format) {
      const auto n = static_cast<double>(s.numel);
      underflow += s.formats[format].underflow * n;
      subnormal += s.formats[format].subnormal * n;
      saturate += s.formats[format].saturate * n;
      numel += n;
    }
    FormatFractions shares(DType format) const {
      return {.format = format,
              .underflow = underflow / numel,
              .subnormal = subnormal / numel,
              .saturate = saturate / numel};
    }
  } x, w, g;
  int matmuls = 0;
  for (const Node& node : graph.nodes()) {
    if (!node.op->rounds_gemm_inputs) continue;
    const auto xs = by_value.find(node.inputs[0]), ws = by_value.find(node.inputs[1]);
    const Value gradient = graph.grad_of(graph.value(node.outputs[0]));
    const auto gs = gradient.present() ? by_value.find(gradient.id()) : by_value.end();
    if (xs == by_value.end() || ws == by_value.end() || gs == by_value.end()) continue;
    x.add(*xs->second, input_index);
    w.add(*ws->second, input_index);
    g.add(*gs->second, gradient_index);
    ++matmuls;
  }
  if (matmuls == 0) {
    throw Error("matmul_operand_shares: the tracker's latest run recorded no linear with its "
                "input, weight and output gradient (track a training step, with activations, "
                "weights and gradients on)");
  }
  return {x.shares(inputs), w.shares(inputs), g.shares(gradients)};
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

std::string ScaleTracker::table() const {
  const auto& rows = scales();
  std::size_t width = 6;
  for (const TensorScale& s : rows) width = std::max(width, s.label.size());
  width = std::min<std::size_t>(width, 48);
  std::string out = fmt::format("{:<{}} {:<10} {:>10} {:>10} {:>10} {:>10}", "tensor", width, "role",
                                "numel", "rms", "amax", "amin");
  for (const DType f : state_->options.formats) {
    const std::string name(dtype_name(f));
    out += fmt::format(" {:>9} {:>9} {:>9}", name + " uf%", name + " sub%", name + " sat%");
  }
  out += "\n";
  for (const TensorScale& s : rows) {
    std::string label = s.label.size() > width ? s.label.substr(0, width - 1) + "~" : s.label;
    out += fmt::format("{:<{}} {:<10} {:>10} {:>10.3g} {:>10.3g} {:>10.3g}", label, width,
                       tensor_role_name(s.role), s.numel, s.rms, s.amax, s.amin);
    for (const FormatFractions& f : s.formats) {
      out += fmt::format(" {:>9.2f} {:>9.2f} {:>9.2f}", 100 * f.underflow, 100 * f.subnormal,
                         100 * f.saturate);
    }
    out += "\n";
  }
  return out;
}

std::string ScaleTracker::csv() const {
  std::string out = "value,label,role,numel,mean_abs,rms,std,amax,amin,non_finite";
  for (const DType f : state_->options.formats) {
    const std::string_view n = dtype_name(f);
    out += fmt::format(",{0}_underflow,{0}_subnormal,{0}_saturate", n);
  }
  out += "\n";
  for (const TensorScale& s : scales()) {
    std::string label = s.label;
    std::replace(label.begin(), label.end(), ',', ';');
    std::replace(label.begin(), label.end(), '"', '\'');
    out += fmt::format("{},\"{}\",{},{},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g}", s.value, label,
                       tensor_role_name(s.role), s.numel, s.mean_abs, s.rms, s.std, s.amax, s.amin,
                       s.non_finite);
    for (const FormatFractions& f : s.formats) {
      out += fmt::format(",{:.9g},{:.9g},{:.9g}", f.underflow, f.subnormal, f.saturate);
    }
    out += "\n";
  }
  return out;
}

std::string ScaleTracker::json() const {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorScale& s : scales()) {
    nlohmann::json formats = nlohmann::json::object();
    for (const FormatFractions& f : s.formats) {
      formats[std::string(dtype_name(f.format))] = {
          {"underflow", f.underflow}, {"subnormal", f.subnormal}, {"saturate", f.saturate}};
    }
    tensors.push_back({{"value", s.value},
                       {"label", s.label},
                       {"role", std::string(tensor_role_name(s.role))},
                       {"numel", s.numel},
                       {"mean_abs", s.mean_abs},
                       {"rms", s.rms},
                       {"std", s.std},
                       {"amax", s.amax},
                       {"amin", s.amin},
                       {"non_finite", s.non_finite},
                       {"formats", formats}});
  }
  return nlohmann::json{{"runs", runs()}, {"tensors", tensors}}.dump(1) + "\n";
}

std::string ScaleTracker::chart_svg(const std::string& title) const {
  const auto& rows = scales();
  // The x range: every format line and every tensor's amin..amax, in whole binades.
  double lo = 0, hi = 0;
  auto widen = [&](double v) {
    if (v > 0 && std::isfinite(v)) {
      lo = std::min(lo, std::floor(std::log2(v)));
      hi = std::max(hi, std::ceil(std::log2(v)));
    }
  };
  std::vector<std::pair<DType, FormatRange>> ranges;
  for (const DType f : state_->options.formats) {
    ranges.emplace_back(f, format_range(f));
    widen(ranges.back().second.min_subnormal);
    widen(ranges.back().second.max);
  }
  for (const TensorScale& s : rows) {
    widen(s.amin);
    widen(s.amax);
  }
  lo = std::max(lo - 1, -160.0);
  hi = hi + 1;

  const double left = 300, right_margin = 40, top = 90, row_height = 14;
  const double plot_width = 720;
  const double width = left + plot_width + right_margin;
  const double height = top + row_height * static_cast<double>(std::max<std::size_t>(rows.size(), 1)) + 60;
  const double bottom = height - 60;
  auto px = [&](double v) { return left + (std::log2(v) - lo) / (hi - lo) * plot_width; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{3}</text>\n",
      width, height, left + plot_width / 2, detail::svg_escape(title));
  // Legend.
  svg += fmt::format(
      "<circle cx=\"{0}\" cy=\"40\" r=\"4\" fill=\"#1f77b4\"/><text x=\"{1}\" y=\"44\">activation (forward)</text>\n"
      "<rect x=\"{2}\" y=\"36\" width=\"8\" height=\"8\" fill=\"#d62728\"/><text x=\"{3}\" y=\"44\">gradient (backward)</text>\n"
      "<path d=\"M {4} 35 L {5} 40 L {4} 45 L {6} 40 Z\" fill=\"#2ca02c\"/><text x=\"{7}\" y=\"44\">weight</text>\n"
      "<text x=\"{8}\" y=\"44\" fill=\"#555\">marker: RMS; bar: smallest non-zero to largest |x|</text>\n",
      left + 4, left + 12, left + 150, left + 162, left + 300, left + 305, left + 295, left + 312,
      left + 380);
  // Binade grid and axis.
  const int step = std::max(1, static_cast<int>(std::ceil((hi - lo) / 16)));
  for (int e = static_cast<int>(lo); e <= static_cast<int>(hi); ++e) {
    if (e % step != 0) continue;
    const double x = px(std::ldexp(1.0, e));
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>\n"
                       "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">2^{4}</text>\n",
                       x, top - 8, bottom, bottom + 16, e);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">|x| (log2 scale)</text>\n",
                     left + plot_width / 2, bottom + 40);
  // Format limits, their labels on three staggered rows (row (format + line) mod 3, so that a
  // format's own three labels and the formats sharing a limit, as E5M2 and FP16 share 2^-14,
  // never share a row).
  static constexpr const char* kColors[] = {"#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  for (std::size_t f = 0; f < ranges.size(); ++f) {
    const auto& [format, r] = ranges[f];
    const char* color = kColors[f % std::size(kColors)];
    const std::string name(dtype_name(format));
    const std::pair<double, std::string> lines[] = {{r.min_subnormal, "min sub"},
                                                    {r.min_normal, "min normal"},
                                                    {r.max, "max"}};
    for (std::size_t l = 0; l < std::size(lines); ++l) {
      const auto& [value, what] = lines[l];
      if (l == 1 && r.min_normal == r.min_subnormal) continue;
      const double x = px(value);
      svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"{3}\" "
                         "stroke-dasharray=\"4,3\"/>\n"
                         "<text x=\"{0:.1f}\" y=\"{4}\" fill=\"{3}\" font-size=\"9\" "
                         "text-anchor=\"middle\">{5} {6}</text>\n",
                         x, top - 6, bottom, color, top - 12 - 10.0 * static_cast<double>((f + l) % 3),
                         detail::svg_escape(name), what);
    }
  }
  // One row per tensor.
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const TensorScale& s = rows[i];
    const double y = top + row_height * (static_cast<double>(i) + 0.5);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 8, y + 4,
                       detail::svg_escape(s.label));
    if (s.amax > 0 && s.amin > 0) {
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#bbb\" "
                         "stroke-width=\"2\"/>\n",
                         px(s.amin), y, px(s.amax), y);
    }
    if (!(s.rms > 0)) continue;
    const double x = px(s.rms);
    switch (s.role) {
      case TensorRole::kActivation:
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"#1f77b4\"/>\n", x, y);
        break;
      case TensorRole::kGradient:
        svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"8\" height=\"8\" fill=\"#d62728\"/>\n",
                           x - 4, y - 4);
        break;
      case TensorRole::kWeight:
        svg += fmt::format("<path d=\"M {0:.1f} {1:.1f} L {2:.1f} {3:.1f} L {0:.1f} {4:.1f} L {5:.1f} "
                           "{3:.1f} Z\" fill=\"#2ca02c\"/>\n",
                           x, y - 5, x + 5, y, y + 5, x - 5);
        break;
    }
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
                     left, top - 8, plot_width, bottom - top + 8);
  return svg + "</svg>\n";
}

void ScaleTracker::save_chart(const std::filesystem::path& path, const std::string& title) const {
  write_file_atomically(path, chart_svg(title));
}

std::string charts_side_by_side(const std::vector<std::string>& charts, int columns) {
  const int n = static_cast<int>(charts.size());
  if (columns <= 0 || columns > n) columns = std::max(n, 1);
  const int rows = (n + columns - 1) / columns;
  // Each chart's <svg ...> start and its size.
  struct Chart {
    std::size_t open;
    double width, height;
  };
  auto attribute = [](const std::string& svg, std::size_t from, std::string_view name, int index) {
    const std::string key = std::string(" ") + std::string(name) + "=\"";
    const std::size_t at = svg.find(key, from);
    const std::size_t close = svg.find('>', from);
    if (at == std::string::npos || at > close) {
      throw Error(fmt::format("charts_side_by_side: chart {} has no {} on its <svg> element",
                              index, name));
    }
    return std::stod(svg.substr(at + key.size()));
  };
  std::vector<Chart> sizes;
  std::vector<double> column_width(static_cast<std::size_t>(columns), 0.0);
  std::vector<double> row_height(static_cast<std::size_t>(std::max(rows, 1)), 0.0);
  for (int i = 0; i < n; ++i) {
    const std::string& svg = charts[static_cast<std::size_t>(i)];
    const std::size_t open = svg.find("<svg ");
    if (open == std::string::npos) {
      throw Error(fmt::format("charts_side_by_side: chart {} is not an <svg> element", i));
    }
    const Chart c{open, attribute(svg, open, "width", i), attribute(svg, open, "height", i)};
    auto& w = column_width[static_cast<std::size_t>(i % columns)];
    auto& h = row_height[static_cast<std::size_t>(i / columns)];
    w = std::max(w, c.width);
    h = std::max(h, c.height);
    sizes.push_back(c);
  }
  double total_width = 0, total_height = 0;
  for (const double w : column_width) total_width += w;
  for (const double h : row_height) total_height += h;
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      total_width, total_height);
  for (int i = 0; i < n; ++i) {
    double x = 0, y = 0;
    for (int c = 0; c < i % columns; ++c) x += column_width[static_cast<std::size_t>(c)];
    for (int r = 0; r < i / columns; ++r) y += row_height[static_cast<std::size_t>(r)];
    // A nested <svg> is a viewport of its own, placed by x and y.
    std::string chart = charts[static_cast<std::size_t>(i)].substr(sizes[static_cast<std::size_t>(i)].open);
    chart.insert(5, fmt::format("x=\"{}\" y=\"{}\" ", x, y));
    out += chart;
    if (out.back() != '\n') out += '\n';
  }
  return out + "</svg>\n";
}

}  // namespace unitscale

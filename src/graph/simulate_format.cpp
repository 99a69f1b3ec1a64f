#include "unitscale/graph/simulate_format.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "ops/counter_hash.hpp"
#include "unitscale/error.hpp"
#include "unitscale/ops/round_to_format.hpp"

namespace unitscale {

namespace {

constexpr std::string_view kPass = "simulate_format";

bool is_attention(const Node& node) { return node.op->attention_gemms; }

// "<module>.weight" or "....<module>.weight".
bool belongs_to(std::string_view weight, const std::string& module) {
  const std::string leaf = module + ".weight";
  return weight == leaf || weight.ends_with("." + leaf);
}

void check_value_format(DType format) {
  if (format == DType::kI32 || format == DType::kE8M0FNU) {
    throw Error(fmt::format("{}: values cannot be rounded to {} (expected f32 for none, f16, bf16 "
                            "or an 8-bit float with a sign)",
                            kPass, dtype_name(format)));
  }
}

}  // namespace

std::vector<std::string> critical_matmul_modules() { return {"attn.out", "mlp.down"}; }

SimulateFormatOptions SimulateFormatOptions::fp8(bool keep_critical_matmuls) {
  SimulateFormatOptions options;
  if (keep_critical_matmuls) options.high_precision_modules = critical_matmul_modules();
  return options;
}

SimulateFormatOptions SimulateFormatOptions::fp16() {
  return {.matmuls = {.inputs = DType::kF16,
                      .gradients = DType::kF16,
                      .overflow = Overflow::kNonFinite,
                      .gradient_overflow = Overflow::kNonFinite},
          .values = DType::kF16};
}

SimulateFormatOptions SimulateFormatOptions::bf16() {
  return {.matmuls = {.inputs = DType::kBF16,
                      .gradients = DType::kBF16,
                      .overflow = Overflow::kNonFinite,
                      .gradient_overflow = Overflow::kNonFinite},
          .values = DType::kBF16};
}

SimulateFormatOptions SimulateFormatOptions::named(std::string_view recipe) {
  if (recipe == "fp8") return fp8();
  if (recipe == "fp8-critical") return fp8(/*keep_critical_matmuls=*/true);
  if (recipe == "fp16") return fp16();
  if (recipe == "bf16") return bf16();
  throw Error(fmt::format("{}: unknown recipe '{}' (expected fp8, fp8-critical, fp16 or bf16)", kPass,
                          recipe));
}

std::string SimulateFormatReport::to_string() const {
  const std::size_t total = rounded_matmuls.size() + kept_matmuls.size();
  std::string text = fmt::format("{}: {} of {} matmuls rounded", kPass, rounded_matmuls.size(), total);
  if (!kept_matmuls.empty()) text += fmt::format(", kept in fp32: {}", fmt::join(kept_matmuls, ", "));
  if (rounded_values > 0) text += fmt::format("; {} values rounded", rounded_values);
  return text;
}

SimulateFormatReport simulate_format(Graph& graph, const SimulateFormatOptions& options) {
  check_gemm_input_format(options.matmuls.inputs, kPass, "matmul input format");
  check_gemm_input_format(options.matmuls.gradients, kPass, "matmul gradient format");
  check_value_format(options.values);
  const std::span<const Node> nodes = graph.nodes();
  if (options.values != DType::kF32) {
    const auto backward = std::find_if(nodes.begin(), nodes.end(),
                                       [](const Node& node) { return node.differentiates >= 0; });
    if (backward != nodes.end()) {
      throw Error(fmt::format("{}: rounding every value to {} needs the forward graph alone, but "
                              "node {} ({}) belongs to a backward pass; run {} before autodiff",
                              kPass, dtype_name(options.values), backward - nodes.begin(),
                              backward->op->name, kPass));
    }
  }

  // Which matmuls keep fp32, checked before anything changes.
  SimulateFormatReport report;
  std::vector<int> rounded;
  std::vector<bool> module_used(options.high_precision_modules.size(), false);
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    if (!nodes[n].op->rounds_gemm_inputs) continue;
    if (is_attention(nodes[n])) {
      if (!options.attention_inputs) continue;
      report.rounded_matmuls.push_back(fmt::format("attention (node {})", n));
      rounded.push_back(static_cast<int>(n));
      continue;
    }
    const std::string& weight = graph.info(nodes[n].inputs[1]).name;
    const std::string label = weight.empty() ? fmt::format("node {}", n) : weight;
    bool keep = false;
    for (std::size_t m = 0; m < module_used.size(); ++m) {
      if (belongs_to(weight, options.high_precision_modules[m])) keep = module_used[m] = true;
    }
    (keep ? report.kept_matmuls : report.rounded_matmuls).push_back(label);
    if (!keep) rounded.push_back(static_cast<int>(n));
  }
  if (!module_used.empty() && std::none_of(module_used.begin(), module_used.end(),
                                           [](bool used) { return used; })) {
    throw Error(fmt::format("{}: no high-precision module has a matmul (no linear weight named "
                            "'<module>.weight' or '....<module>.weight' for {})",
                            kPass, fmt::join(options.high_precision_modules, ", ")));
  }

  for (const int n : rounded) {
    GemmInputFormats formats = options.matmuls;
    formats.seed = static_cast<std::int64_t>(
        detail::splitmix64(static_cast<std::uint64_t>(options.matmuls.seed)) ^
        static_cast<std::uint64_t>(n));
    Attributes changes;
    formats.record_in(changes);
    graph.set_attributes(n, changes);
  }

  if (options.values != DType::kF32) {
    // Every f32 value read by a node, as the graph stood before the pass (the inserted nodes'
    // outputs are not rounded again).
    const int value_count = graph.value_count();
    for (int id = 0; id < value_count; ++id) {
      if (graph.is_dead(id) || graph.info(id).dtype != DType::kF32) continue;
      const Value v = graph.value(id);
      if (graph.uses(v).empty()) continue;
      const Value stored = round_to_format(
          v, options.values, {.gradient_format = options.values, .overflow = options.value_overflow});
      graph.replace_uses(v, stored);
      ++report.rounded_values;
    }
  }
  return report;
}

}  // namespace unitscale

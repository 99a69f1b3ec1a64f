// The worked example of docs/architecture.md, compiled and checked: a pass that rounds every GEMM
// weight to bf16 and back (insert_weight_casts), and one training step of a small MLP through the
// builders, autodiff, that pass, dead-code elimination and the executor.
//
// The regions between "// [doc:NAME]" and "// [end]" are the code blocks of the page that follow
// "<!-- [doc:NAME] -->"; ArchitectureDoc.CodeBlocksMatchThisFile fails if the two drift apart.
// The page is found through the UNITSCALE_SOURCE_DIR compile definition set by tests/CMakeLists.txt.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/matmul.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/graph/dead_code.hpp"
#include "unitscale/graph/executor.hpp"

namespace unitscale {
namespace {

using namespace ::testing;

// [doc:insert_casts]
// Rounds every weight a GEMM reads (the right operand of matmul, the weight of linear and
// linear_readout) to bf16 and back, so that the GEMMs, forward and backward, see bf16 values while
// every value stays f32: a small simulate-format pass. Returns the number of cast nodes recorded.
int insert_weight_casts(Graph& graph) {
  // 1. Read and decide. Each GEMM node reads its weight as input 1, and so does its backward
  //    node: one of the nodes autodiff recorded for it (Node::differentiates is the GEMM's output).
  //    The others (accumulate_grad) read no weight, and replace_uses leaves them as they are.
  std::map<int, std::vector<int>> readers;  // weight value id -> indices of the nodes to rewire
  const std::span<const Node> nodes = graph.nodes();  // not used once step 2 records nodes
  for (const int n : graph.execution_order()) {
    const Node& node = nodes[n];
    const std::string_view op = node.op->name;
    if (op != "matmul" && op != "linear" && op != "linear_readout") continue;
    readers[node.inputs[1]].push_back(n);
    for (int b = 0; b < static_cast<int>(nodes.size()); ++b) {
      if (nodes[b].differentiates == node.outputs[0]) readers[node.inputs[1]].push_back(b);
    }
  }
  // 2. Edit. The casts are appended (no node index changes) and only the listed readers are
  //    rewired: the first cast, and any other reader of the weight, keep reading the f32 value.
  int recorded = 0;
  for (const auto& [weight, nodes_to_rewire] : readers) {
    const Value w = graph.value(weight);
    const Value rounded = cast(cast(w, DType::kBF16), DType::kF32);
    graph.replace_uses(w, rounded, nodes_to_rewire);
    recorded += 2;
  }
  return recorded;
}
// [end]

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  Tensor t(shape);
  for (float& v : t.span()) v = normal(rng);
  return t;
}

Tensor rounded_to_bf16(const Tensor& t) {
  Tensor r(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r[i] = to_float(convert<bfloat16>(t[i]));
  return r;
}

struct StepResult {
  float loss = 0;
  Tensor grad_w1, grad_w2;
};

// The same MLP without the pass: the reference the rounded graph is compared with.
StepResult reference_step(const Tensor& x_data, const Tensor& label_data, const Tensor& w1_data,
                          const Tensor& w2_data) {
  Graph g;
  const Value x = g.input("x", {8, 16});
  const Value labels = g.input("labels", {8}, DType::kI32);
  const Value w1 = g.parameter("w1", {32, 16});
  const Value w2 = g.parameter("w2", {4, 32});
  const Value loss = cross_entropy(linear_readout(gelu(linear(x, w1)), w2), labels);
  const Value params[] = {w1, w2};
  const std::vector<Value> grads = autodiff(g, loss, params);
  const Value keep[] = {loss, grads[0], grads[1]};
  Executor exec(g, keep);
  exec.bind(x, x_data);
  exec.bind(labels, label_data);
  exec.bind(w1, w1_data);
  exec.bind(w2, w2_data);
  exec.run();
  return {exec.get(loss).data()[0], copy_of(exec.get(grads[0])), copy_of(exec.get(grads[1]))};
}

// The pass records two casts per weight; the step runs, with forward nodes before backward ones
// and no update; the loss and gradients equal the unrounded graph's on weights rounded to bf16
// beforehand (the rounding is the only difference, and the backward GEMMs see it too), and are
// within bf16 precision of the f32 ones; dead-code elimination removes exactly the probe.
TEST(ArchitectureExample, TrainingStepWithTheCastPass) {
  std::mt19937 rng(2024);
  const Tensor x_data = random_tensor({8, 16}, rng);
  const Tensor w1_data = random_tensor({32, 16}, rng);
  const Tensor w2_data = random_tensor({4, 32}, rng);
  const Tensor label_data(Shape{8}, std::vector<std::int32_t>{0, 1, 2, 3, 3, 2, 1, 0});

  // [doc:training_step]
  Graph g;  // unit-scaled
  const Value x = g.input("x", {8, 16});
  const Value labels = g.input("labels", {8}, DType::kI32);  // class ids are i32
  const Value w1 = g.parameter("w1", {32, 16});
  const Value w2 = g.parameter("w2", {4, 32});
  const Value h = gelu(linear(x, w1));  // shapes, dtypes and unit scales are checked here
  const Value probe = mean(mul(h, h));  // a diagnostic that the step does not need
  const Value loss = cross_entropy(linear_readout(h, w2), labels);
  const Value params[] = {w1, w2};
  const std::vector<Value> grads = autodiff(g, loss, params);  // appends the backward nodes

  const int casts = insert_weight_casts(g);  // passes edit g in place
  const Value keep[] = {loss, grads[0], grads[1]};
  const int removed = eliminate_dead_code(g, keep);  // drops mul and mean (the probe)

  Executor exec(g, keep);  // plans: order, GEMM primitives, arena
  exec.bind(x, x_data);
  exec.bind(labels, label_data);
  exec.bind(w1, w1_data);
  exec.bind(w2, w2_data);
  std::vector<Phase> phases;
  exec.add_observer([&](const NodeEvent& event) { phases.push_back(event.phase); });
  exec.set_profiling(true);
  exec.run();
  const float step_loss = exec.get(loss).data()[0];
  // [end]

  // The pass: two casts per weight, and every GEMM node, forward and backward, reads a rounded
  // weight (the output of a cast to f32).
  EXPECT_EQ(casts, 4);
  std::vector<int> gemm_outputs;  // of linear and linear_readout
  for (const Node& node : g.nodes()) {
    if (node.op->name == "linear" || node.op->name == "linear_readout") {
      gemm_outputs.push_back(node.outputs[0]);
    }
  }
  ASSERT_EQ(gemm_outputs.size(), 2u);
  int gemm_nodes = 0;
  int cast_nodes = 0;
  for (const Node& node : g.nodes()) {
    const std::string_view op = node.op->name;
    if (op == "cast") ++cast_nodes;
    const int forward = node.differentiates >= 0 ? node.differentiates : node.outputs[0];
    if (std::find(gemm_outputs.begin(), gemm_outputs.end(), forward) == gemm_outputs.end()) continue;
    ++gemm_nodes;
    const int producer = g.info(node.inputs[1]).node;
    ASSERT_GE(producer, 0) << op << " reads the f32 parameter directly";
    EXPECT_EQ(g.nodes()[static_cast<std::size_t>(producer)].op->name, "cast") << op;
    EXPECT_EQ(g.info(node.inputs[1]).dtype, DType::kF32) << op;
  }
  EXPECT_EQ(gemm_nodes, 4);  // linear, linear_readout and their two backward nodes
  EXPECT_EQ(cast_nodes, 4);
  // The parameters themselves are read only by the first casts.
  for (const Value w : {w1, w2}) {
    const std::vector<Graph::Use> uses = g.uses(w);
    ASSERT_EQ(uses.size(), 1u);
    EXPECT_EQ(g.nodes()[static_cast<std::size_t>(uses[0].node)].op->name, "cast");
  }

  // Dead code: exactly the probe's mul and mean; value ids survive, the probe is dead.
  EXPECT_EQ(removed, 2);
  EXPECT_TRUE(g.is_dead(probe.id()));
  EXPECT_FALSE(g.is_dead(loss.id()));
  EXPECT_EQ(g.grad_of(w1), grads[0]);
  EXPECT_EQ(g.grad_of(w2), grads[1]);

  // The executor: every planned node reported once, the forward phase first, then the backward;
  // no update ops (the library has none yet).
  ASSERT_EQ(phases.size(), exec.planned_node_count());
  EXPECT_EQ(std::count(phases.begin(), phases.end(), Phase::kBackward), 4);
  EXPECT_EQ(std::count(phases.begin(), phases.end(), Phase::kUpdate), 0);
  EXPECT_TRUE(std::is_partitioned(phases.begin(), phases.end(),
                                  [](Phase p) { return p == Phase::kForward; }));
  EXPECT_GT(exec.peak_bytes(), 0u);
  std::map<std::string, std::uint64_t> calls;
  std::uint64_t backward_calls = 0;
  for (const OpProfile& p : exec.profile()) {
    calls[p.op] = p.calls;
    if (p.op.ends_with("_backward")) backward_calls += p.calls;
  }
  EXPECT_EQ(calls["cast"], 4u);
  EXPECT_EQ(calls["linear"], 1u);
  EXPECT_EQ(calls["linear_readout"], 1u);
  EXPECT_EQ(backward_calls, 4u);

  // Numbers: the step equals the unrounded graph on pre-rounded weights (loss and gradients), and
  // is within bf16 precision of the f32 step.
  const StepResult exact = reference_step(x_data, label_data, w1_data, w2_data);
  const StepResult rounded =
      reference_step(x_data, label_data, rounded_to_bf16(w1_data), rounded_to_bf16(w2_data));
  EXPECT_FLOAT_EQ(step_loss, rounded.loss);
  EXPECT_NE(step_loss, exact.loss);  // the rounding did happen
  EXPECT_NEAR(step_loss, exact.loss, 0x1p-8 * std::abs(exact.loss));
  for (std::int64_t i = 0; i < w1_data.numel(); ++i) {
    EXPECT_NEAR(exec.get(grads[0]).data()[i], rounded.grad_w1[i], 1e-5f) << "grad w1 " << i;
  }
  for (std::int64_t i = 0; i < w2_data.numel(); ++i) {
    EXPECT_NEAR(exec.get(grads[1]).data()[i], rounded.grad_w2[i], 1e-5f) << "grad w2 " << i;
  }
}

// The consumer list: a weight shared by two matmuls and also read by another op gets one pair of
// casts; both matmuls read the rounded value and the other reader keeps the f32 one. An executor
// made before the pass refuses to run; one made after runs.
TEST(ArchitectureExample, CastPassRewiresOnlyTheGemmReaders) {
  Graph g;
  const Value a = g.input("a", {3, 4});
  const Value b = g.input("b", {3, 4});
  const Value w = g.parameter("w", {4, 5});
  const Value left = matmul(a, w);
  const Value right = matmul(b, w);
  const Value norm = sum(mul(w, w));
  const Value outputs[] = {left, right, norm};
  Executor before(g, outputs);

  EXPECT_EQ(insert_weight_casts(g), 2);
  const Node& first = g.nodes()[static_cast<std::size_t>(g.info(left).node)];
  const Node& second = g.nodes()[static_cast<std::size_t>(g.info(right).node)];
  EXPECT_EQ(first.inputs[1], second.inputs[1]);
  EXPECT_NE(first.inputs[1], w.id());
  EXPECT_EQ(first.inputs[0], a.id());  // the left operand is not a weight
  const Node& square = g.nodes()[static_cast<std::size_t>(g.info(norm).node - 1)];
  ASSERT_EQ(square.op->name, "mul");
  EXPECT_EQ(square.inputs[0], w.id());
  EXPECT_EQ(square.inputs[1], w.id());

  const Tensor at = Tensor::filled({3, 4}, 1.0f), bt = Tensor::filled({3, 4}, 2.0f);
  const Tensor wt = Tensor::filled({4, 5}, 1.0f + 0x1p-10f);  // not a bf16 value
  EXPECT_THAT([&] { before.run(); }, ThrowsMessage<Error>(HasSubstr("graph changed")));
  Executor after(g, outputs);
  after.bind(a, at);
  after.bind(b, bt);
  after.bind(w, wt);
  after.run();
  // Unit-scaled matmul: α = K^-½ = 1/2; the rounded weight is 1, the f32 one is not.
  EXPECT_FLOAT_EQ(after.get(left).data()[0], 0.5f * 4.0f * 1.0f);
  EXPECT_FLOAT_EQ(after.get(right).data()[0], 0.5f * 4.0f * 2.0f);
  EXPECT_FLOAT_EQ(after.get(norm).data()[0], 20.0f * (1.0f + 0x1p-10f) * (1.0f + 0x1p-10f));
}

// ---- The page and this file agree --------------------------------------------------------------

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << "cannot read " << path.string();
  return text.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string trimmed(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  return std::string(s.substr(first, s.find_last_not_of(" \t\r") - first + 1));
}

// The lines with their common indentation removed, joined with '\n'.
std::string dedented(const std::vector<std::string>& lines) {
  std::size_t indent = std::string::npos;
  for (const std::string& line : lines) {
    if (!trimmed(line).empty()) indent = std::min(indent, line.find_first_not_of(' '));
  }
  std::string text;
  for (const std::string& line : lines) {
    text += (trimmed(line).empty() ? std::string() : line.substr(indent)) + "\n";
  }
  return text;
}

// NAME -> the code between "// [doc:NAME]" and the next "// [end]".
std::map<std::string, std::string> regions_of_source(const std::string& source) {
  std::map<std::string, std::string> regions;
  const std::vector<std::string> lines = lines_of(source);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string line = trimmed(lines[i]);
    if (!line.starts_with("// [doc:") || !line.ends_with("]")) continue;
    const std::string name = line.substr(8, line.size() - 9);
    std::vector<std::string> body;
    std::size_t j = i + 1;
    while (j < lines.size() && trimmed(lines[j]) != "// [end]") body.push_back(lines[j++]);
    EXPECT_LT(j, lines.size()) << "region " << name << " has no // [end]";
    EXPECT_FALSE(regions.contains(name)) << "region " << name << " appears twice";
    regions[name] = dedented(body);
    i = j;
  }
  return regions;
}

// NAME -> the fenced code block right after "<!-- [doc:NAME] -->".
std::map<std::string, std::string> blocks_of_doc(const std::string& doc) {
  std::map<std::string, std::string> blocks;
  const std::vector<std::string> lines = lines_of(doc);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string line = trimmed(lines[i]);
    if (!line.starts_with("<!-- [doc:") || !line.ends_with("] -->")) continue;
    const std::string name = line.substr(10, line.size() - 15);
    std::size_t j = i + 1;
    EXPECT_TRUE(j < lines.size() && trimmed(lines[j]).starts_with("```"))
        << "<!-- [doc:" << name << "] --> must be followed by a code block";
    std::vector<std::string> body;
    for (++j; j < lines.size() && trimmed(lines[j]) != "```"; ++j) body.push_back(lines[j]);
    EXPECT_FALSE(blocks.contains(name)) << "block " << name << " appears twice";
    blocks[name] = dedented(body);
    i = j;
  }
  return blocks;
}

TEST(ArchitectureDoc, CodeBlocksMatchThisFile) {
  const std::filesystem::path root(UNITSCALE_SOURCE_DIR);
  const auto regions = regions_of_source(
      read_text(root / "tests" / "graph" / "architecture_example_test.cpp"));
  const auto blocks = blocks_of_doc(read_text(root / "docs" / "architecture.md"));
  EXPECT_TRUE(regions.contains("insert_casts"));
  EXPECT_TRUE(regions.contains("training_step"));
  for (const auto& [name, code] : regions) {
    const auto block = blocks.find(name);
    if (block == blocks.end()) {
      ADD_FAILURE() << "docs/architecture.md has no block <!-- [doc:" << name << "] -->";
      continue;
    }
    EXPECT_EQ(block->second, code) << "docs/architecture.md's block " << name
                                   << " differs from tests/graph/architecture_example_test.cpp";
  }
  for (const auto& [name, code] : blocks) {
    EXPECT_TRUE(regions.contains(name)) << "docs/architecture.md's block " << name
                                        << " has no region in the test";
  }
}

// The checker is not vacuous: dedenting keeps relative indentation and a changed line differs.
TEST(ArchitectureDoc, CheckerSeesEdits) {
  const std::string source = "x\n  // [doc:a]\n  int f() {\n    return 1;\n  }\n  // [end]\n";
  const auto regions = regions_of_source(source);
  ASSERT_TRUE(regions.contains("a"));
  EXPECT_EQ(regions.at("a"), "int f() {\n  return 1;\n}\n");
  const auto same = blocks_of_doc("<!-- [doc:a] -->\n```cpp\nint f() {\n  return 1;\n}\n```\n");
  EXPECT_EQ(same.at("a"), regions.at("a"));
  const auto edited = blocks_of_doc("<!-- [doc:a] -->\n```cpp\nint f() {\n  return 2;\n}\n```\n");
  EXPECT_NE(edited.at("a"), regions.at("a"));
}

}  // namespace
}  // namespace unitscale

// Regression tests for edge inputs and per-node scale overrides, over every op and every builder.
//
// 1. Edge inputs (EdgeInputs). Every op of forward_ops() (through Graph::apply, with only the
//    attributes it requires) and every public builder gets, for each input in turn, a rank-0 value
//    and values with a zero-sized first or last dimension, the other inputs keeping valid shapes;
//    the ConsistentEmpty cases add empty inputs that agree with each other (an empty batch through
//    every input, K = 0, no output features), which one-at-a-time replacement cannot reach. Either
//    recording throws a unitscale::Error that names the op and shows the offending shape, or it
//    records nodes whose unit scales are finite and positive, and then forward and backward run
//    through an Executor on tensors of those shapes, giving outputs of the inferred shapes. A
//    crash, another exception type or a non-finite scale is a library bug. (The first run found
//    Shape::outer() dividing by zero for a last dimension of 0, reached through linear's and
//    matmul's GEMM views: the linear_*_0 and matmul_k_0_broadcast cases.)
// 2. set_scale (SetScale, UndeclaredScale). For every op, with valid example inputs in a
//    unit-scaled graph: every declared scale can be overridden, the forward and backward nodes both
//    get the value (whether autodiff ran before or after), and the executed outputs change:
//    affinely in the scale, and in proportion for "alpha" (the forward output) and "beta_<input>"
//    (that input's gradient). Undeclared names and values that are not finite and positive are
//    refused, naming the op and the valid names, and change nothing.
// 3. Exhaustiveness (ExampleTables). A new op in forward_ops() without an entry in op_examples()
//    below, or without a builder in builder_subjects(), fails ExampleTables.CoverEveryOp.
//
// Outcomes worth knowing (EmptyReductions): over an empty set sum and the "sum" losses give 0,
// while mean and the "mean" losses (mse_loss, cross_entropy over zero rows) record and give NaN
// when run (0/0, as NumPy); max over an empty axis is an Error when recorded. Unit-scale rules that
// would divide by an empty dimension (linear and conv1d over an empty batch, matmul with K = 0, add
// broadcasting over an empty tensor without a constraint) are Errors when recorded; layer_norm,
// rms_norm, embedding and matmul's batch count treat an empty batch as 1. Set
// UNITSCALE_EDGE_VERBOSE=1 to print each edge case's outcome.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "unitscale/error.hpp"
#include "unitscale/graph/autodiff.hpp"
#include "unitscale/ops/activation.hpp"
#include "unitscale/ops/attention.hpp"
#include "unitscale/ops/cast.hpp"
#include "unitscale/ops/round_to_format.hpp"
#include "unitscale/ops/dynamic_rescale.hpp"
#include "unitscale/ops/conv1d.hpp"
#include "unitscale/ops/dropout.hpp"
#include "unitscale/ops/elementwise.hpp"
#include "unitscale/ops/embedding.hpp"
#include "unitscale/ops/linear.hpp"
#include "unitscale/ops/loss.hpp"
#include "unitscale/ops/matmul.hpp"
#include "unitscale/ops/normalization.hpp"
#include "unitscale/ops/primitives.hpp"
#include "unitscale/ops/residual.hpp"
#include "unitscale/ops/softmax.hpp"
#include "unitscale/graph/executor.hpp"
#include "unitscale/graph/graph.hpp"
#include "unitscale/ops/registry.hpp"

namespace unitscale {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// ---- Index inputs ---------------------------------------------------------------------------
// Embedding ids and cross_entropy labels: i32 values.
Value index_input(Graph& graph, std::string name, Shape shape) {
  return graph.input(std::move(name), std::move(shape), DType::kI32);
}
// Zeros: id 0 is valid for every table (V >= 1) and class 0 for every V >= 2.
Tensor index_tensor(const Shape& shape) { return Tensor(shape, DType::kI32); }

// Positive, varied values (log and sqrt stay finite, max has a clear winner), different for each
// `salt` so that two inputs of one shape differ.
Tensor data_tensor(const Shape& shape, int salt) {
  Tensor t(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    t[i] = 0.25f + static_cast<float>((i * 37 + salt * 11) % 101) / 80.0f;
  }
  return t;
}

bool verbose() { return std::getenv("UNITSCALE_EDGE_VERBOSE") != nullptr; }

// ---- What is tested: ops and builders with valid example inputs ------------------------------

struct Operand {
  std::string name;
  Shape shape;
  bool index = false;  // ids or labels: built through index_input / index_tensor
};

// Records the op or builder on the given input values (absent values for left-out optional
// inputs) and returns its outputs.
using Recorder = std::function<std::vector<Value>(Graph&, std::span<const Value>)>;

struct Subject {
  std::string name;                            // the test name: an op name, or a builder name
  std::string op;                              // the op whose name errors must contain
  std::vector<std::optional<Operand>> inputs;  // std::nullopt: an optional input left out
  Recorder record;
};

// One valid example per op, with the attributes the op requires (the others keep their defaults):
// reshape, transpose, slice, concat, max, dropout and the residual ops cannot be recorded without
// theirs, and matmul and conv1d (unlike linear) require "constraint" in unit-scaled graphs.
// Optional inputs are given, so that every scale the op declares is read by some kernel.
struct OpExample {
  std::vector<std::optional<Operand>> inputs;
  Attributes attrs;
};

Operand in(std::string name, Shape shape) { return {std::move(name), std::move(shape), false}; }
Operand ids(std::string name, Shape shape) { return {std::move(name), std::move(shape), true}; }

const std::map<std::string, OpExample, std::less<>>& op_examples() {
  static const auto* const table = new std::map<std::string, OpExample, std::less<>>{
      {"matmul",
       {{in("left", {2, 3, 4}), in("right", {4, 5})},
        {{"constraint", std::string("to_output_scale")}}}},
      {"linear", {{in("x", {3, 4}), in("weight", {5, 4}), in("bias", {5})}, {}}},
      {"linear_readout", {{in("x", {3, 4}), in("weight", {5, 4}), in("bias", {5})}, {}}},
      {"conv1d",
       {{in("x", {2, 4, 6}), in("weight", {6, 4, 3}), in("bias", {6})},
        {{"constraint", std::string("to_output_scale")}}}},
      {"add", {{in("a", {3, 4}), in("b", {4})}, {}}},
      {"mul", {{in("a", {3, 4}), in("b", {3, 4})}, {}}},
      {"scale", {{in("x", {3, 4})}, {}}},
      {"relu", {{in("x", {3, 4})}, {}}},
      {"gelu", {{in("x", {3, 4})}, {}}},
      {"silu", {{in("x", {3, 4})}, {}}},
      {"silu_glu", {{in("x", {3, 4}), in("gate", {3, 4})}, {}}},
      {"softmax", {{in("x", {3, 4})}, {}}},
      {"dropout", {{in("x", {3, 4})}, {{"p", 0.25}, {"seed", std::int64_t{3}}}}},
      {"layer_norm", {{in("x", {3, 4}), in("weight", {4}), in("bias", {4})}, {}}},
      {"rms_norm", {{in("x", {3, 4}), in("weight", {4})}, {}}},
      {"residual_split", {{in("x", {3, 4})}, {{"tau", 0.5}}}},
      {"residual_add", {{in("residual", {3, 4}), in("skip", {3, 4})}, {{"tau", 0.5}}}},
      {"embedding", {{ids("ids", {2, 3}), in("table", {5, 4})}, {}}},
      {"scaled_dot_product_attention", {{in("q", {3, 4}), in("k", {5, 4}), in("v", {5, 6})}, {}}},
      {"cross_entropy", {{in("logits", {3, 5}), ids("labels", {3})}, {}}},
      {"mse_loss", {{in("a", {3, 4}), in("b", {3, 4})}, {}}},
      {"reshape", {{in("x", {3, 4})}, {{"shape", std::vector<std::int64_t>{-1, 2}}}}},
      {"transpose", {{in("x", {3, 4})}, {{"dim0", std::int64_t{0}}, {"dim1", std::int64_t{-1}}}}},
      {"slice",
       {{in("x", {3, 4})},
        {{"axis", std::int64_t{-1}}, {"start", std::int64_t{1}}, {"end", std::int64_t{3}}}}},
      {"concat", {{in("a", {3, 4}), in("b", {2, 4})}, {{"axis", std::int64_t{0}}}}},
      {"sum", {{in("x", {3, 4})}, {}}},
      {"mean", {{in("x", {3, 4})}, {}}},
      {"max", {{in("x", {3, 4})}, {{"axis", std::int64_t{-1}}}}},
      {"exp", {{in("x", {3, 4})}, {}}},
      {"log", {{in("x", {3, 4})}, {}}},
      {"sqrt", {{in("x", {3, 4})}, {}}},
      {"where", {{in("cond", {3, 4}), in("a", {3, 4}), in("b", {3, 4})}, {}}},
      {"cast", {{in("x", {3, 4})}, {{"dtype", std::string("f32")}, {"scale", 0.5}}}},
      {"round_to_format", {{in("x", {3, 4})}, {{"format", std::string("f16")}}}},
      {"dynamic_rescale", {{in("x", {3, 4})}, {{"statistic", std::string("max")}}}},
  };
  return *table;
}

const OpExample* example_of(std::string_view op) {
  const auto it = op_examples().find(op);
  return it == op_examples().end() ? nullptr : &it->second;
}

std::vector<Subject> op_subjects() {
  std::vector<Subject> subjects;
  for (const OpDef* op : forward_ops()) {
    const OpExample* example = example_of(op->name);
    if (example == nullptr) continue;  // ExampleTables.CoverEveryOp reports it
    subjects.push_back({std::string(op->name), std::string(op->name), example->inputs,
                        [op, attrs = example->attrs](Graph& g, std::span<const Value> inputs) {
                          return g.apply(*op, inputs, attrs);
                        }});
  }
  return subjects;
}

// Adapts a builder of one output.
template <class F>
Recorder one(F f) {
  return [f](Graph&, std::span<const Value> v) { return std::vector<Value>{f(v)}; };
}

// Every public builder of include/unitscale/ops/, with the options that change which
// shapes are valid exercised by extra entries.
std::vector<Subject> builder_subjects() {
  return {
      {"relu", "relu", {in("x", {3, 4})}, one([](auto v) { return relu(v[0]); })},
      {"gelu", "gelu", {in("x", {3, 4})}, one([](auto v) { return gelu(v[0]); })},
      {"gelu_tanh", "gelu", {in("x", {3, 4})}, one([](auto v) {
         return gelu(v[0], {.mult = 0.5, .approximate = GeluApproximation::kTanh});
       })},
      {"silu", "silu", {in("x", {3, 4})}, one([](auto v) { return silu(v[0]); })},
      {"silu_glu", "silu_glu", {in("x", {3, 4}), in("gate", {3, 4})}, one([](auto v) {
         return silu_glu(v[0], v[1]);
       })},
      {"scaled_dot_product_attention",
       "scaled_dot_product_attention",
       {in("q", {2, 3, 4}), in("k", {2, 5, 4}), in("v", {2, 5, 6})},
       one([](auto v) { return scaled_dot_product_attention(v[0], v[1], v[2]); })},
      {"scaled_dot_product_attention_causal_dropout",
       "scaled_dot_product_attention",
       {in("q", {3, 4}), in("k", {3, 4}), in("v", {3, 2})},
       one([](auto v) {
         return scaled_dot_product_attention(
             v[0], v[1], v[2], {.mask = AttentionMask::kCausal, .dropout = 0.25, .seed = 5});
       })},
      {"conv1d",
       "conv1d",
       {in("x", {2, 4, 6}), in("weight", {6, 4, 3}), in("bias", {6})},
       one([](auto v) { return conv1d(v[0], v[1], {.bias = v[2]}); })},
      {"conv1d_grouped", "conv1d", {in("x", {2, 4, 6}), in("weight", {6, 2, 3})}, one([](auto v) {
         return conv1d(v[0], v[1], {.stride = 2, .padding = 1, .dilation = 2, .groups = 2});
       })},
      {"conv1d_padded_gmean", "conv1d", {in("x", {4, 5}), in("weight", {3, 4, 3})}, one([](auto v) {
         return conv1d(v[0], v[1], {.padding = 2, .constraint = Constraint::kGMean});
       })},
      {"dropout", "dropout", {in("x", {3, 4})}, one([](auto v) {
         return dropout(v[0], {.p = 0.25, .seed = 1});
       })},
      {"dropout_eval", "dropout", {in("x", {3, 4})}, one([](auto v) {
         return dropout(v[0], {.p = 0.25, .mode = DropoutMode::kEval});
       })},
      {"add", "add", {in("a", {3, 4}), in("b", {3, 4})}, one([](auto v) {
         return add(v[0], v[1]);
       })},
      {"add_broadcast_unconstrained", "add", {in("a", {3, 4}), in("b", {4})}, one([](auto v) {
         return add(v[0], v[1], {.constraint = Constraint::kNone});
       })},
      {"add_float", "add", {in("x", {3, 4})}, one([](auto v) { return add(v[0], 1.5f); })},
      {"mul", "mul", {in("a", {3, 4}), in("b", {4})}, one([](auto v) { return mul(v[0], v[1]); })},
      {"scale", "scale", {in("x", {3, 4})}, one([](auto v) { return scale(v[0], 0.5, 2.0); })},
      {"scale_fwd", "scale", {in("x", {3, 4})}, one([](auto v) { return scale_fwd(v[0], 0.5); })},
      {"scale_bwd", "scale", {in("x", {3, 4})}, one([](auto v) { return scale_bwd(v[0], 2.0); })},
      {"embedding", "embedding", {ids("ids", {2, 3}), in("table", {5, 4})}, one([](auto v) {
         return embedding(v[0], v[1]);
       })},
      {"linear",
       "linear",
       {in("x", {2, 3, 4}), in("weight", {5, 4}), in("bias", {5})},
       one([](auto v) { return linear(v[0], v[1], {.bias = v[2]}); })},
      {"linear_gmean", "linear", {in("x", {3, 4}), in("weight", {5, 4})}, one([](auto v) {
         return linear(v[0], v[1], {.constraint = Constraint::kGMean});
       })},
      {"linear_readout",
       "linear_readout",
       {in("x", {3, 4}), in("weight", {5, 4}), in("bias", {5})},
       one([](auto v) { return linear_readout(v[0], v[1], {.bias = v[2]}); })},
      {"cross_entropy",
       "cross_entropy",
       {in("logits", {3, 5}), ids("labels", {3})},
       one([](auto v) { return cross_entropy(v[0], v[1]); })},
      {"cross_entropy_single",
       "cross_entropy",
       {in("logits", {5}), ids("labels", {})},
       one([](auto v) { return cross_entropy(v[0], v[1], {.reduction = Reduction::kSum}); })},
      {"mse_loss", "mse_loss", {in("a", {3, 4}), in("b", {3, 4})}, one([](auto v) {
         return mse_loss(v[0], v[1]);
       })},
      {"matmul", "matmul", {in("left", {2, 3, 4}), in("right", {2, 4, 5})}, one([](auto v) {
         return matmul(v[0], v[1]);
       })},
      {"matmul_broadcast_unconstrained",
       "matmul",
       {in("left", {2, 3, 4}), in("right", {4, 5})},
       one([](auto v) { return matmul(v[0], v[1], {.constraint = Constraint::kNone}); })},
      {"layer_norm",
       "layer_norm",
       {in("x", {3, 4}), in("weight", {4}), in("bias", {4})},
       one([](auto v) { return layer_norm(v[0], {.weight = v[1], .bias = v[2]}); })},
      {"rms_norm", "rms_norm", {in("x", {3, 4}), in("weight", {4})}, one([](auto v) {
         return rms_norm(v[0], {.weight = v[1]});
       })},
      {"reshape", "reshape", {in("x", {3, 4})}, one([](auto v) {
         return reshape(v[0], {-1, 2});
       })},
      {"transpose", "transpose", {in("x", {2, 3, 4})}, one([](auto v) {
         return transpose(v[0], 0, -1);
       })},
      {"slice", "slice", {in("x", {3, 4})}, one([](auto v) { return slice(v[0], -1, 1, -1); })},
      {"concat_span",
       "concat",
       {in("a", {3, 4}), in("b", {2, 4}), in("c", {1, 4})},
       one([](auto v) { return concat(v, 0); })},
      {"concat_list", "concat", {in("a", {3, 4}), in("b", {3, 2})}, one([](auto v) {
         return concat({v[0], v[1]}, -1);
       })},
      {"sum", "sum", {in("x", {3, 4})}, one([](auto v) { return sum(v[0]); })},
      {"sum_last_keepdims", "sum", {in("x", {3, 4})}, one([](auto v) {
         return sum(v[0], {-1}, {.keepdims = KeepDims::kYes});
       })},
      {"mean", "mean", {in("x", {3, 4})}, one([](auto v) { return mean(v[0]); })},
      {"mean_first", "mean", {in("x", {3, 4})}, one([](auto v) { return mean(v[0], {0}); })},
      {"max", "max", {in("x", {3, 4})}, one([](auto v) { return unitscale::max(v[0], -1); })},
      {"exp", "exp", {in("x", {3, 4})}, one([](auto v) { return unitscale::exp(v[0]); })},
      {"log", "log", {in("x", {3, 4})}, one([](auto v) { return unitscale::log(v[0]); })},
      {"sqrt", "sqrt", {in("x", {3, 4})}, one([](auto v) { return unitscale::sqrt(v[0]); })},
      {"where", "where", {in("cond", {3, 4}), in("a", {3, 4}), in("b", {3, 4})}, one([](auto v) {
         return where(v[0], v[1], v[2]);
       })},
      {"cast", "cast", {in("x", {3, 4})}, one([](auto v) {
         return cast(cast(v[0], DType::kE5M2), DType::kF32, {.scale = 2.0});
       })},
      {"round_to_format", "round_to_format", {in("x", {3, 4})}, one([](auto v) {
         return round_to_format(v[0], DType::kBF16, {.gradient_format = DType::kF16});
       })},
      {"dynamic_rescale", "dynamic_rescale", {in("x", {3, 4})}, one([](auto v) {
         return dynamic_rescale(v[0], {.direction = RescaleDirection::kBackward});
       })},
      {"residual_split",
       "residual_split",
       {in("x", {3, 4})},
       [](Graph&, std::span<const Value> v) {
         const ResidualSplit split = residual_split(v[0], 0.5);
         return std::vector<Value>{split.branch, split.skip};
       }},
      {"residual_add",
       "residual_add",
       {in("residual", {3, 4}), in("skip", {3, 4})},
       one([](auto v) { return residual_add(v[0], v[1], 0.5); })},
      {"softmax", "softmax", {in("x", {3, 4})}, one([](auto v) { return softmax(v[0]); })},
      {"softmax_unconstrained", "softmax", {in("x", {2, 3, 4})}, one([](auto v) {
         return softmax(v[0], {.mult = 0.25, .constraint = Constraint::kNone});
       })},
  };
}

const std::vector<Subject>& all_ops() {
  static const auto* const subjects = new std::vector<Subject>(op_subjects());
  return *subjects;
}
const std::vector<Subject>& all_builders() {
  static const auto* const subjects = new std::vector<Subject>(builder_subjects());
  return *subjects;
}

// ---- Recording and running --------------------------------------------------------------------

// The graph inputs of a case, made from its operands (absent where an optional input is left out).
std::vector<Value> make_inputs(Graph& g, const std::vector<std::optional<Operand>>& operands) {
  std::vector<Value> values;
  for (const auto& operand : operands) {
    if (!operand) {
      values.emplace_back();
    } else if (operand->index) {
      values.push_back(index_input(g, operand->name, operand->shape));
    } else {
      values.push_back(g.input(operand->name, operand->shape));
    }
  }
  return values;
}

// Every node's declared scales that are set must be finite and positive.
void expect_finite_positive_scales(const Graph& g, const std::string& where) {
  for (const Node& node : g.nodes()) {
    for (const std::string_view name : node.op->scales) {
      if (!node.attrs.has(name)) continue;
      const double value = node.attrs.get_double(node.op->name, name);
      EXPECT_TRUE(std::isfinite(value) && value > 0)
          << where << ": " << node.op->name << " scale " << name << " = " << value;
    }
  }
}

// A scalar that depends on every output: Σ_o Σ(out_o · seed_o), with the seeds graph inputs. Its
// gradient with respect to each output is that output's seed, whatever the scales are.
Value seeded_total(Graph& g, const std::vector<Value>& outputs) {
  Value total;
  for (std::size_t o = 0; o < outputs.size(); ++o) {
    if (!outputs[o].present()) continue;
    const Value seed = g.input(fmt::format("seed{}", o), outputs[o].shape());
    const Value term = sum(mul(outputs[o], seed));
    total = total.present() ? add(total, term) : term;
  }
  return total;
}

// Runs `requested` with every graph input bound (index inputs to index tensors) and returns copies
// of the requested values, checking that each has its value's shape.
std::vector<Tensor> run(Graph& g, const std::vector<Value>& requested,
                        const std::set<int>& index_ids) {
  Executor exec(g, requested);
  std::vector<Tensor> bound;
  bound.reserve(static_cast<std::size_t>(g.value_count()));
  for (int id = 0; id < g.value_count(); ++id) {
    const ValueInfo& info = g.info(id);
    if (info.kind != ValueKind::kInput) continue;
    bound.push_back(index_ids.contains(id) ? index_tensor(info.shape)
                                           : data_tensor(info.shape, id));
    exec.bind(g.value(id), bound.back());
  }
  exec.run();
  std::vector<Tensor> results;
  for (const Value& v : requested) {
    const ConstTensorView view = exec.get(v);
    EXPECT_EQ(view.shape(), v.shape());
    results.emplace_back(view.shape(), view.span());
  }
  return results;
}

std::set<int> index_ids(const std::vector<Value>& inputs,
                        const std::vector<std::optional<Operand>>& operands) {
  std::set<int> ids;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (operands[i] && operands[i]->index) ids.insert(inputs[i].id());
  }
  return ids;
}

// ---- 1. Edge inputs ---------------------------------------------------------------------------

enum class Edge { kRank0, kFirstDimZero, kLastDimZero };

std::string_view edge_name(Edge edge) {
  switch (edge) {
    case Edge::kRank0:
      return "rank0";
    case Edge::kFirstDimZero:
      return "first_dim_0";
    case Edge::kLastDimZero:
      return "last_dim_0";
  }
  return "";
}

// The edge form of a valid shape; std::nullopt where it is the shape itself or another variant.
std::optional<Shape> edge_shape(const Shape& shape, Edge edge) {
  switch (edge) {
    case Edge::kRank0:
      if (shape.rank() == 0) return std::nullopt;
      return Shape{};
    case Edge::kFirstDimZero:
      if (shape.rank() < 1) return std::nullopt;
      return shape.with_dim(0, 0);
    case Edge::kLastDimZero:
      if (shape.rank() < 2) return std::nullopt;
      return shape.with_dim(-1, 0);
  }
  return std::nullopt;
}

// One case: a subject with some of its inputs replaced by edge shapes.
struct EdgeCase {
  std::string name;
  const Subject* subject;
  std::vector<std::optional<Operand>> operands;
  Shape shown;  // an edge shape that an error should show
};

void PrintTo(const EdgeCase& c, std::ostream* os) { *os << c.name; }

// Each input in turn replaced by its rank-0 and zero-sized forms.
std::vector<EdgeCase> edge_cases(const std::vector<Subject>& subjects) {
  std::vector<EdgeCase> cases;
  for (const Subject& subject : subjects) {
    for (std::size_t i = 0; i < subject.inputs.size(); ++i) {
      if (!subject.inputs[i]) continue;
      for (const Edge edge : {Edge::kRank0, Edge::kFirstDimZero, Edge::kLastDimZero}) {
        const std::optional<Shape> shape = edge_shape(subject.inputs[i]->shape, edge);
        if (!shape) continue;
        EdgeCase c{fmt::format("{}_{}_{}", subject.name, subject.inputs[i]->name, edge_name(edge)),
                   &subject, subject.inputs, *shape};
        c.operands[i]->shape = *shape;
        cases.push_back(std::move(c));
      }
    }
  }
  return cases;
}

const Subject& builder_named(std::string_view name) {
  for (const Subject& subject : all_builders()) {
    if (subject.name == name) return subject;
  }
  throw std::logic_error("no builder subject " + std::string(name));
}

// Empty inputs whose shapes agree with each other, which one-at-a-time replacement cannot reach:
// an empty batch through every input, an empty contraction (K = 0) or feature dimension.
std::vector<EdgeCase> consistent_empty_cases() {
  struct Spec {
    std::string name;
    std::string builder;
    std::vector<std::optional<Shape>> shapes;  // std::nullopt: keep the example's operand
  };
  const std::vector<Spec> specs = {
      {"linear_batch_0", "linear", {Shape{0, 3, 4}, std::nullopt, std::nullopt}},
      {"linear_k_0", "linear", {Shape{2, 3, 0}, Shape{5, 0}, std::nullopt}},
      {"linear_out_0", "linear", {std::nullopt, Shape{0, 4}, Shape{0}}},
      {"linear_readout_out_0", "linear_readout", {std::nullopt, Shape{0, 4}, Shape{0}}},
      {"matmul_batch_0", "matmul", {Shape{0, 3, 4}, Shape{0, 4, 5}}},
      {"matmul_m_0", "matmul", {Shape{2, 0, 4}, std::nullopt}},
      {"matmul_k_0", "matmul", {Shape{2, 3, 0}, Shape{2, 0, 5}}},
      {"matmul_k_0_broadcast", "matmul_broadcast_unconstrained", {Shape{2, 3, 0}, Shape{0, 5}}},
      {"matmul_n_0_broadcast", "matmul_broadcast_unconstrained", {std::nullopt, Shape{4, 0}}},
      {"conv1d_batch_0", "conv1d", {Shape{0, 4, 6}, std::nullopt, std::nullopt}},
      {"conv1d_c_out_0", "conv1d", {std::nullopt, Shape{0, 4, 3}, Shape{0}}},
      {"conv1d_c_in_0", "conv1d", {Shape{2, 0, 6}, Shape{6, 0, 3}, std::nullopt}},
      {"attention_batch_0",
       "scaled_dot_product_attention",
       {Shape{0, 3, 4}, Shape{0, 5, 4}, Shape{0, 5, 6}}},
      {"cross_entropy_batch_0", "cross_entropy", {Shape{0, 5}, Shape{0}}},
      {"mse_loss_empty", "mse_loss", {Shape{0, 4}, Shape{0, 4}}},
      {"add_empty", "add", {Shape{3, 0}, Shape{3, 0}}},
      {"add_broadcast_over_empty", "add_broadcast_unconstrained", {Shape{0, 4}, std::nullopt}},
      {"mul_empty", "mul", {Shape{0, 4}, std::nullopt}},
      {"silu_glu_empty", "silu_glu", {Shape{3, 0}, Shape{3, 0}}},
      {"where_empty", "where", {Shape{0, 4}, Shape{0, 4}, Shape{0, 4}}},
      {"residual_add_empty", "residual_add", {Shape{3, 0}, Shape{3, 0}}},
      {"layer_norm_batch_0", "layer_norm", {Shape{0, 4}, std::nullopt, std::nullopt}},
      {"rms_norm_batch_0", "rms_norm", {Shape{0, 4}, std::nullopt}},
      {"embedding_empty_ids", "embedding", {Shape{0}, std::nullopt}},
      {"concat_both_empty", "concat_list", {Shape{3, 0}, Shape{3, 0}}},
      {"slice_empty_range", "slice", {Shape{3, 2}}},
  };
  std::vector<EdgeCase> cases;
  for (const Spec& spec : specs) {
    const Subject& subject = builder_named(spec.builder);
    EdgeCase c{spec.name, &subject, subject.inputs, {}};
    bool shown = false;
    for (std::size_t i = 0; i < spec.shapes.size(); ++i) {
      if (!spec.shapes[i]) continue;
      c.operands.at(i).value().shape = *spec.shapes[i];
      if (!shown) c.shown = *spec.shapes[i];
      shown = true;
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// Known library bugs in files this test's author may not edit: case name -> the bug. Each case is
// skipped until the bug is fixed; then delete its entry.
// The outcome an edge case must have: an Error naming the op and showing the shape when recorded,
// or a node with finite positive scales whose forward and backward run on tensors of these shapes
// and give outputs of the inferred shapes.
void check_edge_case(const EdgeCase& c, Scaling scaling) {
  const Subject& subject = *c.subject;
  Graph g(scaling);
  const std::vector<Value> inputs = make_inputs(g, c.operands);
  std::vector<Value> outputs;
  try {
    outputs = subject.record(g, inputs);
  } catch (const Error& e) {
    const std::string message = e.what();
    if (verbose()) fmt::print("[edge] {}: Error: {}\n", c.name, message);
    EXPECT_THAT(message, HasSubstr(subject.op)) << c.name;
    EXPECT_THAT(message, HasSubstr(c.shown.to_string()))
        << c.name << ": the error should show the offending shape";
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": recording threw a non-unitscale exception: " << e.what();
    return;
  }
  if (verbose()) {
    std::vector<std::string> shapes;
    for (const Value& v : outputs) shapes.push_back(v.present() ? v.shape().to_string() : "_");
    fmt::print("[edge] {}: recorded, outputs {}\n", c.name, fmt::join(shapes, " "));
  }
  expect_finite_positive_scales(g, c.name);

  // Forward and backward on tensors of these shapes.
  const std::set<int> indices = index_ids(inputs, c.operands);
  std::vector<Value> wrt;
  for (const Value& v : inputs) {
    if (v.present() && !indices.contains(v.id())) wrt.push_back(v);
  }
  const std::vector<Value> grads = autodiff(g, seeded_total(g, outputs), wrt);
  std::vector<Value> requested = outputs;
  for (const Value& grad : grads) {
    if (grad.present()) requested.push_back(grad);
  }
  try {
    run(g, requested, indices);
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": recorded, but running forward and backward threw: " << e.what();
  }
}

class EdgeInputs : public ::testing::TestWithParam<EdgeCase> {};

TEST_P(EdgeInputs, ErrorNamingTheOpOrFiniteScalesAndARun) {
  const EdgeCase& c = GetParam();
  for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
    SCOPED_TRACE(scaling == Scaling::kUnit ? "unit-scaled graph" : "unscaled graph");
    check_edge_case(c, scaling);
  }
}

std::string param_name(const ::testing::TestParamInfo<EdgeCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Ops, EdgeInputs, ::testing::ValuesIn(edge_cases(all_ops())), param_name);
INSTANTIATE_TEST_SUITE_P(Builders, EdgeInputs, ::testing::ValuesIn(edge_cases(all_builders())),
                         param_name);
INSTANTIATE_TEST_SUITE_P(ConsistentEmpty, EdgeInputs, ::testing::ValuesIn(consistent_empty_cases()),
                         param_name);

// What the empty reductions give when they record: sum 0, mean NaN (0/0, as NumPy), and the same
// for the two losses' reductions; max over an empty axis has no value and is refused.
TEST(EmptyReductions, SumIsZeroMeanIsNaNMaxIsAnError) {
  Graph g;
  const Value x = g.input("x", {0, 4});
  const Value sum_all = sum(x), sum_rows = sum(x, {0}), mean_all = mean(x),
              mean_rows = mean(x, {0});
  const Value logits = g.input("logits", {0, 5});
  const Value labels = index_input(g, "labels", {0});
  const Value ce_mean = cross_entropy(logits, labels);
  const Value ce_sum = cross_entropy(logits, labels, {.reduction = Reduction::kSum});
  const Value mse_mean = mse_loss(x, x);
  const Value mse_sum = mse_loss(x, x, {.reduction = Reduction::kSum});
  EXPECT_EQ(sum_rows.shape(), (Shape{4}));
  EXPECT_EQ(mean_rows.shape(), (Shape{4}));
  EXPECT_THAT([&] { unitscale::max(x, 0); },
              ::testing::ThrowsMessage<Error>(HasSubstr("max: axis 0 of x [0, 4] is empty")));
  const std::vector<Value> requested = {sum_all, sum_rows, mean_all, mean_rows,
                                        ce_mean, ce_sum,   mse_mean, mse_sum};
  const std::vector<Tensor> r = run(g, requested, {labels.id()});
  EXPECT_EQ(r[0][0], 0.0f);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r[1][i], 0.0f);
  EXPECT_TRUE(std::isnan(r[2][0]));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(r[3][i]));
  EXPECT_TRUE(std::isnan(r[4][0]));
  EXPECT_EQ(r[5][0], 0.0f);
  EXPECT_TRUE(std::isnan(r[6][0]));
  EXPECT_EQ(r[7][0], 0.0f);
}

// A kernel of width 0 is named as such (it used to be reported as "x is shorter than the kernel",
// with a required length of 1 − dilation).
TEST(EdgeMessages, Conv1dEmptyKernelIsNamed) {
  Graph g;
  const Value x = g.input("x", {2, 4, 6});
  for (const std::int64_t dilation : {1, 2}) {
    EXPECT_THAT(
        [&] {
          conv1d(x, g.parameter("w", {6, 4, 0}), {.dilation = dilation});
        },
        ::testing::ThrowsMessage<Error>(
            HasSubstr("conv1d: weight [6, 4, 0] has an empty kernel (k = 0)")));
  }
}

// ---- 2. set_scale -----------------------------------------------------------------------------

struct Recorded {
  std::vector<Value> inputs;
  std::vector<Value> outputs;
  std::vector<Value> grads;  // per input; absent for index inputs and left-out ones
  std::set<int> index_ids;
  int node = -1;  // the forward node, in g.nodes()
};

// Records the op on its example inputs; with `differentiate`, also the seeded total and its
// backward pass.
Recorded record_example(Graph& g, const OpDef& op, bool differentiate) {
  const OpExample& example = *example_of(op.name);
  Recorded r;
  r.inputs = make_inputs(g, example.inputs);
  r.index_ids = index_ids(r.inputs, example.inputs);
  r.outputs = g.apply(op, r.inputs, example.attrs);
  r.node = g.info(r.outputs.front()).node;
  r.grads.resize(r.inputs.size());
  if (differentiate) {
    std::vector<Value> wrt;
    std::vector<std::size_t> positions;
    for (std::size_t i = 0; i < r.inputs.size(); ++i) {
      if (r.inputs[i].present() && !r.index_ids.contains(r.inputs[i].id())) {
        wrt.push_back(r.inputs[i]);
        positions.push_back(i);
      }
    }
    const std::vector<Value> grads = autodiff(g, seeded_total(g, r.outputs), wrt);
    for (std::size_t j = 0; j < grads.size(); ++j) r.grads[positions[j]] = grads[j];
  }
  return r;
}

// The backward nodes autodiff recorded for the forward node that produced `output`.
std::vector<int> backward_nodes(const Graph& g, const OpDef& op, Value output) {
  std::vector<int> found;
  for (std::size_t n = 0; n < g.nodes().size(); ++n) {
    const Node& node = g.nodes()[n];
    if (node.differentiates == output.id() && op.backward_kernel != nullptr && node.op == &backward_of(op)) {
      found.push_back(static_cast<int>(n));
    }
  }
  return found;
}

double max_abs(std::span<const float> x) {
  double m = 0;
  for (const float v : x) m = std::max(m, static_cast<double>(std::abs(v)));
  return m;
}

// expected[i] ≈ actual[i], to a tolerance relative to the largest magnitude.
void expect_all_near(std::span<const double> expected, std::span<const float> actual,
                     const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  double scale = 0;
  for (const double v : expected) scale = std::max(scale, std::abs(v));
  const double tolerance = 1e-5 * scale + 1e-6;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], tolerance) << what << " at element " << i;
  }
}

// Parameterised by op name: SetScale over the ops that declare scales, UndeclaredScale over all.
class SetScale : public ::testing::TestWithParam<std::string> {
 protected:
  const OpDef& op() const { return op_by_name(GetParam()); }
};
class UndeclaredScale : public SetScale {};

// For each declared scale: set_scale changes the attribute on the forward node and on the backward
// node autodiff already recorded, and the executed outputs change affinely in the scale, in
// proportion for "alpha" (the output) and for "beta_<input>" (that input's gradient).
TEST_P(SetScale, EveryDeclaredScaleReachesForwardAndBackwardAndTheResults) {
  const OpDef& op = this->op();
  ASSERT_FALSE(op.scales.empty());
  for (const std::string_view name : op.scales) {
    SCOPED_TRACE(fmt::format("{} scale {}", op.name, name));
    Graph g;
    const Recorded r = record_example(g, op, /*differentiate=*/true);
    const std::vector<int> backward = backward_nodes(g, op, r.outputs.front());
    ASSERT_EQ(backward.size(), 1u) << "autodiff recorded no single backward node";
    std::vector<Value> requested = r.outputs;
    for (const Value& grad : r.grads) {
      if (grad.present()) requested.push_back(grad);
    }
    const double old =
        g.nodes()[static_cast<std::size_t>(r.node)].attrs.get_double(op.name, name, 1.0);
    const std::vector<Tensor> t0 = run(g, requested, r.index_ids);

    std::vector<std::vector<Tensor>> runs;
    for (const double factor : {2.0, 3.0}) {
      const std::uint64_t version = g.version();
      // Through the first output, then the last (the same node for multi-output ops).
      g.set_scale(factor == 2.0 ? r.outputs.front() : r.outputs.back(), name, factor * old);
      EXPECT_GT(g.version(), version) << "an overridden scale must invalidate executors";
      EXPECT_EQ(g.nodes()[static_cast<std::size_t>(r.node)].attrs.get_double(op.name, name),
                factor * old);
      EXPECT_EQ(g.nodes()[static_cast<std::size_t>(backward[0])].attrs.get_double(op.name, name),
                factor * old)
          << "the backward node did not get the new value";
      runs.push_back(run(g, requested, r.index_ids));
    }
    const std::vector<Tensor>& t1 = runs[0];
    const std::vector<Tensor>& t2 = runs[1];

    bool changed = false;
    for (std::size_t k = 0; k < requested.size(); ++k) {
      // Affine in the scale: t2 − t0 = 2·(t1 − t0).
      std::vector<double> expected;
      for (std::int64_t i = 0; i < t0[k].numel(); ++i) {
        expected.push_back(t0[k][i] + 2.0 * (static_cast<double>(t1[k][i]) - t0[k][i]));
        changed = changed || t1[k][i] != t0[k][i];
      }
      expect_all_near(expected, t2[k].span(), fmt::format("requested value {} (3x vs 2x)", k));
    }
    EXPECT_TRUE(changed) << "no output or gradient depends on " << name
                         << ": the op declares a scale its kernels do not read";

    // In proportion: alpha scales the output, beta_<input> that input's gradient.
    std::optional<std::size_t> proportional;
    if (name == "alpha") proportional = 0;
    std::size_t k = r.outputs.size();
    for (std::size_t i = 0; i < r.inputs.size(); ++i) {
      if (!r.grads[i].present()) continue;
      if (name == fmt::format("beta_{}", op.input_name(i))) proportional = k;
      ++k;
    }
    if (proportional) {
      const Tensor& base = t0[*proportional];
      ASSERT_GT(max_abs(base.span()), 0.0) << "the example gives a zero result";
      std::vector<double> doubled;
      for (const float v : base.span()) doubled.push_back(2.0 * v);
      expect_all_near(doubled, t1[*proportional].span(), "the result at 2x the scale");
    } else {  // the other scales keep to the naming convention of op_def.hpp
      EXPECT_TRUE(name.starts_with("alpha") || name.starts_with("beta_")) << name;
    }
  }
}

// A scale overridden before autodiff reaches the backward node recorded afterwards.
TEST_P(SetScale, BackwardRecordedLaterGetsTheOverriddenValue) {
  const OpDef& op = this->op();
  ASSERT_FALSE(op.scales.empty());
  Graph g;
  Recorded r = record_example(g, op, /*differentiate=*/false);
  std::map<std::string_view, double> set;
  double value = 0.375;
  for (const std::string_view name : op.scales) {
    g.set_scale(r.outputs.front(), name, value);
    set[name] = value;
    value *= 1.5;
  }
  std::vector<Value> wrt;
  for (const Value& v : r.inputs) {
    if (v.present() && !r.index_ids.contains(v.id())) wrt.push_back(v);
  }
  autodiff(g, seeded_total(g, r.outputs), wrt);
  const std::vector<int> backward = backward_nodes(g, op, r.outputs.front());
  ASSERT_EQ(backward.size(), 1u);
  for (const auto& [name, expected] : set) {
    EXPECT_EQ(g.nodes()[static_cast<std::size_t>(r.node)].attrs.get_double(op.name, name),
              expected);
    EXPECT_EQ(g.nodes()[static_cast<std::size_t>(backward[0])].attrs.get_double(op.name, name),
              expected)
        << name;
  }
}

// Names the op does not declare: an Error naming the op and listing the valid names; nothing
// changes.
TEST_P(UndeclaredScale, IsRefusedWithTheValidNames) {
  const OpDef& op = this->op();
  Graph g;
  const Recorded r = record_example(g, op, /*differentiate=*/true);
  std::vector<std::string> names = {"beta_nonexistent"};
  if (std::find(op.scales.begin(), op.scales.end(), "alpha") == op.scales.end()) {
    names.push_back("alpha");
  }
  const std::vector<int> backward = backward_nodes(g, op, r.outputs.front());
  const std::string forward_before = g.nodes()[static_cast<std::size_t>(r.node)].attrs.to_string();
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::uint64_t version = g.version();
    try {
      g.set_scale(r.outputs.front(), name, 0.5);
      ADD_FAILURE() << "set_scale accepted '" << name << "' on " << op.name;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_THAT(message, HasSubstr(std::string(op.name)));
      EXPECT_THAT(message, HasSubstr(name));
      for (const std::string_view valid : op.scales) {
        EXPECT_THAT(message, HasSubstr(std::string(valid)));
      }
      if (op.scales.empty()) {
        EXPECT_THAT(message, HasSubstr("no unit scales"));
      }
    }
    EXPECT_EQ(g.version(), version);
    EXPECT_EQ(g.nodes()[static_cast<std::size_t>(r.node)].attrs.to_string(), forward_before);
    for (const int n : backward) {
      EXPECT_FALSE(g.nodes()[static_cast<std::size_t>(n)].attrs.has(name) &&
                   g.nodes()[static_cast<std::size_t>(n)].attrs.get_double(op.name, name, 0) ==
                       0.5);
    }
  }
}

// Zero, negative, infinite and NaN values: an Error naming the op and the scale; nothing changes.
TEST_P(SetScale, NonFiniteAndNonPositiveValuesAreRefused) {
  const OpDef& op = this->op();
  ASSERT_FALSE(op.scales.empty());
  Graph g;
  const Recorded r = record_example(g, op, /*differentiate=*/true);
  const std::string before = g.to_string();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  for (const std::string_view name : op.scales) {
    for (const double bad : {0.0, -0.0, -1.0, -kInf, kInf, std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::denorm_min() * -1}) {
      SCOPED_TRACE(fmt::format("{} = {}", name, bad));
      const std::uint64_t version = g.version();
      EXPECT_THAT([&] { g.set_scale(r.outputs.front(), name, bad); },
                  ::testing::ThrowsMessage<Error>(::testing::AllOf(
                      HasSubstr(std::string(op.name)), HasSubstr(std::string(name)),
                      HasSubstr("finite and positive"))));
      EXPECT_EQ(g.version(), version);
    }
  }
  EXPECT_EQ(g.to_string(), before);
}

// Kernels read scales as float: a value beyond FLT_MAX (inf in float) or below FLT_MIN (subnormal
// or 0 in float) is refused too, naming the op, the scale and the value; the ends of float's normal
// range are accepted (set_scale used to accept anything finite and positive, up to DBL_MAX).
TEST_P(SetScale, ValuesOutsideFloatsNormalRangeAreRefused) {
  const OpDef& op = this->op();
  Graph g;
  const Recorded r = record_example(g, op, /*differentiate=*/true);
  constexpr double kFltMax = std::numeric_limits<float>::max(), kFltMin = std::numeric_limits<float>::min();
  for (const std::string_view name : op.scales) {
    for (const double bad : {1e300, std::nextafter(kFltMax, 1e300), 1e39, 1e-40,
                             std::nextafter(kFltMin, 0.0), std::numeric_limits<double>::denorm_min()}) {
      SCOPED_TRACE(fmt::format("{} = {}", name, bad));
      const std::uint64_t version = g.version();
      EXPECT_THAT([&] { g.set_scale(r.outputs.front(), name, bad); },
                  ::testing::ThrowsMessage<Error>(::testing::AllOf(
                      HasSubstr(fmt::format("set_scale: {} {} must be finite and positive, in float's "
                                            "normal range", op.name, name)),
                      HasSubstr(fmt::format("got {}", bad)))));
      EXPECT_EQ(g.version(), version);
    }
    for (const double good : {kFltMax, kFltMin}) {
      g.set_scale(r.outputs.front(), name, good);
      EXPECT_EQ(g.nodes()[static_cast<std::size_t>(r.node)].attrs.get_double(op.name, name), good);
    }
  }
}

// A unit-scale rule whose result is finite but outside float's normal range is refused when
// recorded, naming the op and the scale (only non-finite results were refused): linear with
// α = fan_in^-40 = 2^-160, and conv1d with α = (C_in·k)^-400 = 12^-400, 0 in double.
TEST(EdgeMessages, RuleScalesOutsideFloatsNormalRangeAreRefused) {
  Graph g;
  const Value x = g.input("x", {4, 16});
  EXPECT_THAT([&] { linear(x, g.parameter("w", {8, 16}), {.scale_power = {.alpha = 40.0}}); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(
                  HasSubstr("linear: the unit scale alpha is 6.8"), HasSubstr("[4, 16], [8, 16]"),
                  HasSubstr("expected a finite positive number in float's normal range"))));
  const Value xc = g.input("xc", {2, 4, 8});
  EXPECT_THAT(
      [&] {
        conv1d(xc, g.parameter("wc", {4, 4, 3}),
               {.constraint = Constraint::kNone, .scale_power = {.alpha = 400.0}});
      },
      ::testing::ThrowsMessage<Error>(::testing::AllOf(
          HasSubstr("conv1d: the unit scale alpha is 0"), HasSubstr("float's normal range"))));
  EXPECT_EQ(g.nodes().size(), 0u);
}

// Shape refuses dims whose element count does not fit in int64 (the product of the non-zero dims,
// so that numel(), outer() and every partial product are safe), and an op whose output would have
// such a shape names itself (found by the graph fuzzer as shape-numel-overflow: reshape of an empty
// tensor to [2^63 − 1, -1], then a conv1d weight [C_out, 2^63 − 1, k]).
TEST(EdgeMessages, ShapesWithMoreThanInt64ElementsAreRefused) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t k2p62 = std::int64_t{1} << 62;
  const auto overflows = [](const std::string& dims) {
    return ::testing::ThrowsMessage<Error>(::testing::AllOf(
        HasSubstr("Shape: dimensions " + dims), HasSubstr("more elements than int64 can count")));
  };
  EXPECT_THAT(([] { (void)Shape{k2p62, 4}; }), overflows("[4611686018427387904, 4]"));
  EXPECT_THAT(([] { (void)Shape{kMax, 2, 0}; }), overflows("[9223372036854775807, 2, 0]"));
  EXPECT_THAT(([] { (void)Shape(std::vector<std::int64_t>{0, k2p62, k2p62}); }),
              overflows("[0, 4611686018427387904, 4611686018427387904]"));
  EXPECT_THAT(([] { (void)Shape{3, -1}; }),
              ::testing::ThrowsMessage<Error>(HasSubstr("Shape: dimensions must be non-negative, got [3, -1]")));
  EXPECT_THAT(([] { (void)Shape{2, 3}.with_dim(0, kMax); }), overflows("[9223372036854775807, 3]"));
  const Shape edge{kMax, 0};
  EXPECT_EQ(edge.numel(), 0);
  EXPECT_EQ(edge.outer(), kMax);
  EXPECT_EQ((Shape{kMax}).numel(), kMax);

  Graph g(Scaling::kUnscaled);
  const Value wide = reshape(g.input("empty", {0}), {kMax, -1});
  ASSERT_EQ(wide.shape(), (Shape{kMax, 0}));
  EXPECT_THAT([&] { g.parameter("w", Shape{4, wide.shape().dim(0), 3}); },
              overflows("[4, 9223372036854775807, 3]"));
  // An output shape [2^62, 4] from inputs [2^62, 0] and [0, 4].
  const Value a = g.input("a", {k2p62, 0}), b = g.input("b", {0, 4});
  EXPECT_THAT([&] { matmul(a, b); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(
                  HasSubstr("matmul: output Shape: dimensions [4611686018427387904, 4]"),
                  HasSubstr("int64"))));
}

std::vector<std::string> op_names(bool only_with_scales) {
  std::vector<std::string> names;
  for (const OpDef* op : forward_ops()) {
    if (example_of(op->name) != nullptr && (!only_with_scales || !op->scales.empty())) {
      names.emplace_back(op->name);
    }
  }
  return names;
}

std::string op_param_name(const ::testing::TestParamInfo<std::string>& param) {
  return param.param;
}

INSTANTIATE_TEST_SUITE_P(Ops, SetScale, ::testing::ValuesIn(op_names(true)), op_param_name);
INSTANTIATE_TEST_SUITE_P(Ops, UndeclaredScale, ::testing::ValuesIn(op_names(false)), op_param_name);

// ---- 3. The tables cover every op ---------------------------------------------------------------

TEST(ExampleTables, CoverEveryOp) {
  std::set<std::string, std::less<>> forward;
  for (const OpDef* op : forward_ops()) {
    EXPECT_TRUE(forward.insert(std::string(op->name)).second) << "duplicate op " << op->name;
    const OpExample* example = example_of(op->name);
    if (example == nullptr) {
      ADD_FAILURE() << "op " << op->name << " has no entry in op_examples() of "
                    << "tests/graph/edge_cases_test.cpp: add valid example input shapes (and the "
                    << "attributes it requires) so the edge-case and set_scale tests cover it";
      continue;
    }
    ASSERT_EQ(example->inputs.size(), op->inputs.size()) << op->name;
    for (std::size_t i = 0; i < op->inputs.size(); ++i) {
      if (!example->inputs[i]) {
        EXPECT_TRUE(op->input_is_optional(i)) << op->name << " input " << op->input_name(i);
        continue;
      }
      EXPECT_EQ(example->inputs[i]->name, op->input_name(i)) << op->name;
      if (example->inputs[i]->index) {
        EXPECT_TRUE((op->nondifferentiable_inputs >> i) & 1)
            << op->name << " input " << op->input_name(i) << " holds ids but has a gradient";
      }
    }
    // Valid: records in both kinds of graph, with finite positive scales in the unit one.
    for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
      Graph g(scaling);
      EXPECT_NO_THROW(g.apply(*op, make_inputs(g, example->inputs), example->attrs)) << op->name;
      expect_finite_positive_scales(g, std::string(op->name));
    }
  }
  for (const auto& [name, example] : op_examples()) {
    EXPECT_TRUE(forward.contains(name))
        << "op_examples() has an entry for " << name << ", which is not in forward_ops()";
  }
  std::set<std::string, std::less<>> built;
  for (const Subject& subject : all_builders()) built.insert(subject.op);
  for (const std::string& name : forward) {
    EXPECT_TRUE(built.contains(name))
        << "no builder in builder_subjects() records " << name << ": add its builder to the table";
  }
}

// Every op on every dtype of every input: the dtypes an input declares (OpDef::input_dtypes) record
// and run (on zeros of that dtype, the other inputs as in the examples); every other dtype is an
// error at record time naming the op, the input and both dtypes.
TEST(Dtypes, EveryOpRunsOnEachDtypeItDeclaresAndRefusesTheOthers) {
  int runs = 0;
  for (const OpDef* op : forward_ops()) {
    const OpExample* example = example_of(op->name);
    ASSERT_NE(example, nullptr) << op->name;
    for (std::size_t i = 0; i < example->inputs.size(); ++i) {
      if (!example->inputs[i]) continue;
      for (const DType dtype : all_dtypes()) {
        SCOPED_TRACE(fmt::format("{} input {} as {}", op->name, op->input_name(i), dtype_name(dtype)));
        Graph g;
        std::vector<Value> inputs = make_inputs(g, example->inputs);
        const Operand& operand = *example->inputs[i];
        inputs[i] = g.input(operand.name + "_typed", operand.shape, dtype);
        if (!op->accepted_dtypes(i).contains(dtype)) {
          EXPECT_THAT([&] { g.apply(*op, inputs, example->attrs); },
                      ThrowsMessage<Error>(AllOf(
                          HasSubstr(fmt::format("{}: input '{}'", op->name, op->input_name(i))),
                          HasSubstr(fmt::format("has dtype {}, expected", dtype_name(dtype))))));
          continue;
        }
        const std::vector<Value> outputs = g.apply(*op, inputs, example->attrs);
        std::vector<Value> requested;
        for (const Value& v : outputs) {
          if (v.present()) requested.push_back(v);
        }
        Executor exec(g, requested);
        std::vector<Tensor> bound;
        bound.reserve(inputs.size());
        for (std::size_t k = 0; k < inputs.size(); ++k) {
          if (!inputs[k].present()) continue;
          const Shape& shape = inputs[k].shape();
          if (k == i) bound.emplace_back(shape, dtype);  // zeros of the dtype
          else if (example->inputs[k]->index) bound.push_back(index_tensor(shape));
          else bound.push_back(data_tensor(shape, static_cast<int>(k)));
          exec.bind(inputs[k], bound.back());
        }
        EXPECT_NO_THROW(exec.run());
        for (const Value& v : requested) EXPECT_EQ(exec.get(v).dtype(), v.dtype());
        ++runs;
      }
    }
  }
  // Each op runs its f32 inputs as f32 and its index inputs as i32; cast takes every dtype.
  EXPECT_GT(runs, static_cast<int>(forward_ops().size()) + 8);
}

// Every builder's example is valid, so that its edge cases test edges and not a broken example.
TEST(ExampleTables, BuilderExamplesAreValid) {
  for (const Subject& subject : all_builders()) {
    for (const Scaling scaling : {Scaling::kUnit, Scaling::kUnscaled}) {
      Graph g(scaling);
      const std::vector<Value> inputs = make_inputs(g, subject.inputs);
      EXPECT_NO_THROW(subject.record(g, inputs)) << subject.name;
      expect_finite_positive_scales(g, subject.name);
      ASSERT_FALSE(g.nodes().empty()) << subject.name;
      EXPECT_EQ(g.nodes().back().op->name, subject.op) << subject.name;
    }
  }
}

}  // namespace
}  // namespace unitscale

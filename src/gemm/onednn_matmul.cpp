#include "gemm/onednn_matmul.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <fmt/format.h>
#include <atomic>
#include <unordered_map>
#include <vector>

#include "unitscale/error.hpp"

namespace unitscale::detail {
namespace {

using dnnl::memory;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type data_type_of(GemmType type) {
  switch (type) {
    case GemmType::kF32: return memory::data_type::f32;
    case GemmType::kBF16: return memory::data_type::bf16;
    default: break;
  }
  throw Error(fmt::format("gemm: oneDNN runs f32 and bf16 operands, not {}", gemm_type_name(type)));
}

// The descriptor of a rows × cols operand as used (op(X)), stored with `row_stride` and possibly
// transposed: element (i, j) of op(X) is at i·row_stride + j, or j·row_stride + i if transposed.
memory::desc operand_desc(std::int64_t rows, std::int64_t cols, GemmType type,
                          std::int64_t row_stride, bool transposed) {
  const memory::dims strides = transposed ? memory::dims{1, row_stride} : memory::dims{row_stride, 1};
  return memory::desc({rows, cols}, data_type_of(type), strides);
}

// A primitive's arguments as oneDNN memory objects, made once per primitive and thread and then
// only pointed at each call's data: creating them every call cost about a microsecond, which
// showed on small GEMMs.
struct Arguments {
  std::unordered_map<int, memory> map;
  float scale = 1.0f;  // the scale post-op's 1×1 tensor
};

// Each thread keeps its own stream, scratchpad and arguments, so one primitive runs on several
// threads at once (the primitives are created with a user-managed scratchpad). Arguments are keyed
// by the primitive's unique id; those of primitives destroyed since (only when tests force another
// engine) are never looked up again.
struct ThreadResources {
  dnnl::stream stream{cpu_engine()};
  std::vector<std::byte> scratchpad;
  std::unordered_map<std::uint64_t, Arguments> arguments;
};

ThreadResources& thread_resources() {
  thread_local ThreadResources resources;
  return resources;
}

}  // namespace

struct OneDnnMatmul::State {
  std::uint64_t id = 0;
  memory::desc a, b, c, scale, bias;
  dnnl::matmul::primitive_desc descriptor;
  dnnl::matmul primitive;
  int scale_slot = -1, bias_slot = -1;  // post-op positions
};

namespace {

void bind_arguments(const OneDnnMatmul::State& state, const memory::desc& scratch_desc,
                    Arguments& bound) {
  const dnnl::engine& engine = cpu_engine();
  bound.map = {
      {DNNL_ARG_SRC, memory(state.a, engine, nullptr)},
      {DNNL_ARG_WEIGHTS, memory(state.b, engine, nullptr)},
      {DNNL_ARG_DST, memory(state.c, engine, nullptr)},
      {DNNL_ARG_SCRATCHPAD, memory(scratch_desc, engine, nullptr)},
      {DNNL_ARG_ATTR_MULTIPLE_POST_OP(state.scale_slot) | DNNL_ARG_SRC_1,
       memory(state.scale, engine, &bound.scale)},
  };
  if (state.bias_slot >= 0) {
    bound.map.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(state.bias_slot) | DNNL_ARG_SRC_1,
                      memory(state.bias, engine, nullptr));
  }
}

}  // namespace

OneDnnMatmul::OneDnnMatmul(const GemmProblem& p) : state_(new State) {
  static std::atomic<std::uint64_t> next_id{0};
  state_->id = ++next_id;
  try {
    state_->a = operand_desc(p.m, p.k, p.a_type, p.a_row_stride, p.a_transposed);
    state_->b = operand_desc(p.k, p.n, p.b_type, p.b_row_stride, p.b_transposed);
    state_->c = memory::desc({p.m, p.n}, memory::data_type::f32, memory::dims{p.c_row_stride, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    // The output scale α·sa·sb is a post-op multiplying by a 1×1 tensor, so one primitive serves
    // every scale: oneDNN 2.6 gives run-time output scales (set_output_scales) only to its slower
    // gemm:jit kernels, not to the brgemm ones (measured in bench_gemm).
    dnnl::post_ops ops;
    state_->scale = memory::desc({1, 1}, memory::data_type::f32, memory::format_tag::ab);
    state_->scale_slot = ops.len();
    ops.append_binary(dnnl::algorithm::binary_mul, state_->scale);
    // The sum before the bias: oneDNN 2.6's brgemm kernels take binary_mul, sum, binary_add but
    // fall back to the reference kernel for binary_mul, binary_add, sum.
    if (p.accumulate) ops.append_sum(1.0f);
    if (p.bias) {
      // After the scale, so a bias is never multiplied by the operands' scales. Per column only:
      // oneDNN 2.6 has no fast kernel for a per-row bias (gemm() adds that itself).
      state_->bias = memory::desc({1, p.n}, memory::data_type::f32, memory::format_tag::ab);
      state_->bias_slot = ops.len();
      ops.append_binary(dnnl::algorithm::binary_add, state_->bias);
    }
    attr.set_post_ops(ops);
    state_->descriptor = dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(state_->a, state_->b, state_->c), attr, cpu_engine());
    state_->primitive = dnnl::matmul(state_->descriptor);
  } catch (const dnnl::error& e) {
    delete state_;
    throw Error(fmt::format("gemm: oneDNN cannot run {}: {}", p.to_string(), e.what()));
  }
}

OneDnnMatmul::~OneDnnMatmul() { delete state_; }

void OneDnnMatmul::run(const void* a, const void* b, float* c, const float* bias,
                       float output_scale) const {
  ThreadResources& resources = thread_resources();
  const memory::desc scratch_desc = state_->descriptor.scratchpad_desc();
  if (resources.scratchpad.size() < scratch_desc.get_size()) {
    resources.scratchpad.resize(scratch_desc.get_size());
  }
  Arguments& bound = resources.arguments[state_->id];
  if (bound.map.empty()) bind_arguments(*state_, scratch_desc, bound);
  bound.scale = output_scale;
  bound.map[DNNL_ARG_SRC].set_data_handle(const_cast<void*>(a));
  bound.map[DNNL_ARG_WEIGHTS].set_data_handle(const_cast<void*>(b));
  bound.map[DNNL_ARG_DST].set_data_handle(c);
  bound.map[DNNL_ARG_SCRATCHPAD].set_data_handle(resources.scratchpad.data());
  if (state_->bias_slot >= 0) {
    bound.map[DNNL_ARG_ATTR_MULTIPLE_POST_OP(state_->bias_slot) | DNNL_ARG_SRC_1].set_data_handle(
        const_cast<float*>(bias));
  }
  const std::unordered_map<int, memory>& args = bound.map;
  state_->primitive.execute(resources.stream, args);
  resources.stream.wait();
}

std::string OneDnnMatmul::implementation() const { return state_->descriptor.impl_info_str(); }

std::string onednn_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool onednn_has_native_bf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

}  // namespace unitscale::detail

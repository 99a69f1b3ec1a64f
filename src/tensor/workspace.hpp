#pragma once
// Workspace: memory a kernel needs only while it runs (GEMM operands widened to BF16 or FP32, the
// FP32 panels of a GEMM result being encoded, FP32 copies of scaled values), taken from a
// per-thread stack.
//
// The executor plans each node's workspace into its arena beside the values (OpDef::workspace):
// while a node runs, the executor's thread takes from that planned span, which at that step holds
// no live value. So the memory is shared with the values: a kernel's workspace costs nothing at
// the steps where the arena has room, and the arena grows only where it has not. Anything taken
// beyond the span (a kernel called outside an executor, a call on an OpenMP worker thread, an
// estimate that fell short) comes from blocks the thread owns and keeps for its next calls, as a
// private scratch buffer would.
//
//   Workspace& ws = Workspace::of_this_thread();
//   const Workspace::Frame frame(ws);          // released when the frame ends
//   float* buffer = ws.take_floats(n);
//
// Takes are 64-byte aligned: oneDNN runs measurably slower on operands that are not aligned to a
// cache line.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace unitscale::detail {

class Workspace {
 public:
  static Workspace& of_this_thread();

  // `bytes` bytes (rounded up to 64), valid until the enclosing frame ends or begin() is called.
  std::byte* take(std::size_t bytes);
  float* take_floats(std::int64_t count) {
    return reinterpret_cast<float*>(take(static_cast<std::size_t>(count) * sizeof(float)));
  }

  // Releases what was taken since the frame began (stack order).
  class Frame {
   public:
    explicit Frame(Workspace& workspace) : workspace_(workspace), mark_(workspace.used_) {}
    ~Frame() { workspace_.release(mark_); }
    Frame(const Frame&) = delete;
    Frame& operator=(const Frame&) = delete;

   private:
    Workspace& workspace_;
    std::size_t mark_;
  };

  // Releases everything this thread took: for a kernel's outermost scratch, which no caller holds.
  void begin() { release(0); }

  // The executor, around one node: the span its plan set aside for it. detach() returns the most
  // bytes the node had taken at once (its need, to check the plan's estimate against), and how
  // many of them did not fit in the span.
  struct Use {
    std::size_t peak = 0;
    std::size_t beyond_plan = 0;
  };
  void attach(std::span<std::byte> planned);
  Use detach();

 private:
  void release(std::size_t mark);
  std::byte* take_owned(std::size_t offset, std::size_t bytes);

  std::span<std::byte> planned_;
  std::size_t used_ = 0;  // bytes taken: [0, planned_.size()) in the span, the rest owned
  std::size_t peak_ = 0;  // since attach
  // Owned memory: blocks laid end to end after the span, each holding the takes that start in it.
  struct Block {
    std::unique_ptr<std::byte[], void (*)(std::byte*)> data{nullptr, nullptr};
    std::size_t begin = 0, size = 0;  // offsets in the owned part
  };
  std::vector<Block> owned_;
};

}  // namespace unitscale::detail

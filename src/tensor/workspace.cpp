#include "tensor/workspace.hpp"

#include <algorithm>

#include "unitscale/tensor/tensor.hpp"

namespace unitscale::detail {
namespace {

constexpr std::size_t kAlignment = 64;
// Owned blocks are at least this large, so that small takes do not each make a block.
constexpr std::size_t kSmallestBlock = std::size_t{64} << 10;

std::size_t aligned(std::size_t bytes) { return (bytes + kAlignment - 1) & ~(kAlignment - 1); }

}  // namespace

Workspace& Workspace::of_this_thread() {
  thread_local Workspace workspace;
  return workspace;
}

std::byte* Workspace::take(std::size_t bytes) {
  bytes = aligned(bytes);
  std::byte* result = nullptr;
  if (used_ + bytes <= planned_.size()) {
    result = planned_.data() + used_;
    used_ += bytes;
  } else {
    // What does not fit in the span starts past it, in owned memory.
    const std::size_t start = std::max(used_, planned_.size());
    result = take_owned(start - planned_.size(), bytes);
    used_ = start + bytes;
  }
  peak_ = std::max(peak_, used_);
  return result;
}

std::byte* Workspace::take_owned(std::size_t offset, std::size_t bytes) {
  // The newest block that holds [offset, offset + bytes): live takes all lie below `offset`
  // (stack order), so whichever block holds the range, no live take uses that memory.
  for (auto block = owned_.rbegin(); block != owned_.rend(); ++block) {
    if (block->begin <= offset && offset + bytes <= block->begin + block->size) {
      return block->data.get() + (offset - block->begin);
    }
  }
  Block block;
  block.size = std::max(bytes, kSmallestBlock);
  block.data = allocate_aligned_bytes(block.size);
  block.begin = offset;
  owned_.push_back(std::move(block));
  return owned_.back().data.get();
}

void Workspace::release(std::size_t mark) {
  used_ = std::min(used_, mark);
  if (used_ == 0 && owned_.size() > 1) {
    // One block of the extent the others spanned replaces them, so the next such call takes one.
    std::size_t extent = 0;
    for (const Block& block : owned_) extent = std::max(extent, block.begin + block.size);
    owned_.clear();
    take_owned(0, extent);
  }
}

void Workspace::attach(std::span<std::byte> planned) {
  begin();
  planned_ = planned;
  peak_ = 0;
}

Workspace::Use Workspace::detach() {
  const Use use{peak_, peak_ > planned_.size() ? peak_ - planned_.size() : 0};
  begin();
  planned_ = {};
  peak_ = 0;
  return use;
}

}  // namespace unitscale::detail

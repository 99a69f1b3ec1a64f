// The per-thread workspace stack (src/tensor/workspace.hpp): aligned takes, frames that release in
// stack order, the executor's planned span used first and owned memory past it.

#include "tensor/workspace.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace unitscale::detail {
namespace {

bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

TEST(Workspace, TakesAreAlignedAndDisjoint) {
  Workspace& ws = Workspace::of_this_thread();
  ws.begin();
  const Workspace::Frame frame(ws);
  std::byte* a = ws.take(1);
  std::byte* b = ws.take(100);
  std::byte* c = ws.take(64);
  EXPECT_TRUE(aligned64(a) && aligned64(b) && aligned64(c));
  EXPECT_GE(b - a, 64);   // 1 byte rounds up to a cache line
  EXPECT_GE(c - b, 128);  // 100 bytes to two
  std::memset(a, 1, 1);
  std::memset(b, 2, 100);
  std::memset(c, 3, 64);
  EXPECT_EQ(a[0], std::byte{1});
  EXPECT_EQ(b[99], std::byte{2});
}

TEST(Workspace, FramesReleaseInStackOrder) {
  Workspace& ws = Workspace::of_this_thread();
  ws.begin();
  const Workspace::Frame outer(ws);
  std::byte* kept = ws.take(256);
  std::byte* inner_first = nullptr;
  {
    const Workspace::Frame inner(ws);
    inner_first = ws.take(1000);
    EXPECT_NE(inner_first, kept);
  }
  // The inner frame's memory is taken again; the outer take is untouched.
  EXPECT_EQ(ws.take(1000), inner_first);
}

TEST(Workspace, UsesThePlannedSpanFirstThenOwnedMemory) {
  Workspace& ws = Workspace::of_this_thread();
  alignas(64) static std::byte span[4096];
  ws.attach(span);
  std::byte* a = ws.take(1024);
  std::byte* b = ws.take(2048);
  EXPECT_EQ(a, span);
  EXPECT_EQ(b, span + 1024);
  std::byte* c = ws.take(2048);  // 1024 bytes left in the span: does not fit
  EXPECT_TRUE(c < span || c >= span + sizeof span) << "past the span, in owned memory";
  EXPECT_TRUE(aligned64(c));
  std::memset(c, 7, 2048);
  const Workspace::Use use = ws.detach();
  EXPECT_EQ(use.peak, 4096u + 2048u) << "the span, whole, then the owned take";
  EXPECT_EQ(use.beyond_plan, 2048u);

  ws.attach(span);  // a new node: the span is free again
  EXPECT_EQ(ws.take(4096), span);
  EXPECT_EQ(ws.detach().beyond_plan, 0u);
}

TEST(Workspace, OwnedBlocksMergeAndServeLargerTakes) {
  Workspace& ws = Workspace::of_this_thread();
  ws.begin();
  std::vector<std::byte*> taken;
  for (int i = 0; i < 4; ++i) {
    std::byte* p = ws.take(std::size_t{1} << 20);  // each larger than any block so far
    std::memset(p, i, std::size_t{1} << 20);
    taken.push_back(p);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(taken[static_cast<std::size_t>(i)][12345], std::byte(i));
  ws.begin();
  // One block of the extent the four took now serves them all, contiguously.
  std::byte* first = ws.take(std::size_t{1} << 20);
  EXPECT_EQ(ws.take(std::size_t{1} << 20), first + (std::size_t{1} << 20));
  ws.begin();
}

TEST(Workspace, EachThreadHasItsOwn) {
  Workspace* here = &Workspace::of_this_thread();
  Workspace* there = nullptr;
  std::thread([&] { there = &Workspace::of_this_thread(); }).join();
  EXPECT_NE(here, there);
}

}  // namespace
}  // namespace unitscale::detail

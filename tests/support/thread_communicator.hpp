#pragma once
// N "ranks" as N threads of one process, for testing code that runs on a Communicator (the
// gradient exchange's chunking, ordering and combining) without MPI. Each thread owns a
// ThreadCommunicator of a shared ThreadGroup; a collective is a barrier, a copy from the other
// threads' posted buffers, and a barrier.
//
//   ThreadGroup group(3);
//   run_ranks(group, [&](Communicator& comm) { ... comm.all_gather(...) ... });

#include <barrier>
#include <cstring>
#include <functional>
#include <span>
#include <thread>
#include <vector>

#include "unitscale/distributed/communicator.hpp"

namespace unitscale::testing_support {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size)
      : size_(size), barrier_(size), posted_(static_cast<std::size_t>(size)) {}
  int size() const { return size_; }

 private:
  friend class ThreadCommunicator;
  int size_;
  std::barrier<> barrier_;
  std::vector<std::span<const std::byte>> posted_;  // by rank, valid between the two barriers
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size_; }
  std::string description() const override { return "threads"; }

  void all_to_all(std::span<const std::byte> send, std::span<std::byte> receive) override {
    const std::size_t block = send.size() / static_cast<std::size_t>(size());
    exchange(send, [&](int from, std::span<const std::byte> theirs) {
      std::memcpy(receive.data() + static_cast<std::size_t>(from) * block,
                  theirs.data() + static_cast<std::size_t>(rank_) * block, block);
    });
  }
  void all_gather(std::span<const std::byte> send, std::span<std::byte> receive) override {
    exchange(send, [&](int from, std::span<const std::byte> theirs) {
      std::memcpy(receive.data() + static_cast<std::size_t>(from) * theirs.size(), theirs.data(),
                  theirs.size());
    });
  }
  void broadcast(std::span<std::byte> data, int root) override {
    exchange(data, [&](int from, std::span<const std::byte> theirs) {
      if (from == root && rank_ != root) std::memcpy(data.data(), theirs.data(), theirs.size());
    });
  }

 private:
  // Posts `mine`, lets `take` read every rank's posting, and waits until all have read.
  template <class Take>
  void exchange(std::span<const std::byte> mine, Take take) {
    group_.posted_[static_cast<std::size_t>(rank_)] = mine;
    group_.barrier_.arrive_and_wait();
    for (int r = 0; r < size(); ++r) take(r, group_.posted_[static_cast<std::size_t>(r)]);
    group_.barrier_.arrive_and_wait();
  }

  ThreadGroup& group_;
  int rank_;
};

// Runs `body` on every rank of `group`, each on its own thread, and rethrows the first exception.
inline void run_ranks(ThreadGroup& group, const std::function<void(Communicator&)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(group.size()));
  std::vector<std::thread> threads;
  for (int r = 0; r < group.size(); ++r) {
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(group, r);
      try {
        body(comm);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace unitscale::testing_support

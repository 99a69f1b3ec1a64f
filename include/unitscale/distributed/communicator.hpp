#pragma once
// Communicator: the collectives data-parallel training needs, independent of the transport. The
// library itself never links MPI: MpiCommunicator (distributed/mpi_communicator.hpp, in the
// separate unitscale_mpi library) implements this interface over MPI, SingleProcessCommunicator
// is the one-rank case, and the Trainer and the gradient exchange see only this class.
//
//   MpiSession mpi(argc, argv);                        // or SingleProcessCommunicator single;
//   Communicator& comm = mpi.communicator();
//   double totals[] = {loss, 1.0};
//   all_reduce_sum(comm, totals);                      // the same bits on every rank
//
// Every rank must call the same collectives in the same order with the same sizes; a rank that
// does not (or dies) makes the others fail with a timeout error, never hang (see MpiCommunicator).
// Blocks are raw bytes: callers agree on the layout (gradient_exchange.hpp documents its own).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace unitscale {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "MPI (Open MPI 4.1.4), 2 ranks" or "single process": for logs.
  virtual std::string description() const = 0;

  // Personalised exchange: `send` holds size() blocks of equal length, block j for rank j;
  // `receive` (the same length) gets block i from rank i, in rank order.
  virtual void all_to_all(std::span<const std::byte> send, std::span<std::byte> receive) = 0;
  // Every rank contributes one block (`send`); `receive` (size() blocks) gets them in rank order.
  virtual void all_gather(std::span<const std::byte> send, std::span<std::byte> receive) = 0;
  // Rank `root`'s `data` replaces every other rank's (all pass the same length).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
};

// The one-rank communicator: every collective is a copy. Lets a single process run the code paths
// of data-parallel training (the gradient exchange's quantisation included) without MPI.
class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string description() const override { return "single process"; }
  void all_to_all(std::span<const std::byte> send, std::span<std::byte> receive) override;
  void all_gather(std::span<const std::byte> send, std::span<std::byte> receive) override;
  void broadcast(std::span<std::byte>, int) override {}
};

// Sums `values` over the ranks in place, adding the ranks' contributions in rank order (an
// all-gather then a fixed-order sum), so every rank gets the same bits whatever the transport does.
void all_reduce_sum(Communicator& comm, std::span<double> values);
// Every rank's string, in rank order (strings may differ in length).
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine);
// Rank 0's value on every rank.
std::uint64_t broadcast_u64(Communicator& comm, std::uint64_t value);

// The number of ranks an MPI launcher (Open MPI's mpirun, MPICH's mpiexec) started this process
// among, read from the environment it sets (OMPI_COMM_WORLD_SIZE, PMI_SIZE); 1 when none did. Lets
// a program decide whether to start MPI at all, and one built without MPI refuse clearly.
int launcher_world_size();

}  // namespace unitscale

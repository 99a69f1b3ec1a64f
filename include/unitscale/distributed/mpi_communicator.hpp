#pragma once
// MPI for data-parallel training: the Communicator over MPI_COMM_WORLD. It lives in the separate
// unitscale_mpi library (built when CMake finds MPI; target unitscale::mpi), so that the main
// library and single-process programs never need an MPI runtime.
//
//   int main(int argc, char** argv) {
//     unitscale::MpiSession mpi(argc, argv, {.collective_timeout_seconds = 300});
//     unitscale::Communicator& comm = mpi.communicator();   // rank(), size(), ...
//     ...
//   }                                                        // MPI_Finalize
//
// Launch with `mpirun -np 2 program ...` (docs/distributed.md). Collectives never hang: each waits
// at most collective_timeout_seconds, after which the rank prints which collective timed out and
// why that usually happens (another rank died, stopped early or runs another configuration) and
// aborts the whole job (MPI_Abort), so every rank ends. MPI errors become unitscale::Error with
// MPI's own message.

#include <memory>

#include "unitscale/distributed/communicator.hpp"

namespace unitscale {

struct MpiOptions {
  // How long a collective may wait for the other ranks before the job is aborted. It must exceed
  // the longest stretch one rank works alone between collectives (rank 0's evaluations and
  // checkpoints).
  double collective_timeout_seconds = 600;
};

class MpiSession {
 public:
  // MPI_Init_thread with MPI_THREAD_MULTIPLE (the gradient exchange's communication thread and the
  // trainer both call MPI). Throws unitscale::Error if MPI is already initialised or cannot give
  // that thread level.
  MpiSession(int& argc, char**& argv, const MpiOptions& options = {});
  ~MpiSession();  // MPI_Finalize
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  Communicator& communicator();
  // Ends every rank of the job now (MPI_Abort) with exit status `status`: what a rank does after
  // an error that the other ranks, possibly waiting for it in a collective, cannot see.
  [[noreturn]] void abort(int status);

 private:
  std::unique_ptr<Communicator> communicator_;
};

}  // namespace unitscale

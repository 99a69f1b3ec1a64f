// The MPI communicator (distributed/mpi_communicator.hpp). Built into unitscale_mpi only.

#include "unitscale/distributed/mpi_communicator.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "unitscale/error.hpp"

namespace unitscale {

namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<std::size_t>(length));
}

void check_mpi(int code, std::string_view call) {
  if (code != MPI_SUCCESS) throw Error(fmt::format("{} failed: {}", call, mpi_error_text(code)));
}

int int_count(std::size_t bytes, std::string_view call) {
  if (bytes > static_cast<std::size_t>(INT_MAX)) {
    throw Error(fmt::format("{}: {} bytes is more than MPI's int count allows", call, bytes));
  }
  return static_cast<int>(bytes);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const MpiOptions& options) : options_(options) {
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int length = 0;
    MPI_Get_library_version(version, &length);
    library_ = std::string(version, static_cast<std::size_t>(length));
    library_ = library_.substr(0, library_.find_first_of(",\n"));
  }
  ~MpiCommunicator() override { MPI_Comm_free(&comm_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string description() const override {
    return fmt::format("MPI ({}), {} rank{}", library_, size_, size_ == 1 ? "" : "s");
  }

  void all_to_all(std::span<const std::byte> send, std::span<std::byte> receive) override {
    const std::size_t block = send.size() / static_cast<std::size_t>(size_);
    if (send.size() != receive.size() || block * static_cast<std::size_t>(size_) != send.size()) {
      throw Error(
          fmt::format("all_to_all: need equal send and receive lengths divisible by {} "
                      "ranks, got {} and {} bytes",
                      size_, send.size(), receive.size()));
    }
    const int count = int_count(block, "MPI_Ialltoall");
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Ialltoall(send.data(), count, MPI_BYTE, receive.data(), count, MPI_BYTE, comm_,
                            &request),
              "MPI_Ialltoall");
    wait(request, "all_to_all", send.size());
  }

  void all_gather(std::span<const std::byte> send, std::span<std::byte> receive) override {
    if (receive.size() != send.size() * static_cast<std::size_t>(size_)) {
      throw Error(fmt::format("all_gather: receive must hold {} ranks' {} bytes, got {} bytes",
                              size_, send.size(), receive.size()));
    }
    const int count = int_count(send.size(), "MPI_Iallgather");
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallgather(send.data(), count, MPI_BYTE, receive.data(), count, MPI_BYTE, comm_,
                             &request),
              "MPI_Iallgather");
    wait(request, "all_gather", send.size());
  }

  void broadcast(std::span<std::byte> data, int root) override {
    const int count = int_count(data.size(), "MPI_Ibcast");
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Ibcast(data.data(), count, MPI_BYTE, root, comm_, &request), "MPI_Ibcast");
    wait(request, "broadcast", data.size());
  }

 private:
  // Waits for a nonblocking collective, polling with a short back-off so that a waiting rank
  // leaves the core to the computing thread; past the timeout, ends the job.
  void wait(MPI_Request& request, std::string_view what, std::size_t bytes) {
    using Clock = std::chrono::steady_clock;
    const auto deadline =
        Clock::now() + std::chrono::duration<double>(options_.collective_timeout_seconds);
    auto pause = std::chrono::microseconds(0);
    for (;;) {
      int done = 0;
      check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done != 0) return;
      if (Clock::now() > deadline) {
        std::fprintf(stderr,
                     "unitscale: rank %d of %d: %.*s of %zu bytes did not complete within %g s. "
                     "Another rank has died, stopped early, or runs a different configuration "
                     "(or one rank works alone longer than --collective-timeout allows). "
                     "Aborting the job.\n",
                     rank_, size_, static_cast<int>(what.size()), what.data(), bytes,
                     options_.collective_timeout_seconds);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
      }
      if (pause.count() == 0) {
        std::this_thread::yield();
        pause = std::chrono::microseconds(1);
      } else {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(200));
      }
    }
  }

  MpiOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::string library_;
};

}  // namespace

MpiSession::MpiSession(int& argc, char**& argv, const MpiOptions& options) {
  if (!(options.collective_timeout_seconds > 0)) {
    throw Error(fmt::format("MpiSession: the collective timeout must be positive, got {} s",
                            options.collective_timeout_seconds));
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0) throw Error("MpiSession: MPI is already initialised");
  int provided = MPI_THREAD_SINGLE;
  check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_MULTIPLE) {
    MPI_Finalize();
    throw Error(
        fmt::format("MpiSession: this MPI provides thread level {}, and the gradient "
                    "exchange needs MPI_THREAD_MULTIPLE ({})",
                    provided, MPI_THREAD_MULTIPLE));
  }
  communicator_ = std::make_unique<MpiCommunicator>(options);
}

MpiSession::~MpiSession() {
  communicator_.reset();
  MPI_Finalize();
}

Communicator& MpiSession::communicator() { return *communicator_; }

void MpiSession::abort(int status) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, status);
  std::_Exit(status);  // MPI_Abort does not return; this keeps [[noreturn]] honest if it did
}

}  // namespace unitscale

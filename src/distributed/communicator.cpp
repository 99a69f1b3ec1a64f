#include "unitscale/distributed/communicator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "unitscale/error.hpp"

namespace unitscale {

namespace {

void check_lengths(std::string_view what, std::size_t send, std::size_t receive) {
  if (send != receive) {
    throw Error(
        fmt::format("{} on one rank: send and receive must have the same length, got {} "
                    "and {} bytes",
                    what, send, receive));
  }
}

}  // namespace

void SingleProcessCommunicator::all_to_all(std::span<const std::byte> send,
                                           std::span<std::byte> receive) {
  check_lengths("all_to_all", send.size(), receive.size());
  if (!send.empty()) std::memmove(receive.data(), send.data(), send.size());
}

void SingleProcessCommunicator::all_gather(std::span<const std::byte> send,
                                           std::span<std::byte> receive) {
  check_lengths("all_gather", send.size(), receive.size());
  if (!send.empty()) std::memmove(receive.data(), send.data(), send.size());
}

void all_reduce_sum(Communicator& comm, std::span<double> values) {
  const auto ranks = static_cast<std::size_t>(comm.size());
  std::vector<double> gathered(values.size() * ranks);
  comm.all_gather(std::as_bytes(values), std::as_writable_bytes(std::span<double>(gathered)));
  for (std::size_t i = 0; i < values.size(); ++i) {
    double sum = 0;
    for (std::size_t r = 0; r < ranks; ++r) sum += gathered[r * values.size() + i];
    values[i] = sum;
  }
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine) {
  const auto ranks = static_cast<std::size_t>(comm.size());
  const std::uint64_t length = mine.size();
  std::vector<std::uint64_t> lengths(ranks);
  comm.all_gather(std::as_bytes(std::span(&length, 1)),
                  std::as_writable_bytes(std::span<std::uint64_t>(lengths)));
  const std::uint64_t longest = *std::max_element(lengths.begin(), lengths.end());
  std::string padded = mine;
  padded.resize(longest, '\0');
  std::string gathered(longest * ranks, '\0');
  comm.all_gather(std::as_bytes(std::span<const char>(padded)),
                  std::as_writable_bytes(std::span<char>(gathered)));
  std::vector<std::string> strings(ranks);
  for (std::size_t r = 0; r < ranks; ++r) strings[r] = gathered.substr(r * longest, lengths[r]);
  return strings;
}

int launcher_world_size() {
  // Open MPI's mpirun sets the first, MPICH's (Hydra) mpiexec the second.
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* value = std::getenv(variable); value != nullptr && *value != '\0') {
      const int size = std::atoi(value);
      if (size >= 1) return size;
    }
  }
  return 1;
}

std::uint64_t broadcast_u64(Communicator& comm, std::uint64_t value) {
  comm.broadcast(std::as_writable_bytes(std::span(&value, 1)), 0);
  return value;
}

}  // namespace unitscale

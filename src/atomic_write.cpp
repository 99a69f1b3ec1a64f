#include "unitscale/atomic_write.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "unitscale/error.hpp"

namespace unitscale {
namespace {

[[noreturn]] void throw_write_error(const std::filesystem::path& path, const char* step,
                                    int error) {
  throw Error("cannot write " + path.string() + " (" + step + "): " + std::strerror(error));
}

// Flushes the directory entry of a file just renamed into `directory`. File systems that cannot
// fsync a directory say so with EINVAL; there is nothing more to do on those.
void sync_directory(const std::filesystem::path& path, const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_write_error(path, "open directory for fsync", errno);
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int error = errno;
    ::close(fd);
    throw_write_error(path, "fsync directory", error);
  }
  ::close(fd);
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::string_view content) {
  const std::span<const std::byte> piece(reinterpret_cast<const std::byte*>(content.data()),
                                         content.size());
  write_file_atomically(path, std::span<const std::span<const std::byte>>(&piece, 1));
}

void write_file_atomically(const std::filesystem::path& path,
                           std::span<const std::span<const std::byte>> pieces) {
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  std::string temp = (directory / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) throw_write_error(path, "create temporary file", errno);
  // Everything up to the rename undoes itself on failure: the target is not touched yet.
  auto fail = [&](const char* step) {
    const int error = errno;
    ::close(fd);
    std::remove(temp.c_str());
    throw_write_error(path, step, error);
  };
  for (const std::span<const std::byte> piece : pieces) {
    std::size_t written = 0;
    while (written < piece.size()) {
      const ssize_t n = ::write(fd, piece.data() + written, piece.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write");
      }
      written += static_cast<std::size_t>(n);
    }
  }
  if (::fsync(fd) != 0) fail("fsync");
  // mkstemp creates the file 0600; give it the usual permissions of a new file.
  if (::fchmod(fd, 0644) != 0) fail("chmod");
  if (::close(fd) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    throw_write_error(path, "close", error);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    throw_write_error(path, "rename", error);
  }
  sync_directory(path, directory);
}

}  // namespace unitscale

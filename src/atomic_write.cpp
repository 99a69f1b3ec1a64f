#include "unitscale/atomic_write.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "unitscale/error.hpp"

namespace unitscale {

void write_file_atomically(const std::filesystem::path& path, std::string_view content) {
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  std::string temp = (directory / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
  }
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    std::remove(temp.c_str());
    throw Error("cannot write " + path.string() + " (" + what + "): " + reason);
  };
  std::size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync");
  // mkstemp creates the file 0600; give it the usual permissions of a new file.
  if (::fchmod(fd, 0644) != 0) fail("chmod");
  if (::close(fd) != 0) {
    std::remove(temp.c_str());
    throw Error("cannot write " + path.string() + " (close): " + std::strerror(errno));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temp.c_str());
    throw Error("cannot write " + path.string() + " (rename): " + reason);
  }
}

}  // namespace unitscale

#include "unitscale/atomic_write.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "../support/temp_directory.hpp"
#include "unitscale/error.hpp"

namespace unitscale {
namespace {

using namespace testing;
using testing_support::read_file;
using testing_support::TempDirectory;
using testing_support::write_file;

std::span<const std::byte> bytes_of(const std::string& text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

TEST(AtomicWrite, WritesThePiecesInOrderAndLeavesNoTemporaryFile) {
  TempDirectory dir;
  const std::string a = "header;", empty, b = std::string(100000, 'x');
  const std::span<const std::byte> pieces[] = {bytes_of(a), bytes_of(empty), bytes_of(b)};
  write_file_atomically(dir / "out.bin", pieces);
  EXPECT_EQ(read_file(dir / "out.bin"), a + b);
  EXPECT_THAT(dir.entries(), ElementsAre("out.bin"));
  // The string form is the one-piece case and replaces the file.
  write_file_atomically(dir / "out.bin", std::string_view("second"));
  EXPECT_EQ(read_file(dir / "out.bin"), "second");
  EXPECT_THAT(dir.entries(), ElementsAre("out.bin"));
  const auto permissions = std::filesystem::status(dir / "out.bin").permissions();
  EXPECT_EQ(permissions & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                std::filesystem::perms::group_read | std::filesystem::perms::others_read);
}

TEST(AtomicWrite, AMissingDirectoryIsAnErrorNamingThePath) {
  TempDirectory dir;
  const auto target = dir / "missing" / "out.bin";
  EXPECT_THAT([&] { write_file_atomically(target, std::string_view("x")); },
              ThrowsMessage<Error>(AllOf(HasSubstr(target.string()),
                                         HasSubstr("create temporary file"))));
  EXPECT_TRUE(dir.entries().empty());
}

// The rename is the step that fails when the target is a (non-empty) directory: the directory and
// what it holds stay, and the temporary file is removed.
TEST(AtomicWrite, AFailedRenameLeavesTheTargetAndNoTemporaryFile) {
  TempDirectory dir;
  std::filesystem::create_directory(dir / "target");
  write_file(dir / "target" / "inside.txt", "kept");
  EXPECT_THAT([&] { write_file_atomically(dir / "target", std::string_view("new")); },
              ThrowsMessage<Error>(AllOf(HasSubstr((dir / "target").string()),
                                         HasSubstr("rename"))));
  EXPECT_THAT(dir.entries(), ElementsAre("target"));
  EXPECT_EQ(read_file(dir / "target" / "inside.txt"), "kept");
}

// A write that fails half way (here: the file size limit, as a full disk would) leaves the old
// file as it was. Tests run as root, so a read-only directory would not make the write fail.
TEST(AtomicWrite, AFailedWriteLeavesTheOldFileAndNoTemporaryFile) {
  TempDirectory dir;
  write_file(dir / "out.bin", "old content");
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of the signal
  rlimit limited = saved;
  limited.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string big(1 << 20, 'y');
  const std::span<const std::byte> pieces[] = {bytes_of(big)};
  std::string message;
  try {
    write_file_atomically(dir / "out.bin", pieces);
  } catch (const Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_THAT(message, AllOf(HasSubstr((dir / "out.bin").string()), HasSubstr("(write)")));
  EXPECT_EQ(read_file(dir / "out.bin"), "old content");
  EXPECT_THAT(dir.entries(), ElementsAre("out.bin"));
}

}  // namespace
}  // namespace unitscale

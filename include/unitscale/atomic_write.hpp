#pragma once
// Writing files so that a crash or a full disk never leaves a half-written file behind: the
// content goes to a temporary file in the same directory, which is flushed and then renamed over
// the target (rename is atomic on POSIX file systems).

#include <filesystem>
#include <string_view>

namespace unitscale {

// Throws unitscale::Error naming the path and the reason if the file cannot be written; the
// previous content of `path`, if any, is then left untouched.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace unitscale

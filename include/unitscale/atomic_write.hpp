#pragma once
// Writing files so that a crash or a full disk never leaves a half-written file behind: the
// content goes to a temporary file in the same directory (".<name>.XXXXXX"), which is written,
// flushed to disk (fsync) and then renamed over the target (rename is atomic on POSIX file
// systems); finally the directory is flushed too, so that the rename itself survives a power loss.
// A reader therefore sees either the old file or the complete new one, never a mix.

#include <cstddef>
#include <filesystem>
#include <span>
#include <string_view>

namespace unitscale {

// Throws unitscale::Error naming the path, the step that failed (write, fsync, rename, ...) and
// the system's reason if the file cannot be written. Until the rename, a failure leaves the
// previous content of `path`, if any, untouched and removes the temporary file. A failure to flush
// the directory after the rename is reported as well: the new content is then in place but may not
// survive a crash.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

// The same with the content given as consecutive pieces, written in order: large files (tensor
// data) are written from where they lie, without first being joined into one buffer.
void write_file_atomically(const std::filesystem::path& path,
                           std::span<const std::span<const std::byte>> pieces);

}  // namespace unitscale

// Writing files so that a crash leaves the old contents or the new, never a mix: one
// implementation for every file Keel replaces (the event store's checkpoint and snapshots, the
// proxy's migration state). Failures are errno values with the step and path, so that each area
// turns them into its own error codes (the event store makes ENOSPC `disk_full`).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace keel {

struct FileError {
  std::string what;  // "cannot write", "cannot rename", ...
  std::string path;
  int error_number = 0;
  std::string message() const;  // "cannot write PATH: No space left on device"
};

// Writes all of `bytes` to `fd` at its offset, through short writes and EINTR: 0, or the errno of
// the write that failed.
int write_all(int fd, std::string_view bytes);

// fsyncs `directory`, so that a rename or a new file in it survives a power loss.
std::optional<FileError> sync_directory(const std::string& directory);

// Writes `bytes` to PATH.tmp, fdatasyncs it, renames it over `path` and fsyncs the directory. On
// any failure the temporary is removed (a full disk must not leave empty files behind).
std::optional<FileError> write_file_atomically(const std::string& path, std::string_view bytes);

}  // namespace keel

#include "keel/core/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace keel {

std::string FileError::message() const {
  return what + " " + path + ": " + std::strerror(error_number);
}

int write_all(int fd, std::string_view bytes) {
  std::size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    written += static_cast<std::size_t>(n);
  }
  return 0;
}

std::optional<FileError> sync_directory(const std::string& directory) {
  int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FileError{"cannot open directory", directory, errno};
  int result = ::fsync(fd);
  int error_number = errno;
  ::close(fd);
  if (result != 0) return FileError{"cannot sync directory", directory, error_number};
  return std::nullopt;
}

std::optional<FileError> write_file_atomically(const std::string& path, std::string_view bytes) {
  const std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FileError{"cannot create", temporary, errno};
  auto fail = [&](const char* what, int error_number) {
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    return FileError{what, temporary, error_number};
  };
  if (int failed = write_all(fd, bytes); failed != 0) return fail("cannot write", failed);
  if (::fdatasync(fd) != 0) return fail("cannot sync", errno);
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return fail("cannot close", errno);
  if (::rename(temporary.c_str(), path.c_str()) != 0) return fail("cannot rename", errno);
  const std::string directory = path.substr(0, path.find_last_of('/'));
  return sync_directory(path.find('/') == std::string::npos ? "." : directory);
}

}  // namespace keel

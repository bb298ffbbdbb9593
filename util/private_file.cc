#include "util/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace geokv {

StatusOr<std::string> ReadPrivateFile(const std::string& path, const std::string& what,
                                      size_t max_bytes) {
  const std::string where = what + " " + path;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("cannot read " + where + ": " + std::strerror(errno));
  struct stat st {};
  std::string text;
  Status status;
  if (fstat(fd, &st) != 0) {
    status = Status::IOError("cannot stat " + where + ": " + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    status = Status::FailedPrecondition(where + " is not a regular file");
  } else if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    status = Status::FailedPrecondition(
        where + " has mode " + mode + ": group or others may " +
        ((st.st_mode & 044) != 0 ? "read" : "write") + " it; chmod 600 it");
  } else if (static_cast<size_t>(st.st_size) > max_bytes) {
    status = Status::InvalidArgument(where + " is " + std::to_string(st.st_size) +
                                     " bytes; it may be at most " + std::to_string(max_bytes));
  } else {
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    int error = 0;
    while (got < text.size()) {
      ssize_t n = read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) error = errno;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got != text.size()) {
      status = Status::IOError("cannot read " + where + ": " +
                               (error != 0 ? std::strerror(error) : "it shrank while read"));
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return text;
}

}  // namespace geokv

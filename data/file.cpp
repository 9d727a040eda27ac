#include "data/file.h"

#include "data/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace alexnet::data {

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  return "not a file";
}

}  // namespace

RegularFile::RegularFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd_ < 0) {
    const int error = errno;
    check(error != ENOENT && error != ENOTDIR, path_, ": no such file");
    // A socket cannot be opened at all (ENXIO); say what it is. The path is
    // only looked at for the message, never read.
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
      fail(path_, ": not a regular file (", kind_of(st.st_mode), ")");
    fail(path_, ": cannot open for reading (", std::strerror(error), ")");
  }
  struct stat st {};
  const bool stat_ok = ::fstat(fd_, &st) == 0;
  const int error = errno;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    ::close(fd_);  // the destructor does not run when the constructor throws
    check(stat_ok, path_, ": cannot stat (", std::strerror(error), ")");
    fail(path_, ": not a regular file (", kind_of(st.st_mode), ")");
  }
  // Regular files ignore O_NONBLOCK; cleared so that reads are plain blocking reads.
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  size_ = static_cast<int64_t>(st.st_size);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

size_t RegularFile::read_upto(void* out, size_t n) {
  check(fd_ >= 0, path_, ": read after the file was handed over");
  n = static_cast<size_t>(
      std::min<int64_t>(static_cast<int64_t>(n), std::max<int64_t>(0, size_ - offset_)));
  auto* dst = static_cast<uint8_t*>(out);
  size_t got = 0;
  while (got < n) {
    // One read() moves at most about 2 GiB on Linux.
    const ssize_t r = ::read(fd_, dst + got, std::min<size_t>(n - got, size_t{1} << 30));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(path_, ": read error (", std::strerror(errno), ")");
    if (r == 0) break;  // shrank since it was opened
    got += static_cast<size_t>(r);
  }
  offset_ += static_cast<int64_t>(got);
  return got;
}

void RegularFile::read_exact(void* out, size_t n) {
  const size_t got = read_upto(out, n);
  check(got == n, path_, ": ends after ", got, " of ", n, " bytes (", size_,
        " when opened; changed while reading?)");
}

void RegularFile::seek(int64_t offset) {
  check(fd_ >= 0, path_, ": seek after the file was handed over");
  // Not check(): its parts would be evaluated before lseek sets errno.
  if (::lseek(fd_, static_cast<off_t>(offset), SEEK_SET) != static_cast<off_t>(offset))
    fail(path_, ": cannot seek (", std::strerror(errno), ")");
  offset_ = offset;
}

int RegularFile::release() { return std::exchange(fd_, -1); }

std::vector<uint8_t> read_regular_file(const std::string& path, int64_t max_bytes,
                                       const char* what) {
  RegularFile file(path);
  check(file.size() <= max_bytes, path, ": ", file.size(), " bytes, more than a ", what,
        " may hold (", max_bytes, ")");
  std::vector<uint8_t> bytes(static_cast<size_t>(file.size()));
  file.read_exact(bytes.data(), bytes.size());
  return bytes;
}

}  // namespace alexnet::data

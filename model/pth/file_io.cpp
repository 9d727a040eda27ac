#include "model/pth/file_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace alexnet::pth {

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a plain file";
}

std::string octal(mode_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "0%o", static_cast<unsigned>(mode));
  return text;
}

// Opens a regular file for reading; its descriptor and size.
// O_NONBLOCK keeps open(2) of a FIFO from waiting for a writer; the kind is
// then checked on the descriptor itself, so nothing can be swapped in between.
std::pair<int, size_t> open_regular(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, errno == ENOENT ? "no such file" : std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, std::string("not a regular file (") + file_kind(st.st_mode) + ")");
  }
  return {fd, static_cast<size_t>(st.st_size)};
}

}  // namespace

FileBuffer read_file(const std::string& path) {
  const auto [fd, size] = open_regular(path);
  void* buffer = nullptr;
  if (::posix_memalign(&buffer, 64, size ? size : 1) != 0) {
    ::close(fd);
    fail(path, "cannot allocate " + std::to_string(size) + " bytes");
  }
  std::shared_ptr<void> owner(buffer, std::free);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, static_cast<uint8_t*>(buffer) + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail(path, n == 0 ? "file shrank while being read" : std::string("read failed: ") + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return {owner, static_cast<const uint8_t*>(buffer), size};
}

namespace {

// Live map_file buffers, by start address, so release_pages only ever advises
// memory that is one of them and cannot race with its munmap.
std::mutex& mappings_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::map<uintptr_t, size_t>& mappings() {
  static std::map<uintptr_t, size_t> live;
  return live;
}

}  // namespace

FileBuffer map_file(const std::string& path) {
  const auto opened = open_regular(path);
  const int fd = opened.first;
  const size_t size = opened.second;  // a plain variable: lambdas capture it (C++17)
  void* p = size ? ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (p == MAP_FAILED) return read_file(path);  // empty, or a file system without mmap
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().emplace(reinterpret_cast<uintptr_t>(p), size);
  }
  std::shared_ptr<void> owner(p, [size](void* q) {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().erase(reinterpret_cast<uintptr_t>(q));
    ::munmap(q, size);
  });
  return {owner, static_cast<const uint8_t*>(p), size};
}

void release_pages(const void* data, size_t size) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(mappings_mutex());
  auto it = mappings().upper_bound(begin);
  if (it == mappings().begin()) return;
  --it;
  const uintptr_t map_end = it->first + it->second;
  if (begin >= map_end) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (begin + page - 1) / page * page;
  const uintptr_t hi = std::min<uintptr_t>(begin + size, map_end) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

namespace {

// The process's umask, read from /proc (Linux 4.7+) so that no other thread
// sees a changed one; else by setting and restoring it.
mode_t current_umask() {
  std::FILE* f = std::fopen("/proc/self/status", "re");
  if (f) {
    char line[256];
    unsigned mask = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof(line), f)) found = std::sscanf(line, "Umask: %o", &mask) == 1;
    std::fclose(f);
    if (found) return static_cast<mode_t>(mask);
  }
  const mode_t mask = ::umask(022);
  ::umask(mask);
  return mask;
}

// What a replaced file keeps (its permission bits), or what open(2) would give
// a new one: 0666 less the umask.
mode_t mode_for(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return st.st_mode & 07777;
  return 0666 & ~current_umask();
}

}  // namespace

void write_atomically(const std::string& path, const std::function<void(int fd)>& write) {
  const mode_t mode = mode_for(path);
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());  // created 0600
  if (fd < 0) fail(path, std::string("cannot create a temporary file next to it: ") + std::strerror(errno));
  bool closed = false;
  try {
    write(fd);
    if (::fchmod(fd, mode) != 0)
      fail(path, "cannot set the new file's mode to " + octal(mode) + ": " + std::strerror(errno));
    if (::fsync(fd) != 0) fail(path, std::string("fsync failed: ") + std::strerror(errno));
    closed = true;
    if (::close(fd) != 0) fail(path, std::string("close failed: ") + std::strerror(errno));
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, std::string("rename failed: ") + std::strerror(err));
  }
  // The rename is durable once the directory entry is.
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(path, std::string("write failed: ") + (n < 0 ? std::strerror(errno) : "no progress"));
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace alexnet::pth

// serve's process set-up: the bearer token's file, then what the whole process needs before
// the service starts (malloc arenas, the descriptor limit); the service itself is
// serve/service.h.
#include "app/serve/server.h"

#include "app/serve/service.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace alexnet::serve {

std::string read_token_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot read the token file (" + std::strerror(errno) + ")");
  struct stat st {};
  std::string token;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= 4096) {
    token.resize(static_cast<size_t>(st.st_size));
    const ssize_t n = ::read(fd, token.data(), token.size());
    token.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  ::close(fd);
  if (!S_ISREG(st.st_mode) || st.st_size > 4096)
    throw std::runtime_error(path + ": the token file must be a regular file of at most 4096 bytes");
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(path + ": the token file is open to group or others (mode " + mode + "): chmod 600 " + path);
  }
  const size_t begin = token.find_first_not_of(" \t\r\n");
  token = begin == std::string::npos ? "" : token.substr(begin, token.find_last_not_of(" \t\r\n") - begin + 1);
  if (token.empty()) throw std::runtime_error(path + ": the token file is empty");
  for (unsigned char c : token)
    if (c <= 32 || c >= 127)
      throw std::runtime_error(path + ": the token must be one word of printable ASCII (as an HTTP header carries it)");
  return token;
}

int run_server(const ServeOptions& options, const LoadClassifier& load) {
#if defined(__GLIBC__)
  // glibc gives each thread that meets contention an arena of its own, up to 8 per CPU. Images
  // are decoded on the connection threads and freed on the model thread, so every arena keeps
  // pieces of freed batches: a 10-minute soak at 64 clients grew 11% over its first minute.
  // Two arenas (before any thread starts) keep that memory in common.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr)
    mallopt(M_ARENA_MAX, 2);
#endif
  // Every connection is a descriptor: the soft limit (often 1024) is raised to the hard one, and
  // --max-connections is held below what that allows.
  ServeOptions o = options;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    if (files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &files);
      ::getrlimit(RLIMIT_NOFILE, &files);
    }
    const rlim_t room = files.rlim_cur > 64 ? files.rlim_cur - 64 : 1;  // the model, logs, listeners
    if (files.rlim_cur != RLIM_INFINITY && static_cast<rlim_t>(o.connections.max_connections) > room) {
      spdlog::warn("serve: --max-connections {} lowered to {}: this process may open {} files (ulimit -n)",
                   o.connections.max_connections, room, files.rlim_cur);
      o.connections.max_connections = static_cast<int>(room);
    }
  }
  Service service(o, load);
  return service.run();
}

}  // namespace alexnet::serve

// Shared by the fuzz targets: how a broken invariant is reported, and a
// per-process scratch file for readers that take a path.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace alexnet::fuzz {

/// Reports a broken invariant and aborts: libFuzzer saves the input.
[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "invariant broken: %s\n", what.c_str());
  std::abort();
}

/// A file of this process's own under /dev/shm (or $TMPDIR, or /tmp), for
/// readers that take a path; removed when the process ends normally.
class ScratchFile {
 public:
  explicit ScratchFile(const char* name) {
    const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
    path_ = std::string(dir ? dir : "/tmp") + "/alexnet_" + name + "." + std::to_string(::getpid());
  }
  ~ScratchFile() { ::unlink(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  /// Replaces the file's contents with `size` bytes.
  const std::string& write(const uint8_t* bytes, size_t size) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr || std::fwrite(bytes, 1, size, f) != size || std::fclose(f) != 0)
      broken("cannot write the scratch file " + path_);
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace alexnet::fuzz

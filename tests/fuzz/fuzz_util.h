// Shared by the fuzz targets: how a broken invariant is reported, and a
// scratch file for readers that take a path.
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

/// A path of this process's own under /dev/shm (or $TMPDIR, or /tmp), for
/// readers and writers that take one; the file is removed when this goes out of
/// scope (libFuzzer ends with _Exit, which runs no static destructor).
class ScratchFile {
 public:
  explicit ScratchFile(const char* name) {
    const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
    path_ = std::string(dir ? dir : "/tmp") + "/alexnet_" + name + "." + std::to_string(::getpid());
  }
  /// The file holding `size` bytes.
  ScratchFile(const char* name, const uint8_t* bytes, size_t size) : ScratchFile(name) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr || std::fwrite(bytes, 1, size, f) != size || std::fclose(f) != 0)
      broken("cannot write the scratch file " + path_);
  }
  ~ScratchFile() { ::unlink(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace alexnet::fuzz

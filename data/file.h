// Opening data files without trusting them. A path may name a FIFO (opening it
// for reading blocks until a writer comes, forever with none), a device
// (/dev/zero never ends), a socket or a folder: only regular files are read,
// and never past the size fstat gave when they were opened. Every data-side
// open goes through here (images, IDX, CIFAR batches, labels and class names).
// Errors throw DataError (data/error.h) naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace alexnet::data {

/// A regular file open for reading. The open cannot block (O_RDONLY |
/// O_NONBLOCK | O_CLOEXEC | O_NOCTTY); the kind is checked with fstat on the
/// descriptor (no stat-then-open race), then O_NONBLOCK is cleared. Throws
/// "PATH: no such file", "PATH: not a regular file (a FIFO)" (a socket, a
/// character device, a block device, a directory) or "PATH: cannot open (why)".
class RegularFile {
 public:
  explicit RegularFile(std::string path);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;

  const std::string& path() const { return path_; }
  /// Size in bytes when it was opened; reads never go past it.
  int64_t size() const { return size_; }
  /// Up to n bytes from the current offset, fewer only at the end (of size()).
  size_t read_upto(void* out, size_t n);
  /// Exactly n bytes from the current offset; throws naming the file when it ends sooner.
  void read_exact(void* out, size_t n);
  /// Moves the offset to `offset` bytes from the start.
  void seek(int64_t offset);
  /// Gives up the descriptor to a reader that closes it (zlib's gzdopen).
  int release();

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
  int64_t offset_ = 0;
};

/// The whole of a regular file. One larger than max_bytes is refused before
/// reading, with an error naming the file as `what` ("labels file").
std::vector<uint8_t> read_regular_file(const std::string& path,
                                       int64_t max_bytes = std::numeric_limits<int64_t>::max(),
                                       const char* what = "file");

/// A text file (labels, class names) is refused above this size: 64 MiB.
constexpr int64_t kMaxTextFileBytes = int64_t{64} << 20;

}  // namespace alexnet::data

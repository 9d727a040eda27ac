// The subset of ZIP that torch.save and torch.jit.save use: stored (never
// compressed) entries, record data aligned to 64 bytes, ZIP64 beyond 4 GiB.
// Reads from memory without copying; writes to a file descriptor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace alexnet::pth {

/// CRC-32 (IEEE, as zip uses), continuing from `crc` (0 to start).
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // bytes from the start of the archive
  uint64_t size = 0;         // bytes
  uint32_t crc32 = 0;
  uint16_t method = 0;       // 0 = stored
};

/// A zip archive in memory. Every offset and size is checked against the
/// buffer at construction, and so is the layout: names are unique, and no two
/// entries' headers or data overlap, so no byte is served twice (a "zip bomb"
/// of aliases). Reading costs time linear in the file: entries are indexed
/// once by name, and each record's CRC is verified once, on first use.
/// Errors throw FormatError "<source>: <what>".
class ZipReader {
 public:
  ZipReader(const uint8_t* data, size_t size, std::string source);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  /// The entry's bytes; a compressed entry or a CRC mismatch (when verify) is an error.
  const uint8_t* data(const ZipEntry& entry, bool verify_crc = true) const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void check_layout(const std::vector<uint64_t>& header_offsets) const;

  const uint8_t* data_;
  size_t size_;
  std::string source_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> entries_ position
  // One flag per entry, set once its CRC has matched; shared so copies agree.
  std::shared_ptr<std::vector<bool>> verified_;
};

/// Writes stored entries with data aligned to kZipAlignment, then the central directory.
class ZipWriter {
 public:
  static constexpr uint64_t kZipAlignment = 64;  // bytes, as PyTorch's writer aligns records

  ZipWriter(int fd, std::string path);
  void add(const std::string& name, const void* data, size_t size);
  /// Writes the central directory; the file is complete after this.
  void finish();

 private:
  void write(const void* data, size_t size);

  int fd_;
  std::string path_;
  uint64_t offset_ = 0;
  struct Written {
    std::string name;
    uint64_t header_offset;
    uint64_t size;
    uint32_t crc;
  };
  std::vector<Written> written_;
};

}  // namespace alexnet::pth

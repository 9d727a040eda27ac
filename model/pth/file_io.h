// Files in and out: a weights file mapped or read whole (its bytes then
// checked by the format readers), and files created atomically.
#pragma once

#include "model/pth/pth_value.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace alexnet::pth {

/// A whole file's bytes, kept alive by `owner`.
struct FileBuffer {
  std::shared_ptr<const void> owner;
  const uint8_t* data = nullptr;
  size_t size = 0;
};

/// The whole file in one 64-byte aligned buffer, read with one pass. Throws
/// FormatError "<path>: <what>" when it is missing or not a regular file.
FileBuffer read_file(const std::string& path);

/// The whole file mapped copy-on-write (MAP_PRIVATE): a page is read from the
/// page cache when first touched, so bytes never looked at cost no memory, and
/// release_pages() gives read pages back. Falls back to read_file where the file
/// cannot be mapped. As with any mapped file, another process truncating it
/// while it is mapped makes access to the lost pages fault: keep such buffers
/// short-lived (a WeightsFile holds one while it lives; load_alexnet copies out
/// of it and drops it).
FileBuffer map_file(const std::string& path);

/// Drops the pages wholly inside [data, data + size) from this process's
/// resident memory when they belong to a live map_file buffer; touched again,
/// they are read from the file again. A no-op for any other memory. Only for
/// pages never written through the mapping (a written page would revert).
void release_pages(const void* data, size_t size);

/// Creates `path` atomically: `write` fills a temporary file in the same
/// directory, which is fsynced and renamed over `path`, then the directory is
/// fsynced. On any error the temporary is removed and an existing `path` is
/// untouched; errors throw FormatError "<path>: <what>".
void write_atomically(const std::string& path, const std::function<void(int fd)>& write);

/// Writes all `size` bytes to `fd` (retrying short writes and EINTR); throws
/// FormatError "<path>: write failed: <why>".
void write_all(int fd, const void* data, size_t size, const std::string& path);

}  // namespace alexnet::pth

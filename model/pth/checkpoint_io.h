// PyTorch checkpoint files without LibTorch: detection by content, reading
// torch.save's zip and legacy formats into a value tree, and writing the zip
// format atomically.
#pragma once

#include "model/pth/pth_value.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::pth {

enum class FileFormat {
  kUnknown,
  kPthZip,       // torch.save, zip container (PyTorch >= 1.6)
  kPthLegacy,    // torch.save(..., _use_new_zipfile_serialization=False)
  kTorchScript,  // torch.jit.save: a zip with code/ or constants.pkl
};

/// Looks at the bytes only (never the extension). A zip archive is parsed to tell
/// TorchScript from torch.save; a broken zip is an error rather than kUnknown.
FileFormat detect_format(const uint8_t* data, size_t size, const std::string& source);

struct Checkpoint {
  FileFormat format = FileFormat::kUnknown;
  Value root;  // what was passed to torch.save
  /// A TorchScript archive's extra files (torch.jit.save's _extra_files, stored
  /// as <name>/extra/<file>) of at most kMaxExtraFileBytes each, by file name.
  std::vector<std::pair<std::string, std::string>> extra_files;
};
constexpr size_t kMaxExtraFileBytes = size_t{1} << 20;

/// Parses a torch.save file or a TorchScript archive held in memory, running
/// nothing from it. Tensors point into `data`, which `owner` keeps alive (it may
/// be null when the caller guarantees the lifetime). A TorchScript archive's
/// root is its module as a dict of attributes (see PickleKind::kTorchScript);
/// its code is never read. Errors throw FormatError "<source>: <what>".
Checkpoint parse_checkpoint(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                            const std::string& source);

/// A whole file in one 64-byte aligned buffer, read with one pass.
struct FileBuffer {
  std::shared_ptr<const void> owner;
  const uint8_t* data = nullptr;
  size_t size = 0;
};
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

/// read_file + parse_checkpoint.
Checkpoint read_checkpoint(const std::string& path);

/// Writes `root` as torch.save's zip format: <name>/data.pkl, <name>/data/<key>,
/// <name>/version "3", <name>/byteorder "little", records 64-byte aligned.
void write_checkpoint(const std::string& path, const Value& root);

/// Creates `path` atomically: `write` fills a temporary file in the same
/// directory, which is fsynced and renamed over `path`, then the directory is
/// fsynced. On any error the temporary is removed and an existing `path` is
/// untouched; errors throw FormatError "<path>: <what>".
void write_atomically(const std::string& path, const std::function<void(int fd)>& write);

}  // namespace alexnet::pth

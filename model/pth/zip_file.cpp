#include "model/pth/zip_file.h"

#include "model/pth/file_io.h"
#include "model/pth/pth_value.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace alexnet::pth {

namespace {

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return u16(p) | static_cast<uint32_t>(u16(p + 2)) << 16; }
uint64_t u64(const uint8_t* p) { return u32(p) | static_cast<uint64_t>(u32(p + 4)) << 32; }

void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xFF));
  out.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v & 0xFFFF));
  put16(out, static_cast<uint16_t>(v >> 16));
}

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22;            // bytes of the end-of-central-directory record
constexpr size_t kCentralHeaderSize = 46;  // bytes before the name
constexpr size_t kLocalHeaderSize = 30;    // bytes before the name
constexpr uint64_t kZip32Max = 0xFFFFFFFFu;

// The archive's bytes and name, as the checks below need them.
struct Archive {
  const uint8_t* data;
  size_t size;
  const std::string& source;
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(source + ": zip archive: " + what);
  }
};

// Where the central directory lies: from the end record, or its ZIP64 record
// when the end record's fields are saturated.
struct Directory {
  uint64_t count = 0;   // entries
  uint64_t size = 0;    // bytes
  uint64_t offset = 0;  // bytes from the start of the archive
};

Directory find_directory(const Archive& a) {
  // The end record sits in the last 22 + 65535 (comment) bytes.
  if (a.size < kEndSize) a.fail("too short for an end-of-central-directory record");
  size_t end = a.size - kEndSize;
  const size_t lowest = a.size > kEndSize + 0xFFFF ? a.size - kEndSize - 0xFFFF : 0;
  while (u32(a.data + end) != kEndSig) {
    if (end == lowest) a.fail("no end-of-central-directory record (truncated?)");
    --end;
  }
  Directory dir;
  dir.count = u16(a.data + end + 10);
  dir.size = u32(a.data + end + 12);
  dir.offset = u32(a.data + end + 16);

  if (dir.count == 0xFFFF || dir.size == kZip32Max || dir.offset == kZip32Max) {
    if (end < 20 || u32(a.data + end - 20) != kZip64LocatorSig) a.fail("ZIP64 locator missing");
    const uint64_t z64 = u64(a.data + end - 20 + 8);
    if (z64 > a.size || a.size - z64 < 56 || u32(a.data + z64) != kZip64EndSig)
      a.fail("ZIP64 end record out of bounds");
    dir.count = u64(a.data + z64 + 32);
    dir.size = u64(a.data + z64 + 40);
    dir.offset = u64(a.data + z64 + 48);
  }
  if (dir.offset > a.size || dir.size > a.size - dir.offset) a.fail("central directory out of bounds");
  if (dir.count > dir.size / kCentralHeaderSize) a.fail("central directory too small for its entry count");
  return dir;
}

// ZIP64 extra field (id 1): 64-bit values for the fields saturated in the
// central header, in this order: size, compressed size, local header offset.
void read_zip64_extra(const Archive& a, const uint8_t* extra, size_t extra_len, const std::string& name,
                      uint64_t* size, uint64_t* compressed, uint64_t* header_offset) {
  for (size_t x = 0; x + 4 <= extra_len;) {
    const uint16_t id = u16(extra + x), len = u16(extra + x + 2);
    if (x + 4 + len > extra_len) a.fail("entry '" + name + "': extra field past its end");
    if (id == 1) {
      size_t at = x + 4;
      auto take = [&](uint64_t& field) {
        if (field != kZip32Max) return;
        if (at + 8 > x + 4 + len) a.fail("entry '" + name + "': short ZIP64 field");
        field = u64(extra + at);
        at += 8;
      };
      take(*size);
      take(*compressed);
      take(*header_offset);
    }
    x += 4 + len;
  }
}

// One central directory entry, starting `pos` bytes into the file.
struct CentralRecord {
  ZipEntry entry;
  uint64_t header_offset = 0;  // of its local header
  uint64_t length = 0;         // bytes of this record in the central directory
};

// Reads the entry at `pos` (the i-th, in a directory ending at dir_end) and
// checks its local header and data against the file.
CentralRecord read_central_record(const Archive& a, uint64_t pos, uint64_t dir_end, uint64_t i) {
  if (dir_end - pos < kCentralHeaderSize || u32(a.data + pos) != kCentralHeaderSig)
    a.fail("bad central directory entry " + std::to_string(i));
  const uint8_t* h = a.data + pos;
  const uint16_t flags = u16(h + 8);
  CentralRecord r;
  ZipEntry& e = r.entry;
  e.method = u16(h + 10);
  e.crc32 = u32(h + 16);
  uint64_t compressed = u32(h + 20);
  e.size = u32(h + 24);
  const size_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
  r.header_offset = u32(h + 42);
  if (dir_end - pos - kCentralHeaderSize < name_len + extra_len + comment_len)
    a.fail("central directory entry " + std::to_string(i) + " runs past the directory");
  e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
  read_zip64_extra(a, h + kCentralHeaderSize + name_len, extra_len, e.name, &e.size, &compressed,
                   &r.header_offset);
  if (flags & 1) a.fail("entry '" + e.name + "' is encrypted");
  if (e.method == 0 && compressed != e.size)
    a.fail("stored entry '" + e.name + "' has different compressed and plain sizes");

  const uint64_t header_offset = r.header_offset;
  if (header_offset > a.size || a.size - header_offset < kLocalHeaderSize ||
      u32(a.data + header_offset) != kLocalHeaderSig)
    a.fail("entry '" + e.name + "': local header out of bounds");
  const uint64_t data_start =
      header_offset + kLocalHeaderSize + u16(a.data + header_offset + 26) + u16(a.data + header_offset + 28);
  if (data_start > a.size || compressed > a.size - data_start)
    a.fail("entry '" + e.name + "': data runs past the end of the file (truncated?)");
  e.data_offset = data_start;
  if (e.method != 0) e.size = compressed;
  r.length = kCentralHeaderSize + name_len + extra_len + comment_len;
  return r;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  // zlib's CRC-32 (the zip polynomial) runs at several GB/s; fed in chunks
  // because its length argument is 32-bit.
  constexpr size_t kChunk = size_t{1} << 30;
  while (size > 0) {
    const size_t n = std::min(size, kChunk);
    crc = static_cast<uint32_t>(::crc32(crc, data, static_cast<uInt>(n)));
    data += n;
    size -= n;
  }
  return crc;
}

void ZipReader::fail(const std::string& what) const { Archive{data_, size_, source_}.fail(what); }

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string source)
    : data_(data), size_(size), source_(std::move(source)) {
  const Archive archive{data_, size_, source_};
  const Directory dir = find_directory(archive);
  entries_.reserve(dir.count);
  std::vector<uint64_t> header_offsets;
  header_offsets.reserve(dir.count);
  uint64_t pos = dir.offset;
  const uint64_t dir_end = dir.offset + dir.size;
  for (uint64_t i = 0; i < dir.count; ++i) {
    CentralRecord r = read_central_record(archive, pos, dir_end, i);
    if (!index_.emplace(r.entry.name, entries_.size()).second) fail("entry '" + r.entry.name + "' appears twice");
    header_offsets.push_back(r.header_offset);
    entries_.push_back(std::move(r.entry));
    pos += r.length;
  }
  for (const auto& e : entries_)
    if (e.data_offset + e.size > dir.offset)
      fail("entry '" + e.name + "' runs into the central directory (a crafted archive)");
  check_layout(header_offsets);
  verified_ = std::make_shared<std::vector<bool>>(entries_.size(), false);
}

// Each entry owns [local header, end of data); sorted by start, each must end
// before the next begins, and none may reach into the central directory.
void ZipReader::check_layout(const std::vector<uint64_t>& header_offsets) const {
  std::vector<size_t> order(entries_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return header_offsets[a] < header_offsets[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const ZipEntry& prev = entries_[order[k - 1]];
    if (prev.data_offset + prev.size > header_offsets[order[k]])
      fail("entries '" + prev.name + "' and '" + entries_[order[k]].name +
           "' overlap (a crafted archive)");
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipReader::data(const ZipEntry& entry, bool verify_crc) const {
  if (entry.method != 0)
    fail("entry '" + entry.name + "' is compressed (method " + std::to_string(entry.method) +
         "); torch.save writes stored entries only");
  const uint8_t* p = data_ + entry.data_offset;
  const size_t i = static_cast<size_t>(&entry - entries_.data());
  if (verify_crc && !(*verified_)[i]) {
    if (crc32(p, entry.size) != entry.crc32)
      fail("entry '" + entry.name + "': CRC-32 mismatch (corrupted file)");
    (*verified_)[i] = true;
  }
  return p;
}

ZipWriter::ZipWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

void ZipWriter::write(const void* data, size_t size) {
  write_all(fd_, data, size, path_);
  offset_ += size;
}

void ZipWriter::add(const std::string& name, const void* data, size_t size) {
  if (offset_ + size + 4096 > kZip32Max)
    throw FormatError(path_ + ": archive would exceed 4 GiB (ZIP64 writing is not supported)");
  const uint32_t crc = crc32(static_cast<const uint8_t*>(data), size);

  // Pad with an extra field (id "FB", as PyTorch's writer does) so the data starts aligned.
  const uint64_t unpadded = offset_ + kLocalHeaderSize + name.size() + 4;
  const uint16_t pad = static_cast<uint16_t>((kZipAlignment - unpadded % kZipAlignment) % kZipAlignment);
  std::string header;
  put32(header, kLocalHeaderSig);
  put16(header, 20);  // version needed
  put16(header, 0);   // flags
  put16(header, 0);   // method: stored
  put16(header, 0);   // time
  put16(header, 0x21);  // date: 1980-01-01
  put32(header, crc);
  put32(header, static_cast<uint32_t>(size));
  put32(header, static_cast<uint32_t>(size));
  put16(header, static_cast<uint16_t>(name.size()));
  put16(header, static_cast<uint16_t>(4 + pad));
  header += name;
  put16(header, 0x4246);  // "FB"
  put16(header, pad);
  header.append(pad, 'Z');

  written_.push_back({name, offset_, size, crc});
  write(header.data(), header.size());
  write(data, size);
}

void ZipWriter::finish() {
  std::string dir;
  for (const auto& w : written_) {
    put32(dir, kCentralHeaderSig);
    put16(dir, 20);  // version made by
    put16(dir, 20);  // version needed
    put16(dir, 0);
    put16(dir, 0);
    put16(dir, 0);
    put16(dir, 0x21);
    put32(dir, w.crc);
    put32(dir, static_cast<uint32_t>(w.size));
    put32(dir, static_cast<uint32_t>(w.size));
    put16(dir, static_cast<uint16_t>(w.name.size()));
    put16(dir, 0);  // extra
    put16(dir, 0);  // comment
    put16(dir, 0);  // disk
    put16(dir, 0);  // internal attributes
    put32(dir, 0);  // external attributes
    put32(dir, static_cast<uint32_t>(w.header_offset));
    dir += w.name;
  }
  const uint64_t dir_offset = offset_;
  std::string end;
  put32(end, kEndSig);
  put16(end, 0);
  put16(end, 0);
  put16(end, static_cast<uint16_t>(written_.size()));
  put16(end, static_cast<uint16_t>(written_.size()));
  put32(end, static_cast<uint32_t>(dir.size()));
  put32(end, static_cast<uint32_t>(dir_offset));
  put16(end, 0);
  write(dir.data(), dir.size());
  write(end.data(), end.size());
}

}  // namespace alexnet::pth

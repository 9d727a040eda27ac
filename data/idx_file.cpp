#include "data/idx_file.h"

#include "data/error.h"
#include "data/file.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <utility>

namespace alexnet::data {

namespace {

// Deflate expands data at most 1032:1 (zlib's FAQ), so a gzip file of n bytes
// holds at most 1032 n: a header declaring more is refused before allocating.
constexpr uint64_t kMaxDeflateRatio = 1032;

// An IDX file's bytes: the plain file, or its gzip stream inflated on demand
// (detected from the content, as zlib does), so that nothing past what the
// header declares is ever inflated.
class IdxStream {
 public:
  explicit IdxStream(const std::string& path) : file_(path) {
    uint8_t magic[2] = {0, 0};
    const bool gzip = file_.read_upto(magic, 2) == 2 && magic[0] == 0x1F && magic[1] == 0x8B;
    file_.seek(0);
    if (gzip) {
      const int fd = file_.release();
      gz_ = ::gzdopen(fd, "rb");
      if (gz_ == nullptr) ::close(fd);
      check(gz_ != nullptr, path, ": cannot open for reading (zlib)");
    }
  }
  ~IdxStream() {
    if (gz_ != nullptr) ::gzclose(gz_);
  }
  IdxStream(const IdxStream&) = delete;
  IdxStream& operator=(const IdxStream&) = delete;

  bool gzip() const { return gz_ != nullptr; }
  /// Bytes of the file itself (compressed, for gzip).
  int64_t file_size() const { return file_.size(); }

  /// Up to n bytes of data, fewer only at its end.
  size_t read_upto(uint8_t* out, size_t n) {
    if (gz_ == nullptr) return file_.read_upto(out, n);
    size_t got = 0;
    while (got < n) {
      const int r =
          ::gzread(gz_, out + got, static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30)));
      if (r < 0) {
        int code = 0;
        fail(file_.path(), ": corrupt gzip data (", ::gzerror(gz_, &code), ")");
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }

  /// Closes a gzip stream, checking that it ended properly.
  void finish() {
    if (gz_ == nullptr) return;
    // gzread returns 0 (not an error) at a truncated gzip stream's end; gzclose reports it.
    const int rc = ::gzclose(std::exchange(gz_, nullptr));
    check(rc == Z_OK, file_.path(), ": truncated or corrupt gzip data");
  }

 private:
  RegularFile file_;
  gzFile gz_ = nullptr;
};

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// "[2, 28, 28]", as LibTorch prints sizes (the messages are those of the reader
// that built a tensor directly).
std::string sizes_text(const std::vector<int64_t>& sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t d = 0; d < sizes.size(); ++d) out << (d > 0 ? ", " : "") << sizes[d];
  out << "]";
  return out.str();
}

}  // namespace

IdxData read_idx(const std::string& path) {
  IdxStream in(path);
  // Magic: two zero bytes, type code (0x08 = uint8), number of dimensions;
  // then one big-endian uint32 size per dimension.
  uint8_t header[4 + 4 * 3];
  const size_t got = in.read_upto(header, 4);
  check(got == 4, path, ": not an IDX file (", got, " bytes)");
  if (header[0] != 0 || header[1] != 0 || header[2] != 0x08 || header[3] < 1 || header[3] > 3) {
    std::ostringstream magic;
    magic << std::hex << big_endian_u32(header);
    fail(path, ": wrong IDX magic number 0x", magic.str(),
         " (expected 0x00000801 for labels or 0x00000803 for images)");
  }
  const int ndim = header[3];
  const size_t dims_bytes = 4 * static_cast<size_t>(ndim);
  check(in.read_upto(header + 4, dims_bytes) == dims_bytes, path, ": truncated IDX header");
  IdxData out;
  out.sizes.resize(ndim);
  uint64_t count = 1;
  bool overflow = false;
  for (int d = 0; d < ndim; ++d) {
    out.sizes[d] = big_endian_u32(header + 4 + 4 * d);
    overflow |= __builtin_mul_overflow(count, static_cast<uint64_t>(out.sizes[d]), &count);
  }
  const std::string shape = sizes_text(out.sizes);
  // The data's size is checked against the file before anything is allocated or inflated.
  check(!overflow && count <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), path,
        ": IDX header declares shape ", shape, ", more than 2^63 bytes");
  if (!in.gzip()) {
    const auto data = static_cast<uint64_t>(in.file_size()) - 4 - dims_bytes;
    check(data <= count, path, ": ", data - count, " bytes of data after the ", count,
          " the IDX header declares for shape ", shape);
    check(data == count, path, ": IDX header promises ", count, " bytes of data for shape ",
          shape, ", file has ", data);
  } else {
    const auto compressed = static_cast<uint64_t>(in.file_size());
    check(count / kMaxDeflateRatio <= compressed, path, ": IDX header promises ", count,
          " bytes of data for shape ", shape, ", more than a gzip file of ", compressed,
          " bytes can hold");
  }
  out.bytes.resize(static_cast<size_t>(count));
  const size_t have = in.read_upto(out.bytes.data(), out.bytes.size());
  check(have == count, path, ": IDX header promises ", count, " bytes of data for shape ", shape,
        in.gzip() ? ", the gzip data holds " : ", file has ", have);
  // One byte more tells excess data apart, without inflating the rest of a bomb.
  uint8_t extra = 0;
  check(in.read_upto(&extra, 1) == 0, path, ": more data after the ", count,
        " bytes the IDX header declares for shape ", shape);
  in.finish();
  return out;
}

}  // namespace alexnet::data

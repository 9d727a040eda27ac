#include "data/image_header.h"

#include "data/error.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace alexnet::data {

namespace {

std::atomic<int64_t> max_pixels{kDefaultMaxImagePixels};

// Bounds-checked reads from the first bytes of a file of one format; anything
// out of bounds or inconsistent throws "NAME: FORMAT header ...".
class Header {
 public:
  Header(const uint8_t* bytes, size_t size, const std::string& name, const char* format)
      : b_(bytes), n_(size), name_(name), format_(format) {}

  size_t size() const { return n_; }
  bool has(uint64_t offset, uint64_t count) const { return offset <= n_ && count <= n_ - offset; }
  const uint8_t* at(uint64_t offset, uint64_t count) const {
    if (!has(offset, count)) fail("is cut short");
    return b_ + offset;
  }
  uint8_t u8(uint64_t o) const { return *at(o, 1); }
  uint32_t be16(uint64_t o) const {
    const uint8_t* p = at(o, 2);
    return (uint32_t{p[0]} << 8) | p[1];
  }
  uint32_t le16(uint64_t o) const {
    const uint8_t* p = at(o, 2);
    return (uint32_t{p[1]} << 8) | p[0];
  }
  uint32_t le24(uint64_t o) const {
    const uint8_t* p = at(o, 3);
    return (uint32_t{p[2]} << 16) | le16(o);
  }
  uint32_t be32(uint64_t o) const { return (be16(o) << 16) | be16(o + 2); }
  uint32_t le32(uint64_t o) const { return (le16(o + 2) << 16) | le16(o); }
  uint64_t be64(uint64_t o) const { return (uint64_t{be32(o)} << 32) | be32(o + 4); }
  uint64_t le64(uint64_t o) const { return (uint64_t{le32(o + 4)} << 32) | le32(o); }
  bool matches(uint64_t o, const char* text) const {
    const size_t len = std::strlen(text);
    return has(o, len) && std::memcmp(b_ + o, text, len) == 0;
  }

  [[noreturn]] void fail(const char* why) const {
    data::fail(name_, ": ", format_, " header ", why, " (truncated or corrupt file)");
  }
  ImageHeader size_of(uint64_t width, uint64_t height) const { return {format_, width, height}; }

 private:
  const uint8_t* b_;
  size_t n_;
  const std::string& name_;
  const char* format_;
};

bool is_sof(uint8_t marker) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// The first SOFn marker's size. Between segments, bytes other than a marker are
// skipped as libjpeg skips them (with a warning), so a file libjpeg reads is read here.
ImageHeader jpeg_size(const Header& h) {
  uint64_t i = 2;  // after SOI (FF D8)
  for (;;) {
    while (h.has(i, 1) && h.u8(i) != 0xFF) ++i;
    while (h.has(i, 1) && h.u8(i) == 0xFF) ++i;  // fill bytes
    if (!h.has(i, 1)) h.fail("has no frame (SOF) marker");
    const uint8_t marker = h.u8(i++);
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7))
      continue;  // no length
    if (marker == 0xD9 || marker == 0xDA) h.fail("has no frame (SOF) marker before its data");
    const uint32_t length = h.be16(i);
    if (length < 2) h.fail("has a segment shorter than its length field");
    // SOFn: length, precision, height, width (big-endian).
    if (is_sof(marker)) return h.size_of(h.be16(i + 5), h.be16(i + 3));
    i += length;
  }
}

ImageHeader png_size(const Header& h) {
  // Signature, then the IHDR chunk: length, "IHDR", width, height (big-endian).
  if (!h.matches(12, "IHDR")) h.fail("does not start with IHDR");
  return h.size_of(h.be32(16), h.be32(20));
}

ImageHeader bmp_size(const Header& h) {
  // BITMAPFILEHEADER (14 bytes), then the info header, which starts with its size.
  const uint32_t info = h.le32(14);
  if (info == 12) return h.size_of(h.le16(18), h.le16(20));  // OS/2 1.x: 16-bit sizes
  if (info < 16) h.fail("has an unknown info header size");
  // Signed: a negative height means rows stored top-down.
  const auto width = static_cast<int32_t>(h.le32(18));
  const auto height = static_cast<int32_t>(h.le32(22));
  return h.size_of(static_cast<uint64_t>(std::abs(int64_t{width})),
                   static_cast<uint64_t>(std::abs(int64_t{height})));
}

ImageHeader webp_size(const Header& h) {
  // RIFF, size, WEBP, then the first chunk: fourcc, size, data at 20.
  if (h.matches(12, "VP8 ")) {
    // Lossy: frame tag (3 bytes), start code 9D 01 2A, 14-bit width and height.
    if (h.u8(23) != 0x9D || h.u8(24) != 0x01 || h.u8(25) != 0x2A) h.fail("has no VP8 start code");
    return h.size_of(h.le16(26) & 0x3FFF, h.le16(28) & 0x3FFF);
  }
  if (h.matches(12, "VP8L")) {
    // Lossless: signature 0x2F, then width - 1 and height - 1 in 14 bits each.
    if (h.u8(20) != 0x2F) h.fail("has no VP8L signature");
    const uint32_t bits = h.le32(21);
    return h.size_of((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  // Extended: flags (4 bytes), canvas width - 1 and height - 1 in 24 bits each.
  if (h.matches(12, "VP8X")) return h.size_of(uint64_t{h.le24(24)} + 1, uint64_t{h.le24(27)} + 1);
  h.fail("starts with no VP8, VP8L or VP8X chunk");
}

// The first image's ImageWidth (256) and ImageLength (257) in the first IFD;
// OpenCV decodes that image.
ImageHeader tiff_size(const Header& h) {
  const bool le = h.u8(0) == 'I';
  const auto u16 = [&](uint64_t o) { return le ? h.le16(o) : h.be16(o); };
  const auto u32 = [&](uint64_t o) { return le ? h.le32(o) : h.be32(o); };
  const auto u64 = [&](uint64_t o) { return le ? h.le64(o) : h.be64(o); };
  // Classic TIFF: 32-bit IFD offset, 16-bit entry count, 12-byte entries (tag,
  // type, count, value). BigTIFF: 64-bit offset and count, 20-byte entries.
  const bool big = u16(2) == 43;
  if (big && u16(4) != 8) h.fail("has an unknown BigTIFF offset size");
  const uint64_t ifd = big ? u64(8) : u32(4);
  const uint64_t count = big ? u64(ifd) : u16(ifd);
  const uint64_t first = ifd + (big ? 8 : 2);
  const uint64_t entry_size = big ? 20 : 12;
  const uint64_t value_at = big ? 12 : 8;
  uint64_t width = 0, height = 0;
  bool have_width = false, have_height = false;
  for (uint64_t k = 0; k < count && !(have_width && have_height); ++k) {
    const uint64_t e = first + k * entry_size;
    if (!h.has(e, entry_size)) h.fail("is cut short");
    const uint32_t tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257) continue;
    uint64_t value;
    if (type == 3)
      value = u16(e + value_at);  // SHORT
    else if (type == 4)
      value = u32(e + value_at);  // LONG
    else if (type == 16 && big)
      value = u64(e + value_at);  // LONG8
    else
      h.fail("has an image size of an unknown type");
    (tag == 256 ? width : height) = value;
    (tag == 256 ? have_width : have_height) = true;
  }
  if (!have_width || !have_height) h.fail("has no image width or length");
  return h.size_of(width, height);
}

bool is_space(uint8_t c) { return std::isspace(c) != 0; }

// The next decimal number of a PBM/PGM/PPM/PFM header from i, skipping white
// space and '#' comments (to the end of the line), as OpenCV's reader does.
uint64_t pnm_number(const Header& h, uint64_t& i) {
  for (;;) {
    if (!h.has(i, 1)) h.fail("is cut short");
    const uint8_t c = h.u8(i);
    if (std::isdigit(c)) break;
    if (c == '#') {
      while (h.has(i, 1) && h.u8(i) != '\n' && h.u8(i) != '\r') ++i;
    } else if (is_space(c)) {
      ++i;
    } else {
      h.fail("has a size that is not a number");
    }
  }
  uint64_t value = 0;
  while (h.has(i, 1) && std::isdigit(h.u8(i))) {
    value = value * 10 + (h.u8(i++) - '0');
    if (value > 0xFFFFFFFFu) h.fail("has a size above 2^32");
  }
  return value;
}

ImageHeader pnm_size(const Header& h) {
  uint64_t i = 2;
  const uint64_t width = pnm_number(h, i);
  return h.size_of(width, pnm_number(h, i));
}

// Lines up to i's next line end, advancing i past it.
std::string next_line(const Header& h, uint64_t& i) {
  std::string line;
  while (h.has(i, 1) && h.u8(i) != '\n') line.push_back(static_cast<char>(h.u8(i++)));
  if (!h.has(i, 1)) h.fail("is cut short");
  ++i;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// PAM: "P7", then "KEYWORD value" lines up to ENDHDR.
ImageHeader pam_size(const Header& h) {
  uint64_t i = 3;
  long long width = -1, height = -1;
  for (;;) {
    std::istringstream line(next_line(h, i));
    std::string key;
    if (!(line >> key) || key[0] == '#') continue;
    if (key == "ENDHDR") break;
    if (key == "WIDTH" && !(line >> width)) h.fail("has a WIDTH that is not a number");
    if (key == "HEIGHT" && !(line >> height)) h.fail("has a HEIGHT that is not a number");
  }
  if (width < 0 || height < 0) h.fail("has no WIDTH or HEIGHT");
  return h.size_of(static_cast<uint64_t>(width), static_cast<uint64_t>(height));
}

// Radiance: header lines up to an empty one, then the resolution ("-Y 480 +X 640").
ImageHeader hdr_size(const Header& h) {
  uint64_t i = 0;
  while (!next_line(h, i).empty()) {
  }
  std::istringstream line(next_line(h, i));
  std::string axis1, axis2;
  long long n1 = -1, n2 = -1;
  const auto is_axis = [](const std::string& a) {
    return a.size() == 2 && (a[0] == '+' || a[0] == '-') && (a[1] == 'X' || a[1] == 'Y');
  };
  if (!(line >> axis1 >> n1 >> axis2 >> n2) || !is_axis(axis1) || !is_axis(axis2) ||
      axis1[1] == axis2[1] || n1 < 0 || n2 < 0)
    h.fail("has no resolution line");
  const auto first = static_cast<uint64_t>(n1), second = static_cast<uint64_t>(n2);
  return axis1[1] == 'X' ? h.size_of(first, second) : h.size_of(second, first);
}

// JPEG 2000 codestream from `at`: SOC (FF 4F), SIZ (FF 51): length, capabilities,
// Xsiz, Ysiz, XOsiz, YOsiz; the image is (Xsiz - XOsiz) x (Ysiz - YOsiz).
ImageHeader j2k_size(const Header& h, uint64_t at) {
  if (h.be32(at) != 0xFF4FFF51u) h.fail("has no SIZ marker");
  const uint32_t x = h.be32(at + 8), y = h.be32(at + 12), x0 = h.be32(at + 16),
                 y0 = h.be32(at + 20);
  if (x0 > x || y0 > y) h.fail("has an image offset past its size");
  return h.size_of(x - x0, y - y0);
}

// JP2: boxes (length, type, contents) to the codestream box, whose SIZ the
// decoder (OpenJPEG) follows.
ImageHeader jp2_size(const Header& h) {
  uint64_t at = 0;
  while (h.has(at, 8)) {
    uint64_t length = h.be32(at);
    uint64_t header = 8;
    if (length == 1) {  // a 64-bit length follows the type
      length = h.be64(at + 8);
      header = 16;
    } else if (length == 0) {  // the last box, to the end of the file
      length = h.size() - at;
    }
    if (length < header) h.fail("has a box shorter than its header");
    if (h.matches(at + 4, "jp2c")) return j2k_size(h, at + header);
    if (length > h.size() - at) break;
    at += length;
  }
  h.fail("has no codestream box");
}

// OpenEXR: magic, version, then attributes (name, type, size, value) up to an
// empty name; the image is the dataWindow box (xMin, yMin, xMax, yMax).
ImageHeader exr_size(const Header& h) {
  uint64_t i = 8;
  const auto c_string = [&]() {
    std::string s;
    while (h.u8(i) != 0) s.push_back(static_cast<char>(h.u8(i++)));
    ++i;
    return s;
  };
  for (;;) {
    const std::string name = c_string();
    if (name.empty()) h.fail("has no dataWindow");
    const std::string type = c_string();
    const auto size = static_cast<int32_t>(h.le32(i));
    if (size < 0) h.fail("has an attribute of negative size");
    i += 4;
    if (name == "dataWindow") {
      if (type != "box2i" || size != 16) h.fail("has a dataWindow that is not a box2i");
      const auto s = [&](uint64_t o) { return int64_t{static_cast<int32_t>(h.le32(i + o))}; };
      const int64_t width = s(8) - s(0) + 1, height = s(12) - s(4) + 1;
      if (width <= 0 || height <= 0) h.fail("has an empty dataWindow");
      return h.size_of(static_cast<uint64_t>(width), static_cast<uint64_t>(height));
    }
    i += static_cast<uint64_t>(size);
  }
}

}  // namespace

void set_max_image_pixels(int64_t pixels) {
  check(pixels >= 0, "image pixel limit must not be negative, got ", pixels);
  max_pixels.store(pixels);
}

int64_t max_image_pixels() { return max_pixels.load(); }

std::optional<ImageHeader> read_image_header(const uint8_t* bytes, size_t size,
                                             const std::string& name) {
  const auto starts = [&](const char* sig, size_t len) {
    return size >= len && std::memcmp(bytes, sig, len) == 0;
  };
  const auto header = [&](const char* format) { return Header(bytes, size, name, format); };
  if (starts("\xFF\xD8\xFF", 3)) return jpeg_size(header("JPEG"));
  if (starts("\x89PNG\r\n\x1A\n", 8)) return png_size(header("PNG"));
  if (starts("BM", 2)) return bmp_size(header("BMP"));
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) {
    const Header h = header("GIF");  // logical screen: width, height (little-endian)
    return h.size_of(h.le16(6), h.le16(8));
  }
  if (starts("RIFF", 4) && size >= 12 && std::memcmp(bytes + 8, "WEBP", 4) == 0)
    return webp_size(header("WebP"));
  if (starts("II*\0", 4) || starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4))
    return tiff_size(header("TIFF"));
  if (size >= 3 && bytes[0] == 'P' && is_space(bytes[2])) {
    if (bytes[1] >= '1' && bytes[1] <= '6') return pnm_size(header("PNM"));
    if (bytes[1] == '7') return pam_size(header("PAM"));
    if (bytes[1] == 'F' || bytes[1] == 'f') return pnm_size(header("PFM"));
  }
  if (starts("\x59\xA6\x6A\x95", 4)) {
    const Header h = header("Sun raster");  // magic, width, height (big-endian)
    return h.size_of(h.be32(4), h.be32(8));
  }
  if (starts("#?RADIANCE", 10) || starts("#?RGBE", 6)) return hdr_size(header("Radiance HDR"));
  if (starts("\xFF\x4F\xFF\x51", 4)) return j2k_size(header("JPEG 2000"), 0);
  if (starts("\0\0\0\x0CjP  \r\n\x87\n", 12)) return jp2_size(header("JPEG 2000"));
  if (starts("\x76\x2F\x31\x01", 4)) return exr_size(header("OpenEXR"));
  return std::nullopt;
}

void check_image_pixels(const std::string& name, const ImageHeader& header) {
  const int64_t limit = max_image_pixels();
  if (limit == 0) return;
  uint64_t pixels = 0;
  const bool overflow = __builtin_mul_overflow(header.width, header.height, &pixels);
  if (overflow || pixels > static_cast<uint64_t>(limit))
    fail(name, ": ", header.format, " image of ", header.width, "x", header.height, " pixels",
         overflow ? std::string() : " (" + std::to_string(pixels) + ")",
         ", more than the limit of ", limit,
         " (a decompression bomb? raise the limit with --max-pixels N, 0 = none)");
}

}  // namespace alexnet::data

#include "data/decode.h"

#include "data/file.h"
#include "data/image_header.h"

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which needs FILE and size_t
#include <cstring>
#include <vector>

#include <jpeglib.h>

namespace alexnet::data {

namespace {

// libjpeg fills a truncated JPEG with grey and only warns; PIL refuses it.
// A JPEG whose data does not end in an EOI marker (FF D9) is treated as truncated.
bool jpeg_truncated(const uint8_t* b, size_t n) {
  if (n < 4 || b[0] != 0xFF || b[1] != 0xD8) return false;
  size_t end = n;
  // Tolerate padding after EOI, as decoders do.
  while (end > 2 && (b[end - 1] == 0x00 || b[end - 1] == 0x0A || b[end - 1] == 0x0D ||
                     b[end - 1] == 0x20 || b[end - 1] == 0xFF))
    --end;
  for (size_t i = end; i >= 2 && i + 64 >= end; --i) {
    if (b[i - 2] == 0xFF && b[i - 1] == 0xD9) return false;
  }
  return true;
}

// 16-bit samples to 8 bits the way PIL does it: multi-channel PNGs keep the
// high byte; single-channel ones ("I;16") are clipped to 255 by convert("RGB").
cv::Mat to_8bit(const cv::Mat& m) {
  if (m.depth() == CV_8U) return m;
  cv::Mat out(m.rows, m.cols, CV_MAKETYPE(CV_8U, m.channels()));
  if (m.depth() == CV_16U) {
    const bool gray = m.channels() == 1;
    for (int y = 0; y < m.rows; ++y) {
      const uint16_t* s = m.ptr<uint16_t>(y);
      uint8_t* d = out.ptr<uint8_t>(y);
      for (int i = 0; i < m.cols * m.channels(); ++i)
        d[i] = gray ? static_cast<uint8_t>(s[i] > 255 ? 255 : s[i]) : static_cast<uint8_t>(s[i] >> 8);
    }
    return out;
  }
  m.convertTo(out, CV_8U);  // float images: clamp and round
  return out;
}

// libjpeg reports fatal errors through error_exit; jump back instead of exiting.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (e.g. corrupt data that still decodes) are ignored, as PIL does.
void jpeg_quiet(j_common_ptr, int) {}

// Decodes a JPEG with libjpeg straight to RGB, the same library and settings
// PIL uses (islow DCT, fancy upsampling), so the pixels are PIL's. Grey JPEGs
// come out replicated like convert("RGB"). Returns an undefined tensor for
// CMYK/YCCK JPEGs, left to OpenCV.
torch::Tensor decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  // Declared before setjmp so that a jump back destroys nothing.
  torch::Tensor out;
  std::vector<JSAMPROW> rows;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_quiet;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    TORCH_CHECK(false, name, ": cannot decode JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  // The size libjpeg will allocate for, checked before jpeg_start_decompress does.
  try {
    check_image_pixels(name, {"JPEG", cinfo.image_width, cinfo.image_height});
  } catch (...) {
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return out;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int64_t h = cinfo.output_height, w = cinfo.output_width;
  out = torch::empty({h, w, 3}, torch::kUInt8);  // (H, W, 3) uint8
  uint8_t* base = out.data_ptr<uint8_t>();
  rows.resize(static_cast<size_t>(h));
  for (int64_t y = 0; y < h; ++y) rows[y] = base + y * w * 3;
  while (cinfo.output_scanline < cinfo.output_height)
    jpeg_read_scanlines(&cinfo, rows.data() + cinfo.output_scanline,
                        cinfo.output_height - cinfo.output_scanline);
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

}  // namespace

torch::Tensor decode_image_bytes(const uint8_t* bytes, size_t size, const std::string& name) {
  TORCH_CHECK(size > 0, name, ": empty file, not an image");
  TORCH_CHECK(!jpeg_truncated(bytes, size), name, ": truncated JPEG (no end-of-image marker)");
  // A decompression bomb is refused from its header, before any decoder allocates.
  if (const auto header = read_image_header(bytes, size, name)) check_image_pixels(name, *header);
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    torch::Tensor rgb = decode_jpeg(bytes, size, name);
    if (rgb.defined()) return rgb;
  }
  static const bool quiet = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
  }();
  (void)quiet;
  cv::Mat decoded;
  try {
    const cv::Mat buffer(1, static_cast<int>(size), CV_8UC1, const_cast<uint8_t*>(bytes));
    // UNCHANGED keeps alpha and 16-bit samples (converted below like PIL) and,
    // like PIL, ignores EXIF orientation.
    decoded = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    TORCH_CHECK(false, name, ": cannot decode image (", e.err, ")");
  }
  TORCH_CHECK(!decoded.empty() && decoded.rows > 0 && decoded.cols > 0, name,
              ": cannot decode image (not an image, or corrupt)");
  cv::Mat m8 = to_8bit(decoded);
  cv::Mat rgb;
  switch (m8.channels()) {
    case 1: cv::cvtColor(m8, rgb, cv::COLOR_GRAY2RGB); break;
    case 3: cv::cvtColor(m8, rgb, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(m8, rgb, cv::COLOR_BGRA2RGB); break;  // PIL drops alpha
    default: TORCH_CHECK(false, name, ": unsupported image with ", m8.channels(), " channels");
  }
  // (H, W, 3) uint8, owned by the tensor.
  torch::Tensor out = torch::empty({rgb.rows, rgb.cols, 3}, torch::kUInt8);
  for (int y = 0; y < rgb.rows; ++y)
    std::memcpy(out.data_ptr<uint8_t>() + static_cast<size_t>(y) * rgb.cols * 3, rgb.ptr<uint8_t>(y),
                static_cast<size_t>(rgb.cols) * 3);
  return out;
}

torch::Tensor decode_image_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_regular_file(path);
  return decode_image_bytes(bytes.data(), bytes.size(), path);
}

}  // namespace alexnet::data

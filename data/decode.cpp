#include "data/decode.h"

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <vector>

namespace alexnet::data {

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, path, ": no such file");
  TORCH_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, not an image");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), path, ": cannot open for reading");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK(!in.bad(), path, ": read error");
  return bytes;
}

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

}  // namespace

torch::Tensor decode_image_bytes(const uint8_t* bytes, size_t size, const std::string& name) {
  TORCH_CHECK(size > 0, name, ": empty file, not an image");
  TORCH_CHECK(!jpeg_truncated(bytes, size), name, ": truncated JPEG (no end-of-image marker)");
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
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image_bytes(bytes.data(), bytes.size(), path);
}

}  // namespace alexnet::data

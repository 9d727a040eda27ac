// The width and height an image file declares, read from its header without
// decoding, and the pixel limit that refuses decompression bombs (632 bytes of
// JPEG declaring 65000x65000 decode to 12.7 GB) before any decoder allocates.
// Plain byte parsing, no OpenCV or libjpeg: it builds and is tested everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace alexnet::data {

/// PIL's limit: Image.open refuses images above 2 * Image.MAX_IMAGE_PIXELS
/// (2 * 89478485 pixels) with DecompressionBombError.
constexpr int64_t kDefaultMaxImagePixels = 178956970;

/// The pixel limit image decoding enforces in this process (0 = none). Set it
/// once, from the command line, before loading starts; any thread may read it.
void set_max_image_pixels(int64_t pixels);
int64_t max_image_pixels();

/// What an image file's header declares.
struct ImageHeader {
  const char* format;  // "JPEG", "PNG", ...
  uint64_t width;
  uint64_t height;
};

/// Recognises, by their signatures, the formats libjpeg and OpenCV 4.x decode
/// (JPEG, PNG, BMP, GIF, WebP, TIFF and BigTIFF, PBM/PGM/PPM, PAM, PFM, Sun
/// raster, Radiance HDR, JPEG 2000 (JP2 and J2K), OpenEXR) and reads the size
/// the header declares. nullopt: no signature known here; the decoders then
/// decide (OpenCV's own limit, 2^30 pixels, applies). A known signature with a
/// header cut short or malformed throws DataError "NAME: ... header".
std::optional<ImageHeader> read_image_header(const uint8_t* bytes, size_t size,
                                             const std::string& name);

/// Throws DataError "NAME: FORMAT image of WxH pixels (N), more than the limit of M ..."
/// when width * height is above max_image_pixels().
void check_image_pixels(const std::string& name, const ImageHeader& header);

}  // namespace alexnet::data

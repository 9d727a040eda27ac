// Image decoding (OpenCV) to 8-bit RGB, as PIL's Image.open(...).convert("RGB").
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace alexnet::data {

/// Reads and decodes an image file. Any mode (grayscale, palette, RGBA,
/// 16-bit) becomes 8-bit RGB the way PIL converts it. Throws an error naming
/// the path for a missing, empty, truncated or undecodable file, one that is
/// not a regular file (data/file.h), or an image whose header declares more
/// pixels than max_image_pixels() (data/image_header.h).
/// Returns (H, W, 3) uint8.
torch::Tensor decode_image_file(const std::string& path);

/// The same from bytes already in memory; `name` is used in error messages.
/// The pixel limit is checked on the header before any decoder allocates.
/// Formats read_image_header does not know are left to OpenCV and its own
/// limit (2^30 pixels): OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when the
/// library loads, so it cannot be lowered from here.
torch::Tensor decode_image_bytes(const uint8_t* bytes, size_t size, const std::string& name);

}  // namespace alexnet::data

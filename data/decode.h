// Image decoding (OpenCV) to 8-bit RGB, as PIL's Image.open(...).convert("RGB").
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace alexnet::data {

/// Reads and decodes an image file. Any mode (grayscale, palette, RGBA,
/// 16-bit) becomes 8-bit RGB the way PIL converts it. Throws an error naming
/// the path for a missing, empty, truncated or undecodable file.
/// Returns (H, W, 3) uint8.
torch::Tensor decode_image_file(const std::string& path);

/// The same from bytes already in memory; `name` is used in error messages.
torch::Tensor decode_image_bytes(const uint8_t* bytes, size_t size, const std::string& name);

}  // namespace alexnet::data

// libFuzzer target: any bytes given to the image header reader either give a
// format and size, give none (a format left to the decoders), or throw
// DataError; never a crash or hang. A size read goes through the pixel limit.
#include "data/error.h"
#include "data/image_header.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (const auto header = alexnet::data::read_image_header(data, size, "fuzz"))
      alexnet::data::check_image_pixels("fuzz", *header);
  } catch (const alexnet::data::DataError&) {
  }
  return 0;
}

// libFuzzer target: any bytes given to the checkpoint reader either parse or
// throw FormatError; never a crash, hang, or unbounded allocation. A parsed
// value is pickled again to exercise the writer on whatever the reader accepts.
#include "model/pth/checkpoint_io.h"
#include "model/pth/pickler.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const alexnet::pth::Checkpoint checkpoint =
        alexnet::pth::parse_checkpoint(data, size, nullptr, "fuzz");
    alexnet::pth::pickle(checkpoint.root);
  } catch (const alexnet::pth::FormatError&) {
  }
  return 0;
}

// libFuzzer target: any bytes, as an IDX file (plain, or gzip: the reader tells
// them apart by the magic bytes, never the name), either read or throw
// DataError; never a crash, hang, or an allocation beyond what the file can
// hold (1032:1 for gzip). What reads must hold exactly the data its sizes say.
#include "data/error.h"
#include "data/idx_file.h"
#include "tests/fuzz/fuzz_util.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const alexnet::fuzz::ScratchFile file("idx_fuzz", data, size);
  try {
    const alexnet::data::IdxData idx = alexnet::data::read_idx(file.path());
    uint64_t count = 1;
    for (const int64_t s : idx.sizes) count *= static_cast<uint64_t>(s);
    if (idx.sizes.empty() || idx.sizes.size() > 3 || count != idx.bytes.size())
      alexnet::fuzz::broken("IDX data does not match its sizes");
    if (size < 2 || data[0] != 0x1F || data[1] != 0x8B) {
      if (count != size - 4 - 4 * idx.sizes.size()) alexnet::fuzz::broken("plain IDX size");
    }
  } catch (const alexnet::data::DataError&) {
  }
  return 0;
}

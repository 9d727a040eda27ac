// libFuzzer target: any bytes given to the weights readers (model/pth/formats.h:
// torch.save's zip and legacy formats and TorchScript archives through the
// pickle reader, torch.export .pt2 archives through their JSON description,
// safetensors) either read or throw FormatError; never a crash, hang, or
// unbounded allocation. A value read must view only bytes of the input, and is
// pickled again to exercise the writer on whatever the readers accept. Built
// twice: pth_fuzzer seeded with corpus/pth, pt2_fuzzer with corpus/pt2.
//
// A zip entry's CRC-32 stops almost every mutation inside it (data.pkl) at the
// CRC check, so each input is also parsed with the CRCs its central directory
// declares set to match: mutated pickles and JSON then reach their readers.
#include "model/pth/formats.h"
#include "model/pth/pickler.h"
#include "tests/fuzz/check_tensors.h"

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint32_t le16(const uint8_t* p) { return uint32_t{p[0]} | uint32_t{p[1]} << 8; }

// Sets the CRC-32 of every central directory header found (32-bit fields only)
// to that of the bytes it names; true when one changed.
bool fix_zip_crcs(std::vector<uint8_t>& zip) {
  const size_t n = zip.size();
  bool changed = false;
  for (size_t h = 0; h + 46 <= n; ++h) {
    if (le32(&zip[h]) != 0x02014B50) continue;
    const uint64_t size = le32(&zip[h + 20]), local = le32(&zip[h + 42]);
    if (local + 30 > n || le32(&zip[local]) != 0x04034B50) continue;
    const uint64_t start = local + 30 + le16(&zip[local + 26]) + le16(&zip[local + 28]);
    if (start > n || size > n - start) continue;
    const auto crc = static_cast<uint32_t>(::crc32(0, zip.data() + start, static_cast<uInt>(size)));
    if (crc == le32(&zip[h + 16])) continue;
    for (int k = 0; k < 4; ++k) zip[h + 16 + k] = static_cast<uint8_t>(crc >> (8 * k));
    changed = true;
  }
  return changed;
}

void parse(const uint8_t* data, size_t size) {
  try {
    const auto [format, contents] = alexnet::pth::read_weights({nullptr, data, size}, "fuzz");
    volatile uint32_t sink = alexnet::fuzz::check_tensors(contents.root, data, size);
    (void)sink;
    alexnet::pth::pickle(contents.root);
  } catch (const alexnet::pth::FormatError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse(data, size);
  if (size >= 4 && le32(data) == 0x04034B50) {
    std::vector<uint8_t> fixed(data, data + size);
    if (fix_zip_crcs(fixed)) parse(fixed.data(), fixed.size());
  }
  return 0;
}

// libFuzzer target: any bytes given to the safetensors reader either parse or
// throw FormatError; never a crash, hang, or unbounded allocation. A parsed
// file must view only bytes of the input; it is written again with
// write_safetensors and read back, and must come back the same (names, dtypes,
// shapes, bytes and metadata).
#include "model/pth/file_io.h"
#include "model/pth/safetensors.h"
#include "tests/fuzz/check_tensors.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace {

using alexnet::fuzz::broken;
namespace pth = alexnet::pth;

std::vector<pth::NamedRecord> records_of(const pth::Safetensors& file) {
  std::vector<pth::NamedRecord> out;
  for (const auto& [name, tensor] : file.tensors.entries())
    out.emplace_back(name.as_string(), tensor.as_tensor());
  return out;
}

// Compared by name: the writer orders the header's keys, and tensors of no bytes
// at one offset have no order of their own.
void expect_same(const pth::Safetensors& a, const pth::Safetensors& b) {
  auto ma = a.metadata, mb = b.metadata;
  std::sort(ma.begin(), ma.end());
  std::sort(mb.begin(), mb.end());
  if (ma != mb) broken("metadata changed in a round trip");
  auto ra = records_of(a), rb = records_of(b);
  const auto by_name = [](const pth::NamedRecord& x, const pth::NamedRecord& y) { return x.first < y.first; };
  std::sort(ra.begin(), ra.end(), by_name);
  std::sort(rb.begin(), rb.end(), by_name);
  if (ra.size() != rb.size()) broken("tensor count changed in a round trip");
  for (size_t i = 0; i < ra.size(); ++i) {
    const auto& [name, x] = ra[i];
    const auto& y = rb[i].second;
    if (name != rb[i].first || x.dtype() != y.dtype() || x.sizes != y.sizes)
      broken("tensor '" + name + "' changed name, dtype or shape in a round trip");
    const size_t bytes = static_cast<size_t>(x.numel() * pth::element_size(x.dtype()));
    if (bytes > 0 && std::memcmp(x.storage->data, y.storage->data, bytes) != 0)
      broken("tensor '" + name + "' changed bytes in a round trip");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pth::Safetensors parsed;
  try {
    parsed = pth::parse_safetensors(data, size, nullptr, "fuzz");
  } catch (const pth::FormatError&) {
    return 0;
  }
  volatile uint32_t sink = alexnet::fuzz::check_tensors(parsed.tensors, data, size);
  (void)sink;
  // What we read, we can write, and read back as it was.
  const alexnet::fuzz::ScratchFile file("safetensors_fuzz");
  pth::write_safetensors(file.path(), records_of(parsed), parsed.metadata);
  const pth::FileBuffer written = pth::read_file(file.path());
  expect_same(parsed, pth::parse_safetensors(written.data, written.size, written.owner, file.path()));
  return 0;
}

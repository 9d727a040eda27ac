// The safetensors format (https://github.com/huggingface/safetensors): an
// 8-byte little-endian header length N, N bytes of JSON, then raw
// little-endian tensor data. The header maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} relative to the data, and
// may hold "__metadata__", a string-to-string map. It holds no code and no
// references, which is why users exchange weights in it.
#pragma once

#include "model/pth/formats.h"
#include "model/pth/pth_value.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::pth {

/// The largest header read: the reference implementation's limit, 100 MB.
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

struct Safetensors {
  Value tensors;      // an OrderedDict of name -> tensor, in data order
  Metadata metadata;  // "__metadata__", in header order
};

/// Whether the bytes look like safetensors: 8 bytes (the header length), then
/// '{'. Cheap; parse_safetensors does the checking and names what is wrong.
bool looks_like_safetensors(const uint8_t* data, size_t size);

/// Parses a safetensors file held in memory; tensors view `data`, kept alive by
/// `owner`. Refused, naming `source` and the tensor: a header over the limit or
/// past the file, malformed or duplicate-keyed JSON, an unknown dtype, a
/// negative or overflowing shape, offsets out of bounds, not matching the
/// shape, overlapping another tensor's, or leaving bytes of the data unused
/// (the format forbids holes, so no other file can hide inside one).
/// Errors throw FormatError "<source>: safetensors: <what>".
Safetensors parse_safetensors(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                              const std::string& source);

/// One tensor to write: a name and a contiguous record (offset into its storage).
using NamedRecord = std::pair<std::string, TensorRecord>;

/// Writes tensors (each a contiguous view) and metadata as safetensors, in the
/// given order, atomically (write_atomically). The header is padded with
/// spaces to a multiple of 8 bytes so that every tensor's data is aligned.
void write_safetensors(const std::string& path, const std::vector<NamedRecord>& tensors,
                       const Metadata& metadata);

}  // namespace alexnet::pth

// The invariants every tensor a checkpoint reader returns must keep, checked so
// that a reader's logic error (a view past its storage, a storage outside the
// file) becomes a crash libFuzzer reports, not only a memory error ASan sees
// when something later reads there.
#pragma once

#include "model/pth/pth_value.h"
#include "tests/fuzz/fuzz_util.h"

#include <cstddef>
#include <cstdint>

namespace alexnet::fuzz {

/// Every tensor in `value` must view elements inside its storage, and every
/// storage's bytes must lie inside [data, data + size), the parsed buffer. The
/// first and last byte of each are read, so that ASan also checks the claim.
inline uint32_t check_tensors(const pth::Value& value, const uint8_t* data, size_t size) {
  uint32_t touched = 0;
  switch (value.kind()) {
    case pth::Value::Kind::kList:
    case pth::Value::Kind::kTuple:
      for (const auto& item : value.items()) touched += check_tensors(item, data, size);
      break;
    case pth::Value::Kind::kDict:
      for (const auto& [key, item] : value.entries())
        touched += check_tensors(key, data, size) + check_tensors(item, data, size);
      break;
    case pth::Value::Kind::kTensor: {
      const pth::TensorRecord& r = value.as_tensor();
      if (!r.storage) broken("tensor without a storage");
      const pth::Storage& s = *r.storage;
      const int64_t element = pth::element_size(s.dtype);
      uint64_t bytes = 0;
      if (s.numel < 0 || __builtin_mul_overflow(static_cast<uint64_t>(s.numel),
                                                static_cast<uint64_t>(element), &bytes))
        broken("storage '" + s.key + "' of negative or overflowing size");
      if (bytes > 0) {
        if (s.data < data || bytes > size || s.data > data + (size - bytes))
          broken("storage '" + s.key + "' outside the parsed buffer");
        touched += s.data[0] + s.data[bytes - 1];
      }
      if (r.sizes.size() != r.strides.size()) broken("sizes and strides of different lengths");
      // The last element the view addresses: offset + sum((size - 1) * stride).
      __int128 last = r.offset;
      bool empty = false;
      for (size_t d = 0; d < r.sizes.size(); ++d) {
        if (r.sizes[d] < 0 || r.strides[d] < 0) broken("negative size or stride");
        if (r.sizes[d] == 0) empty = true;
        last += static_cast<__int128>(r.sizes[d] - 1) * r.strides[d];
      }
      if (r.offset < 0) broken("negative storage offset");
      if (!empty) {
        if (last >= s.numel) broken("view of storage '" + s.key + "' past its end");
        touched += s.data[static_cast<int64_t>(last) * element];
      }
      break;
    }
    default:
      break;
  }
  return touched;
}

}  // namespace alexnet::fuzz

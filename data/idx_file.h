// IDX files, as MNIST and Fashion-MNIST ship them, without LibTorch (so that
// the fuzzer builds this reader alone; data/dataset.h wraps it in a tensor).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::data {

/// An IDX file's contents: its sizes and its uint8 data, row-major.
struct IdxData {
  std::vector<int64_t> sizes;  // (N,) labels or (N, rows, cols) images
  std::vector<uint8_t> bytes;  // the product of sizes
};

/// Reads an IDX file, plain or gzip (told apart by the gzip magic bytes, never
/// the name): magic 0x00000801 (labels) to 0x00000803 (images), big-endian
/// sizes, uint8 data. The header is read first and the data's size it declares
/// checked before anything more is read: against the size of a plain file, and
/// for gzip against what the compressed size can inflate to (1032:1), then by
/// inflating at most that size plus one byte, so a gzip bomb costs no more
/// memory than its header claims. Throws DataError naming the file on a wrong
/// magic number, a size that does not match, a truncated or corrupt file.
IdxData read_idx(const std::string& path);

}  // namespace alexnet::data

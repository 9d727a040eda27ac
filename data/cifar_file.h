// CIFAR binary batch files without LibTorch (so that the fuzzer builds this
// reader alone; data/dataset.h turns the records into tensors).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::data {

/// One record: label byte(s), then 3072 bytes, the R, G and B planes of a 32x32 image.
constexpr int64_t kCifarImageBytes = 32 * 32 * 3;

/// How the two datasets' records differ.
struct CifarFormat {
  const char* name;     // "cifar10", for messages
  int64_t label_bytes;  // CIFAR-100: coarse then fine label
  int64_t num_classes;  // of the last label byte, the one used
  int64_t record_bytes() const { return label_bytes + kCifarImageBytes; }
};
constexpr CifarFormat kCifar10Format{"cifar10", 1, 10};
constexpr CifarFormat kCifar100Format{"cifar100", 2, 100};

/// Reads a batch file's records, back to back. Its size must be a whole, non-zero
/// number of records, checked before it is read; every label must be below
/// num_classes. Throws DataError naming the file (and the record).
std::vector<uint8_t> read_cifar_batch(const std::string& path, const CifarFormat& format);

}  // namespace alexnet::data

// libFuzzer target: any bytes, as a CIFAR-10 and as a CIFAR-100 batch file,
// either read or throw DataError; never a crash or hang. What reads must be
// whole records whose labels are in range.
#include "data/cifar_file.h"
#include "data/error.h"
#include "tests/fuzz/fuzz_util.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const alexnet::fuzz::ScratchFile file("cifar_fuzz", data, size);
  const std::string& path = file.path();
  for (const auto& format : {alexnet::data::kCifar10Format, alexnet::data::kCifar100Format}) {
    try {
      const std::vector<uint8_t> bytes = alexnet::data::read_cifar_batch(path, format);
      const auto record = static_cast<size_t>(format.record_bytes());
      if (bytes.size() != size || size == 0 || size % record != 0 ||
          std::memcmp(bytes.data(), data, size) != 0)
        alexnet::fuzz::broken("CIFAR batch not read whole");
      for (size_t at = 0; at < size; at += record)
        if (bytes[at + format.label_bytes - 1] >= format.num_classes)
          alexnet::fuzz::broken("CIFAR label out of range accepted");
    } catch (const alexnet::data::DataError&) {
    }
  }
  return 0;
}

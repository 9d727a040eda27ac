#include "data/cifar_file.h"

#include "data/error.h"
#include "data/file.h"

namespace alexnet::data {

std::vector<uint8_t> read_cifar_batch(const std::string& path, const CifarFormat& format) {
  RegularFile file(path);
  const int64_t record = format.record_bytes();
  // Checked on the size before reading, so that an odd file is refused unread.
  check(file.size() > 0 && file.size() % record == 0, path, ": size ", file.size(),
        " bytes is not a whole number of ", record,
        "-byte CIFAR records (is this the binary version of ", format.name, "?)");
  std::vector<uint8_t> bytes(static_cast<size_t>(file.size()));
  file.read_exact(bytes.data(), bytes.size());
  const int64_t records = file.size() / record;
  for (int64_t r = 0; r < records; ++r) {
    const int64_t label = bytes[r * record + format.label_bytes - 1];
    check(label < format.num_classes, path, ": record ", r, " has label ", label, " outside [0, ",
          format.num_classes, ")");
  }
  return bytes;
}

}  // namespace alexnet::data

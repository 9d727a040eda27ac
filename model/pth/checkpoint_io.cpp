#include "model/pth/checkpoint_io.h"

#include "model/pth/pickler.h"
#include "model/pth/zip_file.h"

#include <cctype>

namespace alexnet::pth {

void write_checkpoint(const std::string& path, const Value& root) {
  const Pickled pickled = pickle(root);
  // torch.save names the top folder after the file; any name reads back.
  std::string name = path.substr(path.rfind('/') + 1);
  name = name.substr(0, name.find('.'));
  bool plain = !name.empty();
  for (char c : name) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
  if (!plain) name = "archive";

  write_atomically(path, [&](int fd) {
    ZipWriter zip(fd, path);
    zip.add(name + "/data.pkl", pickled.bytes.data(), pickled.bytes.size());
    zip.add(name + "/byteorder", "little", 6);
    for (size_t k = 0; k < pickled.storages.size(); ++k) {
      const Storage& s = *pickled.storages[k];
      zip.add(name + "/data/" + std::to_string(k), s.data, static_cast<size_t>(s.numel * element_size(s.dtype)));
    }
    zip.add(name + "/version", "3\n", 2);
    zip.finish();
  });
}

}  // namespace alexnet::pth

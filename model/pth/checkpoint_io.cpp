#include "model/pth/checkpoint_io.h"

#include "model/pth/pickler.h"
#include "model/pth/unpickler.h"
#include "model/pth/zip_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace alexnet::pth {

namespace {

// The legacy format's first pickle: PROTO 2, LONG1 of 10 bytes 0x1950a86a20f9469cfc6c, STOP.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
constexpr int64_t kLegacyProtocolVersion = 1001;
constexpr uint8_t kZipMagic[] = {'P', 'K', 0x03, 0x04};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

bool starts_with(const uint8_t* data, size_t size, const uint8_t* prefix, size_t n) {
  return size >= n && std::memcmp(data, prefix, n) == 0;
}

// The archive's top folder: torch.save names it after the file, so it varies.
std::string archive_prefix(const ZipReader& zip) {
  for (const auto& e : zip.entries()) {
    const auto slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0)
      return e.name.substr(0, slash + 1);
  }
  return {};
}

bool is_torchscript(const ZipReader& zip, const std::string& prefix) {
  if (zip.find(prefix + "constants.pkl")) return true;
  for (const auto& e : zip.entries())
    if (e.name.compare(0, prefix.size() + 5, prefix + "code/") == 0) return true;
  return false;
}

int64_t storage_bytes(const PersistentId& id, const std::string& source) {
  int64_t nbytes;
  if (__builtin_mul_overflow(id.numel, element_size(id.dtype), &nbytes))
    fail(source, "storage '" + id.key + "' size overflows");
  return nbytes;
}

Checkpoint parse_zip(const uint8_t* data, size_t size, const std::shared_ptr<const void>& owner,
                     const std::string& source) {
  const ZipReader zip(data, size, source);
  const std::string prefix = archive_prefix(zip);
  if (prefix.empty()) fail(source, "zip archive without <name>/data.pkl: not a torch.save file");
  // A TorchScript archive keeps its parameters in data.pkl as torch.save does;
  // its code/ and constants.pkl are never read.
  const bool torchscript = is_torchscript(zip, prefix);
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    const std::string byteorder(reinterpret_cast<const char*>(zip.data(*order)), order->size);
    if (byteorder != "little") fail(source, "byte order '" + byteorder + "' is not supported");
  }

  std::map<std::string, std::shared_ptr<const Storage>> storages;
  const StorageLoader load = [&](const PersistentId& id) -> std::shared_ptr<const Storage> {
    auto it = storages.find(id.key);
    if (it != storages.end()) {
      if (it->second->dtype != id.dtype) fail(source, "storage '" + id.key + "' used with two dtypes");
      return it->second;
    }
    const ZipEntry* record = zip.find(prefix + "data/" + id.key);
    if (!record) fail(source, "storage '" + id.key + "' has no record " + prefix + "data/" + id.key);
    if (static_cast<uint64_t>(storage_bytes(id, source)) > record->size)
      fail(source, "storage '" + id.key + "' declares " + std::to_string(id.numel) + " elements but its record has " +
                       std::to_string(record->size) + " bytes");
    auto storage = std::make_shared<Storage>();
    storage->key = id.key;
    storage->dtype = id.dtype;
    storage->numel = id.numel;
    storage->data = zip.data(*record);
    storage->owner = owner;
    storages.emplace(id.key, storage);
    return storage;
  };
  const ZipEntry* pkl = zip.find(prefix + "data.pkl");
  Checkpoint out;
  out.format = torchscript ? FileFormat::kTorchScript : FileFormat::kPthZip;
  out.root = unpickle(zip.data(*pkl), pkl->size, load, source, nullptr, {},
                      torchscript ? PickleKind::kTorchScript : PickleKind::kTorchSave);
  if (torchscript) {
    const std::string extra = prefix + "extra/";
    for (const ZipEntry& e : zip.entries()) {
      if (e.name.compare(0, extra.size(), extra) != 0 || e.size > kMaxExtraFileBytes || e.method != 0) continue;
      out.extra_files.emplace_back(e.name.substr(extra.size()),
                                   std::string(reinterpret_cast<const char*>(zip.data(e)), e.size));
    }
  }
  return out;
}

Checkpoint parse_legacy(const uint8_t* data, size_t size, const std::shared_ptr<const void>& owner,
                        const std::string& source) {
  size_t pos = sizeof(kLegacyMagic), used = 0;
  const StorageLoader no_storages = [&](const PersistentId&) -> std::shared_ptr<const Storage> {
    fail(source, "storage reference in the legacy header");
  };
  const Value protocol = unpickle(data + pos, size - pos, no_storages, source, &used);
  pos += used;
  if (!protocol.is_int() || protocol.as_int() != kLegacyProtocolVersion)
    fail(source, "legacy format: protocol version " + protocol.describe() + ", expected 1001");
  const Value sys_info = unpickle(data + pos, size - pos, no_storages, source, &used);
  pos += used;
  const Value* little = sys_info.find("little_endian");
  if (!little || little->kind() != Value::Kind::kBool || !little->as_bool())
    fail(source, "legacy format: not written on a little-endian machine");

  std::map<std::string, std::shared_ptr<Storage>> storages;  // data filled in below
  const StorageLoader load = [&](const PersistentId& id) -> std::shared_ptr<const Storage> {
    auto it = storages.find(id.key);
    if (it != storages.end()) {
      if (it->second->dtype != id.dtype || it->second->numel != id.numel)
        fail(source, "storage '" + id.key + "' declared twice differently");
      return it->second;
    }
    storage_bytes(id, source);
    auto storage = std::make_shared<Storage>();
    storage->key = id.key;
    storage->dtype = id.dtype;
    storage->numel = id.numel;
    storage->owner = owner;
    storages.emplace(id.key, storage);
    return storage;
  };
  Checkpoint out;
  out.format = FileFormat::kPthLegacy;
  out.root = unpickle(data + pos, size - pos, load, source, &used);
  pos += used;
  const Value keys = unpickle(data + pos, size - pos, no_storages, source, &used);
  pos += used;
  if (keys.kind() != Value::Kind::kList) fail(source, "legacy format: storage key list missing");

  // Each storage: int64 element count, then the raw little-endian elements.
  for (const Value& key : keys.items()) {
    if (!key.is_string()) fail(source, "legacy format: storage key is not a string");
    auto it = storages.find(key.as_string());
    if (it == storages.end()) fail(source, "legacy format: storage '" + key.as_string() + "' is never used");
    Storage& s = *it->second;
    if (s.data) fail(source, "legacy format: storage '" + s.key + "' stored twice");
    if (size - pos < 8) fail(source, "legacy format: truncated before storage '" + s.key + "'");
    int64_t numel;
    std::memcpy(&numel, data + pos, 8);
    pos += 8;
    if (numel != s.numel)
      fail(source, "legacy format: storage '" + s.key + "' has " + std::to_string(numel) +
                       " elements, the pickle says " + std::to_string(s.numel));
    const uint64_t nbytes = static_cast<uint64_t>(s.numel) * element_size(s.dtype);  // checked in load
    if (nbytes > size - pos)
      fail(source, "legacy format: storage '" + s.key + "' runs past the end of the file (truncated?)");
    s.data = data + pos;
    pos += nbytes;
  }
  for (const auto& [key, s] : storages)
    if (!s->data && s->numel > 0) fail(source, "legacy format: storage '" + key + "' has no data");
  return out;
}

}  // namespace

FileFormat detect_format(const uint8_t* data, size_t size, const std::string& source) {
  if (starts_with(data, size, kLegacyMagic, sizeof(kLegacyMagic))) return FileFormat::kPthLegacy;
  if (!starts_with(data, size, kZipMagic, sizeof(kZipMagic))) return FileFormat::kUnknown;
  const ZipReader zip(data, size, source);
  const std::string prefix = archive_prefix(zip);
  if (!prefix.empty() && is_torchscript(zip, prefix)) return FileFormat::kTorchScript;
  if (!prefix.empty()) return FileFormat::kPthZip;
  return FileFormat::kUnknown;
}

Checkpoint parse_checkpoint(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                            const std::string& source) {
  if (size == 0) fail(source, "file is empty");
  if (starts_with(data, size, kLegacyMagic, sizeof(kLegacyMagic))) return parse_legacy(data, size, owner, source);
  if (starts_with(data, size, kZipMagic, sizeof(kZipMagic))) return parse_zip(data, size, owner, source);
  fail(source, "not a PyTorch checkpoint (neither a zip archive nor the legacy torch.save format)");
}

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a plain file";
}

std::string octal(mode_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "0%o", static_cast<unsigned>(mode));
  return text;
}

// Opens a regular file for reading; its descriptor and size.
// O_NONBLOCK keeps open(2) of a FIFO from waiting for a writer; the kind is
// then checked on the descriptor itself, so nothing can be swapped in between.
std::pair<int, size_t> open_regular(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, errno == ENOENT ? "no such file" : std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, std::string("not a regular file (") + file_kind(st.st_mode) + ")");
  }
  return {fd, static_cast<size_t>(st.st_size)};
}

}  // namespace

FileBuffer read_file(const std::string& path) {
  const auto [fd, size] = open_regular(path);
  void* buffer = nullptr;
  if (::posix_memalign(&buffer, 64, size ? size : 1) != 0) {
    ::close(fd);
    fail(path, "cannot allocate " + std::to_string(size) + " bytes");
  }
  std::shared_ptr<void> owner(buffer, std::free);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, static_cast<uint8_t*>(buffer) + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail(path, n == 0 ? "file shrank while being read" : std::string("read failed: ") + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return {owner, static_cast<const uint8_t*>(buffer), size};
}

namespace {

// Live map_file buffers, by start address, so release_pages only ever advises
// memory that is one of them and cannot race with its munmap.
std::mutex& mappings_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::map<uintptr_t, size_t>& mappings() {
  static std::map<uintptr_t, size_t> live;
  return live;
}

}  // namespace

FileBuffer map_file(const std::string& path) {
  const auto opened = open_regular(path);
  const int fd = opened.first;
  const size_t size = opened.second;  // a plain variable: lambdas capture it (C++17)
  void* p = size ? ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (p == MAP_FAILED) return read_file(path);  // empty, or a file system without mmap
  {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().emplace(reinterpret_cast<uintptr_t>(p), size);
  }
  std::shared_ptr<void> owner(p, [size](void* q) {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    mappings().erase(reinterpret_cast<uintptr_t>(q));
    ::munmap(q, size);
  });
  return {owner, static_cast<const uint8_t*>(p), size};
}

void release_pages(const void* data, size_t size) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(mappings_mutex());
  auto it = mappings().upper_bound(begin);
  if (it == mappings().begin()) return;
  --it;
  const uintptr_t map_end = it->first + it->second;
  if (begin >= map_end) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (begin + page - 1) / page * page;
  const uintptr_t hi = std::min<uintptr_t>(begin + size, map_end) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

Checkpoint read_checkpoint(const std::string& path) {
  const FileBuffer file = read_file(path);
  return parse_checkpoint(file.data, file.size, file.owner, path);
}

namespace {

// The process's umask, read from /proc (Linux 4.7+) so that no other thread
// sees a changed one; else by setting and restoring it.
mode_t current_umask() {
  std::FILE* f = std::fopen("/proc/self/status", "re");
  if (f) {
    char line[256];
    unsigned mask = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof(line), f)) found = std::sscanf(line, "Umask: %o", &mask) == 1;
    std::fclose(f);
    if (found) return static_cast<mode_t>(mask);
  }
  const mode_t mask = ::umask(022);
  ::umask(mask);
  return mask;
}

// What a replaced file keeps (its permission bits), or what open(2) would give
// a new one: 0666 less the umask.
mode_t mode_for(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return st.st_mode & 07777;
  return 0666 & ~current_umask();
}

}  // namespace

void write_atomically(const std::string& path, const std::function<void(int fd)>& write) {
  const mode_t mode = mode_for(path);
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());  // created 0600
  if (fd < 0) fail(path, std::string("cannot create a temporary file next to it: ") + std::strerror(errno));
  bool closed = false;
  try {
    write(fd);
    if (::fchmod(fd, mode) != 0)
      fail(path, "cannot set the new file's mode to " + octal(mode) + ": " + std::strerror(errno));
    if (::fsync(fd) != 0) fail(path, std::string("fsync failed: ") + std::strerror(errno));
    closed = true;
    if (::close(fd) != 0) fail(path, std::string("close failed: ") + std::strerror(errno));
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, std::string("rename failed: ") + std::strerror(err));
  }
  // The rename is durable once the directory entry is.
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

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

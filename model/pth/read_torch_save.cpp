// The torch.save reader: the zip container (PyTorch >= 1.6) and the legacy
// stream, unpickled with the allow-list unpickler; the state_dict is the top
// level or the dict under a training checkpoint's usual keys. Also the zip
// storage loading that TorchScript archives share.
#include "model/pth/formats.h"

#include <cstring>
#include <map>

namespace alexnet::pth {

namespace {

// The legacy format's first pickle: PROTO 2, LONG1 of 10 bytes 0x1950a86a20f9469cfc6c, STOP.
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
constexpr int64_t kLegacyProtocolVersion = 1001;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

int64_t storage_bytes(const PersistentId& id, const std::string& source) {
  int64_t nbytes;
  if (__builtin_mul_overflow(id.numel, element_size(id.dtype), &nbytes))
    fail(source, "storage '" + id.key + "' size overflows");
  return nbytes;
}

// A state_dict is a non-empty dict whose values are all tensors.
bool is_state_dict(const Value& v) {
  if (!v.is_dict() || v.entries().empty()) return false;
  for (const auto& [key, value] : v.entries())
    if (!key.is_string() || !value.is_tensor()) return false;
  return true;
}

// The state_dict in a torch.save tree: the top level, or under one of the keys
// training scripts use; nullptr when there is none.
const Value* locate_state_dict(const Value& root) {
  if (is_state_dict(root)) return &root;
  // torchvision's references/classification/train.py saves {"model": ..., "optimizer": ...};
  // other training scripts use "state_dict" or "model_state_dict".
  for (const char* key : {"model", "state_dict", "model_state_dict"}) {
    const Value* candidate = root.find(key);
    if (candidate && is_state_dict(*candidate)) return candidate;
  }
  return nullptr;
}

// The state_dict's records and what this project writes into its _metadata[""]:
// "classes" (a list of str) and "transform" (a JSON string). None when the tree
// holds no state_dict where training scripts put one.
WeightsContents state_dict_contents(Value root, const std::string& source) {
  WeightsContents out;
  out.root = std::move(root);
  const Value* dict = locate_state_dict(out.root);
  if (!dict) return out;  // no records: a value tree, not weights (WeightsFile says so)
  for (const auto& [key, value] : dict->entries()) out.records.emplace_back(key.as_string(), &value.as_tensor());

  const Value* attributes = dict->attributes();
  const Value* metadata = attributes ? attributes->find("_metadata") : nullptr;
  const Value* own = metadata ? metadata->find("") : nullptr;
  if (const Value* names = own ? own->find(kClassesKey) : nullptr) {
    if (names->kind() != Value::Kind::kList)
      fail(source, "_metadata[''] 'classes' is " + names->describe() + ", not a list");
    out.class_names.emplace();
    for (const Value& name : names->items()) {
      if (!name.is_string()) fail(source, "_metadata[''] 'classes' holds " + name.describe() + ", not a name");
      out.class_names->push_back(name.as_string());
    }
  }
  if (const Value* text = own ? own->find(kTransformKey) : nullptr) {
    if (!text->is_string()) fail(source, "_metadata[''] 'transform' is " + text->describe() + ", not a JSON string");
    out.transform_json = text->as_string();
    out.transform_where = "_metadata[''] 'transform'";
  }
  return out;
}

bool is_legacy(const RawFile& f) {
  return f.bytes.size >= sizeof kLegacyMagic && std::memcmp(f.bytes.data, kLegacyMagic, sizeof kLegacyMagic) == 0;
}

WeightsContents read_zip(const RawFile& f) {
  return state_dict_contents(unpickle_zip(f, PickleKind::kTorchSave), f.source);
}

// The legacy stream: magic, protocol version, system info, the object, the
// storage keys, then each storage as an int64 element count and raw elements.
WeightsContents read_legacy(const RawFile& f) {
  const uint8_t* data = f.bytes.data;
  const size_t size = f.bytes.size;
  const std::string& source = f.source;
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
    storage->owner = f.bytes.owner;
    storages.emplace(id.key, storage);
    return storage;
  };
  Value root = unpickle(data + pos, size - pos, load, source, &used);
  pos += used;
  const Value keys = unpickle(data + pos, size - pos, no_storages, source, &used);
  pos += used;
  if (keys.kind() != Value::Kind::kList) fail(source, "legacy format: storage key list missing");

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
  return state_dict_contents(std::move(root), source);
}

}  // namespace

Value unpickle_zip(const RawFile& f, PickleKind kind) {
  const ZipReader& zip = *f.zip;
  const std::string& source = f.source;
  if (const ZipEntry* order = f.entry("byteorder")) {
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
    const std::string name = f.zip_prefix + "data/" + id.key;
    const ZipEntry* record = zip.find(name);
    if (!record) fail(source, "storage '" + id.key + "' has no record " + name);
    if (static_cast<uint64_t>(storage_bytes(id, source)) > record->size)
      fail(source, "storage '" + id.key + "' declares " + std::to_string(id.numel) + " elements but its record has " +
                       std::to_string(record->size) + " bytes");
    auto storage = std::make_shared<Storage>();
    storage->key = id.key;
    storage->dtype = id.dtype;
    storage->numel = id.numel;
    storage->data = zip.data(*record);
    storage->owner = f.bytes.owner;
    storages.emplace(id.key, storage);
    return storage;
  };
  const ZipEntry* pkl = f.entry("data.pkl");
  return unpickle(zip.data(*pkl), pkl->size, load, source, nullptr, {}, kind);
}

const FormatReader kPthZipReader = {WeightFormat::kPthZip, [](const RawFile& f) { return f.entry("data.pkl") != nullptr; },
                                    read_zip};
const FormatReader kPthLegacyReader = {WeightFormat::kPthLegacy, is_legacy, read_legacy};

}  // namespace alexnet::pth

// The torch.export .pt2 reader (torch.export.save): each state_dict tensor is
// described in data/weights/model_weights_config.json (a dtype code, sizes,
// strides and storage offset, as torch/_export/serde/schema.py defines them)
// and its storage is the raw little-endian bytes of the record named by
// "path_name" under data/weights/. Only JSON and raw bytes are read: the graph
// (models/model.json), sample inputs and any pickled entry are not. Class names
// and the transform come from the extra files, as for TorchScript.
#include "model/pth/formats.h"

#include <nlohmann/json.hpp>

#include <map>

namespace alexnet::pth {

namespace {

using Json = nlohmann::ordered_json;  // file order is the state_dict's

constexpr const char* kWeightsDir = "data/weights/";
constexpr const char* kConfigSuffix = "_weights_config.json";
constexpr size_t kMaxConfigBytes = size_t{64} << 20;
constexpr int64_t kStridedLayout = 7;  // schema.Layout.Strided

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": pt2: " + what);
}

// schema.ScalarType codes of the dtypes read.
bool dtype_of(int64_t code, DType* out) {
  static const std::map<int64_t, DType> kCodes = {
      {1, DType::kUInt8},   {2, DType::kInt8},    {3, DType::kInt16}, {4, DType::kInt32},     {5, DType::kInt64},
      {6, DType::kFloat16}, {7, DType::kFloat32}, {8, DType::kFloat64}, {12, DType::kBool}, {13, DType::kBFloat16},
  };
  const auto it = kCodes.find(code);
  if (it == kCodes.end()) return false;
  *out = it->second;
  return true;
}

bool recognises(const RawFile& f) {
  const ZipEntry* e = f.entry("archive_format");
  if (!e || e->size != 3 || e->method != 0) return false;
  return std::string(reinterpret_cast<const char*>(f.zip->data(*e)), 3) == "pt2";
}

// The weights config: the model named "model" (torch.export.save's default),
// else the only one in the archive.
const ZipEntry& config_entry(const RawFile& f) {
  if (const ZipEntry* e = f.entry(std::string(kWeightsDir) + "model" + kConfigSuffix)) return *e;
  const std::string dir = f.zip_prefix + kWeightsDir;
  const ZipEntry* found = nullptr;
  for (const ZipEntry& e : f.zip->entries()) {
    const bool config = e.name.compare(0, dir.size(), dir) == 0 && e.name.size() > dir.size() + 20 &&
                        e.name.compare(e.name.size() - 20, 20, kConfigSuffix) == 0;
    if (!config) continue;
    if (found) fail(f.source, "several models' weights (" + found->name + ", " + e.name + "); one is read");
    found = &e;
  }
  if (!found) fail(f.source, std::string("no ") + kWeightsDir + "model" + kConfigSuffix + " (no weights)");
  return *found;
}

// {"as_int": n}, the schema's SymInt when it is a plain integer.
int64_t as_int(const Json& j, const std::string& what, const std::string& name, const std::string& source) {
  if (!j.is_object() || !j.contains("as_int") || !j["as_int"].is_number_integer())
    fail(source, name + ": " + what + " is " + j.dump(-1, ' ', false, Json::error_handler_t::replace) +
                     ", not a whole number (symbolic sizes are not read)");
  return j["as_int"].get<int64_t>();
}

std::vector<int64_t> int_list(const Json& meta, const char* key, const std::string& name, const std::string& source) {
  if (!meta.contains(key) || !meta[key].is_array()) fail(source, name + ": tensor_meta has no list '" + key + "'");
  std::vector<int64_t> out;
  for (const Json& v : meta[key]) out.push_back(as_int(v, key, name, source));
  return out;
}

// The storage of record `path_name`, shared by the entries that name it.
std::shared_ptr<const Storage> storage_for(const RawFile& f, const std::string& path_name, DType dtype,
                                           const std::string& name,
                                           std::map<std::string, std::shared_ptr<const Storage>>& storages) {
  if (const auto it = storages.find(path_name); it != storages.end()) {
    if (it->second->dtype != dtype) fail(f.source, "record " + path_name + " is used with two dtypes");
    return it->second;
  }
  const ZipEntry* record = f.entry(kWeightsDir + path_name);
  if (!record) fail(f.source, name + ": no record " + f.zip_prefix + kWeightsDir + path_name);
  const auto bytes = static_cast<uint64_t>(element_size(dtype));
  if (record->size % bytes != 0)
    fail(f.source, name + ": record of " + std::to_string(record->size) + " bytes is not a whole number of " +
                       dtype_name(dtype) + " elements");
  auto storage = std::make_shared<Storage>();
  storage->key = path_name;
  storage->dtype = dtype;
  storage->numel = static_cast<int64_t>(record->size / bytes);
  storage->data = record->size ? f.zip->data(*record) : nullptr;
  storage->owner = f.bytes.owner;
  storages.emplace(path_name, storage);
  return storage;
}

TensorRecord tensor_of(const RawFile& f, const std::string& name, const Json& payload,
                       std::map<std::string, std::shared_ptr<const Storage>>& storages) {
  if (!payload.is_object()) fail(f.source, name + ": not a JSON object");
  if (payload.value("use_pickle", false))
    fail(f.source, name + " is stored pickled (a tensor subclass); only plain tensors are read");
  if (!payload.contains("path_name") || !payload["path_name"].is_string())
    fail(f.source, name + ": no 'path_name'");
  if (!payload.contains("tensor_meta") || !payload["tensor_meta"].is_object())
    fail(f.source, name + ": no 'tensor_meta'");
  const Json& meta = payload["tensor_meta"];
  DType dtype;
  if (!meta.contains("dtype") || !meta["dtype"].is_number_integer() || !dtype_of(meta["dtype"].get<int64_t>(), &dtype))
    fail(f.source, name + ": dtype " + (meta.contains("dtype") ? meta["dtype"].dump() : "missing") + " is not read");
  if (meta.contains("layout") && !(meta["layout"].is_number_integer() && meta["layout"].get<int64_t>() == kStridedLayout))
    fail(f.source, name + ": layout " + meta["layout"].dump() + " is not strided");
  TensorRecord t;
  t.storage = storage_for(f, payload["path_name"].get<std::string>(), dtype, name, storages);
  t.sizes = int_list(meta, "sizes", name, f.source);
  t.strides = int_list(meta, "strides", name, f.source);
  if (!meta.contains("storage_offset")) fail(f.source, name + ": tensor_meta has no 'storage_offset'");
  t.offset = as_int(meta["storage_offset"], "storage_offset", name, f.source);
  t.requires_grad = meta.value("requires_grad", false);
  const std::string problem = t.view_problem();
  if (!problem.empty()) fail(f.source, name + ": " + problem);
  return t;
}

WeightsContents read(const RawFile& f) {
  const ZipEntry& config = config_entry(f);
  if (config.size > kMaxConfigBytes)
    fail(f.source, config.name + " of " + std::to_string(config.size) + " bytes is over the limit of " +
                       std::to_string(kMaxConfigBytes));
  const auto* text = reinterpret_cast<const char*>(f.zip->data(config));
  std::string duplicate;
  Json j;
  try {
    j = parse_json_checking_keys<Json>(text, text + config.size, &duplicate);
  } catch (const Json::exception& e) {
    fail(f.source, config.name + " is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) fail(f.source, config.name + " has the key '" + duplicate + "' twice");
  if (!j.is_object() || !j.contains("config") || !j["config"].is_object())
    fail(f.source, config.name + " is not a JSON object with a 'config' object");

  WeightsContents out;
  out.root = Value::dict("collections.OrderedDict");
  std::map<std::string, std::shared_ptr<const Storage>> storages;
  for (const auto& [name, payload] : j["config"].items()) {
    out.root.set(Value::string(name), Value::tensor(tensor_of(f, name, payload, storages)));
  }
  if (out.root.entries().empty()) fail(f.source, config.name + " lists no weights");
  for (const auto& [key, value] : out.root.entries()) out.records.emplace_back(key.as_string(), &value.as_tensor());
  read_extra_files(f, out);
  return out;
}

}  // namespace

const FormatReader kPt2Reader = {WeightFormat::kPt2, recognises, read};

}  // namespace alexnet::pth

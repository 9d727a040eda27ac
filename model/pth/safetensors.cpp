#include "model/pth/safetensors.h"

#include "model/pth/file_io.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <set>

namespace alexnet::pth {

namespace {

using Json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": safetensors: " + what);
}

struct DTypeName {
  const char* name;
  DType dtype;
};
// The format's names for the dtypes a state_dict holds.
constexpr DTypeName kDTypes[] = {
    {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
    {"F64", DType::kFloat64}, {"I64", DType::kInt64},   {"I32", DType::kInt32},
    {"I16", DType::kInt16},   {"I8", DType::kInt8},     {"U8", DType::kUInt8},
    {"BOOL", DType::kBool},
};

uint64_t read_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = v << 8 | p[k];
  return v;
}

// The header as JSON; a key repeated within one object is refused (JSON leaves
// it undefined and readers disagree on which copy wins).
Json parse_header(const char* begin, const char* end, const std::string& source) {
  std::string duplicate;
  Json header;
  try {
    header = parse_json_checking_keys<Json>(begin, end, &duplicate);
  } catch (const Json::exception& e) {
    fail(source, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) fail(source, "header has the key '" + duplicate + "' twice");
  if (!header.is_object()) fail(source, "header is not a JSON object");
  return header;
}

DType parse_dtype(const Json& entry, const std::string& name, const std::string& source) {
  const auto it = entry.find("dtype");
  if (it == entry.end() || !it->is_string()) fail(source, "tensor '" + name + "' has no dtype");
  const std::string text = it->get<std::string>();
  for (const auto& d : kDTypes)
    if (text == d.name) return d.dtype;
  fail(source, "tensor '" + name + "' has dtype " + text + ", which AlexNet's weights never use");
}

// Non-negative integers, at most `max_count` of them.
std::vector<uint64_t> unsigned_list(const Json& entry, const char* field, size_t max_count,
                                    const std::string& name, const std::string& source) {
  const auto it = entry.find(field);
  if (it == entry.end() || !it->is_array() || it->size() > max_count)
    fail(source, "tensor '" + name + "': '" + field + "' is not a list of at most " +
                     std::to_string(max_count) + " integers");
  std::vector<uint64_t> out;
  for (const Json& v : *it) {
    if (!v.is_number_unsigned()) fail(source, "tensor '" + name + "': '" + field + "' holds " + v.dump());
    out.push_back(v.get<uint64_t>());
  }
  return out;
}

struct Placed {
  std::string name;
  uint64_t begin, end;  // bytes into the data
  TensorRecord record;
};

Placed parse_tensor(const std::string& name, const Json& entry, const uint8_t* base,
                    uint64_t data_size, const std::shared_ptr<const void>& owner,
                    const std::string& source) {
  if (!entry.is_object()) fail(source, "tensor '" + name + "' is not an object");
  const DType dtype = parse_dtype(entry, name, source);
  const std::vector<uint64_t> shape = unsigned_list(entry, "shape", 64, name, source);
  const std::vector<uint64_t> offsets = unsigned_list(entry, "data_offsets", 2, name, source);
  if (offsets.size() != 2) fail(source, "tensor '" + name + "': data_offsets is not [begin, end]");
  uint64_t numel = 1, nbytes = 0;
  for (uint64_t d : shape)
    if (d > uint64_t{INT64_MAX} || __builtin_mul_overflow(numel, d, &numel))
      fail(source, "tensor '" + name + "': shape overflows");
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(element_size(dtype)), &nbytes) ||
      nbytes > uint64_t{INT64_MAX})
    fail(source, "tensor '" + name + "': size overflows");
  const uint64_t begin = offsets[0], end = offsets[1];
  if (begin > end || end > data_size)
    fail(source, "tensor '" + name + "': data_offsets [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") outside the " + std::to_string(data_size) + " bytes of data");
  if (end - begin != nbytes)
    fail(source, "tensor '" + name + "': data_offsets hold " + std::to_string(end - begin) +
                     " bytes, its shape and dtype need " + std::to_string(nbytes));

  auto storage = std::make_shared<Storage>();
  storage->key = name;
  storage->dtype = dtype;
  storage->numel = static_cast<int64_t>(numel);
  storage->data = base + begin;
  storage->owner = owner;
  Placed placed{name, begin, end, {}};
  placed.record.storage = storage;
  int64_t stride = 1;
  placed.record.sizes.resize(shape.size());
  placed.record.strides.resize(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {  // row-major
    placed.record.sizes[d] = static_cast<int64_t>(shape[d]);
    placed.record.strides[d] = stride;
    stride *= std::max<int64_t>(1, static_cast<int64_t>(shape[d]));
  }
  return placed;
}

}  // namespace

bool looks_like_safetensors(const uint8_t* data, size_t size) {
  return size >= 9 && data[8] == '{';
}

Safetensors parse_safetensors(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                              const std::string& source) {
  if (size < 8) fail(source, "file shorter than its 8-byte header length");
  const uint64_t header_size = read_u64(data);
  if (header_size > kSafetensorsMaxHeader)
    fail(source, "header of " + std::to_string(header_size) + " bytes is over the limit of " +
                     std::to_string(kSafetensorsMaxHeader));
  if (header_size > size - 8)
    fail(source, "header of " + std::to_string(header_size) + " bytes runs past the end of the file (truncated?)");
  const char* text = reinterpret_cast<const char*>(data + 8);
  const Json header = parse_header(text, text + header_size, source);
  const uint8_t* base = data + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;

  Safetensors out;
  std::vector<Placed> placed;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(source, "__metadata__ '" + key + "' is not a string");
        out.metadata.emplace_back(key, value.get<std::string>());
      }
      continue;
    }
    placed.push_back(parse_tensor(name, entry, base, data_size, owner, source));
  }
  // Sorted by offset, the tensors must tile the data exactly: no overlap, no hole.
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const Placed& p : placed) {
    if (p.begin < at) fail(source, "tensor '" + p.name + "' overlaps another tensor's data");
    if (p.begin > at)
      fail(source, "bytes [" + std::to_string(at) + ", " + std::to_string(p.begin) +
                       ") of the data belong to no tensor");
    at = p.end;
  }
  if (at != data_size)
    fail(source, std::to_string(data_size - at) + " bytes after the last tensor belong to no tensor");
  out.tensors = Value::dict("collections.OrderedDict");
  for (Placed& p : placed) out.tensors.entries().emplace_back(Value::string(p.name), Value::tensor(std::move(p.record)));
  return out;
}

void write_safetensors(const std::string& path, const std::vector<NamedRecord>& tensors,
                       const Metadata& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  std::vector<std::pair<const uint8_t*, uint64_t>> chunks;
  for (const auto& [name, record] : tensors) {
    if (!record.is_row_major()) fail(path, "tensor '" + name + "' is not contiguous");
    const char* dtype = nullptr;
    for (const auto& d : kDTypes)
      if (d.dtype == record.dtype()) dtype = d.name;
    const uint64_t nbytes = static_cast<uint64_t>(record.numel() * element_size(record.dtype()));
    header[name] = {{"dtype", dtype}, {"shape", record.sizes}, {"data_offsets", {offset, offset + nbytes}}};
    chunks.emplace_back(record.storage->data + record.offset * element_size(record.dtype()), nbytes);
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t length[8];
  for (int k = 0; k < 8; ++k) length[k] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * k));

  write_atomically(path, [&](int fd) {
    const auto put = [&](const void* p, uint64_t n) { write_all(fd, p, n, path); };
    put(length, 8);
    put(text.data(), text.size());
    for (const auto& [p, n] : chunks) put(p, n);
  });
}

namespace {

// The safetensors reader: every tensor is the state_dict's; the metadata's
// "classes" (a JSON list) and "transform" (a JSON object) are this project's.
WeightsContents read_safetensors(const RawFile& f) {
  Safetensors file = parse_safetensors(f.bytes.data, f.bytes.size, f.bytes.owner, f.source);
  WeightsContents out;
  out.root = std::move(file.tensors);
  if (out.root.entries().empty()) fail(f.source, "no tensors");
  for (const auto& [key, value] : out.root.entries()) out.records.emplace_back(key.as_string(), &value.as_tensor());
  for (const auto& [key, value] : file.metadata) {
    if (key == kClassesKey) out.class_names = parse_name_list(value, f.source, "metadata 'classes'");
    if (key == kTransformKey) {
      out.transform_json = value;
      out.transform_where = "metadata 'transform'";
    }
  }
  out.metadata = std::move(file.metadata);
  return out;
}

}  // namespace

const FormatReader kSafetensorsReader = {
    WeightFormat::kSafetensors, [](const RawFile& f) { return !f.zip && looks_like_safetensors(f.bytes.data, f.bytes.size); },
    read_safetensors};

}  // namespace alexnet::pth

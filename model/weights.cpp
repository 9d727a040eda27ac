#include "model/weights.h"

#include "model/hub_hash.h"
#include "model/pth/safetensors.h"
#include "model/pth/unpickler.h"

#include <nlohmann/json.hpp>

#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <unistd.h>
#include <utility>

namespace alexnet {

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kTorchScript: return "torchscript";
    case WeightFormat::kPthZip: return "pth (zip)";
    case WeightFormat::kPthLegacy: return "pth (legacy)";
    case WeightFormat::kSafetensors: return "safetensors";
  }
  return "unknown";
}

namespace {

using Entry = WeightsFile::Entry;

// Where files carry the class names: the safetensors metadata key (a JSON list), the key in a
// state_dict's _metadata[""] (a list), and the TorchScript extra file (a JSON list).
constexpr const char* kClassesKey = "classes";
constexpr const char* kClassesExtraFile = "classes.json";
// The input transform, a JSON object, under the same key in each format.
constexpr const char* kTransformKey = "transform";
constexpr const char* kTransformExtraFile = "transform.json";

// Checks `info` against weights of `classes` classes before anything is written.
void check_info(const WeightsInfo& info, int64_t classes, const std::string& path) {
  TORCH_CHECK(info.class_names.empty() || static_cast<int64_t>(info.class_names.size()) == classes, path, ": ",
              info.class_names.size(), " class names for weights with ", classes, " classes");
}
using Entries = std::vector<Entry>;

// What WeightsFile says of a file in no format it reads.
constexpr const char* kNotWeights =
    ": not a weights file (neither torch.save's zip or legacy format, a TorchScript archive, nor "
    "safetensors)";

std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

struct DTypePair {
  pth::DType file;
  torch::ScalarType torch;
};
constexpr DTypePair kDTypes[] = {
    {pth::DType::kFloat32, torch::kFloat32}, {pth::DType::kFloat64, torch::kFloat64},
    {pth::DType::kFloat16, torch::kFloat16}, {pth::DType::kBFloat16, torch::kBFloat16},
    {pth::DType::kInt64, torch::kInt64},     {pth::DType::kInt32, torch::kInt32},
    {pth::DType::kInt16, torch::kInt16},     {pth::DType::kInt8, torch::kInt8},
    {pth::DType::kUInt8, torch::kUInt8},     {pth::DType::kBool, torch::kBool},
};

torch::ScalarType to_scalar_type(pth::DType dtype) {
  for (const auto& p : kDTypes)
    if (p.file == dtype) return p.torch;
  TORCH_CHECK(false, "weights.cpp: unknown checkpoint dtype");
}

pth::DType to_file_dtype(torch::ScalarType type) {
  for (const auto& p : kDTypes)
    if (p.torch == type) return p.file;
  TORCH_CHECK(false, "weights.cpp: cannot save tensors of type ", type);
}

// ---- Finding the state_dict in a torch.save value tree.

// A state_dict is a non-empty dict whose values are all tensors.
bool is_state_dict(const pth::Value& v) {
  if (!v.is_dict() || v.entries().empty()) return false;
  for (const auto& [key, value] : v.entries())
    if (!key.is_string() || !value.is_tensor()) return false;
  return true;
}

// Removes `prefix` when every key starts with it.
template <typename T>
bool strip_common_prefix(std::vector<std::pair<std::string, T>>& named, const std::string& prefix) {
  for (const auto& [name, t] : named)
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
  for (auto& [name, t] : named) name.erase(0, prefix.size());
  return true;
}

// The state_dict's records (pointing into `root`), before any tensor is made.
using NamedRecords = std::vector<std::pair<std::string, const pth::TensorRecord*>>;
// The state_dict in a torch.save tree: the top level, or under one of the keys
// training scripts use; nullptr when there is none.
const pth::Value* locate_state_dict(const pth::Value& root) {
  if (is_state_dict(root)) return &root;
  // torchvision's references/classification/train.py saves {"model": ..., "optimizer": ...};
  // other training scripts use "state_dict" or "model_state_dict".
  for (const char* key : {"model", "state_dict", "model_state_dict"}) {
    const pth::Value* candidate = root.find(key);
    if (candidate && is_state_dict(*candidate)) return candidate;
  }
  return nullptr;
}

NamedRecords find_state_dict_records(const pth::Value& root, const std::string& source) {
  const pth::Value* dict = locate_state_dict(root);
  if (!dict) {
    std::string keys;
    if (root.is_dict())
      for (const auto& [k, v] : root.entries())
        if (keys.size() < 200) keys += (keys.empty() ? "" : ", ") + k.describe() + ": " + v.describe();
    TORCH_CHECK(false, source, ": no state_dict found (looked at the top level and under 'model', "
                "'state_dict', 'model_state_dict'); the file holds ", root.describe(),
                keys.empty() ? "" : " {" + keys + "}");
  }
  NamedRecords records;
  for (const auto& [key, value] : dict->entries()) records.emplace_back(key.as_string(), &value.as_tensor());
  return records;
}

// DataParallel/DDP wrap the model as "module", torch.compile as "_orig_mod",
// Lightning and exported safetensors often as "model"; in any order.
void strip_wrapper_prefixes(NamedRecords& records) {
  while (strip_common_prefix(records, "module.") || strip_common_prefix(records, "_orig_mod.") ||
         strip_common_prefix(records, "model.")) {
  }
}

// A TorchScript module's tensors by dotted name ("features.0.weight"): the
// tensor attributes of each module object, recursing into attributes that are
// module objects themselves (Sequential, Conv2d ...). Other attributes
// (training flags, hooks) are not weights.
void collect_module_records(const pth::Value& object, const std::string& prefix, NamedRecords& out) {
  for (const auto& [key, value] : object.entries()) {
    if (!key.is_string()) continue;
    if (value.is_tensor()) {
      out.emplace_back(prefix + key.as_string(), &value.as_tensor());
    } else if (value.is_dict() && pth::is_torchscript_class(value.type_name())) {
      collect_module_records(value, prefix + key.as_string() + ".", out);
    }
  }
}

NamedRecords find_module_records(const pth::Value& root, const std::string& source) {
  TORCH_CHECK(root.is_dict() && pth::is_torchscript_class(root.type_name()), source,
              ": TorchScript archive whose data.pkl holds ", root.describe(), ", not a module");
  NamedRecords records;
  collect_module_records(root, "", records);
  TORCH_CHECK(!records.empty(), source, ": TorchScript module without tensors");
  return records;
}

// Whether two elements of the view share memory: with the dimensions sorted by
// stride, each stride must pass the reach of all smaller ones (so a stride of 0
// on a dimension of size > 1 overlaps).
bool view_overlaps(const pth::TensorRecord& r) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size), size > 1
  for (size_t d = 0; d < r.sizes.size(); ++d) {
    if (r.sizes[d] == 0) return false;
    if (r.sizes[d] > 1) dims.emplace_back(r.strides[d], r.sizes[d]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // the largest offset addressed by the dimensions so far
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return true;
    reach += stride * (size - 1);  // cannot overflow: the reader bounded it by the storage
  }
  return false;
}

// Before anything is allocated from what a file declares: each state_dict
// tensor must be a view that reads each of its elements from its own bytes,
// and together they may not declare more bytes than the file holds. Weights
// then cost no more memory than the file's size, whatever the header says.
void check_declared_sizes(const NamedRecords& records, size_t file_size, const std::string& source) {
  uint64_t total = 0;
  for (const auto& [name, record] : records) {
    TORCH_CHECK(!view_overlaps(*record), source, ": ", name, " is a view whose elements overlap (sizes ",
                shape_str(record->sizes), ", strides ", shape_str(record->strides),
                "): a state_dict tensor never is; refusing a crafted file");
    total += static_cast<uint64_t>(record->numel()) * pth::element_size(record->dtype());
  }
  TORCH_CHECK(total <= file_size, source, ": the state_dict declares ", total,
              " bytes of tensors but the file has only ", file_size, "; refusing a crafted file");
}

// ---- The one validation: a state_dict's names, shapes and dtypes against a table.

Entries entries_of(const NamedTensors& tensors) {
  Entries entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.sizes().vec(), t.scalar_type()});
  return entries;
}

// AlexNet's parameters, float32, as parameter_shapes() lists them.
Entries alexnet_entries(const AlexNetOptions& options) {
  Entries entries;
  for (const auto& [name, shape] : parameter_shapes(options))
    entries.push_back({name, shape, torch::kFloat});
  return entries;
}

struct Comparison {
  size_t problems = 0;
  std::string reason;  // one line naming `source`; empty when no problems
};

// `given` against `expected`: every expected name present with its shape and
// kind of dtype (floating or not), nothing else.
Comparison compare(const Entries& expected, const Entries& given, const std::string& source) {
  std::map<std::string, const Entry*> by_name;
  for (const auto& e : given) by_name.emplace(e.name, &e);
  std::set<std::string> known;
  std::vector<std::string> missing, mismatched, unexpected, dtypes;
  for (const auto& want : expected) {
    known.insert(want.name);
    const auto it = by_name.find(want.name);
    if (it == by_name.end()) {
      missing.push_back(want.name);
    } else if (it->second->shape != want.shape) {
      mismatched.push_back(want.name + ": expected shape " + shape_str(want.shape) + ", got " +
                           shape_str(it->second->shape));
    } else if (c10::isFloatingType(it->second->dtype) != c10::isFloatingType(want.dtype)) {
      dtypes.push_back(source + ": key " + want.name + ": expected a " + c10::toString(want.dtype) +
                       " tensor, got " + c10::toString(it->second->dtype));
    }
  }
  for (const auto& e : given)
    if (!known.count(e.name)) unexpected.push_back(e.name + " " + shape_str(e.shape));

  Comparison c;
  c.problems = missing.size() + mismatched.size() + unexpected.size() + dtypes.size();
  if (missing.empty() && mismatched.empty() && unexpected.empty()) {
    if (!dtypes.empty()) c.reason = dtypes.front();
    return c;
  }
  std::ostringstream os;
  os << source << ": weights do not fit AlexNet";
  auto list = [&os](const char* what, const std::vector<std::string>& items) {
    if (items.empty()) return;
    os << "; " << what << ": ";
    for (size_t i = 0; i < items.size(); ++i) os << (i ? ", " : "") << items[i];
  };
  list("shape mismatch", mismatched);
  list("missing keys", missing);
  list("unexpected keys", unexpected);
  c.reason = os.str();
  return c;
}

struct Fit {
  AlexNetOptions options;  // classes, channels and arch the state_dict describes
  std::string mismatch;    // empty when it is exactly that AlexNet
};

// Reads the classes and input channels from classifier.6.weight and
// features.0.weight, then compares with both architectures; a mismatch is
// reported against the one with fewer problems (torchvision's on a tie).
Fit fit_alexnet(const Entries& given, const std::string& source) {
  int64_t classes = 0, channels = 0;
  for (const auto& e : given) {
    if (e.name == "classifier.6.weight" && e.shape.size() == 2) classes = e.shape[0];
    if (e.name == "features.0.weight" && e.shape.size() == 4) channels = e.shape[1];
  }
  Fit fit;
  if (classes <= 0 || channels <= 0) {
    fit.mismatch = source + ": not an AlexNet state_dict (no classifier.6.weight / "
                   "features.0.weight of the expected rank)";
    return fit;
  }
  std::optional<Comparison> best;
  for (const Arch arch : {Arch::kTorchvision, Arch::kPaper2012}) {
    const auto options = AlexNetOptions().num_classes(classes).in_channels(channels).arch(arch);
    Comparison c = compare(alexnet_entries(options), given, source);
    if (!best || c.problems < best->problems) {
      best = std::move(c);
      fit.options = options;
    }
  }
  fit.mismatch = best->reason;
  return fit;
}

// The module's state_dict less the entries under `skip_prefix`, once `given`
// (less the same entries) has been checked to fit it; else throws naming `source`.
NamedTensors checked_targets(const torch::nn::Module& module, const Entries& given,
                             const std::string& skip_prefix, const std::string& source) {
  const auto skipped = [&skip_prefix](const std::string& name) {
    return !skip_prefix.empty() && name.compare(0, skip_prefix.size(), skip_prefix) == 0;
  };
  NamedTensors targets;
  for (auto& [name, t] : state_dict(module))
    if (!skipped(name)) targets.emplace_back(name, t);
  Entries kept;
  for (const auto& e : given)
    if (!skipped(e.name)) kept.push_back(e);
  const Comparison c = compare(entries_of(targets), kept, source);
  TORCH_CHECK(c.reason.empty(), c.reason);
  return targets;
}

// ---- Reading.

// memcpy from a mapped file in steps, giving each step's pages back once copied,
// so that the source and the copy are never both resident.
void copy_releasing(void* dst, const uint8_t* src, size_t n) {
  constexpr size_t kStep = size_t{16} << 20;
  for (size_t done = 0; done < n; done += kStep) {
    const size_t step = std::min(kStep, n - done);
    std::memcpy(static_cast<uint8_t*>(dst) + done, src + done, step);
    pth::release_pages(src + done, step);
  }
}

// Copies a record of a mapped file into `target` (shape already checked), giving
// back the file's pages as it goes, so the file and the model are never both
// resident. Records of the target's dtype are copied bytewise, which also serves
// the unaligned storages of legacy files without an intermediate tensor.
void copy_record(const pth::TensorRecord& record, torch::Tensor& target) {
  const pth::Storage& storage = *record.storage;
  const size_t nbytes = static_cast<size_t>(storage.numel) * pth::element_size(storage.dtype);
  if (storage.data && record.is_contiguous_whole() && target.is_contiguous() &&
      target.device().is_cpu() && to_scalar_type(storage.dtype) == target.scalar_type() &&
      target.nbytes() == nbytes) {
    copy_releasing(target.data_ptr(), storage.data, nbytes);
  } else {
    target.copy_(to_tensor(record));
    if (storage.data) pth::release_pages(storage.data, nbytes);
  }
}

// ---- Writing.

// AlexNet's forward in TorchScript for eval, from alexnet_layers(): dropout is
// the identity. Layers are reached by their Sequential index with getattr, which
// keeps torchvision's parameter names (features.0.weight ...) in the archive.
std::string torchscript_forward(const AlexNetOptions& options, const std::string& path) {
  const AlexNetLayers layers = alexnet_layers(options);
  std::ostringstream py;
  const auto emit = [&py, &path](const char* var, const char* container,
                                 const std::vector<LayerSpec>& specs) {
    py << "    " << var << " = self." << container << "\n";
    for (size_t i = 0; i < specs.size(); ++i) {
      const LayerSpec& s = specs[i];
      const std::string layer = std::string("getattr(") + var + ", \"" + std::to_string(i) + "\")";
      switch (s.kind) {
        case LayerSpec::Kind::kConv:
          py << "    x = torch.conv2d(x, " << layer << ".weight, " << layer << ".bias, [" << s.stride
             << ", " << s.stride << "], [" << s.padding << ", " << s.padding << "], [1, 1], "
             << s.groups << ")\n";
          break;
        case LayerSpec::Kind::kReLU:
          py << "    x = torch.relu(x)\n";
          break;
        case LayerSpec::Kind::kMaxPool:
          py << "    x = torch.max_pool2d(x, [" << s.kernel << ", " << s.kernel << "], [" << s.stride
             << ", " << s.stride << "])\n";
          break;
        case LayerSpec::Kind::kLinear:
          py << "    x = torch.linear(x, " << layer << ".weight, " << layer << ".bias)\n";
          break;
        case LayerSpec::Kind::kDropout:
          break;
        case LayerSpec::Kind::kLrn:
          TORCH_CHECK(false, path,
                      ": TorchScript export covers torchvision's AlexNet; write the 2012 paper's "
                      "network as .pth instead");
      }
    }
  };
  py << "\ndef forward(self, x):\n";
  emit("f", "features", layers.features);
  py << "    x = torch.adaptive_avg_pool2d(x, [" << kPooledSize << ", " << kPooledSize << "])\n";
  py << "    x = torch.flatten(x, 1)\n";
  emit("c", "classifier", layers.classifier);
  py << "    return x\n";
  return py.str();
}

}  // namespace

torch::Tensor to_tensor(const pth::TensorRecord& record) {
  const pth::Storage& storage = *record.storage;
  const auto options = torch::TensorOptions().dtype(to_scalar_type(storage.dtype));
  torch::Tensor flat;
  const auto address = reinterpret_cast<uintptr_t>(storage.data);
  if (storage.numel == 0 || storage.data == nullptr) {
    flat = torch::empty({storage.numel}, options);
  } else if (address % pth::element_size(storage.dtype) == 0) {
    auto owner = storage.owner;  // the tensor keeps the file buffer alive
    flat = torch::from_blob(const_cast<uint8_t*>(storage.data), {storage.numel},
                            [owner](void*) mutable { owner.reset(); }, options);
  } else {
    // Legacy files pack storages without alignment.
    flat = torch::empty({storage.numel}, options);
    std::memcpy(flat.data_ptr(), storage.data, flat.nbytes());
  }
  return flat.as_strided(record.sizes, record.strides, record.offset)
      .requires_grad_(record.requires_grad && flat.is_floating_point());
}

pth::Value tensor_value(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().cpu();
  auto storage = std::make_shared<pth::Storage>();
  storage->dtype = to_file_dtype(t.scalar_type());
  storage->numel = static_cast<int64_t>(t.storage().nbytes()) / t.element_size();
  storage->data = static_cast<const uint8_t*>(t.storage().data());
  storage->owner = std::make_shared<torch::Tensor>(t);
  pth::TensorRecord record;
  record.storage = storage;
  record.offset = t.storage_offset();
  record.sizes = t.sizes().vec();
  record.strides = t.strides().vec();
  return pth::Value::tensor(std::move(record));
}

NamedTensors find_state_dict(const pth::Value& root, const std::string& source) {
  NamedRecords records = find_state_dict_records(root, source);
  strip_wrapper_prefixes(records);
  NamedTensors tensors;
  for (const auto& [name, record] : records)
    tensors.emplace_back(name, to_tensor(*record));
  return tensors;
}

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

const std::string& WeightsFile::sha256() const {
  if (sha256_.empty())  // the mapping's pages are given back as they are hashed
    sha256_ = sha256_hex_bytes(buffer_.data, buffer_.size, [](const void* p, size_t n) { pth::release_pages(p, n); });
  return sha256_;
}

WeightsFile::WeightsFile(const std::string& path) : path_(path) {
  NamedRecords records;
  try {
    buffer_ = pth::map_file(path);  // a regular file, opened without blocking
    TORCH_CHECK(buffer_.size > 0, path, ": file is empty");
    // torch.hub's NAME-HASH.pth promise (torchvision's alexnet-owt-7be5be79.pth), kept.
    try {
      if (hub_hash_prefix(path)) check_hub_hash(path, sha256());  // the bytes loaded, hashed once
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, e.what());
    }
    pth::FileFormat format = pth::detect_format(buffer_.data, buffer_.size, path);
    if (format == pth::FileFormat::kUnknown && pth::looks_like_safetensors(buffer_.data, buffer_.size)) {
      pth::Safetensors file = pth::parse_safetensors(buffer_.data, buffer_.size, buffer_.owner, path);
      format_ = WeightFormat::kSafetensors;
      root_ = std::move(file.tensors);
      metadata_ = std::move(file.metadata);
      records = find_state_dict_records(root_, path);
    } else {
      TORCH_CHECK(format != pth::FileFormat::kUnknown, path, kNotWeights);
      pth::Checkpoint checkpoint = pth::parse_checkpoint(buffer_.data, buffer_.size, buffer_.owner, path);
      format_ = checkpoint.format == pth::FileFormat::kTorchScript ? WeightFormat::kTorchScript
                : checkpoint.format == pth::FileFormat::kPthZip    ? WeightFormat::kPthZip
                                                                   : WeightFormat::kPthLegacy;
      root_ = std::move(checkpoint.root);
      extra_files_ = std::move(checkpoint.extra_files);
      records = format_ == WeightFormat::kTorchScript ? find_module_records(root_, path)
                                                      : find_state_dict_records(root_, path);
    }
    pth::release_pages(buffer_.data, buffer_.size);  // parsing and the zip checksums read pages
  } catch (const pth::FormatError& e) {
    TORCH_CHECK(false, e.what());  // "<path>: <what>"
  }
  strip_wrapper_prefixes(records);
  check_declared_sizes(records, buffer_.size, path);
  for (const auto& [name, record] : records) {
    records_.push_back(record);
    entries_.push_back({name, record->sizes, to_scalar_type(record->dtype())});
  }
  Fit fit = fit_alexnet(entries_, path);
  fitted_ = fit.options;
  mismatch_ = std::move(fit.mismatch);
}

const pth::Value* WeightsFile::own_metadata() const {
  const pth::Value* dict = format_ == WeightFormat::kPthZip || format_ == WeightFormat::kPthLegacy
                               ? locate_state_dict(root_) : nullptr;
  const pth::Value* attributes = dict ? dict->attributes() : nullptr;
  const pth::Value* metadata = attributes ? attributes->find("_metadata") : nullptr;
  return metadata ? metadata->find("") : nullptr;
}

std::vector<std::string> WeightsFile::class_names() const {
  std::vector<std::string> out;
  // safetensors: metadata "classes"; TorchScript: the extra file classes.json. Both a JSON list.
  const auto from_json = [&](const std::string& text, const std::string& where) {
    const nlohmann::json names = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(names.is_array(), path_, ": ", where, " is not a JSON list");
    for (const auto& name : names) {
      TORCH_CHECK(name.is_string(), path_, ": ", where, " holds ", name.dump(), ", not a name");
      out.push_back(name.get<std::string>());
    }
  };
  for (const auto& [key, value] : metadata_)
    if (key == kClassesKey) from_json(value, "metadata 'classes'");
  for (const auto& [name, text] : extra_files_)
    if (name == kClassesExtraFile) from_json(text, std::string("extra file ") + kClassesExtraFile);
  // torch.save: the state_dict's _metadata[""]["classes"], a list of strings.
  const pth::Value* own = own_metadata();
  if (const pth::Value* names = own ? own->find(kClassesKey) : nullptr) {
    TORCH_CHECK(names->kind() == pth::Value::Kind::kList, path_, ": _metadata[''] 'classes' is ",
                names->describe(), ", not a list");
    for (const pth::Value& name : names->items()) {
      TORCH_CHECK(name.is_string(), path_, ": _metadata[''] 'classes' holds ", name.describe(), ", not a name");
      out.push_back(name.as_string());
    }
  }
  TORCH_CHECK(out.empty() || !fits() || static_cast<int64_t>(out.size()) == fitted_.num_classes(), path_,
              ": carries ", out.size(), " class names for weights with ", fitted_.num_classes(), " classes");
  return out;
}

std::optional<InputTransform> WeightsFile::input_transform() const {
  for (const auto& [key, value] : metadata_)
    if (key == kTransformKey) return InputTransform::from_json(value, path_ + ": metadata 'transform'");
  for (const auto& [name, text] : extra_files_)
    if (name == kTransformExtraFile) return InputTransform::from_json(text, path_ + ": extra file transform.json");
  const pth::Value* own = own_metadata();
  if (const pth::Value* text = own ? own->find(kTransformKey) : nullptr) {
    TORCH_CHECK(text->is_string(), path_, ": _metadata[''] 'transform' is ", text->describe(), ", not a JSON string");
    return InputTransform::from_json(text->as_string(), path_ + ": _metadata[''] 'transform'");
  }
  return std::nullopt;
}

std::string InputTransform::to_json() const {
  return nlohmann::json{{"resize_size", resize_size}, {"crop_size", crop_size}, {"mean", mean}, {"std", std}}.dump();
}

InputTransform InputTransform::from_json(const std::string& text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto positive = [&](const char* key) {
    TORCH_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() > 0 &&
                    j[key].get<int64_t>() <= (int64_t{1} << 16),
                source, ": '", key, "' must be a positive whole number of pixels");
    return j[key].get<int64_t>();
  };
  const auto triple = [&](const char* key, bool strictly_positive) {
    TORCH_CHECK(j.is_object() && j.contains(key) && j[key].is_array() && j[key].size() == 3, source, ": '", key,
                "' must be a list of 3 numbers");
    std::array<double, 3> v{};
    for (size_t c = 0; c < 3; ++c) {
      TORCH_CHECK(j[key][c].is_number(), source, ": '", key, "' must be a list of 3 numbers");
      v[c] = j[key][c].get<double>();
      TORCH_CHECK(std::isfinite(v[c]) && (!strictly_positive || v[c] > 0), source, ": '", key, "' holds ", v[c]);
    }
    return v;
  };
  TORCH_CHECK(j.is_object(), source, " is not a JSON object");
  InputTransform t;
  t.resize_size = positive("resize_size");
  t.crop_size = positive("crop_size");
  t.mean = triple("mean", false);
  t.std = triple("std", true);
  return t;
}

AlexNetOptions WeightsFile::options(std::optional<int64_t> num_classes, AlexNetOptions base) const {
  TORCH_CHECK(fits(), mismatch_);
  if (num_classes) {
    TORCH_CHECK(*num_classes == fitted_.num_classes(), path_, ": weights have ",
                fitted_.num_classes(), " classes but ", *num_classes, " were asked for");
  }
  return base.num_classes(fitted_.num_classes()).in_channels(fitted_.in_channels()).arch(fitted_.arch());
}

void WeightsFile::copy_into(NamedTensors& targets) const {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < entries_.size(); ++i) index.emplace(entries_[i].name, i);
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) copy_record(*records_[index.at(name)], target);
}

AlexNet WeightsFile::load(std::optional<int64_t> num_classes, AlexNetOptions base) const {
  const AlexNetOptions options = this->options(num_classes, base);
  // Each record is copied straight from the mapping into its own float32
  // tensor, which the model then adopts: peak memory is the model plus a few
  // pages, not the model plus the file, and no initial weights are drawn only
  // to be overwritten.
  NamedTensors targets;
  for (const auto& [name, shape] : parameter_shapes(options))
    targets.emplace_back(name, torch::empty(shape, torch::kFloat));
  copy_into(targets);
  return AlexNet(options, targets);
}

void WeightsFile::load_into(torch::nn::Module& module, const std::string& skip_prefix) const {
  NamedTensors targets = checked_targets(module, entries_, skip_prefix, path_);
  copy_into(targets);
}

NamedTensors WeightsFile::tensors() const {
  NamedTensors out;
  for (size_t i = 0; i < entries_.size(); ++i) out.emplace_back(entries_[i].name, to_tensor(*records_[i]));
  return out;
}

AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes,
                     AlexNetOptions base) {
  return WeightsFile(path).load(num_classes, base);
}

void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source) {
  NamedTensors targets = checked_targets(module, entries_of(tensors), "", source);
  const std::map<std::string, torch::Tensor> given(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(given.at(name));
}

pth::Value state_dict_value(const NamedTensors& tensors, const WeightsInfo& info) {
  pth::Value dict = pth::Value::dict("collections.OrderedDict");
  for (const auto& [name, t] : tensors) dict.set(pth::Value::string(name), tensor_value(t));
  if (!info.empty()) {
    // load_state_dict hands _metadata[""] to the root module, which reads only "version".
    pth::Value own = pth::Value::dict();
    own.set(pth::Value::string("version"), pth::Value::integer(1));
    if (!info.class_names.empty()) {
      std::vector<pth::Value> names;
      for (const auto& name : info.class_names) names.push_back(pth::Value::string(name));
      own.set(pth::Value::string(kClassesKey), pth::Value::list(std::move(names)));
    }
    if (info.transform) own.set(pth::Value::string(kTransformKey), pth::Value::string(info.transform->to_json()));
    pth::Value metadata = pth::Value::dict("collections.OrderedDict");
    metadata.set(pth::Value::string(""), std::move(own));
    pth::Value attributes = pth::Value::dict();
    attributes.set(pth::Value::string("_metadata"), std::move(metadata));
    dict.set_attributes(std::move(attributes));
  }
  return dict;
}

void save_state_dict(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info) {
  if (!info.class_names.empty()) {
    const Fit fit = fit_alexnet(entries_of(tensors), path);
    if (fit.mismatch.empty()) check_info(info, fit.options.num_classes(), path);
  }
  pth::write_checkpoint(path, state_dict_value(tensors, info));
}

void save_safetensors(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info) {
  const Fit fit = fit_alexnet(entries_of(tensors), path);
  TORCH_CHECK(fit.mismatch.empty(), fit.mismatch);
  const int64_t classes = fit.options.num_classes();
  check_info(info, classes, path);
  pth::Metadata metadata = {{"format", "pt"},
                            {"architecture", arch_name(fit.options.arch())},
                            {"num_classes", std::to_string(classes)}};
  if (!info.class_names.empty()) metadata.emplace_back(kClassesKey, nlohmann::json(info.class_names).dump());
  if (info.transform) metadata.emplace_back(kTransformKey, info.transform->to_json());
  std::vector<pth::NamedRecord> records;
  for (const auto& [name, t] : tensors)
    records.emplace_back(name, tensor_value(t.detach().cpu().contiguous()).as_tensor());
  pth::write_safetensors(path, records, metadata);
}

std::vector<std::string> nonfinite_parameters(const torch::nn::Module& module) {
  std::vector<std::string> names;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_dict(module)) {
    if (!t.is_floating_point()) continue;
    // In 4M-element pieces: isfinite's temporaries for the whole 151 MB
    // classifier.1.weight would add as much again to the peak (here 4 MB at most), and
    // smaller pieces mean thousands of tiny parallel regions, which stall for seconds
    // each on busy cores (2,300 pieces of 64K took 35-52 s instead of 1-3 s).
    for (const torch::Tensor& piece : t.reshape(-1).split(int64_t{1} << 22)) {
      if (!torch::isfinite(piece).all().item<bool>()) {
        names.push_back(name);
        break;
      }
    }
  }
  return names;
}

void save_torchscript(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info) {
  const Fit fit = fit_alexnet(entries_of(tensors), path);
  TORCH_CHECK(fit.mismatch.empty(), fit.mismatch);
  check_info(info, fit.options.num_classes(), path);
  const std::string forward = torchscript_forward(fit.options, path);
  const std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  torch::jit::Module model("__torch__.alexnet.AlexNet");
  for (const auto& [name, shape] : parameter_shapes(fit.options)) {
    // "features.3.weight": container "features", layer "3", parameter "weight".
    const size_t first = name.find('.'), last = name.rfind('.');
    const std::string container = name.substr(0, first);
    const std::string index = name.substr(first + 1, last - first - 1);
    if (!model.hasattr(container))
      model.register_module(container, torch::jit::Module("__torch__.alexnet." + container));
    auto holder = model.attr(container).toModule();
    if (!holder.hasattr(index))
      holder.register_module(index, torch::jit::Module("__torch__.alexnet." + container + "_" + index));
    holder.attr(index).toModule().register_parameter(name.substr(last + 1),
                                                     by_name.at(name).detach().contiguous(),
                                                     /*is_buffer=*/false);
  }
  model.define(forward);
  model.eval();
  std::ostringstream archive;
  torch::jit::ExtraFilesMap extra;
  if (!info.class_names.empty()) extra[kClassesExtraFile] = nlohmann::json(info.class_names).dump();
  if (info.transform) extra[kTransformExtraFile] = info.transform->to_json();
  model.save(archive, extra);
  const std::string bytes = archive.str();
  pth::write_atomically(path, [&](int fd) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      TORCH_CHECK(n > 0 || errno == EINTR, path, ": write failed: ", std::strerror(errno));
      if (n > 0) done += static_cast<size_t>(n);
    }
  });
}

}  // namespace alexnet

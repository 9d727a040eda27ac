#include "model/weights.h"

#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <fstream>
#include <istream>
#include <streambuf>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace alexnet {

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kTorchScript: return "torchscript";
    case WeightFormat::kPthZip: return "pth (zip)";
    case WeightFormat::kPthLegacy: return "pth (legacy)";
  }
  return "unknown";
}

namespace {

std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

// A readable regular file, or an error naming it.
void check_regular_file(const std::string& path) {
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, path, ": no such file");
  TORCH_CHECK(S_ISREG(st.st_mode), path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), path, ": cannot open for reading");
  TORCH_CHECK(st.st_size > 0, path, ": file is empty");
}

// The first line of a c10::Error, without LibTorch's C++ backtrace.
std::string first_line(const std::string& message) {
  auto end = message.find('\n');
  return message.substr(0, end);
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

// The state_dict's records, as find_state_dict finds them, before any tensor is made.
using NamedRecords = std::vector<std::pair<std::string, const pth::TensorRecord*>>;
NamedRecords find_state_dict_records(const pth::Value& root, const std::string& source);

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
  NamedTensors tensors;
  for (const auto& [name, record] : find_state_dict_records(root, source))
    tensors.emplace_back(name, to_tensor(*record));
  return tensors;
}

namespace {

NamedRecords find_state_dict_records(const pth::Value& root, const std::string& source) {
  const pth::Value* dict = &root;
  if (!is_state_dict(root)) {
    dict = nullptr;
    // torchvision's references/classification/train.py saves {"model": ..., "optimizer": ...};
    // other training scripts use "state_dict" or "model_state_dict".
    for (const char* key : {"model", "state_dict", "model_state_dict"}) {
      const pth::Value* candidate = root.find(key);
      if (candidate && is_state_dict(*candidate)) {
        dict = candidate;
        break;
      }
    }
  }
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
  // DataParallel/DDP wrap the model as "module", torch.compile as "_orig_mod"; either order.
  while (strip_common_prefix(records, "module.") || strip_common_prefix(records, "_orig_mod.")) {
  }
  return records;
}

}  // namespace

void save_state_dict(const NamedTensors& tensors, const std::string& path) {
  pth::Value root = pth::Value::dict("collections.OrderedDict");
  for (const auto& [name, t] : tensors) root.set(pth::Value::string(name), tensor_value(t));
  pth::write_checkpoint(path, root);
}

namespace {

// A read-only std::streambuf over bytes already in memory, so torch::jit::load
// parses the buffer read_weight_file filled instead of reading the file again.
class MemoryStreamBuf : public std::streambuf {
 public:
  MemoryStreamBuf(const uint8_t* data, size_t size) {
    char* begin = reinterpret_cast<char*>(const_cast<uint8_t*>(data));
    setg(begin, begin, begin + size);
  }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    const off_type base = dir == std::ios_base::beg ? 0
                          : dir == std::ios_base::cur ? gptr() - eback()
                                                      : egptr() - eback();
    return seekpos(base + off, std::ios_base::in);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    if (pos < 0 || pos > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + static_cast<off_type>(pos), egptr());
    return pos;
  }
};

}  // namespace

namespace {

// What read_weight_file and load_alexnet say of a file in no format they read.
constexpr const char* kNotWeights =
    ": not a PyTorch weights file (neither torch.save's zip or legacy format nor a TorchScript "
    "archive)";

// Every parameter and buffer of the archive torch::jit::load(args...) reads.
template <typename... Args>
NamedTensors load_torchscript(const std::string& source, Args&&... args) {
  torch::jit::Module module;
  try {
    module = torch::jit::load(std::forward<Args>(args)..., torch::kCPU);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, source, ": not a TorchScript archive (",
                first_line(e.what_without_backtrace()), ")");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, source, ": not a TorchScript archive (", first_line(e.what()), ")");
  }
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
  return out;
}

}  // namespace

NamedTensors read_torchscript_tensors(const uint8_t* data, size_t size, const std::string& source) {
  MemoryStreamBuf buffer(data, size);
  std::istream in(&buffer);
  return load_torchscript(source, in);
}

WeightFile read_weight_file(const std::string& path) {
  check_regular_file(path);
  const pth::FileBuffer buffer = pth::read_file(path);
  WeightFile file;
  file.path = path;
  switch (pth::detect_format(buffer.data, buffer.size, path)) {
    case pth::FileFormat::kTorchScript:
      file.format = WeightFormat::kTorchScript;
      file.tensors = read_torchscript_tensors(buffer.data, buffer.size, path);
      break;
    case pth::FileFormat::kPthZip:
    case pth::FileFormat::kPthLegacy: {
      const pth::Checkpoint checkpoint =
          pth::parse_checkpoint(buffer.data, buffer.size, buffer.owner, path);
      file.format = checkpoint.format == pth::FileFormat::kPthZip ? WeightFormat::kPthZip
                                                                  : WeightFormat::kPthLegacy;
      file.tensors = find_state_dict(checkpoint.root, path);
      break;
    }
    case pth::FileFormat::kUnknown:
      TORCH_CHECK(false, path, kNotWeights);
  }
  return file;
}

namespace {

// AlexNet's forward in TorchScript, for eval (dropout is the identity). Layers
// are reached by their Sequential index with getattr, which keeps torchvision's
// parameter names (features.0.weight ...) in the saved archive.
constexpr const char* kTorchScriptForward = R"(
def forward(self, x):
    f = self.features
    x = torch.relu(torch.conv2d(x, getattr(f, "0").weight, getattr(f, "0").bias, [4, 4], [2, 2]))
    x = torch.max_pool2d(x, [3, 3], [2, 2])
    x = torch.relu(torch.conv2d(x, getattr(f, "3").weight, getattr(f, "3").bias, [1, 1], [2, 2]))
    x = torch.max_pool2d(x, [3, 3], [2, 2])
    x = torch.relu(torch.conv2d(x, getattr(f, "6").weight, getattr(f, "6").bias, [1, 1], [1, 1]))
    x = torch.relu(torch.conv2d(x, getattr(f, "8").weight, getattr(f, "8").bias, [1, 1], [1, 1]))
    x = torch.relu(torch.conv2d(x, getattr(f, "10").weight, getattr(f, "10").bias, [1, 1], [1, 1]))
    x = torch.max_pool2d(x, [3, 3], [2, 2])
    x = torch.adaptive_avg_pool2d(x, [6, 6])
    x = torch.flatten(x, 1)
    c = self.classifier
    x = torch.relu(torch.linear(x, getattr(c, "1").weight, getattr(c, "1").bias))
    x = torch.relu(torch.linear(x, getattr(c, "4").weight, getattr(c, "4").bias))
    return torch.linear(x, getattr(c, "6").weight, getattr(c, "6").bias)
)";

}  // namespace

void save_torchscript(const NamedTensors& tensors, const std::string& path) {
  const InferredShape shape = infer_shape(tensors, path);  // an AlexNet state_dict, else a clear error
  TORCH_CHECK(shape.arch == Arch::kTorchvision, path,
              ": TorchScript export covers torchvision's AlexNet; write the 2012 paper's network "
              "as .pth instead");
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  AlexNet reference(AlexNetOptions().num_classes(1).in_channels(1));
  std::vector<std::string> missing;
  for (const auto& [name, t] : state_dict(*reference))
    if (!by_name.count(name)) missing.push_back(name);
  TORCH_CHECK(missing.empty(), path, ": cannot export, the weights lack ", missing.front());

  torch::jit::Module model("__torch__.alexnet.AlexNet");
  for (const char* container : {"features", "classifier"}) {
    torch::jit::Module holder(std::string("__torch__.alexnet.") + container);
    for (const auto& [name, t] : by_name) {
      const std::string prefix = std::string(container) + ".";
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      const auto dot = name.find('.', prefix.size());
      const std::string index = name.substr(prefix.size(), dot - prefix.size());
      if (!holder.hasattr(index))
        holder.register_module(index, torch::jit::Module("__torch__.alexnet." + std::string(container) + "_" + index));
      auto layer = holder.attr(index).toModule();
      layer.register_parameter(name.substr(dot + 1), t.detach().contiguous(), /*is_buffer=*/false);
    }
    model.register_module(container, holder);
  }
  model.define(kTorchScriptForward);
  model.eval();
  std::ostringstream archive;
  model.save(archive);
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

InferredShape infer_shape(const NamedTensors& tensors, const std::string& source) {
  InferredShape shape;
  for (const auto& [name, t] : tensors) {
    if (name == "classifier.6.weight" && t.dim() == 2) shape.num_classes = t.size(0);
    if (name == "features.0.weight" && t.dim() == 4) shape.in_channels = t.size(1);
    if (name == "features.4.weight") shape.arch = Arch::kPaper2012;
  }
  TORCH_CHECK(shape.num_classes > 0 && shape.in_channels > 0, source,
              ": not an AlexNet state_dict (no classifier.6.weight / features.0.weight of the "
              "expected rank)");
  return shape;
}

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

void check_named_shapes(const std::vector<std::pair<std::string, std::vector<int64_t>>>& expected,
                        const NamedTensors& tensors, const std::string& source) {
  std::map<std::string, torch::Tensor> given;
  for (const auto& [name, t] : tensors) given.emplace(name, t);
  std::vector<std::string> missing, mismatched, unexpected;
  std::map<std::string, bool> known;
  for (const auto& [name, shape] : expected) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != c10::IntArrayRef(shape)) {
      mismatched.push_back(name + ": expected shape " + shape_str(shape) + ", got " +
                           shape_str(it->second.sizes()));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!known.count(name)) unexpected.push_back(name + " " + shape_str(t.sizes()));
  }
  if (missing.empty() && mismatched.empty() && unexpected.empty()) return;
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
  TORCH_CHECK(false, os.str());
}

InferredShape check_fits_alexnet(const NamedTensors& tensors, const std::string& source) {
  const InferredShape shape = infer_shape(tensors, source);
  check_named_shapes(parameter_shapes(AlexNetOptions()
                                          .num_classes(shape.num_classes)
                                          .in_channels(shape.in_channels)
                                          .arch(shape.arch)),
                     tensors, source);
  return shape;
}

namespace {

// Every target has a source of its name, shape and kind (floating or not); else
// the error check_named_shapes gives, or one naming the key.
void check_fit(const NamedTensors& targets, const NamedTensors& tensors, const std::string& source) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  for (const auto& [name, target] : targets) expected.emplace_back(name, target.sizes().vec());
  check_named_shapes(expected, tensors, source);
  std::map<std::string, torch::Tensor> given(tensors.begin(), tensors.end());
  for (const auto& [name, target] : targets) {
    const auto& src = given.at(name);
    TORCH_CHECK(src.is_floating_point() == target.is_floating_point(), source, ": key ", name,
                ": expected a ", target.scalar_type(), " tensor, got ", src.scalar_type());
  }
}

}  // namespace

void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source) {
  auto targets = state_dict(module);
  check_fit(targets, tensors, source);
  std::map<std::string, torch::Tensor> given(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(given.at(name));
}

namespace {

// `base` with the classes, channels and layout the tensors' shapes describe
// (only their names and shapes are read); a clear error when `num_classes`
// asks for another count.
AlexNetOptions options_for(const NamedTensors& tensors, const std::string& path,
                           std::optional<int64_t> num_classes, AlexNetOptions base) {
  const InferredShape shape = infer_shape(tensors, path);
  if (num_classes) {
    TORCH_CHECK(*num_classes == shape.num_classes, path, ": weights have ", shape.num_classes,
                " classes but ", *num_classes, " were asked for");
  }
  return base.num_classes(shape.num_classes).in_channels(shape.in_channels).arch(shape.arch);
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
    constexpr size_t kStep = size_t{16} << 20;
    auto* dst = static_cast<uint8_t*>(target.data_ptr());
    for (size_t done = 0; done < nbytes; done += kStep) {
      const size_t n = std::min(kStep, nbytes - done);
      std::memcpy(dst + done, storage.data + done, n);
      pth::release_pages(storage.data + done, n);
    }
  } else {
    target.copy_(to_tensor(record));
    if (storage.data) pth::release_pages(storage.data, nbytes);
  }
}

}  // namespace

AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes,
                     AlexNetOptions base) {
  check_regular_file(path);
  const pth::FileBuffer buffer = pth::map_file(path);
  const pth::FileFormat format = pth::detect_format(buffer.data, buffer.size, path);
  if (format == pth::FileFormat::kTorchScript) {
    // LibTorch's loader copies every tensor out of the archive. Reading the file
    // itself (not the mapping, whose pages would count too), and the model
    // taking those copies over as its parameters, keeps one copy resident.
    pth::release_pages(buffer.data, buffer.size);  // detection read the zip directory
    const NamedTensors tensors = load_torchscript(path, path);
    check_fits_alexnet(tensors, path);
    for (const auto& [name, t] : tensors)
      TORCH_CHECK(t.is_floating_point(), path, ": key ", name, ": expected a Float tensor, got ",
                  t.scalar_type());
    return AlexNet(options_for(tensors, path, num_classes, base), tensors);
  }
  TORCH_CHECK(format != pth::FileFormat::kUnknown, path, kNotWeights);
  // torch.save files: the model is built from the records' shapes first, then
  // filled record by record straight from the mapping, so peak memory is the
  // model plus a few pages rather than the model plus the whole file.
  const pth::Checkpoint checkpoint = pth::parse_checkpoint(buffer.data, buffer.size, buffer.owner, path);
  pth::release_pages(buffer.data, buffer.size);  // the zip checksums read every page
  const NamedRecords records = find_state_dict_records(checkpoint.root, path);
  NamedTensors shapes;  // names, shapes and dtypes, without data
  for (const auto& [name, record] : records)
    shapes.emplace_back(name, torch::empty(record->sizes, torch::TensorOptions()
                                                              .dtype(to_scalar_type(record->dtype()))
                                                              .device(torch::kMeta)));
  AlexNet model(options_for(shapes, path, num_classes, base));
  auto targets = state_dict(*model);
  check_fit(targets, shapes, path);
  std::map<std::string, const pth::TensorRecord*> given(records.begin(), records.end());
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) copy_record(*given.at(name), target);
  return model;
}

AlexNet alexnet_from_tensors(const NamedTensors& tensors, const std::string& path,
                             std::optional<int64_t> num_classes, AlexNetOptions base) {
  AlexNet model(options_for(tensors, path, num_classes, base));
  load_named_tensors(*model, tensors, path);
  return model;
}

}  // namespace alexnet

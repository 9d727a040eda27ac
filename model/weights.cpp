#include "model/weights.h"

#include <torch/script.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>

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

}  // namespace

NamedTensors read_torchscript_tensors(const std::string& path) {
  check_regular_file(path);
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, path, ": not a TorchScript archive (", first_line(e.what_without_backtrace()),
                ")");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path, ": not a TorchScript archive (", first_line(e.what()), ")");
  }
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
  return out;
}

WeightFile read_weight_file(const std::string& path) {
  check_regular_file(path);
  WeightFile file;
  file.path = path;
  file.format = WeightFormat::kTorchScript;
  file.tensors = read_torchscript_tensors(path);
  return file;
}

InferredShape infer_shape(const NamedTensors& tensors, const std::string& source) {
  InferredShape shape;
  for (const auto& [name, t] : tensors) {
    if (name == "classifier.6.weight" && t.dim() == 2) shape.num_classes = t.size(0);
    if (name == "features.0.weight" && t.dim() == 4) shape.in_channels = t.size(1);
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

void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source) {
  std::map<std::string, torch::Tensor> given;
  for (const auto& [name, t] : tensors) given.emplace(name, t);

  auto targets = state_dict(module);
  std::vector<std::string> missing, mismatched, unexpected;
  std::map<std::string, bool> known;
  for (const auto& [name, target] : targets) {
    known[name] = true;
    auto it = given.find(name);
    if (it == given.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(name + ": expected shape " + shape_str(target.sizes()) + ", got " +
                           shape_str(it->second.sizes()));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!known.count(name)) unexpected.push_back(name + " " + shape_str(t.sizes()));
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
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

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const auto& src = given.at(name);
    TORCH_CHECK(src.is_floating_point() == target.is_floating_point(), source, ": key ", name,
                ": expected a ", target.scalar_type(), " tensor, got ", src.scalar_type());
    target.copy_(src);
  }
}

AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes,
                     AlexNetOptions base) {
  WeightFile file = read_weight_file(path);
  InferredShape shape = infer_shape(file.tensors, path);
  if (num_classes) {
    TORCH_CHECK(*num_classes == shape.num_classes, path, ": weights have ", shape.num_classes,
                " classes but ", *num_classes, " were asked for");
  }
  base.num_classes(shape.num_classes).in_channels(shape.in_channels);
  AlexNet model(base);
  load_named_tensors(*model, file.tensors, path);
  return model;
}

}  // namespace alexnet

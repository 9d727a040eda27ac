// Writing weights in the three formats Python reads back: torch.save's zip,
// safetensors and a TorchScript archive whose forward is written from
// alexnet_layers(). Each file is created atomically.
#include "model/weights.h"
#include "model/weights_check.h"

#include "model/pth/checkpoint_io.h"
#include "model/pth/safetensors.h"

#include <nlohmann/json.hpp>

#include <torch/script.h>

#include <map>
#include <sstream>

namespace alexnet {

namespace {

using pth::kClassesExtraFile;
using pth::kClassesKey;
using pth::kTransformExtraFile;
using pth::kTransformKey;

// Checks `info` against weights of `classes` classes before anything is written.
void check_info(const WeightsInfo& info, int64_t classes, const std::string& path) {
  TORCH_CHECK(info.class_names.empty() || static_cast<int64_t>(info.class_names.size()) == classes, path, ": ",
              info.class_names.size(), " class names for weights with ", classes, " classes");
}
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
  pth::write_atomically(path, [&](int fd) { pth::write_all(fd, bytes.data(), bytes.size(), path); });
}

}  // namespace alexnet

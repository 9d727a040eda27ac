// Bringing weights into the C++ AlexNet, and checking they fit.
#pragma once

#include "model/alexnet.h"

#include <torch/torch.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// Tensors in the order the file lists them, keyed like a state_dict.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

enum class WeightFormat {
  kTorchScript,  // torch.jit.save archive (scripted or traced)
  kPthZip,       // torch.save, zip container (PyTorch >= 1.6)
  kPthLegacy,    // torch.save, legacy stream (PyTorch < 1.6 or _use_new_zipfile_serialization=False)
};

const char* format_name(WeightFormat format);

/// What a weights file holds, before any model is built.
struct WeightFile {
  std::string path;
  WeightFormat format = WeightFormat::kTorchScript;
  NamedTensors tensors;  // the AlexNet state_dict found in the file
};

/// Reads every parameter and buffer of a TorchScript archive, by full dotted name.
NamedTensors read_torchscript_tensors(const std::string& path);

/// Detects the format by content (never by extension) and reads the state_dict.
WeightFile read_weight_file(const std::string& path);

/// Architecture facts recovered from a state_dict's shapes.
struct InferredShape {
  int64_t num_classes = 0;  // rows of classifier.6.weight
  int64_t in_channels = 0;  // input channels of features.0.weight
};
InferredShape infer_shape(const NamedTensors& tensors, const std::string& source);

/// Copies tensors into the module's parameters and buffers by name. Every name
/// and shape must match exactly; the error lists missing, unexpected and
/// mis-shaped keys with both shapes. Values are converted to the module's dtype.
void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source);

/// The module's parameters and buffers as a state_dict, in registration order.
NamedTensors state_dict(const torch::nn::Module& module);

/// Builds an AlexNet matching the file and loads it. When `num_classes` is set
/// and the file disagrees, the error says so instead of building a different model.
AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes = std::nullopt,
                     AlexNetOptions base = {});

}  // namespace alexnet

// Bringing weights into the C++ AlexNet, and checking they fit.
#pragma once

#include "model/alexnet.h"
#include "model/checkpoint_io.h"

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

/// Every parameter and buffer of a TorchScript archive held in memory, by full
/// dotted name; `source` names it in errors.
NamedTensors read_torchscript_tensors(const uint8_t* data, size_t size, const std::string& source);

/// Detects the format by content (never by extension) and reads the state_dict.
WeightFile read_weight_file(const std::string& path);

/// The tensor a checkpoint record describes, sharing the record's memory (the
/// file buffer) when it is aligned for its dtype; else one copy.
torch::Tensor to_tensor(const pth::TensorRecord& record);

/// A checkpoint value viewing `t`'s storage (CPU; moved there if needed), which
/// the value keeps alive. Views of one storage are written as one storage.
pth::Value tensor_value(const torch::Tensor& t);

/// The state_dict inside a torch.save value tree, as a torchvision user saves it:
/// the top-level dict, or the dict under "model", "state_dict" or
/// "model_state_dict" of a training checkpoint; a "module." (DataParallel, DDP)
/// or "_orig_mod." (torch.compile) prefix common to all keys is removed.
NamedTensors find_state_dict(const pth::Value& root, const std::string& source);

/// Writes a state_dict as a torch.save zip file (an OrderedDict, dtypes kept)
/// that torch.load + load_state_dict accept. Atomic: see pth::write_atomically.
void save_state_dict(const NamedTensors& tensors, const std::string& path);

/// Writes a TorchScript archive of AlexNet with these weights (dtypes kept,
/// names features.0.weight ...) whose forward torch.jit.load runs. Atomic.
void save_torchscript(const NamedTensors& tensors, const std::string& path);

/// Architecture facts recovered from a state_dict's shapes.
struct InferredShape {
  int64_t num_classes = 0;  // rows of classifier.6.weight
  int64_t in_channels = 0;  // input channels of features.0.weight
  Arch arch = Arch::kTorchvision;  // the paper's layout has its second conv at features.4
};
InferredShape infer_shape(const NamedTensors& tensors, const std::string& source);

/// Checks names and shapes against `expected` (name, shape) pairs; the error
/// lists missing, unexpected and mis-shaped keys with both shapes.
void check_named_shapes(const std::vector<std::pair<std::string, std::vector<int64_t>>>& expected,
                        const NamedTensors& tensors, const std::string& source);

/// True when the tensors are exactly an AlexNet state_dict (of the classes,
/// channels and layout their shapes imply); else throws as check_named_shapes.
/// Builds no model.
InferredShape check_fits_alexnet(const NamedTensors& tensors, const std::string& source);

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

/// load_alexnet for tensors already read from `path` (named in errors).
AlexNet alexnet_from_tensors(const NamedTensors& tensors, const std::string& path,
                             std::optional<int64_t> num_classes = std::nullopt,
                             AlexNetOptions base = {});

}  // namespace alexnet

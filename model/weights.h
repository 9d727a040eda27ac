// Bringing weights into the C++ AlexNet, checking they fit, and writing them out.
#pragma once

#include "model/alexnet.h"
#include "model/pth/checkpoint_io.h"

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

/// A weights file opened and checked once. The format is detected by content
/// (never by extension); the state_dict is the top level or the dict under
/// "model", "state_dict" or "model_state_dict" of a training checkpoint, with a
/// "module." (DataParallel, DDP) or "_orig_mod." (torch.compile) prefix common
/// to all keys removed. torch.save files are memory-mapped while the object
/// lives and their tensors view the mapping; a TorchScript archive is read once
/// with torch::jit::load, its tensors held here.
class WeightsFile {
 public:
  /// Name, shape and dtype of a state_dict entry.
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    torch::ScalarType dtype = torch::kFloat;
  };

  /// Throws c10::Error naming `path` when it is not a weights file (missing, not
  /// regular, empty, no known format, malformed, no state_dict). A state_dict
  /// that is not an AlexNet is not an error here: see fits().
  explicit WeightsFile(const std::string& path);

  const std::string& path() const { return path_; }
  WeightFormat format() const { return format_; }
  /// Every state_dict entry in file order (no tensor data touched).
  const std::vector<Entry>& entries() const { return entries_; }

  /// Whether the state_dict is exactly an AlexNet of either architecture: the
  /// classes and input channels are read from classifier.6.weight and
  /// features.0.weight, then every name, shape and floating dtype is checked
  /// against both architectures' parameter_shapes().
  bool fits() const { return mismatch_.empty(); }
  /// The one-line reason when !fits() ("PATH: weights do not fit AlexNet; shape
  /// mismatch: ...; missing keys: ...; unexpected keys: ...", against the closer
  /// architecture); empty when fits().
  const std::string& mismatch() const { return mismatch_; }

  /// The architecture the file describes: `base` with num_classes, in_channels
  /// and arch set. Throws mismatch() when !fits(), and "PATH: weights have N
  /// classes but M were asked for" when num_classes is given and differs.
  AlexNetOptions options(std::optional<int64_t> num_classes = std::nullopt,
                         AlexNetOptions base = {}) const;

  /// A model of options(num_classes, base) holding the weights as float32.
  /// torch.save records are copied one by one straight from the mapping, which
  /// gives its pages back as it goes; TorchScript tensors are adopted (no second copy).
  AlexNet load(std::optional<int64_t> num_classes = std::nullopt, AlexNetOptions base = {}) const;

  /// Copies the weights into a module with the same names and shapes (train
  /// --weights, --resume), converted to the module's dtypes. Entries whose name
  /// starts with `skip_prefix` (e.g. "classifier.6." for a reset classifier) are
  /// left as the module has them, in the file and the module alike. Throws
  /// mismatch()-style errors naming the file.
  void load_into(torch::nn::Module& module, const std::string& skip_prefix = "") const;

  /// The state_dict's tensors with their own dtypes, in file order (torch.save:
  /// views of the mapping, which they keep alive; TorchScript: the loaded tensors).
  NamedTensors tensors() const;

  /// The whole torch.save value tree, for readers of a training checkpoint's
  /// other keys (epoch, optimizer, rng_state, args); None for TorchScript.
  const pth::Value& root() const { return root_; }

 private:
  // Copies the file's entry of each target's name into it (names and shapes checked before).
  void copy_into(NamedTensors& targets) const;

  std::string path_;
  WeightFormat format_ = WeightFormat::kTorchScript;
  pth::FileBuffer buffer_;  // the mapping torch.save records point into
  pth::Value root_;
  std::vector<const pth::TensorRecord*> records_;  // torch.save: entries_' records, in root_
  NamedTensors loaded_;                             // TorchScript: entries_' tensors
  std::vector<Entry> entries_;
  AlexNetOptions fitted_;  // num_classes, in_channels, arch, when fits()
  std::string mismatch_;
};

/// WeightsFile(path).load(num_classes, base): the one-line form every command uses.
AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes = std::nullopt,
                     AlexNetOptions base = {});

/// The tensor a checkpoint record describes, sharing the record's memory (the
/// file buffer) when it is aligned for its dtype; else one copy.
torch::Tensor to_tensor(const pth::TensorRecord& record);

/// A checkpoint value viewing `t`'s storage (CPU; moved there if needed), which
/// the value keeps alive. Views of one storage are written as one storage.
pth::Value tensor_value(const torch::Tensor& t);

/// The state_dict inside a torch.save value tree, found as WeightsFile finds it;
/// `source` names the tree in errors.
NamedTensors find_state_dict(const pth::Value& root, const std::string& source);

/// Writes a state_dict as a torch.save zip file (an OrderedDict, dtypes kept)
/// that torch.load + load_state_dict accept. Atomic: see pth::write_atomically.
void save_state_dict(const NamedTensors& tensors, const std::string& path);

/// Writes a TorchScript archive of AlexNet with these weights (dtypes kept,
/// names features.0.weight ...) whose forward torch.jit.load runs; its source is
/// written from alexnet_layers(). The tensors must fit AlexNet as
/// WeightsFile::fits() checks; the 2012 paper's network (LRN) is refused. Atomic.
void save_torchscript(const NamedTensors& tensors, const std::string& path);

/// Copies tensors into the module's parameters and buffers by name, checked as
/// WeightsFile::load_into checks (`source` names them in errors); converted to
/// the module's dtypes.
void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source);

/// The module's parameters and buffers as a state_dict, in registration order.
NamedTensors state_dict(const torch::nn::Module& module);

}  // namespace alexnet

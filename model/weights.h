// Bringing weights into the C++ AlexNet, checking they fit, and writing them
// out (model/weights.cpp reads, model/weights_write.cpp writes).
#pragma once

#include "model/alexnet.h"
#include "model/hub_hash.h"
#include "model/pth/formats.h"

#include <torch/torch.h>

#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// Tensors in the order the file lists them, keyed like a state_dict.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// How images are prepared for the model, as torchvision's evaluation
/// transform: resize the shorter side, center-crop, normalise per channel.
/// The defaults are torchvision's ImageNet ones.
struct InputTransform {
  int64_t resize_size = 256;
  int64_t crop_size = 224;
  std::array<double, 3> mean = {0.485, 0.456, 0.406};
  std::array<double, 3> std = {0.229, 0.224, 0.225};

  /// {"resize_size": 64, "crop_size": 64, "mean": [...], "std": [...]}
  std::string to_json() const;
  /// Parses to_json()'s form; throws c10::Error naming `source` when malformed.
  static InputTransform from_json(const std::string& text, const std::string& source);
  bool operator==(const InputTransform& o) const {
    return resize_size == o.resize_size && crop_size == o.crop_size && mean == o.mean && std == o.std;
  }
};

/// What a weights file carries beside the tensors so that predict and eval
/// need no other file: the class names and the input transform of the data the
/// weights were trained on. Either may be absent (files from elsewhere).
struct WeightsInfo {
  std::vector<std::string> class_names;     // empty: none
  std::optional<InputTransform> transform;  // none: the reader's default (ImageNet's)
  bool empty() const { return class_names.empty() && !transform; }
};

/// A weights file opened and checked once, running nothing from it: mapped,
/// its format recognised by content (never by extension) and read by that
/// format's reader (model/pth/formats.h), then checked. The state_dict is the
/// top level or the dict under "model", "state_dict" or "model_state_dict" of a
/// training checkpoint, a TorchScript module's tensor attributes (read from its
/// data.pkl by the allow-list unpickler; its code is never loaded), a
/// safetensors file's tensors, or a torch.export .pt2 archive's weights (its
/// JSON description and raw records; its graph is never read). A "module." (DataParallel, DDP), "_orig_mod." (torch.compile)
/// or "model." prefix common to all keys is removed. The file is memory-mapped
/// while the object lives and tensors view the mapping.
///
/// What a file declares is checked before anything is allocated from it: every
/// view lies inside its storage and its storage inside the file; no state_dict
/// tensor is a view with overlapping elements (stride 0, a crafted "small file,
/// huge tensor"); together they declare no more bytes than the file holds; no
/// key appears twice; and zip entries neither overlap nor alias. A file named
/// as torch.hub names downloads (NAME-HASH.pth, model/hub_hash.h) must have a
/// SHA-256 starting with HASH.
class WeightsFile {
 public:
  /// Name, shape and dtype of a state_dict entry.
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    torch::ScalarType dtype = torch::kFloat;
  };

  /// When the promise of a torch.hub name (NAME-HASH.pth) is checked.
  enum class HubCheck {
    kOnOpen,        // by the constructor: the whole file is hashed first
    kWhileLoading,  // by load(), which hashes each piece of the file just before it copies
                    // it, so every page is read once; else by the first load_into(),
                    // tensors() or sha256(). For callers that load() what they open.
  };

  /// Throws c10::Error naming `path` when it is not a weights file (missing, not
  /// a regular file, empty, no known format, malformed, crafted, no state_dict).
  /// A state_dict that is not an AlexNet is not an error here: see fits().
  explicit WeightsFile(const std::string& path, HubCheck hub_check = HubCheck::kOnOpen);

  const std::string& path() const { return path_; }
  /// The SHA-256 (hex) of the bytes mapped, computed once: while opening or loading
  /// a file with a torch.hub name (see HubCheck), else when first asked for.
  const std::string& sha256() const;
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
  /// Records are copied one by one straight from the mapping, which gives its
  /// pages back as it goes, into tensors the model adopts (no initialisation).
  AlexNet load(std::optional<int64_t> num_classes = std::nullopt, AlexNetOptions base = {}) const;

  /// Copies the weights into a module with the same names and shapes (train
  /// --weights, --resume), converted to the module's dtypes. Entries whose name
  /// starts with `skip_prefix` (e.g. "classifier.6." for a reset classifier) are
  /// left as the module has them, in the file and the module alike. Throws
  /// mismatch()-style errors naming the file.
  void load_into(torch::nn::Module& module, const std::string& skip_prefix = "") const;

  /// The state_dict's tensors with their own dtypes, in file order: views of
  /// the mapping, which they keep alive.
  NamedTensors tensors() const;

  /// The whole value tree, for readers of a training checkpoint's other keys
  /// (epoch, optimizer, rng_state, args): what torch.save pickled; for
  /// TorchScript its module's attributes; for safetensors its tensors.
  const pth::Value& root() const { return root_; }
  /// A safetensors file's "__metadata__" (empty for other formats).
  const pth::Metadata& metadata() const { return metadata_; }
  /// The class names the file carries, as this project writes them: a
  /// safetensors file's metadata "classes" (a JSON list), a TorchScript or .pt2
  /// archive's extra file classes.json (a JSON list), a torch.save state_dict's
  /// _metadata[""]["classes"] (a list of str). Empty when it has none. (A
  /// malformed list, or one whose length is not the number of classes, is
  /// refused when the file is opened.)
  const std::vector<std::string>& class_names() const { return class_names_; }
  /// The input transform the file carries, in the same places (key
  /// "transform", extra file transform.json; a JSON object as
  /// InputTransform::to_json writes it); nullopt when it has none.
  const std::optional<InputTransform>& input_transform() const { return transform_; }
  /// class_names() and input_transform().
  WeightsInfo info() const { return {class_names(), input_transform()}; }

 private:
  // Copies the file's entry of each target's name into it (names and shapes checked before).
  void copy_into(NamedTensors& targets) const;
  // Feeds the hash the bytes [hashed_, end), giving back the pages before `keep_from`.
  void hash_through(size_t end, size_t keep_from) const;
  // The torch.hub name's promise, checked once (throws naming the file).
  void check_hub_name() const;

  std::string path_;
  WeightFormat format_ = WeightFormat::kTorchScript;
  pth::FileBuffer buffer_;  // the mapping the records point into
  pth::Value root_;
  pth::Metadata metadata_;
  std::vector<std::string> class_names_;
  std::optional<InputTransform> transform_;
  std::vector<const pth::TensorRecord*> records_;  // entries_' records, in root_
  std::vector<Entry> entries_;
  AlexNetOptions fitted_;  // num_classes, in_channels, arch, when fits()
  std::string mismatch_;
  mutable std::string sha256_;  // sha256(), once computed
  mutable std::shared_ptr<Sha256> hasher_;  // the hash so far, of bytes [0, hashed_)
  mutable size_t hashed_ = 0;
  mutable bool hub_pending_ = false;  // a torch.hub name whose promise is not checked yet
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

/// A state_dict as torch.save pickles it: an OrderedDict of the tensors (views
/// of them, dtypes kept). With `info`, its _metadata attribute is {"":
/// {"version": 1, "classes": [...], "transform": "<JSON>"}}: load_state_dict
/// passes that to the root module, which reads only "version", so Python
/// ignores the rest; read it with torch.load(path)._metadata[""]. (The
/// transform is a JSON string: PyTorch 1.13's weights_only loader refuses floats.)
pth::Value state_dict_value(const NamedTensors& tensors, const WeightsInfo& info = {});

/// Writes state_dict_value(tensors, info) as a torch.save zip file that
/// torch.load + load_state_dict accept. Atomic: see pth::write_atomically.
void save_state_dict(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info = {});

/// Writes an AlexNet state_dict as safetensors (torchvision's names, dtypes
/// kept, row-major data), which safetensors.torch.load_file reads. Its
/// "__metadata__" says "format": "pt", "architecture" (alexnet or
/// alexnet2012), "num_classes", and, when given, "classes" (a JSON list, one
/// name per class) and "transform" (a JSON object). The tensors must fit
/// AlexNet as WeightsFile::fits() checks. Atomic.
void save_safetensors(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info = {});

/// The names of the module's parameters and buffers holding a NaN or an
/// infinity, in registration order; empty when all are finite.
std::vector<std::string> nonfinite_parameters(const torch::nn::Module& module);

/// Writes a TorchScript archive of AlexNet with these weights (dtypes kept,
/// names features.0.weight ...) whose forward torch.jit.load runs; its source is
/// written from alexnet_layers(). The tensors must fit AlexNet as
/// WeightsFile::fits() checks; the 2012 paper's network (LRN) is refused. Class
/// names and the transform go into the extra files classes.json and
/// transform.json (torch.jit.load's _extra_files). Atomic.
void save_torchscript(const NamedTensors& tensors, const std::string& path, const WeightsInfo& info = {});

/// Copies tensors into the module's parameters and buffers by name, checked as
/// WeightsFile::load_into checks (`source` names them in errors); converted to
/// the module's dtypes.
void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source);

/// The module's parameters and buffers as a state_dict, in registration order.
NamedTensors state_dict(const torch::nn::Module& module);

}  // namespace alexnet

// A pickle reader for what torch.save writes. It never imports or runs
// anything: GLOBALs are matched against an allow-list of the classes and
// functions found in torchvision users' checkpoints, and each is interpreted
// here (OrderedDict, _rebuild_tensor_v2, typed storages, argparse.Namespace...).
#pragma once

#include "model/pth/pth_value.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace alexnet::pth {

/// A storage reference as pickled by torch.save's persistent_id:
/// ('storage', torch.FloatStorage, key, location, numel[, view_metadata]).
struct PersistentId {
  DType dtype = DType::kFloat32;
  std::string key;
  std::string location;  // "cpu", "cuda:0": tensors are read to the CPU regardless
  int64_t numel = 0;
};

/// Returns the storage for a persistent id (the same object for the same key).
using StorageLoader = std::function<std::shared_ptr<const Storage>(const PersistentId&)>;

/// Bounds that keep hostile pickles from exhausting the stack or memory.
struct UnpickleLimits {
  size_t max_depth = 200;  // nesting of containers in the result
  size_t max_values = 2000000;  // values built while unpickling, and again in the result
};

/// Which writer's pickles to accept.
enum class PickleKind {
  kTorchSave,    // torch.save: the allow-list only
  kTorchScript,  // torch.jit.save's data.pkl: also TorchScript module objects
};

/// Whether a pickled class name is a TorchScript class ("__torch__." ...), as
/// kTorchScript reads them: its instances become dicts with this type_name.
bool is_torchscript_class(const std::string& name);

/// Interprets the pickle starting at data[0] up to its STOP opcode. `consumed`
/// receives the pickle's length. A dict (or object) with the same key twice is
/// refused, naming the key: Python would keep the last copy, and a reader that
/// kept another would run weights Python never shows. Errors throw FormatError
/// "<source>: pickle: ...".
///
/// kTorchScript reads a TorchScript archive's data.pkl without its code:
/// instances of `__torch__.*` classes become dicts of their attributes (their
/// type_name is the class), as their __getstate__-less state records them. An
/// object whose state is not a dict of attributes (a custom __setstate__) is
/// refused rather than interpreted.
Value unpickle(const uint8_t* data, size_t size, const StorageLoader& load,
               const std::string& source, size_t* consumed = nullptr, UnpickleLimits limits = {},
               PickleKind kind = PickleKind::kTorchSave);

}  // namespace alexnet::pth

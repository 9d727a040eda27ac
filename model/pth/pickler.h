// Pickles a checkpoint value tree the way torch.save does (protocol 2, tensors
// as torch._utils._rebuild_tensor_v2 over persistent-id storages), so that
// Python's torch.load reads it back.
#pragma once

#include "model/pth/pth_value.h"

#include <string>
#include <vector>

namespace alexnet::pth {

struct Pickled {
  std::string bytes;  // the data.pkl record
  /// Storages in key order ("0", "1", ...); tensors on the same memory share one.
  std::vector<std::shared_ptr<const Storage>> storages;
};

Pickled pickle(const Value& root);

}  // namespace alexnet::pth

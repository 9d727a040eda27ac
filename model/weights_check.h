// Checking what a reader yielded, once, before anything is built from it:
// wrapper prefixes removed, declared sizes bounded by the file, and the
// names, shapes and dtypes compared with AlexNet's table (model/alexnet.h).
// Shared by the files of model/weights*.cpp; not a public header.
#pragma once

#include "model/weights.h"

#include <string>
#include <vector>

namespace alexnet {

using Entries = std::vector<WeightsFile::Entry>;

torch::ScalarType to_scalar_type(pth::DType dtype);
pth::DType to_file_dtype(torch::ScalarType type);
/// "[64, 3, 11, 11]"
std::string shape_str(c10::IntArrayRef sizes);

/// Removes a "module." (DataParallel, DDP), "_orig_mod." (torch.compile) or
/// "model." prefix common to all names, in any order.
void strip_wrapper_prefixes(pth::NamedRecords& records);

/// Each record must be a view that reads each of its elements from its own
/// bytes, and together they may not declare more bytes than the file holds:
/// weights then cost no more memory than the file's size, whatever it says.
void check_declared_sizes(const pth::NamedRecords& records, size_t file_size, const std::string& source);

Entries entries_of(const NamedTensors& tensors);

struct Fit {
  AlexNetOptions options;  // classes, channels and arch the state_dict describes
  std::string mismatch;    // empty when it is exactly that AlexNet
};

/// Reads the classes and input channels from classifier.6.weight and
/// features.0.weight, then compares with both architectures; a mismatch is
/// reported against the one with fewer problems (torchvision's on a tie).
Fit fit_alexnet(const Entries& given, const std::string& source);

/// The module's state_dict less the entries under `skip_prefix`, once `given`
/// (less the same entries) has been checked to fit it; else throws naming `source`.
NamedTensors checked_targets(const torch::nn::Module& module, const Entries& given,
                             const std::string& skip_prefix, const std::string& source);

}  // namespace alexnet

#include "model/weights_check.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace alexnet {

using Entry = WeightsFile::Entry;

std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

namespace {

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

}  // namespace

torch::ScalarType to_scalar_type(pth::DType dtype) {
  for (const auto& p : kDTypes)
    if (p.file == dtype) return p.torch;
  TORCH_CHECK(false, "weights: unknown checkpoint dtype");
}

pth::DType to_file_dtype(torch::ScalarType type) {
  for (const auto& p : kDTypes)
    if (p.torch == type) return p.file;
  TORCH_CHECK(false, "weights: cannot save tensors of type ", type);
}

namespace {

// Removes `prefix` when every key starts with it.
template <typename T>
bool strip_common_prefix(std::vector<std::pair<std::string, T>>& named, const std::string& prefix) {
  for (const auto& [name, t] : named)
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
  for (auto& [name, t] : named) name.erase(0, prefix.size());
  return true;
}

// Whether two elements of the view share memory: with the dimensions sorted by
// stride, each stride must pass the reach of all smaller ones (so a stride of 0
// on a dimension of size > 1 overlaps).
bool view_overlaps(const pth::TensorRecord& r) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size), size > 1
  for (size_t d = 0; d < r.sizes.size(); ++d) {
    if (r.sizes[d] == 0) return false;
    if (r.sizes[d] > 1) dims.emplace_back(r.strides[d], r.sizes[d]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;  // the largest offset addressed by the dimensions so far
  for (const auto& [stride, size] : dims) {
    if (stride <= reach) return true;
    reach += stride * (size - 1);  // cannot overflow: the reader bounded it by the storage
  }
  return false;
}


// AlexNet's parameters, float32, as parameter_shapes() lists them.
Entries alexnet_entries(const AlexNetOptions& options) {
  Entries entries;
  for (const auto& [name, shape] : parameter_shapes(options))
    entries.push_back({name, shape, torch::kFloat});
  return entries;
}

struct Comparison {
  size_t problems = 0;
  std::string reason;  // one line naming `source`; empty when no problems
};

// `given` against `expected`: every expected name present with its shape and
// kind of dtype (floating or not), nothing else.
Comparison compare(const Entries& expected, const Entries& given, const std::string& source) {
  std::map<std::string, const Entry*> by_name;
  for (const auto& e : given) by_name.emplace(e.name, &e);
  std::set<std::string> known;
  std::vector<std::string> missing, mismatched, unexpected, dtypes;
  for (const auto& want : expected) {
    known.insert(want.name);
    const auto it = by_name.find(want.name);
    if (it == by_name.end()) {
      missing.push_back(want.name);
    } else if (it->second->shape != want.shape) {
      mismatched.push_back(want.name + ": expected shape " + shape_str(want.shape) + ", got " +
                           shape_str(it->second->shape));
    } else if (c10::isFloatingType(it->second->dtype) != c10::isFloatingType(want.dtype)) {
      dtypes.push_back(source + ": key " + want.name + ": expected a " + c10::toString(want.dtype) +
                       " tensor, got " + c10::toString(it->second->dtype));
    }
  }
  for (const auto& e : given)
    if (!known.count(e.name)) unexpected.push_back(e.name + " " + shape_str(e.shape));

  Comparison c;
  c.problems = missing.size() + mismatched.size() + unexpected.size() + dtypes.size();
  if (missing.empty() && mismatched.empty() && unexpected.empty()) {
    if (!dtypes.empty()) c.reason = dtypes.front();
    return c;
  }
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
  c.reason = os.str();
  return c;
}

}  // namespace

Entries entries_of(const NamedTensors& tensors) {
  Entries entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.sizes().vec(), t.scalar_type()});
  return entries;
}

void strip_wrapper_prefixes(pth::NamedRecords& records) {
  while (strip_common_prefix(records, "module.") || strip_common_prefix(records, "_orig_mod.") ||
         strip_common_prefix(records, "model.")) {
  }
}

void check_declared_sizes(const pth::NamedRecords& records, size_t file_size, const std::string& source) {
  uint64_t total = 0;
  for (const auto& [name, record] : records) {
    TORCH_CHECK(!view_overlaps(*record), source, ": ", name, " is a view whose elements overlap (sizes ",
                shape_str(record->sizes), ", strides ", shape_str(record->strides),
                "): a state_dict tensor never is; refusing a crafted file");
    total += static_cast<uint64_t>(record->numel()) * pth::element_size(record->dtype());
  }
  TORCH_CHECK(total <= file_size, source, ": the state_dict declares ", total,
              " bytes of tensors but the file has only ", file_size, "; refusing a crafted file");
}

Fit fit_alexnet(const Entries& given, const std::string& source) {
  int64_t classes = 0, channels = 0;
  for (const auto& e : given) {
    if (e.name == "classifier.6.weight" && e.shape.size() == 2) classes = e.shape[0];
    if (e.name == "features.0.weight" && e.shape.size() == 4) channels = e.shape[1];
  }
  Fit fit;
  if (classes <= 0 || channels <= 0) {
    fit.mismatch = source + ": not an AlexNet state_dict (no classifier.6.weight / "
                   "features.0.weight of the expected rank)";
    return fit;
  }
  std::optional<Comparison> best;
  for (const Arch arch : {Arch::kTorchvision, Arch::kPaper2012}) {
    const auto options = AlexNetOptions().num_classes(classes).in_channels(channels).arch(arch);
    Comparison c = compare(alexnet_entries(options), given, source);
    if (!best || c.problems < best->problems) {
      best = std::move(c);
      fit.options = options;
    }
  }
  fit.mismatch = best->reason;
  return fit;
}

NamedTensors checked_targets(const torch::nn::Module& module, const Entries& given,
                             const std::string& skip_prefix, const std::string& source) {
  const auto skipped = [&skip_prefix](const std::string& name) {
    return !skip_prefix.empty() && name.compare(0, skip_prefix.size(), skip_prefix) == 0;
  };
  NamedTensors targets;
  for (auto& [name, t] : state_dict(module))
    if (!skipped(name)) targets.emplace_back(name, t);
  Entries kept;
  for (const auto& e : given)
    if (!skipped(e.name)) kept.push_back(e);
  const Comparison c = compare(entries_of(targets), kept, source);
  TORCH_CHECK(c.reason.empty(), c.reason);
  return targets;
}

}  // namespace alexnet

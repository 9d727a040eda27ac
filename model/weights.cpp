// Bringing weights into the C++ AlexNet: a file opened once (mapped, read by
// its format's reader, checked), then the model built from its records.
#include "model/weights.h"
#include "model/weights_check.h"

#include "model/hub_hash.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>

namespace alexnet {

namespace {

// Called with each piece of the file just before it is copied.
using BeforeCopy = std::function<void(const uint8_t* piece, size_t size)>;

// memcpy from a mapped file in steps, giving each step's pages back once copied,
// so that the source and the copy are never both resident.
void copy_releasing(void* dst, const uint8_t* src, size_t n, const BeforeCopy& before) {
  constexpr size_t kStep = size_t{16} << 20;
  for (size_t done = 0; done < n; done += kStep) {
    const size_t step = std::min(kStep, n - done);
    before(src + done, step);
    std::memcpy(static_cast<uint8_t*>(dst) + done, src + done, step);
    pth::release_pages(src + done, step);
  }
}

// Copies a record of a mapped file into `target` (shape already checked), giving
// back the file's pages as it goes, so the file and the model are never both
// resident. Records of the target's dtype are copied bytewise, which also serves
// the unaligned storages of legacy files without an intermediate tensor.
void copy_record(const pth::TensorRecord& record, torch::Tensor& target, const BeforeCopy& before) {
  const pth::Storage& storage = *record.storage;
  const size_t nbytes = static_cast<size_t>(storage.numel) * pth::element_size(storage.dtype);
  if (storage.data && record.is_contiguous_whole() && target.is_contiguous() &&
      target.device().is_cpu() && to_scalar_type(storage.dtype) == target.scalar_type() &&
      target.nbytes() == nbytes) {
    copy_releasing(target.data_ptr(), storage.data, nbytes, before);
  } else {
    if (storage.data) before(storage.data, nbytes);
    target.copy_(to_tensor(record));
    if (storage.data) pth::release_pages(storage.data, nbytes);
  }
}

}  // namespace

torch::Tensor to_tensor(const pth::TensorRecord& record) {
  const pth::Storage& storage = *record.storage;
  const auto options = torch::TensorOptions().dtype(to_scalar_type(storage.dtype));
  torch::Tensor flat;
  const auto address = reinterpret_cast<uintptr_t>(storage.data);
  if (storage.numel == 0 || storage.data == nullptr) {
    flat = torch::empty({storage.numel}, options);
  } else if (address % pth::element_size(storage.dtype) == 0) {
    auto owner = storage.owner;  // the tensor keeps the file buffer alive
    flat = torch::from_blob(const_cast<uint8_t*>(storage.data), {storage.numel},
                            [owner](void*) mutable { owner.reset(); }, options);
  } else {
    // Legacy files pack storages without alignment.
    flat = torch::empty({storage.numel}, options);
    std::memcpy(flat.data_ptr(), storage.data, flat.nbytes());
  }
  return flat.as_strided(record.sizes, record.strides, record.offset)
      .requires_grad_(record.requires_grad && flat.is_floating_point());
}

pth::Value tensor_value(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().cpu();
  auto storage = std::make_shared<pth::Storage>();
  storage->dtype = to_file_dtype(t.scalar_type());
  storage->numel = static_cast<int64_t>(t.storage().nbytes()) / t.element_size();
  storage->data = static_cast<const uint8_t*>(t.storage().data());
  storage->owner = std::make_shared<torch::Tensor>(t);
  pth::TensorRecord record;
  record.storage = storage;
  record.offset = t.storage_offset();
  record.sizes = t.sizes().vec();
  record.strides = t.strides().vec();
  return pth::Value::tensor(std::move(record));
}

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

void WeightsFile::hash_through(size_t end, size_t keep_from) const {
  if (!sha256_.empty() || end <= hashed_) return;
  if (!hasher_) hasher_ = std::make_shared<Sha256>();
  constexpr size_t kPiece = size_t{4} << 20;
  while (hashed_ < end) {
    const size_t n = std::min(kPiece, end - hashed_);
    hasher_->update(buffer_.data + hashed_, n);
    // Pages not about to be copied are given back as they are hashed.
    const size_t release_end = std::min(hashed_ + n, std::max(keep_from, hashed_));
    pth::release_pages(buffer_.data + hashed_, release_end - hashed_);
    hashed_ += n;
  }
}

const std::string& WeightsFile::sha256() const {
  if (sha256_.empty()) {
    hash_through(buffer_.size, buffer_.size);
    sha256_ = hasher_->hex_digest();
  }
  return sha256_;
}

void WeightsFile::check_hub_name() const {
  if (!hub_pending_) return;
  try {
    check_hub_hash(path_, sha256());  // the bytes loaded, hashed once
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, e.what());
  }
  hub_pending_ = false;
}

// Open, read, check, in that order; each step once.
WeightsFile::WeightsFile(const std::string& path, HubCheck hub_check) : path_(path) {
  pth::WeightsContents contents;
  try {
    buffer_ = pth::map_file(path);  // a regular file, opened without blocking
    TORCH_CHECK(buffer_.size > 0, path, ": file is empty");
    // torch.hub's NAME-HASH.pth promise (torchvision's alexnet-owt-7be5be79.pth), kept.
    hub_pending_ = hub_hash_prefix(path).has_value();
    if (hub_check == HubCheck::kOnOpen) check_hub_name();
    std::tie(format_, contents) = pth::read_weights(buffer_, path);
    pth::release_pages(buffer_.data, buffer_.size);  // parsing and the zip checksums read pages
  } catch (const std::runtime_error& e) {  // pth::FormatError, the hub check: "<path>: <what>"
    TORCH_CHECK(false, e.what());
  }
  root_ = std::move(contents.root);
  metadata_ = std::move(contents.metadata);
  if (contents.records.empty()) {
    std::string keys;
    if (root_.is_dict())
      for (const auto& [k, v] : root_.entries())
        if (keys.size() < 200) keys += (keys.empty() ? "" : ", ") + k.describe() + ": " + v.describe();
    TORCH_CHECK(false, path, ": no state_dict found (looked at the top level and under 'model', 'state_dict', "
                "'model_state_dict'); the file holds ", root_.describe(), keys.empty() ? "" : " {" + keys + "}");
  }
  strip_wrapper_prefixes(contents.records);
  check_declared_sizes(contents.records, buffer_.size, path);
  for (const auto& [name, record] : contents.records) {
    records_.push_back(record);
    entries_.push_back({name, record->sizes, to_scalar_type(record->dtype())});
  }
  Fit fit = fit_alexnet(entries_, path);
  fitted_ = fit.options;
  mismatch_ = std::move(fit.mismatch);
  if (contents.class_names) {
    class_names_ = std::move(*contents.class_names);
    TORCH_CHECK(!fits() || static_cast<int64_t>(class_names_.size()) == fitted_.num_classes(), path_, ": carries ",
                class_names_.size(), " class names for weights with ", fitted_.num_classes(), " classes");
  }
  if (contents.transform_json)
    transform_ = InputTransform::from_json(*contents.transform_json, path_ + ": " + contents.transform_where);
}

std::string InputTransform::to_json() const {
  return nlohmann::json{{"resize_size", resize_size}, {"crop_size", crop_size}, {"mean", mean}, {"std", std}}.dump();
}

InputTransform InputTransform::from_json(const std::string& text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto positive = [&](const char* key) {
    TORCH_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() > 0 &&
                    j[key].get<int64_t>() <= (int64_t{1} << 16),
                source, ": '", key, "' must be a positive whole number of pixels");
    return j[key].get<int64_t>();
  };
  const auto triple = [&](const char* key, bool strictly_positive) {
    TORCH_CHECK(j.is_object() && j.contains(key) && j[key].is_array() && j[key].size() == 3, source, ": '", key,
                "' must be a list of 3 numbers");
    std::array<double, 3> v{};
    for (size_t c = 0; c < 3; ++c) {
      TORCH_CHECK(j[key][c].is_number(), source, ": '", key, "' must be a list of 3 numbers");
      v[c] = j[key][c].get<double>();
      TORCH_CHECK(std::isfinite(v[c]) && (!strictly_positive || v[c] > 0), source, ": '", key, "' holds ", v[c]);
    }
    return v;
  };
  TORCH_CHECK(j.is_object(), source, " is not a JSON object");
  InputTransform t;
  t.resize_size = positive("resize_size");
  t.crop_size = positive("crop_size");
  t.mean = triple("mean", false);
  t.std = triple("std", true);
  return t;
}

AlexNetOptions WeightsFile::options(std::optional<int64_t> num_classes, AlexNetOptions base) const {
  TORCH_CHECK(fits(), mismatch_);
  if (num_classes) {
    TORCH_CHECK(*num_classes == fitted_.num_classes(), path_, ": weights have ",
                fitted_.num_classes(), " classes but ", *num_classes, " were asked for");
  }
  return base.num_classes(fitted_.num_classes()).in_channels(fitted_.in_channels()).arch(fitted_.arch());
}

void WeightsFile::copy_into(NamedTensors& targets) const {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < entries_.size(); ++i) index.emplace(entries_[i].name, i);
  // A torch.hub name still to check: each piece is hashed just before it is copied (the
  // bytes between records too), so every page is read once.
  const BeforeCopy before = [this](const uint8_t* piece, size_t n) {
    if (!hub_pending_) return;
    const auto begin = static_cast<size_t>(piece - buffer_.data);
    hash_through(begin + n, begin);
  };
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) copy_record(*records_[index.at(name)], target, before);
}

AlexNet WeightsFile::load(std::optional<int64_t> num_classes, AlexNetOptions base) const {
  const AlexNetOptions options = this->options(num_classes, base);
  // Each record is copied straight from the mapping into its own float32
  // tensor, which the model then adopts: peak memory is the model plus a few
  // pages, not the model plus the file, and no initial weights are drawn only
  // to be overwritten.
  NamedTensors targets;
  for (const auto& [name, shape] : parameter_shapes(options))
    targets.emplace_back(name, torch::empty(shape, torch::kFloat));
  copy_into(targets);
  check_hub_name();  // hashes what is left after the last record
  return AlexNet(options, targets);
}

void WeightsFile::load_into(torch::nn::Module& module, const std::string& skip_prefix) const {
  check_hub_name();
  NamedTensors targets = checked_targets(module, entries_, skip_prefix, path_);
  copy_into(targets);
}

NamedTensors WeightsFile::tensors() const {
  check_hub_name();
  NamedTensors out;
  for (size_t i = 0; i < entries_.size(); ++i) out.emplace_back(entries_[i].name, to_tensor(*records_[i]));
  return out;
}

AlexNet load_alexnet(const std::string& path, std::optional<int64_t> num_classes,
                     AlexNetOptions base) {
  return WeightsFile(path, WeightsFile::HubCheck::kWhileLoading).load(num_classes, base);
}

void load_named_tensors(torch::nn::Module& module, const NamedTensors& tensors,
                        const std::string& source) {
  NamedTensors targets = checked_targets(module, entries_of(tensors), "", source);
  const std::map<std::string, torch::Tensor> given(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(given.at(name));
}

std::vector<std::string> nonfinite_parameters(const torch::nn::Module& module) {
  std::vector<std::string> names;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_dict(module)) {
    if (!t.is_floating_point()) continue;
    // In 4M-element pieces: isfinite's temporaries for the whole 151 MB
    // classifier.1.weight would add as much again to the peak (here 4 MB at most), and
    // smaller pieces mean thousands of tiny parallel regions, which stall for seconds
    // each on busy cores (2,300 pieces of 64K took 35-52 s instead of 1-3 s).
    for (const torch::Tensor& piece : t.reshape(-1).split(int64_t{1} << 22)) {
      if (!torch::isfinite(piece).all().item<bool>()) {
        names.push_back(name);
        break;
      }
    }
  }
  return names;
}

}  // namespace alexnet

// The TorchScript reader: a torch.jit.save archive's parameters, read from its
// data.pkl as torch.save's are (TorchScript module objects allowed, nothing
// else added); its code/ and constants.pkl are never read. Class names and the
// input transform come from the extra files classes.json and transform.json.
#include "model/pth/formats.h"

namespace alexnet::pth {

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

bool recognises(const RawFile& f) {
  if (!f.entry("data.pkl")) return false;
  if (f.entry("constants.pkl")) return true;
  const std::string code = f.zip_prefix + "code/";
  for (const auto& e : f.zip->entries())
    if (e.name.compare(0, code.size(), code) == 0) return true;
  return false;
}

// A module's tensors by dotted name ("features.0.weight"): the tensor
// attributes of each module object, recursing into attributes that are module
// objects themselves (Sequential, Conv2d ...). Other attributes (training
// flags, hooks) are not weights.
void collect_module_records(const Value& object, const std::string& prefix, NamedRecords& out) {
  for (const auto& [key, value] : object.entries()) {
    if (!key.is_string()) continue;
    if (value.is_tensor()) {
      out.emplace_back(prefix + key.as_string(), &value.as_tensor());
    } else if (value.is_dict() && is_torchscript_class(value.type_name())) {
      collect_module_records(value, prefix + key.as_string() + ".", out);
    }
  }
}

WeightsContents read(const RawFile& f) {
  WeightsContents out;
  out.root = unpickle_zip(f, PickleKind::kTorchScript);
  if (!out.root.is_dict() || !is_torchscript_class(out.root.type_name()))
    fail(f.source, "TorchScript archive whose data.pkl holds " + out.root.describe() + ", not a module");
  collect_module_records(out.root, "", out.records);
  if (out.records.empty()) fail(f.source, "TorchScript module without tensors");
  read_extra_files(f, out);
  return out;
}

}  // namespace

const FormatReader kTorchScriptReader = {WeightFormat::kTorchScript, recognises, read};

}  // namespace alexnet::pth

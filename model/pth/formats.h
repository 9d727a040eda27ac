// The weights formats this project reads, one reader each, and the one step
// that picks the reader: the bytes are looked at once (a zip archive's
// directory is read once), then the first reader that recognises them reads
// them into the same thing, named tensor records plus what the file carries
// beside them. Nothing here validates the tensors against a model: that comes
// after, once (model/weights_check.h).
#pragma once

#include "model/pth/file_io.h"
#include "model/pth/pth_value.h"
#include "model/pth/unpickler.h"
#include "model/pth/zip_file.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <set>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

enum class WeightFormat {
  kTorchScript,  // torch.jit.save archive (scripted or traced)
  kPthZip,       // torch.save, zip container (PyTorch >= 1.6)
  kPthLegacy,    // torch.save, legacy stream (PyTorch < 1.6 or _use_new_zipfile_serialization=False)
  kSafetensors,  // safetensors: JSON header, raw data
  kPt2,          // torch.export.save archive: raw tensors described by JSON
};

/// "torchscript", "pth (zip)", "pth (legacy)", "safetensors", "pt2".
const char* format_name(WeightFormat format);

}  // namespace alexnet

namespace alexnet::pth {

using Metadata = std::vector<std::pair<std::string, std::string>>;

/// A file's bytes as the readers see them.
struct RawFile {
  std::string source;  // the path, for messages
  FileBuffer bytes;
  std::shared_ptr<const ZipReader> zip;  // when the bytes are a zip archive
  std::string zip_prefix;                // its top folder with the '/' ("archive/"), else ""
  /// The zip entry zip_prefix + name, or nullptr (also when not a zip).
  const ZipEntry* entry(const std::string& name) const;
};

/// A state_dict's tensors by name, in file order, pointing into a value tree.
using NamedRecords = std::vector<std::pair<std::string, const TensorRecord*>>;

/// What every reader yields.
struct WeightsContents {
  /// The whole value tree: what torch.save pickled; a TorchScript module's
  /// attributes; for safetensors and .pt2 a dict of their tensors.
  Value root;
  NamedRecords records;  // the state_dict, pointing into `root`; empty when none was found
  std::optional<std::vector<std::string>> class_names;  // when the file names its classes
  std::optional<std::string> transform_json;  // the input transform (InputTransform::to_json's form)
  std::string transform_where;                // where it was found, for messages ("extra file transform.json")
  Metadata metadata;  // key/value text shown as it is (safetensors' __metadata__)
};

struct FormatReader {
  WeightFormat format;
  bool (*recognises)(const RawFile& file);  // by content, cheaply, never by extension
  WeightsContents (*read)(const RawFile& file);
};

/// Recognises the format and reads the file, running nothing from it; tensor
/// records view `bytes`, which they keep alive. Throws FormatError
/// "<source>: <what>" for a file in no format read here or malformed in its own.
std::pair<WeightFormat, WeightsContents> read_weights(const FileBuffer& bytes, const std::string& source);

/// A JSON list of class names (`where` says which part of `source` held it).
std::vector<std::string> parse_name_list(const std::string& json_text, const std::string& source,
                                         const std::string& where);

/// The text of extra/NAME (torch.jit.save's and torch.export.save's
/// extra_files), or nullopt when absent; over 1 MiB or compressed is an error.
std::optional<std::string> extra_file(const RawFile& file, const std::string& name);

/// JSON text parsed as `Json` (nlohmann::json or ordered_json), throwing its
/// parse errors. A key repeated within one object is not dropped silently: the
/// first one is put in *duplicate (JSON leaves repeats undefined and readers
/// disagree on which copy wins), for the caller to refuse.
template <class Json>
Json parse_json_checking_keys(const char* begin, const char* end, std::string* duplicate) {
  std::vector<std::set<std::string>> keys;  // one per open object
  const typename Json::parser_callback_t check = [&](int, typename Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) keys.emplace_back();
    if (event == Json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == Json::parse_event_t::key && !keys.empty() && duplicate->empty() &&
        !keys.back().insert(parsed.template get<std::string>()).second)
      *duplicate = parsed.template get<std::string>();
    return true;
  };
  return Json::parse(begin, end, check);
}

/// Class names and transform from extra/classes.json and extra/transform.json
/// (TorchScript and .pt2 archives), into `out`.
void read_extra_files(const RawFile& file, WeightsContents& out);

/// The readers, each in its own file.
extern const FormatReader kTorchScriptReader;  // read_torchscript.cpp
extern const FormatReader kPt2Reader;          // read_pt2.cpp
extern const FormatReader kPthZipReader;       // read_torch_save.cpp
extern const FormatReader kPthLegacyReader;    // read_torch_save.cpp
extern const FormatReader kSafetensorsReader;  // safetensors.cpp

/// Shared by the two zip formats that pickle their tensors (torch.save and
/// TorchScript): data.pkl unpickled with its storages as records of the zip.
Value unpickle_zip(const RawFile& file, PickleKind kind);

/// Where the name list and transform go in each format.
constexpr const char* kClassesKey = "classes";            // safetensors metadata; torch.save _metadata[""]
constexpr const char* kClassesExtraFile = "classes.json";  // TorchScript extra file
constexpr const char* kTransformKey = "transform";
constexpr const char* kTransformExtraFile = "transform.json";

}  // namespace alexnet::pth

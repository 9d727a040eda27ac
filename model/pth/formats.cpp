#include "model/pth/formats.h"

#include <nlohmann/json.hpp>

#include <cstring>

namespace alexnet::pth {

namespace {

// Every format read, in the order they are tried: the first that recognises the
// bytes reads them. TorchScript before torch.save's zip, whose data.pkl it also has.
const FormatReader* const kReaders[] = {
    &kTorchScriptReader, &kPt2Reader, &kPthZipReader, &kPthLegacyReader, &kSafetensorsReader,
};

// The largest extra file read.
constexpr size_t kMaxExtraFileBytes = size_t{1} << 20;

constexpr uint8_t kZipMagic[] = {'P', 'K', 0x03, 0x04};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError(source + ": " + what);
}

}  // namespace

const ZipEntry* RawFile::entry(const std::string& name) const {
  return zip ? zip->find(zip_prefix + name) : nullptr;
}

std::pair<WeightFormat, WeightsContents> read_weights(const FileBuffer& bytes, const std::string& source) {
  if (bytes.size == 0) fail(source, "file is empty");
  RawFile file{source, bytes, nullptr, {}};
  if (bytes.size >= sizeof kZipMagic && std::memcmp(bytes.data, kZipMagic, sizeof kZipMagic) == 0) {
    file.zip = std::make_shared<const ZipReader>(bytes.data, bytes.size, source);
    // torch.save, torch.jit.save and torch.export.save put everything under one
    // top folder, named after the file, so it varies.
    if (!file.zip->entries().empty()) {
      const std::string& first = file.zip->entries().front().name;
      const auto slash = first.find('/');
      if (slash != std::string::npos) file.zip_prefix = first.substr(0, slash + 1);
    }
  }
  for (const FormatReader* reader : kReaders)
    if (reader->recognises(file)) return {reader->format, reader->read(file)};
  fail(source, "not a weights file (neither torch.save's zip or legacy format, a TorchScript archive, "
               "a torch.export .pt2 archive, nor safetensors)");
}

std::optional<std::string> extra_file(const RawFile& f, const std::string& name) {
  const ZipEntry* e = f.entry("extra/" + name);
  if (!e) return std::nullopt;
  if (e->size > kMaxExtraFileBytes)
    fail(f.source, "extra file " + name + " of " + std::to_string(e->size) + " bytes is over the limit of " +
                       std::to_string(kMaxExtraFileBytes));
  return std::string(reinterpret_cast<const char*>(f.zip->data(*e)), e->size);
}

void read_extra_files(const RawFile& f, WeightsContents& out) {
  if (const auto names = extra_file(f, kClassesExtraFile))
    out.class_names = parse_name_list(*names, f.source, std::string("extra file ") + kClassesExtraFile);
  out.transform_json = extra_file(f, kTransformExtraFile);
  out.transform_where = std::string("extra file ") + kTransformExtraFile;
}

std::vector<std::string> parse_name_list(const std::string& json_text, const std::string& source,
                                         const std::string& where) {
  const nlohmann::json names = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!names.is_array()) fail(source, where + " is not a JSON list");
  std::vector<std::string> out;
  for (const auto& name : names) {
    if (!name.is_string()) fail(source, where + " holds " + name.dump() + ", not a name");
    out.push_back(name.get<std::string>());
  }
  return out;
}

}  // namespace alexnet::pth

const char* alexnet::format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kTorchScript: return "torchscript";
    case WeightFormat::kPthZip: return "pth (zip)";
    case WeightFormat::kPthLegacy: return "pth (legacy)";
    case WeightFormat::kSafetensors: return "safetensors";
    case WeightFormat::kPt2: return "pt2";
  }
  return "unknown";
}

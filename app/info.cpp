// alexnet info: what a weights file holds and whether it is an AlexNet.
#include "app/cli.h"
#include "app/commands.h"
#include "app/runtime/json.h"
#include "model/weights.h"

#include <cstdio>
#include <sstream>
#include <string>

namespace alexnet::app {

namespace {

using runtime::JsonObject;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << c10::IntArrayRef(shape);
  return os.str();
}

void print_json(const WeightsFile& file, int64_t total) {
  std::string tensors = "[";
  for (const auto& e : file.entries())
    tensors += (tensors.size() > 1 ? ", " : "") + JsonObject()
                                                       .str("name", e.name)
                                                       .raw("shape", shape_text(e.shape))
                                                       .str("dtype", c10::toString(e.dtype))
                                                       .dump();
  JsonObject out;
  out.str("weights", file.path()).str("format", format_name(file.format()));
  if (file.fits())
    out.integer("num_classes", file.options().num_classes());
  else
    out.null("num_classes");
  out.integer("total_parameters", total).boolean("alexnet", file.fits());
  if (!file.fits()) out.str("mismatch", file.mismatch());
  if (!file.metadata().empty()) {
    JsonObject metadata;
    for (const auto& [key, value] : file.metadata()) metadata.str(key, value);
    out.raw("metadata", metadata.dump());
  }
  std::printf("%s\n", out.raw("tensors", tensors + "]").dump().c_str());
}

void print_table(const WeightsFile& file, int64_t total) {
  std::printf("weights: %s\nformat: %s\n", file.path().c_str(), format_name(file.format()));
  for (const auto& [key, value] : file.metadata())
    std::printf("metadata %s: %.200s\n", key.c_str(), value.c_str());
  std::printf("%-24s %-20s %s\n", "name", "shape", "dtype");
  for (const auto& e : file.entries())
    std::printf("%-24s %-20s %s\n", e.name.c_str(), shape_text(e.shape).c_str(), c10::toString(e.dtype));
  std::printf("total parameters: %lld\n", static_cast<long long>(total));
  if (file.fits())
    std::printf("AlexNet: yes, %lld classes\n", static_cast<long long>(file.options().num_classes()));
  else
    std::printf("AlexNet: no (%s)\n", file.mismatch().c_str());
}

}  // namespace

int run_info(int argc, const char* const* argv) {
  cxxopts::Options options("alexnet info",
                           "Describe a weights file: format, classes, parameters, and whether "
                           "it fits AlexNet.");
  options.add_options()
      ("w,weights", "Weights: .pth (any torch.save format), TorchScript .pt or .safetensors",
       cxxopts::value<std::string>())
      ("json", "Print one JSON object instead of a table")
      ("h,help", "Print this help");
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  // Fitting AlexNet: the classes, channels and layout read from the shapes, then every
  // key and shape checked (the check loading makes, without building a model).
  const WeightsFile file(required_flag(result, "weights", options));
  int64_t total = 0;
  for (const auto& e : file.entries()) total += c10::multiply_integers(e.shape);
  if (result.count("json"))
    print_json(file, total);
  else
    print_table(file, total);
  return 0;
}

}  // namespace alexnet::app

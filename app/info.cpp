// alexnet info: what a weights file holds and whether it is an AlexNet.
#include "app/cli.h"
#include "app/commands.h"
#include "app/runtime/json.h"
#include "model/weights.h"

#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::app {

namespace {

using runtime::JsonObject;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << c10::IntArrayRef(shape);
  return os.str();
}

// A training checkpoint ({"model", "optimizer", "epoch", "args", ...}, ours or
// torchvision's train.py's): where the run stands, as key/value lines for both outputs.
std::vector<std::pair<std::string, std::string>> training_state(const WeightsFile& file) {
  std::vector<std::pair<std::string, std::string>> out;
  const pth::Value& root = file.root();
  if (!root.is_dict() || !root.find("model") || !root.find("epoch")) return out;
  const pth::Value* epoch = root.find("epoch");
  const pth::Value* step = root.find("epoch_step");
  if (epoch->is_int()) {
    const int64_t done = epoch->as_int() + 1;  // "epoch" is the last completed one, 0-based
    const int64_t s = step && step->is_int() ? step->as_int() : 0;
    out.emplace_back("epochs_completed", std::to_string(done));
    out.emplace_back("next", s > 0 ? "epoch " + std::to_string(done + 1) + " from step " + std::to_string(s + 1)
                                   : "epoch " + std::to_string(done + 1));
  }
  if (const pth::Value* opt = root.find("optimizer"); opt && opt->is_dict()) {
    const pth::Value* groups = opt->find("param_groups");
    if (groups && (groups->kind() == pth::Value::Kind::kList) && !groups->items().empty() &&
        groups->items()[0].is_dict()) {
      std::string text;
      for (const char* key : {"lr", "momentum", "nesterov", "weight_decay"})
        if (const pth::Value* v = groups->items()[0].find(key))
          text += (text.empty() ? "" : ", ") + std::string(key) + " " + v->describe();
      out.emplace_back("optimizer", "SGD " + text);
    }
    const pth::Value* state = opt->find("state");
    int64_t buffers = 0;
    if (state && state->is_dict())
      for (const auto& [k, v] : state->entries()) buffers += v.find("momentum_buffer") != nullptr;
    out.emplace_back("momentum_buffers", std::to_string(buffers));
  }
  if (const pth::Value* args = root.find("args"); args && args->is_dict())
    for (const auto& [k, v] : args->entries())
      if (k.is_string()) out.emplace_back("args." + k.as_string(), v.describe());
  return out;
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
  const auto state = training_state(file);
  if (!state.empty()) {
    JsonObject training;
    for (const auto& [key, value] : state) training.str(key, value);
    out.raw("training", training.dump());
  }
  if (!file.metadata().empty()) {
    JsonObject metadata;
    for (const auto& [key, value] : file.metadata()) metadata.str(key, value);
    out.raw("metadata", metadata.dump());
  }
  std::printf("%s\n", out.raw("tensors", tensors + "]").dump().c_str());
}

void print_table(const WeightsFile& file, int64_t total) {
  std::printf("weights: %s\nformat: %s\n", file.path().c_str(), format_name(file.format()));
  const auto state = training_state(file);
  if (!state.empty()) {
    std::printf("training checkpoint:\n");
    for (const auto& [key, value] : state) std::printf("  %s: %.200s\n", key.c_str(), value.c_str());
  }
  const auto classes = file.class_names();
  if (!classes.empty()) {
    std::string list;
    for (const auto& c : classes) list += (list.empty() ? "" : ", ") + c;
    std::printf("class names (%zu): %.400s\n", classes.size(), list.c_str());
  }
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
  options.positional_help("[FILE]");
  options.add_options()
      ("w,weights", "Weights: .pth (any torch.save format, training checkpoints too), TorchScript .pt, "
       ".safetensors or torch.export .pt2; or give the file as the argument",
       cxxopts::value<std::string>())
      ("file", "The weights file (as --weights)", cxxopts::value<std::vector<std::string>>())
      ("json", "Print one JSON object instead of a table")
      ("h,help", "Print this help");
  options.parse_positional({"file"});
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  // Fitting AlexNet: the classes, channels and layout read from the shapes, then every
  // key and shape checked (the check loading makes, without building a model).
  const size_t given = result.count("file") ? result["file"].as<std::vector<std::string>>().size() : 0;
  if (given > 1 || (given == 1 && result.count("weights")))
    throw UsageError("alexnet info: give one file, as --weights FILE or as the argument", options.help());
  const WeightsFile file(given ? result["file"].as<std::vector<std::string>>()[0]
                               : required_flag(result, "weights", options));
  int64_t total = 0;
  for (const auto& e : file.entries()) total += c10::multiply_integers(e.shape);
  if (result.count("json"))
    print_json(file, total);
  else
    print_table(file, total);
  return 0;
}

}  // namespace alexnet::app

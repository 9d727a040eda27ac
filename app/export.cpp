// alexnet export: rewrite weights as a torch.save state_dict (.pth), a
// TorchScript archive (.pt) or safetensors (.safetensors).
#include "app/cli.h"
#include "app/commands.h"
#include "data/labels.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <optional>
#include <string>

namespace alexnet::app {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int run_export(int argc, const char* const* argv) {
  cxxopts::Options options("alexnet export",
                           "Write AlexNet weights as a state_dict for torch.load (.pth), a "
                           "TorchScript archive for torch.jit.load (.pt) or safetensors "
                           "(.safetensors), chosen by --output's extension. Tensors keep their "
                           "dtype and values bit for bit.");
  options.add_options()
      ("w,weights", "Input weights: .pth (any torch.save format), TorchScript .pt, .safetensors or torch.export .pt2",
       cxxopts::value<std::string>())
      ("o,output", "Output file: NAME.pth, NAME.pt or NAME.safetensors", cxxopts::value<std::string>())
      ("num-classes", "Refuse weights with a different number of classes",
       cxxopts::value<int64_t>())
      ("labels", "Class names written with the weights (state_dict _metadata, TorchScript extra file "
                 "classes.json, safetensors metadata): 'imagenet' or a file with one name per line "
                 "(default: the names the input carries)",
       cxxopts::value<std::string>())
      ("h,help", "Print this help");
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const std::string input = required_flag(result, "weights", options);
  const std::string output = required_flag(result, "output", options);
  const bool to_pth = ends_with(output, ".pth"), to_safetensors = ends_with(output, ".safetensors");
  if (!to_pth && !to_safetensors && !ends_with(output, ".pt"))
    throw UsageError("--output must end in .pth (state_dict), .pt (TorchScript) or .safetensors",
                     options.help());
  std::optional<int64_t> num_classes;
  if (result.count("num-classes")) num_classes = positive_flag(result, "num-classes", options);

  const WeightsFile file(input);
  // Names, shapes and classes checked as loading checks them; the tensors written are the file's own.
  const AlexNetOptions model = file.options(num_classes);
  // Class names and the input transform travel with the weights in every format; --labels
  // replaces the names.
  WeightsInfo info = file.info();
  if (result.count("labels")) {
    info.class_names = data::load_labels(result["labels"].as<std::string>());
    TORCH_CHECK(static_cast<int64_t>(info.class_names.size()) == model.num_classes(), "--labels ",
                result["labels"].as<std::string>(), ": ", info.class_names.size(), " names for weights with ",
                model.num_classes(), " classes");
  }
  if (to_pth) {
    save_state_dict(file.tensors(), output, info);
  } else if (to_safetensors) {
    save_safetensors(file.tensors(), output, info);
  } else {
    save_torchscript(file.tensors(), output, info);
  }
  spdlog::info("export: {} ({}, {} classes{}{}) -> {}", input, format_name(file.format()), model.num_classes(),
               info.class_names.empty() ? "" : ", with their names",
               info.transform ? ", with its input transform" : "", output);
  return 0;
}

}  // namespace alexnet::app

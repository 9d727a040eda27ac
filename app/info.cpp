// alexnet info: what a weights file holds and whether it is an AlexNet.
#include "app/cli.h"
#include "app/commands.h"
#include "model/weights.h"

#include <cstdio>
#include <sstream>
#include <string>

namespace alexnet::app {

namespace {

std::string shape_text(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

std::string dtype_text(const torch::Tensor& t) {
  return std::string(c10::toString(t.scalar_type()));
}

}  // namespace

int run_info(int argc, const char* const* argv) {
  cxxopts::Options options("alexnet info",
                           "Describe a weights file: format, classes, parameters, and whether "
                           "it fits AlexNet.");
  options.add_options()
      ("w,weights", "Weights: TorchScript archive or .pth file (any torch.save format)",
       cxxopts::value<std::string>())
      ("json", "Print one JSON object instead of a table")
      ("h,help", "Print this help");
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const std::string path = required_flag(result, "weights", options);

  const WeightFile file = read_weight_file(path);
  int64_t total = 0;
  for (const auto& [name, t] : file.tensors) total += t.numel();

  // Fitting AlexNet means: the classes, channels and layout inferred from the
  // shapes, then every key and shape (the check loading makes, without
  // building and initialising a model).
  int64_t num_classes = 0;
  std::string mismatch;
  try {
    num_classes = check_fits_alexnet(file.tensors, path).num_classes;
  } catch (const c10::Error& e) {
    mismatch = e.what_without_backtrace();
    mismatch = mismatch.substr(0, mismatch.find('\n'));
  }

  if (result.count("json")) {
    std::string out = "{\"weights\": " + json_string(path) +
                      ", \"format\": " + json_string(format_name(file.format)) +
                      ", \"num_classes\": " + (num_classes ? std::to_string(num_classes) : "null") +
                      ", \"total_parameters\": " + std::to_string(total) +
                      ", \"alexnet\": " + (mismatch.empty() ? "true" : "false");
    if (!mismatch.empty()) out += ", \"mismatch\": " + json_string(mismatch);
    out += ", \"tensors\": [";
    for (size_t i = 0; i < file.tensors.size(); ++i) {
      const auto& [name, t] = file.tensors[i];
      out += std::string(i ? ", " : "") + "{\"name\": " + json_string(name) + ", \"shape\": " +
             shape_text(t) + ", \"dtype\": " + json_string(dtype_text(t)) + "}";
    }
    std::printf("%s]}\n", out.c_str());
    return 0;
  }

  std::printf("weights: %s\nformat: %s\n", path.c_str(), format_name(file.format));
  std::printf("%-24s %-20s %s\n", "name", "shape", "dtype");
  for (const auto& [name, t] : file.tensors)
    std::printf("%-24s %-20s %s\n", name.c_str(), shape_text(t).c_str(), dtype_text(t).c_str());
  std::printf("total parameters: %lld\n", static_cast<long long>(total));
  if (mismatch.empty())
    std::printf("AlexNet: yes, %lld classes\n", static_cast<long long>(num_classes));
  else
    std::printf("AlexNet: no (%s)\n", mismatch.c_str());
  return 0;
}

}  // namespace alexnet::app

#include "app/cli.h"

#include "app/runtime/machine.h"
#include "data/image_header.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <sstream>
#include <string>

namespace alexnet::app {

cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, const char* const* argv,
                                    bool allow_positional) {
  cxxopts::ParseResult result;
  try {
    result = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    // cxxopts names the value, not the flag: find the flag that carried it,
    // as "--flag value" or "--flag=value".
    std::string message = e.what();
    auto quoted = [&message](const std::string& value) {
      return !value.empty() && (message.find("\u2018" + value + "\u2019") != std::string::npos ||
                                message.find("'" + value + "'") != std::string::npos);
    };
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg.size() < 2 || arg[0] != '-') continue;
      const auto eq = arg.find('=');
      if (eq != std::string::npos && quoted(arg.substr(eq + 1))) {
        message = arg.substr(0, eq) + ": " + message;
        break;
      }
      if (eq == std::string::npos && i + 1 < argc && quoted(argv[i + 1])) {
        message = arg + ": " + message;
        break;
      }
    }
    throw UsageError(message, options.help());
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what(), options.help());
  }
  if (!allow_positional && !result.unmatched().empty()) {
    const std::string& extra = result.unmatched().front();
    std::string message = "unexpected argument '" + extra + "'";
    // A flag with an optional value takes it only after '='.
    for (int i = 2; i < argc; ++i) {
      const std::string previous = argv[i - 1];
      if (argv[i] == extra && previous == "--channels-last") {
        message += " (if it is the value of " + previous + ", write " + previous + "=" + extra + ")";
        break;
      }
    }
    throw UsageError(message, options.help());
  }
  return result;
}

void add_common_options(cxxopts::Options& options) {
  options.add_options("common")
      ("device", "cpu, cuda, cuda:N, or auto (CUDA when available)",
       cxxopts::value<std::string>()->default_value("auto"))
      ("threads", "CPU threads for LibTorch (0 = all CPUs available to the process)",
       cxxopts::value<int>()->default_value("0"))
      ("h,help", "Print this help");
}

bool wants_help(const cxxopts::ParseResult& result) { return result.count("help") > 0; }

torch::Device setup_runtime(const cxxopts::ParseResult& result) {
  return runtime::setup_device(result["device"].as<std::string>(), result["threads"].as<int>());
}

std::string required_flag(const cxxopts::ParseResult& result, const std::string& name,
                          const cxxopts::Options& options) {
  if (!result.count(name)) throw UsageError("missing --" + name, options.help());
  return result[name].as<std::string>();
}

int64_t positive_flag(const cxxopts::ParseResult& result, const std::string& name,
                      const cxxopts::Options& options) {
  const int64_t v = result[name].as<int64_t>();
  if (v <= 0) throw UsageError("--" + name + " must be positive, got " + std::to_string(v), options.help());
  return v;
}

void add_max_pixels_option(cxxopts::Options& options) {
  options.add_options("data")
      ("max-pixels", "Refuse images whose header declares more pixels than this, before decoding "
       "(default: PIL's decompression bomb limit; 0 = no limit)",
       cxxopts::value<int64_t>()->default_value(std::to_string(data::kDefaultMaxImagePixels)));
}

void set_max_pixels(const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  const int64_t v = result["max-pixels"].as<int64_t>();
  if (v < 0)
    throw UsageError("--max-pixels must be 0 (no limit) or positive, got " + std::to_string(v), options.help());
  data::set_max_image_pixels(v);
}

void add_compute_options(cxxopts::Options& options, const runtime::ComputeRequest& defaults, bool with_plan) {
  options.add_options("compute")
      ("precision", "fp32, bf16, fp16 (CUDA) or auto (bf16 on AMX CPUs and Ampere GPUs, fp16 on older "
       "GPUs, else fp32). Inference in fp32 gives PyTorch's results bit for bit; training keeps fp32 "
       "weights and autocasts (fp16 with loss scaling)",
       cxxopts::value<std::string>()->default_value(runtime::precision_name(defaults.precision)))
      ("channels-last", "Channels-last memory format: on, off, or auto (the device's faster layout)",
       cxxopts::value<std::string>()
           ->default_value(runtime::channels_last_name(defaults.channels_last))
           ->implicit_value("on"));
  if (with_plan)
    options.add_options("compute")("onednn-plan", kPlanHelp,
                                   cxxopts::value<std::string>()->default_value(runtime::plan_choice_name(defaults.plan)));
}

runtime::ComputeRequest compute_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                                      bool with_plan) {
  runtime::ComputeRequest request;
  request.precision = choice_flag<runtime::Precision>(result, "precision", runtime::parse_precision,
                                                      "fp32, bf16, fp16 or auto", options);
  request.channels_last = choice_flag<runtime::ChannelsLast>(
      result, "channels-last", runtime::parse_channels_last, "auto, on or off", options);
  if (with_plan)
    request.plan = choice_flag<runtime::PlanChoice>(result, "onednn-plan", runtime::parse_plan_choice,
                                                    "auto, winograd, direct or off", options);
  return request;
}

void add_recipe_options(cxxopts::Options& options, const engine::Recipe& defaults) {
  const auto d = [](double v) { std::ostringstream os; os << v; return os.str(); };
  options.add_options("recipe")
      ("lr", "Base learning rate", cxxopts::value<double>()->default_value(d(defaults.lr)))
      ("momentum", "SGD momentum", cxxopts::value<double>()->default_value(d(defaults.momentum)))
      ("wd,weight-decay", "L2 weight decay", cxxopts::value<double>()->default_value(d(defaults.weight_decay)))
      ("nesterov", "Nesterov momentum (--nesterov=false for plain momentum, as torchvision's sgd)",
       cxxopts::value<bool>()->default_value(defaults.nesterov ? "true" : "false")->implicit_value("true"))
      ("label-smoothing", "Label smoothing", cxxopts::value<double>()->default_value(d(defaults.label_smoothing)))
      ("clip-grad-norm", "Scale the gradients down to this total L2 norm when above it, as "
       "clip_grad_norm_ (0 = off)", cxxopts::value<double>()->default_value(d(defaults.clip_grad_norm)))
      ("dropout", "Dropout probability", cxxopts::value<double>()->default_value(d(defaults.dropout)));
}

engine::Recipe recipe_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  engine::Recipe r;
  r.lr = result["lr"].as<double>();
  r.momentum = result["momentum"].as<double>();
  r.weight_decay = result["weight-decay"].as<double>();
  r.nesterov = result["nesterov"].as<bool>();
  // The default's Nesterov momentum needs momentum; asked for by name it is an error without.
  if (r.momentum == 0 && !result.count("nesterov")) r.nesterov = false;
  r.label_smoothing = result["label-smoothing"].as<double>();
  r.clip_grad_norm = result["clip-grad-norm"].as<double>();
  r.dropout = result["dropout"].as<double>();
  try {
    r.validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what(), options.help());
  }
  return r;
}

void add_nonfinite_option(cxxopts::Options& options) {
  options.add_options()("allow-nonfinite",
                        "Run weights that hold NaN or infinity (refused otherwise); outputs "
                        "will be NaN, null in JSON");
}

void check_finite_weights(const cxxopts::ParseResult& result, const torch::nn::Module& model,
                          const std::string& path) {
  const std::vector<std::string> bad = nonfinite_parameters(model);
  if (bad.empty()) return;
  std::string names;
  for (size_t i = 0; i < bad.size() && i < 4; ++i) names += (i ? ", " : "") + bad[i];
  if (bad.size() > 4) names += " and " + std::to_string(bad.size() - 4) + " more";
  TORCH_CHECK(result.count("allow-nonfinite") > 0, path, ": weights hold NaN or infinity in ", names,
              "; every output would be NaN (--allow-nonfinite runs them anyway)");
  spdlog::warn("warning: {}: weights hold NaN or infinity in {}; outputs will be NaN", path, names);
}

}  // namespace alexnet::app

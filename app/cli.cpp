#include "app/cli.h"

#include "app/engine/calibrate.h"
#include "app/engine/progress.h"
#include "app/runtime/errors.h"
#include "app/runtime/machine.h"
#include "data/file.h"
#include "data/image_header.h"
#include "model/int8.h"
#include "model/pth/checkpoint_io.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>

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
      ("progress", "How long work shows progress: bar (one live line, redrawn), lines (a log line every "
       "--print-freq steps) or auto (bar on a terminal, lines in pipes and files)",
       cxxopts::value<std::string>()->default_value("auto"))
      ("h,help", "Print this help");
}

bool wants_help(const cxxopts::ParseResult& result) { return result.count("help") > 0; }

torch::Device setup_runtime(const cxxopts::ParseResult& result) {
  const std::string progress = result["progress"].as<std::string>();
  if (progress == "bar")
    engine::set_progress_style(engine::ProgressStyle::kBar);
  else if (progress == "lines")
    engine::set_progress_style(engine::ProgressStyle::kLines);
  else if (progress == "auto")
    engine::set_progress_style(engine::detect_progress_style());
  else
    throw UsageError("--progress must be auto, bar or lines, got '" + progress + "'", "");
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
      ("precision", "fp32, bf16, fp16 (CUDA), int8 (CPU inference, calibrated: --calibrate) or auto (bf16 "
       "on AMX CPUs, AMD's with AVX512-BF16 and Ampere GPUs, fp16 on older GPUs, else fp32). Inference in fp32 gives PyTorch's "
       "results bit for bit; training keeps fp32 weights and autocasts (fp16 with loss scaling)",
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
                                                      "fp32, bf16, fp16, int8 or auto", options);
  request.channels_last = choice_flag<runtime::ChannelsLast>(
      result, "channels-last", runtime::parse_channels_last, "auto, on or off", options);
  if (with_plan)
    request.plan = choice_flag<runtime::PlanChoice>(result, "onednn-plan", runtime::parse_plan_choice,
                                                    "auto, winograd, direct or off", options);
  return request;
}

void add_int8_options(cxxopts::Options& options) {
  options.add_options("int8")
      ("calibrate", "With --precision int8: calibrate the activation scales on this data (a data spec; its "
                    "train split when it has one) and save them to the scales file",
       cxxopts::value<std::string>())
      ("calibrate-images", "Images --calibrate draws at random", cxxopts::value<int64_t>()->default_value("512"))
      ("int8-scales", "The scales file (default: WEIGHTS.int8.json beside the weights)",
       cxxopts::value<std::string>());
}

namespace {

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string percent(double fraction) { return fmt::format("{:.2f}%", 100 * fraction); }

// --precision auto on the CPU: int8 where the weights have calibrated scales whose measured
// top-1 agreement with fp32 is at least kAutoInt8Agreement, else what resolve_precision chose
// (bf16 on AMX and on AMD's AVX512-BF16, fp32 elsewhere). The log names the choice and the agreement measured.
constexpr double kAutoInt8Agreement = 0.99;

Int8Scales read_int8_scales(const std::string& path) {
  const auto bytes = data::read_regular_file(path, data::kMaxTextFileBytes, "int8 scales file");
  return parse_int8_scales(std::string(bytes.begin(), bytes.end()), path);
}

// Returns the scales it read when it chose int8 (setup_int8 then uses them as read).
std::optional<Int8Scales> resolve_auto_int8(runtime::ComputeConfig& cfg, const std::string& path,
                                            const std::string& weights_sha256) {
  const std::string kept = std::string("auto keeps ") + runtime::precision_name(cfg.precision);
  if (path.empty() || !file_exists(path)) {
    spdlog::info("{}: no int8 scales at {} (calibrate once with --precision int8 --calibrate DATA; auto then "
                 "weighs int8 by its measured agreement)", kept, path.empty() ? "(no weights file)" : path);
    return std::nullopt;
  }
  Int8Scales scales;
  try {
    scales = read_int8_scales(path);
  } catch (const std::exception& e) {
    spdlog::warn("{}: {}", kept, runtime::error_message(e));
    return std::nullopt;
  }
  const auto& a = scales.agreement;
  std::string why;
  if (!scales.weights_sha256.empty() && scales.weights_sha256 != weights_sha256)
    why = path + " was calibrated for other weights";
  else if (!Int8AlexNet::available())
    why = "this LibTorch has no quantized CPU kernels";
  else if (a.images == 0)
    why = path + " holds no measured agreement (calibrate again with --calibrate DATA to measure it)";
  else if (a.int8 < kAutoInt8Agreement)
    why = "int8's top-1 agreement with fp32 is " + percent(a.int8) + " on " + std::to_string(a.images) +
          " images, under " + percent(kAutoInt8Agreement);
  if (!why.empty()) {
    spdlog::info("{}{}: not int8: {}", kept,
                 a.images > 0 && a.bf16 >= 0 && cfg.precision == runtime::Precision::kBf16
                     ? " (top-1 agreement with fp32 " + percent(a.bf16) + ")"
                     : std::string(),
                 why);
    return std::nullopt;
  }
  cfg = runtime::inference_config(cfg.device, runtime::Precision::kInt8, cfg.channels_last);
  cfg.precision_auto = true;
  spdlog::info("precision int8 (auto: calibrated scales {}; top-1 agreement with fp32 {} on {} images of {} it "
               "was not calibrated on)", path, percent(a.int8), a.images, scales.data);
  return scales;
}

}  // namespace

void setup_int8(const cxxopts::ParseResult& result, const cxxopts::Options& options, runtime::ComputeConfig& cfg,
                AlexNet model, const std::string& weights, const std::string& weights_sha256,
                const data::TransformOptions& transform, const std::function<Int8Scales()>& fallback) {
  const bool calibrate = result.count("calibrate") > 0;
  const std::string scales_path = result.count("int8-scales") ? result["int8-scales"].as<std::string>()
                                  : weights.empty()            ? std::string()
                                                               : weights + ".int8.json";
  std::optional<Int8Scales> auto_scales;
  if (cfg.precision_auto && cfg.device.is_cpu() && !calibrate)
    auto_scales = resolve_auto_int8(cfg, scales_path, weights_sha256);
  if (cfg.precision != runtime::Precision::kInt8) {
    if (calibrate || result.count("int8-scales"))
      throw UsageError(std::string(calibrate ? "--calibrate" : "--int8-scales") + " needs --precision int8",
                       options.help());
    return;
  }
  const int64_t images = positive_flag(result, "calibrate-images", options);
  const std::string& path = scales_path;
  // The scales belong to one set of weights: the SHA-256 of the bytes loaded ties them.
  Int8Scales scales;
  if (calibrate) {
    engine::CalibrationOptions o;
    o.data = result["calibrate"].as<std::string>();
    o.images = images;
    o.transform = transform;
    scales = engine::calibrate_int8(model, o, runtime::int8_activation_max());
    scales.weights_sha256 = weights_sha256;
    if (!path.empty()) {
      const std::string text = int8_scales_json(scales);
      pth::write_atomically(path, [&](int fd) { pth::write_all(fd, text.data(), text.size(), path); });
      spdlog::info("int8: scales written to {} (later runs read them)", path);
    }
  } else if (!path.empty() && (auto_scales || file_exists(path) || result.count("int8-scales"))) {
    scales = auto_scales ? std::move(*auto_scales) : read_int8_scales(path);
    TORCH_CHECK(weights_sha256.empty() || scales.weights_sha256.empty() || scales.weights_sha256 == weights_sha256,
                path, ": calibrated for other weights (SHA-256 ", scales.weights_sha256, "), not ", weights, " (",
                weights_sha256, "); calibrate again with --calibrate DATA");
    spdlog::info("int8: scales from {} ({} images of {})", path, scales.images, scales.data);
  } else if (fallback) {
    scales = fallback();
  } else {
    TORCH_CHECK(false, "--precision int8: no scales for ", weights, " (", path,
                " does not exist); calibrate once with --calibrate DATA [--calibrate-images N], "
                "which writes them there");
  }
  cfg.int8_scales = std::make_shared<const Int8Scales>(std::move(scales));
}

void add_recipe_options(cxxopts::Options& options, const std::string& default_recipe) {
  const engine::Recipe m = engine::Recipe::main_job(), t = engine::Recipe::torchvision();
  // Each flag's help shows both recipes' values: the default depends on --recipe.
  const auto both = [](auto main_value, auto tv_value) {
    std::ostringstream os;
    os << std::boolalpha << " (main " << main_value << ", torchvision " << tv_value << ")";
    return os.str();
  };
  options.add_options("recipe")
      ("recipe", std::string("Defaults for the flags below: main (the built-in Fashion-MNIST job's), "
                             "torchvision (train.py's)") +
                     (default_recipe == "auto" ? ", or auto (main for Fashion-MNIST from scratch, else torchvision)"
                                               : ""),
       cxxopts::value<std::string>()->default_value(default_recipe))
      ("lr", "Base learning rate" + both(m.lr, t.lr), cxxopts::value<double>())
      ("momentum", "SGD momentum" + both(m.momentum, t.momentum), cxxopts::value<double>())
      ("wd,weight-decay", "L2 weight decay" + both(m.weight_decay, t.weight_decay), cxxopts::value<double>())
      ("nesterov", "Nesterov momentum (--nesterov=false: plain momentum)" + both(m.nesterov, t.nesterov),
       cxxopts::value<bool>()->implicit_value("true"))
      ("label-smoothing", "Label smoothing" + both(m.label_smoothing, t.label_smoothing), cxxopts::value<double>())
      ("clip-grad-norm", "Scale the gradients down to this total L2 norm when above it, as "
       "clip_grad_norm_; 0 = off" + both(m.clip_grad_norm, t.clip_grad_norm), cxxopts::value<double>())
      ("dropout", "Dropout probability" + both(m.dropout, t.dropout), cxxopts::value<double>());
}

engine::RecipeName recipe_name_flag(const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  const std::string name = result["recipe"].as<std::string>();
  const auto parsed = engine::parse_name(engine::kRecipeNames, name);
  if (!parsed) throw UsageError("--recipe must be main, torchvision or auto, got '" + name + "'", options.help());
  return *parsed;
}

engine::Recipe recipe_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                            engine::Recipe base, std::string* given) {
  engine::Recipe& r = base;
  std::ostringstream flags;
  const auto take = [&](const char* flag, auto& field) {
    if (!result.count(flag)) return;
    field = result[flag].as<std::remove_reference_t<decltype(field)>>();
    flags << std::boolalpha << " --" << flag << " " << field;
  };
  take("lr", r.lr);
  take("momentum", r.momentum);
  take("weight-decay", r.weight_decay);
  take("nesterov", r.nesterov);
  // main's Nesterov momentum needs momentum; asked for by name it is an error without.
  if (r.momentum == 0 && !result.count("nesterov")) r.nesterov = false;
  take("label-smoothing", r.label_smoothing);
  take("clip-grad-norm", r.clip_grad_norm);
  take("dropout", r.dropout);
  if (given) *given = flags.str();
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

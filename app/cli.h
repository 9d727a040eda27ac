// What the commands share: parsing flags into the libraries' types, usage errors,
// and the flags several commands take (device and threads, compute, the recipe,
// the image pixel limit).
#pragma once

#include "app/engine/train_config.h"
#include "app/runtime/compute.h"
#include "data/transforms.h"
#include "model/alexnet.h"

#include <cxxopts.hpp>
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace alexnet::app {

/// A mistake in how the program was called: main prints the usage and exits 2.
class UsageError : public std::runtime_error {
 public:
  UsageError(const std::string& message, std::string usage)
      : std::runtime_error(message), usage_(std::move(usage)) {}
  const std::string& usage() const { return usage_; }

 private:
  std::string usage_;
};

/// Parses argv with cxxopts; turns its exceptions and leftover arguments into UsageError.
cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, const char* const* argv,
                                    bool allow_positional = false);

/// Adds --device, --threads and --help, the flags every computing command shares.
void add_common_options(cxxopts::Options& options);

/// True when the user asked for --help (the command then prints options.help() and returns 0).
bool wants_help(const cxxopts::ParseResult& result);

/// --device and --threads, set up and logged (runtime::setup_device).
torch::Device setup_runtime(const cxxopts::ParseResult& result);

/// The value of a string flag the command cannot do without, else UsageError "missing --NAME".
std::string required_flag(const cxxopts::ParseResult& result, const std::string& name,
                          const cxxopts::Options& options);

/// Requires a positive integer flag, else UsageError naming it.
int64_t positive_flag(const cxxopts::ParseResult& result, const std::string& name,
                      const cxxopts::Options& options);

/// A string flag parsed by `parse` (nullopt: not a valid value); else UsageError
/// "--NAME VALUE: expected EXPECTED".
template <typename T, typename Parse>
T choice_flag(const cxxopts::ParseResult& result, const std::string& name, Parse parse,
              const char* expected, const cxxopts::Options& options) {
  const std::string value = result[name].as<std::string>();
  const std::optional<T> parsed = parse(value);
  if (!parsed) throw UsageError("--" + name + " " + value + ": expected " + expected, options.help());
  return *parsed;
}

/// Adds --max-pixels, for the commands that decode images (predict, eval, train, bench).
void add_max_pixels_option(cxxopts::Options& options);
/// Sets the process's image pixel limit from --max-pixels (data::set_max_image_pixels).
void set_max_pixels(const cxxopts::ParseResult& result, const cxxopts::Options& options);

/// --onednn-plan's help text, shared by the commands that infer.
inline constexpr const char* kPlanHelp =
    "CPU fp32 inference as one oneDNN pipeline: auto (the plan with Winograd where oneDNN has it, "
    "AVX-512; else off), winograd, direct, or off (LibTorch's layers one by one: PyTorch's "
    "results bit for bit). bf16: whether conv3-5 run as bf16 Winograd: auto (on AVX512-BF16 "
    "without AMX), winograd, or direct/off";

/// Adds --precision and --channels-last with these defaults and, with_plan, --onednn-plan.
void add_compute_options(cxxopts::Options& options, const runtime::ComputeRequest& defaults, bool with_plan);
/// --precision, --channels-last and, with_plan, --onednn-plan.
runtime::ComputeRequest compute_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                                      bool with_plan = true);

/// Adds --calibrate, --calibrate-images and --int8-scales (the commands that infer).
void add_int8_options(cxxopts::Options& options);
/// For --precision int8, puts the activation scales into cfg.int8_scales:
///   --calibrate DATA: calibrated now on --calibrate-images images of DATA through
///     `transform`, with `model` (float32), then written to the scales file;
///   else read from the scales file, which must have been calibrated for these weights
///     (`weights_sha256`: the SHA-256 of the bytes the caller loaded; empty without weights);
///   else, where `fallback` is given (bench without weights), what it returns;
///   else an error saying how to calibrate.
/// The scales file: --int8-scales, else WEIGHTS.int8.json beside the weights.
/// For other precisions, --calibrate and --int8-scales are usage errors.
void setup_int8(const cxxopts::ParseResult& result, const cxxopts::Options& options, runtime::ComputeConfig& cfg,
                AlexNet model, const std::string& weights, const std::string& weights_sha256,
                const data::TransformOptions& transform, const std::function<Int8Scales()>& fallback = nullptr);

/// The training recipe's flags: --recipe (main, torchvision, and auto when
/// `default_recipe` is "auto") names a set of defaults, which --lr, --momentum,
/// --weight-decay, --nesterov, --label-smoothing, --clip-grad-norm and
/// --dropout override one by one. train and bench --mode train take the same ones.
void add_recipe_options(cxxopts::Options& options, const std::string& default_recipe);
/// --recipe's value (kAuto only where add_recipe_options allowed it).
engine::RecipeName recipe_name_flag(const cxxopts::ParseResult& result, const cxxopts::Options& options);
/// `base` with each recipe flag given applied, checked (engine::Recipe::validate).
/// `given`, when not null, receives the flags given (" --lr 0.1 --dropout 0").
engine::Recipe recipe_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                            engine::Recipe base, std::string* given = nullptr);

/// Adds --allow-nonfinite, for the commands that run a weights file.
void add_nonfinite_option(cxxopts::Options& options);
/// Refuses weights holding a NaN or an infinity (an error naming `path` and the
/// parameters), which would make every output NaN; with --allow-nonfinite, a
/// warning naming them instead.
void check_finite_weights(const cxxopts::ParseResult& result, const torch::nn::Module& model,
                          const std::string& path);

}  // namespace alexnet::app

// Numeric precision and memory layout: parsing --precision / --channels-last,
// what the CPU or GPU supports, the per-device defaults ("auto"), autocast, the
// inference conversion of a model, and dynamic loss scaling for fp16 training.
#pragma once

#include "model/alexnet.h"
#include "model/onednn_plan.h"

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace alexnet::app {

/// The floating-point type a model computes in. kAuto is resolved per device by
/// resolve_precision() and never reaches the computation.
enum class Precision { kFp32, kBf16, kFp16, kAuto };

/// "fp32", "bf16", "fp16", "auto".
const char* precision_name(Precision precision);
/// Parses precision_name()'s names; nullopt for anything else.
std::optional<Precision> parse_precision(const std::string& name);
/// float32, bfloat16 or float16 (kAuto is an error).
torch::ScalarType precision_dtype(Precision precision);

/// The bfloat16 hardware of this CPU, from the kernel's CPU flags (/proc/cpuinfo).
struct CpuBf16Support {
  bool avx512_bf16 = false;  // VDPBF16PS: bf16 dot products in AVX-512 registers
  bool amx_bf16 = false;     // AMX tiles: bf16 matrix multiply, several times fp32's rate
  bool any() const { return avx512_bf16 || amx_bf16; }
};
/// The instruction-set flags /proc/cpuinfo lists for this CPU (empty where unreadable); read once.
const std::set<std::string>& cpu_flags();

const CpuBf16Support& cpu_bf16_support();

/// CUDA compute capability (major * 10 + minor) of a device, or 0 when unknown.
int cuda_compute_capability(const torch::Device& device);

/// What a precision is for: inference may hold its weights in the low precision;
/// training keeps fp32 master weights and autocasts.
enum class Workload { kInference, kTraining };

/// Resolves --precision for a device and logs the choice with its reason.
///   auto, CPU: bf16 with AMX-BF16, else fp32 (AVX512-BF16 alone runs AlexNet's
///     convolutions slower than fp32 on the CPUs measured, see BENCHMARKS.md);
///   auto, CUDA: bf16 from compute capability 8.0, fp16 from 7.0, else fp32;
///   bf16 on a CPU without bf16 instructions: a warning, then fp32;
///   fp16 on a CPU: an error (LibTorch has no fp16 convolutions for the CPU).
Precision resolve_precision(Precision requested, const torch::Device& device, Workload workload);

/// CUDA math settings for a precision: cuDNN's autotuner (benchmark mode: the
/// shapes repeat), and for fp32 no TF32 (TF32 keeps 10 mantissa bits: fp32 then
/// means fp32, as on the CPU). Does nothing on the CPU.
void configure_cuda_math(const torch::Device& device, Precision precision);

/// --channels-last: "auto" (the default), "on" (or "true", "1", bare flag), "off" ("false", "0").
enum class ChannelsLast { kAuto, kOn, kOff };
std::optional<ChannelsLast> parse_channels_last(const std::string& value);
/// auto: channels-last on the CPU (oneDNN's convolutions and pooling skip the NCHW
/// reorders) and for fp16/bf16 on CUDA (tensor cores want NHWC); NCHW for fp32 on CUDA.
bool resolve_channels_last(ChannelsLast requested, const torch::Device& device, Precision precision);

/// --onednn-plan: whether CPU fp32 inference runs AlexNet's features as one
/// oneDNN pipeline (model/onednn_plan.h), and with which 3x3 convolutions.
///   auto (bench's default): the plan with Winograd on the CPU in fp32 where this
///     build has the plan and oneDNN has a Winograd kernel (AVX-512); off elsewhere
///     (without Winograd the plan measured 25x slower than LibTorch's layers);
///   winograd, direct: the plan with those kernels (an error where it cannot run);
///   off (predict's and eval's default): LibTorch's layers one by one, as PyTorch
///     runs them, for results equal to PyTorch's bit for bit.
enum class PlanChoice { kAuto, kWinograd, kDirect, kOff };
std::optional<PlanChoice> parse_plan_choice(const std::string& value);
/// --onednn-plan's help text, shared by the commands that infer.
inline constexpr const char* kPlanHelp =
    "CPU fp32 inference as one oneDNN pipeline: auto (the plan with Winograd where oneDNN has it, "
    "AVX-512; else off), winograd, direct, or off (LibTorch's layers one by one: PyTorch's "
    "results bit for bit)";

/// A model's resolved execution settings.
struct ComputeConfig {
  torch::Device device = torch::kCPU;
  Precision precision = Precision::kFp32;  // never kAuto
  bool channels_last = false;
  /// Inference only: the weights themselves are converted to the low precision
  /// (faster than autocast, which converts them again on every forward pass).
  bool low_precision_weights = false;
  /// Inference only: the oneDNN plan's algorithm, or nullopt (LibTorch's layers).
  std::optional<ConvAlgorithm> plan;
  /// Whether the plan was asked for explicitly (then failing to build it is an error).
  bool plan_required = false;

  /// "bf16 weights, channels-last", "fp32, NCHW, oneDNN plan (Winograd)", ...
  std::string describe() const;
};

/// The settings for inference: low-precision weights whenever the precision is not fp32.
ComputeConfig inference_config(const torch::Device& device, Precision precision, bool channels_last);

/// Moves a model to cfg.device, converts its weights (dtype, conv layout),
/// puts it in eval mode (dropout is then the identity; gradients are not
/// needed) and attaches the oneDNN plan cfg asks for (attach_inference_plan).
void prepare_for_inference(AlexNet& model, ComputeConfig& cfg);
/// Resolves --onednn-plan for cfg's device and precision into cfg.plan (logging
/// auto's choice and reason) and cfg.plan_required; throws std::invalid_argument
/// naming the flag when an explicit choice cannot run here.
void choose_plan(ComputeConfig& cfg, PlanChoice requested);
/// Builds and attaches cfg.plan to a model whose weights are final. A network
/// the plan cannot run (the 2012 architecture's LocalResponseNorm) leaves the
/// model without a plan and cfg.plan empty, with a warning; an error instead
/// when cfg.plan_required.
void attach_inference_plan(AlexNet& model, ComputeConfig& cfg);
/// Logs the kernel oneDNN chose for each layer of the model's plan, as of its
/// last forward pass (nothing without a plan, or before it ran).
void log_inference_plan(const AlexNet& model);
/// Moves a batch (N, C, H, W) to cfg.device, in the model's input dtype and layout.
torch::Tensor prepare_input(const torch::Tensor& images, const ComputeConfig& cfg,
                            bool non_blocking = false);
/// Converts a model's conv weights to channels-last in place (training or inference).
void to_channels_last(torch::nn::Module& model);

/// Autocast for the lifetime of the guard on one device type (CPU or CUDA) to
/// bf16 or fp16; does nothing for fp32. Restores the previous state on exit (also
/// on throw) and, leaving the outermost guard, drops autocast's weight-cast cache,
/// as torch.autocast's __exit__ does.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

struct LossScalerOptions {
  /// Starting scale (torch.cuda.amp.GradScaler's init_scale).
  TORCH_ARG(double, init_scale) = 65536.0;
  /// Scale multiplier after growth_interval steps without inf/NaN gradients.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// Scale multiplier after a step with inf/NaN gradients (that step is skipped).
  TORCH_ARG(double, backoff_factor) = 0.5;
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// A disabled scaler scales by 1 and always steps (fp32/bf16 training).
  TORCH_ARG(bool, enabled) = true;
};

/// Dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler:
///   scaler.scale(loss).backward();
///   const bool stepped = scaler.step(params, [&] { sgd.step(lr); });
/// step() unscales the gradients in place, skips the update when any is inf or
/// NaN, and grows or backs off the scale.
class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  /// loss * scale (loss itself when disabled).
  torch::Tensor scale(const torch::Tensor& loss) const;
  /// Unscales the parameters' gradients; runs `update` unless one is inf/NaN;
  /// adjusts the scale. Returns whether `update` ran.
  template <typename Update>
  bool step(const std::vector<torch::Tensor>& params, Update&& update) {
    const bool finite = unscale(params);
    if (finite) update();
    adjust(finite);
    return finite;
  }
  /// Divides every defined gradient by the scale; true when all are finite.
  bool unscale(const std::vector<torch::Tensor>& params);
  /// Grows the scale after growth_interval finite steps, backs off after an overflow.
  void adjust(bool finite);

  double current_scale() const { return scale_; }
  bool enabled() const { return options_.enabled(); }
  /// Steps skipped for inf/NaN gradients so far.
  int64_t skipped_steps() const { return skipped_; }

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace alexnet::app

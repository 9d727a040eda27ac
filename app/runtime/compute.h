// How a model computes: the device, precision and memory layout resolved from
// what the user asked for, the conversion of a model and its inputs for
// inference, and the oneDNN inference plan (model/onednn_plan.h).
#pragma once

#include "app/runtime/precision.h"
#include "model/alexnet.h"
#include "model/int8.h"
#include "model/onednn_plan.h"

#include <torch/torch.h>

#include <optional>
#include <string>

namespace alexnet::runtime {

/// --onednn-plan: whether CPU fp32 inference runs AlexNet's features as one
/// oneDNN pipeline (model/onednn_plan.h), and with which 3x3 convolutions, and its
/// classifier at small batch sizes as oneDNN inner products (model/onednn_linear.h).
///   auto (bench's default): on the CPU in fp32 where this build has the plan, the
///     classifier, and the features with Winograd where oneDNN has a Winograd kernel
///     (AVX-512; without it the features' plan measured 25x slower than LibTorch's layers);
///   winograd, direct: features and classifier, with those kernels (an error where
///     they cannot run);
///   off (predict's and eval's default): LibTorch's layers one by one, as PyTorch
///     runs them, for results equal to PyTorch's bit for bit.
enum class PlanChoice { kAuto, kWinograd, kDirect, kOff };
std::optional<PlanChoice> parse_plan_choice(const std::string& value);
/// "auto", "winograd", "direct", "off".
const char* plan_choice_name(PlanChoice value);

/// What the user asked for, before it is resolved for a device.
struct ComputeRequest {
  Precision precision = Precision::kFp32;
  ChannelsLast channels_last = ChannelsLast::kOff;
  PlanChoice plan = PlanChoice::kOff;
};

/// A model's resolved execution settings.
struct ComputeConfig {
  torch::Device device = torch::kCPU;
  Precision precision = Precision::kFp32;  // never kAuto
  /// Whether the precision came from --precision auto: inference on the CPU then
  /// takes int8 where calibrated scales with a measured agreement exist (setup_int8).
  bool precision_auto = false;
  bool channels_last = false;
  /// Inference only: the weights themselves are converted to the low precision
  /// (faster than autocast, which converts them again on every forward pass).
  bool low_precision_weights = false;
  /// Inference only: the oneDNN plan's algorithm, or nullopt (LibTorch's layers).
  std::optional<ConvAlgorithm> plan;
  /// Inference only: the plan's classifier (OneDnnClassifier) at small batch sizes.
  bool plan_classifier = false;
  /// Whether the plan was asked for explicitly (then failing to build it is an error).
  bool plan_required = false;
  /// Inference only: bf16 on the CPU runs through FusedAlexNet (model/fused.h), where
  /// this LibTorch has its operators (2.x), instead of layer by layer.
  bool fused = false;
  /// bf16 through FusedAlexNet only: --onednn-plan's answer for its 3x3 convolutions,
  /// Winograd (true) or not (false); unset: the engine's own choice (where it pays).
  std::optional<bool> bf16_winograd;
  /// Inference only, set by prepare_for_inference: the model converts float32 images itself
  /// in one pass (the int8 and bf16 engines, or the plan's features reading NCHW), so
  /// prepare_input leaves their type and layout alone.
  bool input_as_is = false;
  /// int8 only: the calibrated activation ranges (app/cli.h's setup_int8 fills them).
  std::shared_ptr<const Int8Scales> int8_scales;

  /// "bf16 weights, channels-last", "fp32, NCHW, oneDNN plan (Winograd)", ...
  std::string describe() const;
};

/// Resolves a request for a device: the precision for the workload (logged with
/// its reason), CUDA's math settings for it, the layout, and for inference the
/// plan (choose_plan) with low-precision weights whenever the precision is not
/// fp32. Training keeps fp32 weights (autocast) and has no plan.
ComputeConfig resolve_compute(const ComputeRequest& request, const torch::Device& device,
                              Workload workload);

/// The settings for inference: low-precision weights whenever the precision is not fp32.
ComputeConfig inference_config(const torch::Device& device, Precision precision, bool channels_last);

/// Resolves --onednn-plan for cfg's device and precision into cfg.plan (logging
/// auto's choice and reason) and cfg.plan_required; throws std::invalid_argument
/// naming the flag when an explicit choice cannot run here.
void choose_plan(ComputeConfig& cfg, PlanChoice requested);

/// Moves a model to cfg.device, converts its weights (dtype, conv layout),
/// puts it in eval mode (dropout is then the identity; gradients are not
/// needed) and attaches the oneDNN plan cfg asks for (attach_inference_plan),
/// or the inference engine: for int8 the quantized network built from
/// cfg.int8_scales (required), for bf16 FusedAlexNet where cfg.fused.
void prepare_for_inference(AlexNet& model, ComputeConfig& cfg);
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
/// Converts a CPU model's parameters to dtype one at a time, smallest first: each
/// one's old storage is freed once its copy exists, so the largest (classifier.1:
/// 144 MiB in float32) is converted last, after the others have shrunk. Lowers the
/// peak memory of loading fp32 weights for bf16 inference (BENCHMARKS.md).
void convert_smallest_first(torch::nn::Module& model, torch::ScalarType dtype);
/// Converts a model's conv weights to channels-last in place (training or inference).
void to_channels_last(torch::nn::Module& model);

}  // namespace alexnet::runtime

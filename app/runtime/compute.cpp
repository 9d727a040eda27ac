#include "app/runtime/compute.h"

#include "model/fused.h"
#include "model/onednn_linear.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace alexnet::runtime {

std::optional<PlanChoice> parse_plan_choice(const std::string& value) {
  if (value == "auto") return PlanChoice::kAuto;
  if (value == "winograd") return PlanChoice::kWinograd;
  if (value == "direct") return PlanChoice::kDirect;
  if (value == "off" || value == "false" || value == "0" || value == "no") return PlanChoice::kOff;
  return std::nullopt;
}

const char* plan_choice_name(PlanChoice value) {
  return value == PlanChoice::kAuto       ? "auto"
         : value == PlanChoice::kWinograd ? "winograd"
         : value == PlanChoice::kDirect   ? "direct"
                                          : "off";
}

namespace {

// Whether this build can run the plan (features or classifier) for this device and precision.
bool plan_possible(const torch::Device& device, Precision precision) {
  return OneDnnFeatures::compiled() && device.is_cpu() && precision == Precision::kFp32;
}

std::optional<ConvAlgorithm> resolve_plan(PlanChoice requested, const torch::Device& device,
                                          Precision precision) {
  if (requested == PlanChoice::kOff) return std::nullopt;
  const bool possible = plan_possible(device, precision);
  if (requested == PlanChoice::kAuto) {
    if (possible && OneDnnFeatures::winograd_available()) {
      spdlog::info("oneDNN plan: Winograd, and the classifier at batch sizes up to {} (auto: fp32 inference "
                   "on the CPU)",
                   OneDnnClassifier::kMaxBatch);
      return ConvAlgorithm::kWinograd;
    }
    // Without Winograd (a CPU without AVX2 and FMA) the plan's direct kernels are no faster than
    // LibTorch's. The classifier's inner products need no Winograd.
    if (possible)
      spdlog::info("oneDNN plan: the classifier only, at batch sizes up to {} (auto: the plan has no Winograd "
                   "convolution for this CPU{}, and without it the features' plan is no faster than LibTorch's "
                   "layers)",
                   OneDnnClassifier::kMaxBatch, capped_note());
    else
      spdlog::info("oneDNN plan: off (auto: {})", !OneDnnFeatures::compiled() ? "this build has no oneDNN plan"
                                                  : !device.is_cpu()          ? "the plan runs on the CPU only"
                                                                              : "the plan runs fp32 only");
    return std::nullopt;
  }
  const std::string flag =
      std::string("--onednn-plan ") + (requested == PlanChoice::kWinograd ? "winograd" : "direct");
  if (!OneDnnFeatures::compiled())
    throw std::invalid_argument(flag + ": this build has no oneDNN plan (built without oneDNN's headers)");
  if (!device.is_cpu() || precision != Precision::kFp32)
    throw std::invalid_argument(flag + ": the plan runs fp32 inference on the CPU, not " +
                                precision_name(precision) + " on " + device.str());
  if (requested == PlanChoice::kWinograd && !OneDnnFeatures::winograd_available())
    throw std::invalid_argument(flag + ": the plan has no Winograd convolution for this CPU (it needs AVX-512" +
                                capped_note() + ", or AVX2 and FMA); --onednn-plan direct runs the plan without it");
  return requested == PlanChoice::kWinograd ? ConvAlgorithm::kWinograd : ConvAlgorithm::kDirect;
}

}  // namespace

// bf16 on the CPU through FusedAlexNet: the flag chooses whether its 3x3 convolutions run as the
// plan's bf16 Winograd (model/winograd_bf16.h).
std::optional<bool> resolve_bf16_winograd(PlanChoice requested) {
  if (requested == PlanChoice::kAuto) {
    const bool winograd = FusedAlexNet::winograd(std::nullopt);
    spdlog::info("bf16 engine: {} (auto: {})", winograd ? "conv3-5 as Winograd F(2x2,3x3)" : "direct convolutions",
                 winograd ? "oneDNN's bf16 kernels here are AVX512-BF16's"
                 : FusedAlexNet::winograd_possible()
                     ? "Winograd is measured to pay only where oneDNN's bf16 kernels are AVX512-BF16's, not AMX's; "
                       "--onednn-plan winograd asks for it"
                     : "no bf16 Winograd in this build or on this CPU");
    return std::nullopt;
  }
  if (requested == PlanChoice::kWinograd && !FusedAlexNet::winograd_possible())
    throw std::invalid_argument(
        "--onednn-plan winograd: bf16 Winograd needs the oneDNN plan and oneDNN's own bf16 kernels on this CPU" +
        capped_note());
  return requested == PlanChoice::kWinograd;
}

void choose_plan(ComputeConfig& cfg, PlanChoice requested) {
  if (cfg.fused) {
    cfg.bf16_winograd = resolve_bf16_winograd(requested);
    cfg.plan.reset();
    cfg.plan_required = false;
    cfg.plan_classifier = false;
    return;
  }
  cfg.plan = resolve_plan(requested, cfg.device, cfg.precision);
  cfg.plan_required = requested != PlanChoice::kAuto;
  // resolve_plan has thrown for an explicit plan that cannot run.
  cfg.plan_classifier = requested != PlanChoice::kOff && plan_possible(cfg.device, cfg.precision);
}

void log_inference_plan(const AlexNet& model) {
  const auto& plan = model->inference_plan();
  if (!plan) return;
  const auto lines = plan->describe();
  if (lines.empty()) return;  // never ran
  std::string joined;
  for (const auto& line : lines) joined += (joined.empty() ? "" : "; ") + line;
  spdlog::info("oneDNN plan: {} convolution(s) as Winograd; {}", plan->winograd_layers(), joined);
}

std::string ComputeConfig::describe() const {
  std::string s = precision_name(precision);
  if (precision == Precision::kInt8) {
    s += " (" + Int8AlexNet::engine() + ", " + (int8_activation_max() == 255 ? "8" : "7") + "-bit activations)";
  } else if (fused) {
    s += " weights, " + FusedAlexNet::backend(bf16_winograd);
  } else if (precision != Precision::kFp32) {
    s += low_precision_weights ? " weights" : " autocast";
  }
  s += channels_last ? ", channels-last" : ", NCHW";
  if (plan) s += *plan == ConvAlgorithm::kWinograd ? ", oneDNN plan (Winograd)" : ", oneDNN plan (direct)";
  if (plan_classifier) s += plan ? " with its classifier" : ", oneDNN plan (the classifier)";
  return s;
}

ComputeConfig inference_config(const torch::Device& device, Precision precision, bool channels_last) {
  TORCH_CHECK(precision != Precision::kAuto, "inference_config: resolve the precision first");
  ComputeConfig cfg;
  cfg.device = device;
  cfg.precision = precision;
  cfg.channels_last = channels_last;
  // Measured on CPU (BENCHMARKS.md): bf16 weights beat autocast, which recasts
  // the 61M fp32 weights on every pass. The logits come back in that dtype.
  cfg.low_precision_weights = precision != Precision::kFp32 && precision != Precision::kInt8;
  cfg.fused = device.is_cpu() && precision == Precision::kBf16 && FusedAlexNet::available();
  return cfg;
}

void convert_smallest_first(torch::nn::Module& model, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  auto params = model.parameters();
  std::stable_sort(params.begin(), params.end(),
                   [](const torch::Tensor& a, const torch::Tensor& b) { return a.numel() < b.numel(); });
  for (auto& t : params) t.set_data(t.to(dtype));
  model.to(dtype);  // the buffers, if any (the parameters are converted already)
}

void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& t : model.parameters())
    if (t.dim() == 4) t.set_data(t.contiguous(torch::MemoryFormat::ChannelsLast));
}

void prepare_for_inference(AlexNet& model, ComputeConfig& cfg) {
  model->eval();
  cfg.input_as_is = false;
  if (cfg.precision == Precision::kInt8) {
    TORCH_CHECK(cfg.int8_scales, "--precision int8: no calibration scales (internal: setup_int8 not called)");
    model->to(torch::kCPU);
    model->set_inference_plan(nullptr);
    model->set_inference_classifier(nullptr);
    try {
      model->set_engine(std::make_shared<Int8AlexNet>(model, *cfg.int8_scales, int8_activation_max()));
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, "--precision int8: ", e.what());
    }
    cfg.input_as_is = true;  // quantized straight from the images, in their layout
    return;
  }
  model->set_engine(nullptr);
  if (cfg.low_precision_weights && cfg.device.is_cpu()) {
    convert_smallest_first(*model, precision_dtype(cfg.precision));
  } else if (cfg.low_precision_weights) {
    model->to(cfg.device, precision_dtype(cfg.precision));
  } else {
    model->to(cfg.device);
  }
  if (cfg.channels_last) to_channels_last(*model);
  if (cfg.fused) {
    try {
      model->set_engine(std::make_shared<FusedAlexNet>(model, cfg.bf16_winograd));
    } catch (const std::invalid_argument& e) {
      spdlog::warn("{}: layer by layer instead", e.what());
      cfg.fused = false;
    }
  }
  attach_inference_plan(model, cfg);
  // The bf16 engine rounds the images to bf16 channels-last itself (bf16_channels_last), and
  // the fp32 plan's first convolution reads NCHW as fast as channels-last: converting them
  // here would be a second pass over the batch (LibTorch's to channels-last: 17-20 ms per
  // batch of 64 at 224 px on the Zen 4 EPYC).
  cfg.input_as_is = cfg.device.is_cpu() && (model->engine() || (model->inference_plan() && !cfg.low_precision_weights));
}

void attach_inference_plan(AlexNet& model, ComputeConfig& cfg) {
  model->set_inference_plan(nullptr);
  model->set_inference_classifier(nullptr);
  try {
    if (cfg.plan) model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, *cfg.plan));
    if (cfg.plan_classifier) model->set_inference_classifier(std::make_shared<OneDnnClassifier>(model->classifier));
  } catch (const std::invalid_argument& e) {
    if (cfg.plan_required) throw;
    spdlog::warn("oneDNN plan: off ({})", e.what());
    model->set_inference_plan(nullptr);
    cfg.plan.reset();
    cfg.plan_classifier = false;
  }
}

torch::Tensor prepare_input(const torch::Tensor& images, const ComputeConfig& cfg, bool non_blocking) {
  if (cfg.input_as_is && images.device() == cfg.device && images.scalar_type() == torch::kFloat32) return images;
  const auto dtype = cfg.low_precision_weights ? precision_dtype(cfg.precision) : torch::kFloat32;
  const auto format = cfg.channels_last ? torch::MemoryFormat::ChannelsLast
                                        : torch::MemoryFormat::Contiguous;
  if (images.device() != cfg.device) {
    // Copy first (from pinned memory this overlaps), then convert on the device.
    return images.to(cfg.device, non_blocking).to(dtype, false, false, format);
  }
  return images.to(dtype, false, false, format);
}

ComputeConfig resolve_compute(const ComputeRequest& request, const torch::Device& device,
                              Workload workload) {
  const Precision precision = resolve_precision(request.precision, device, workload);
  configure_cuda_math(device, precision);
  ComputeConfig cfg =
      inference_config(device, precision, resolve_channels_last(request.channels_last, device, precision));
  cfg.precision_auto = request.precision == Precision::kAuto;
  if (workload == Workload::kTraining) {
    cfg.low_precision_weights = false;  // fp32 master weights, autocast
  } else {
    choose_plan(cfg, request.plan);
  }
  return cfg;
}

}  // namespace alexnet::runtime

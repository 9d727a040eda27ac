#include "app/precision.h"
#include "model/torch_compat.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>

#include <dlfcn.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace alexnet::app {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp16: return "fp16";
    case Precision::kAuto: return "auto";
  }
  return "?";
}

std::optional<Precision> parse_precision(const std::string& name) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16, Precision::kAuto})
    if (name == precision_name(p)) return p;
  return std::nullopt;
}

torch::ScalarType precision_dtype(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return torch::kFloat32;
    case Precision::kBf16: return torch::kBFloat16;
    case Precision::kFp16: return torch::kFloat16;
    case Precision::kAuto: break;
  }
  TORCH_CHECK(false, "precision 'auto' must be resolved before use");
}

const std::set<std::string>& cpu_flags() {
  static const std::set<std::string> flags = [] {
    std::set<std::string> f;
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string flag;
      while (words >> flag) f.insert(flag);
      break;  // every core reports the same flags
    }
    return f;
  }();
  return flags;
}

const CpuBf16Support& cpu_bf16_support() {
  static const CpuBf16Support support = [] {
    CpuBf16Support s;
    s.avx512_bf16 = cpu_flags().count("avx512_bf16") > 0;
    s.amx_bf16 = cpu_flags().count("amx_bf16") > 0;
    return s;
  }();
  return support;
}

int cuda_compute_capability(const torch::Device& device) {
  if (!device.is_cuda()) return 0;
  // The CUDA runtime is loaded with a CUDA LibTorch; looked up at run time so
  // that a CPU-only build needs no CUDA headers.
  using GetAttribute = int (*)(int*, int, int);
  const auto get = reinterpret_cast<GetAttribute>(dlsym(RTLD_DEFAULT, "cudaDeviceGetAttribute"));
  if (get == nullptr) return 0;
  constexpr int kMajor = 75, kMinor = 76;  // cudaDevAttrComputeCapabilityMajor / Minor
  const int index = device.has_index() ? device.index() : 0;
  int major = 0, minor = 0;
  if (get(&major, kMajor, index) != 0 || get(&minor, kMinor, index) != 0) return 0;
  return major * 10 + minor;
}

Precision resolve_precision(Precision requested, const torch::Device& device, Workload workload) {
  const bool training = workload == Workload::kTraining;
  Precision chosen = requested;
  std::string why = "as requested";
  if (device.is_cuda()) {
    const int cc = cuda_compute_capability(device);
    const std::string gpu = cc > 0 ? "compute capability " + std::to_string(cc / 10) + "." +
                                         std::to_string(cc % 10)
                                   : "compute capability unknown";
    if (requested == Precision::kAuto) {
      chosen = cc >= 80 ? Precision::kBf16 : cc >= 70 ? Precision::kFp16 : Precision::kFp32;
      if (cc == 0) chosen = Precision::kFp16;  // every GPU LibTorch still supports runs fp16
      why = "auto: " + gpu;
    } else if (requested == Precision::kBf16 && cc > 0 && cc < 80) {
      spdlog::warn("precision bf16 on a GPU of {} (before 8.0): emulated, slower than fp16", gpu);
    }
    if (chosen == Precision::kFp16 && training) why += "; dynamic loss scaling";
  } else {
    const CpuBf16Support& cpu = cpu_bf16_support();
    TORCH_CHECK(requested != Precision::kFp16,
                "--precision fp16 needs CUDA: LibTorch has no fp16 convolutions on the CPU "
                "(use fp32, or bf16 on a CPU with AVX512-BF16/AMX)");
    if (requested == Precision::kAuto) {
      chosen = cpu.amx_bf16 ? Precision::kBf16 : Precision::kFp32;
      why = cpu.amx_bf16 ? "auto: CPU with AMX-BF16"
            : cpu.avx512_bf16
                ? "auto: CPU with AVX512-BF16 but no AMX, where bf16 is not faster than fp32"
                : "auto: CPU without bf16 instructions";
    } else if (requested == Precision::kBf16 && !cpu.any()) {
      spdlog::warn("precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16 "
                   "(bf16 would be emulated); using fp32");
      chosen = Precision::kFp32;
      why = "bf16 unsupported by this CPU";
    } else if (requested == Precision::kBf16 && !cpu.amx_bf16) {
      why += "; AVX512-BF16 without AMX: usually slower than fp32";
    }
  }
  if (chosen != Precision::kFp32 && training) why += "; fp32 master weights";
  spdlog::info("precision {} ({})", precision_name(chosen), why);
  return chosen;
}

void configure_cuda_math(const torch::Device& device, Precision precision) {
  if (!device.is_cuda()) return;
  auto& context = at::globalContext();
  context.setBenchmarkCuDNN(true);
  const bool tf32 = precision != Precision::kFp32;
  context.setAllowTF32CuDNN(tf32);
  context.setAllowTF32CuBLAS(tf32);
}

std::optional<ChannelsLast> parse_channels_last(const std::string& value) {
  if (value == "auto") return ChannelsLast::kAuto;
  if (value == "on" || value == "true" || value == "1" || value == "yes") return ChannelsLast::kOn;
  if (value == "off" || value == "false" || value == "0" || value == "no") return ChannelsLast::kOff;
  return std::nullopt;
}

bool resolve_channels_last(ChannelsLast requested, const torch::Device& device, Precision precision) {
  if (requested != ChannelsLast::kAuto) return requested == ChannelsLast::kOn;
  return device.is_cpu() || precision != Precision::kFp32;
}

std::optional<PlanChoice> parse_plan_choice(const std::string& value) {
  if (value == "auto") return PlanChoice::kAuto;
  if (value == "winograd") return PlanChoice::kWinograd;
  if (value == "direct") return PlanChoice::kDirect;
  if (value == "off" || value == "false" || value == "0" || value == "no") return PlanChoice::kOff;
  return std::nullopt;
}

namespace {

std::optional<ConvAlgorithm> resolve_plan(PlanChoice requested, const torch::Device& device,
                                          Precision precision) {
  if (requested == PlanChoice::kOff) return std::nullopt;
  const bool possible = OneDnnFeatures::compiled() && device.is_cpu() && precision == Precision::kFp32;
  if (requested == PlanChoice::kAuto) {
    if (possible && OneDnnFeatures::winograd_available()) {
      spdlog::info("oneDNN plan: Winograd (auto: fp32 inference on the CPU)");
      return ConvAlgorithm::kWinograd;
    }
    // Without Winograd the plan's direct kernels lose to LibTorch's: 3.5 against 86 img/s at
    // batch 64 on an AVX2 EPYC (BENCHMARKS.md, "Two LibTorch flavours").
    spdlog::info("oneDNN plan: off (auto: {})",
                 !OneDnnFeatures::compiled() ? "this build has no oneDNN plan"
                 : !device.is_cpu()          ? "the plan runs on the CPU only"
                 : precision != Precision::kFp32
                     ? "the plan runs fp32 only"
                     : "oneDNN has no Winograd convolution for this CPU, and without it the plan "
                       "is slower than LibTorch's layers");
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
    throw std::invalid_argument(flag + ": oneDNN has no Winograd convolution for this CPU "
                                "(it needs AVX-512); --onednn-plan direct runs the plan without it");
  return requested == PlanChoice::kWinograd ? ConvAlgorithm::kWinograd : ConvAlgorithm::kDirect;
}

}  // namespace

void choose_plan(ComputeConfig& cfg, PlanChoice requested) {
  cfg.plan = resolve_plan(requested, cfg.device, cfg.precision);
  cfg.plan_required = requested != PlanChoice::kAuto;
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
  if (precision != Precision::kFp32) s += low_precision_weights ? " weights" : " autocast";
  s += channels_last ? ", channels-last" : ", NCHW";
  if (plan) s += *plan == ConvAlgorithm::kWinograd ? ", oneDNN plan (Winograd)" : ", oneDNN plan (direct)";
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
  cfg.low_precision_weights = precision != Precision::kFp32;
  return cfg;
}

void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& t : model.parameters())
    if (t.dim() == 4) t.set_data(t.contiguous(torch::MemoryFormat::ChannelsLast));
}

void prepare_for_inference(AlexNet& model, ComputeConfig& cfg) {
  model->eval();
  if (cfg.low_precision_weights) {
    model->to(cfg.device, precision_dtype(cfg.precision));
  } else {
    model->to(cfg.device);
  }
  if (cfg.channels_last) to_channels_last(*model);
  attach_inference_plan(model, cfg);
}

void attach_inference_plan(AlexNet& model, ComputeConfig& cfg) {
  model->set_inference_plan(nullptr);
  if (!cfg.plan) return;
  try {
    model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, *cfg.plan));
  } catch (const std::invalid_argument& e) {
    if (cfg.plan_required) throw;
    spdlog::warn("oneDNN plan: off ({})", e.what());
    cfg.plan.reset();
  }
}

torch::Tensor prepare_input(const torch::Tensor& images, const ComputeConfig& cfg, bool non_blocking) {
  const auto dtype = cfg.low_precision_weights ? precision_dtype(cfg.precision) : torch::kFloat32;
  const auto format = cfg.channels_last ? torch::MemoryFormat::ChannelsLast
                                        : torch::MemoryFormat::Contiguous;
  if (images.device() != cfg.device) {
    // Copy first (from pinned memory this overlaps), then convert on the device.
    return images.to(cfg.device, non_blocking).to(dtype, false, false, format);
  }
  return images.to(dtype, false, false, format);
}

AutocastGuard::AutocastGuard(const torch::Device& device, Precision precision) {
  if (precision == Precision::kFp32) return;
  TORCH_CHECK(device.is_cpu() || device.is_cuda(), "autocast: unsupported device ", device.str());
  const auto dtype = precision_dtype(precision);
  active_ = true;
  cuda_ = device.is_cuda();
  was_enabled_ = compat::autocast_enabled(cuda_);
  previous_dtype_ = compat::autocast_dtype(cuda_);
  compat::set_autocast(cuda_, true, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(cuda_, was_enabled_, previous_dtype_);
}

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options), scale_(options.enabled() ? options.init_scale() : 1.0) {
  TORCH_CHECK(scale_ > 0 && options.growth_factor() > 1 && options.backoff_factor() > 0 &&
                  options.backoff_factor() < 1 && options.growth_interval() > 0,
              "LossScaler: bad options");
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const {
  return options_.enabled() ? loss * scale_ : loss;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& params) {
  if (!options_.enabled()) return true;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> finite;  // one 0-dim bool per gradient, reduced once (one sync)
  for (const auto& p : params) {
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    // Unscaled in fp32 like GradScaler (fp32 master weights have fp32 gradients).
    g.mul_(1.0 / scale_);
    finite.push_back(torch::isfinite(g).all());
  }
  if (finite.empty()) return true;
  return torch::stack(finite).all().item<bool>();
}

void LossScaler::adjust(bool finite) {
  if (!options_.enabled()) return;
  if (!finite) {
    scale_ *= options_.backoff_factor();
    growth_tracker_ = 0;
    ++skipped_;
    return;
  }
  if (++growth_tracker_ == options_.growth_interval()) {
    scale_ *= options_.growth_factor();
    growth_tracker_ = 0;
  }
}

}  // namespace alexnet::app

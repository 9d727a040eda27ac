#include "app/runtime/precision.h"

#include "app/runtime/cpu.h"
#include "app/runtime/machine.h"
#include "model/torch_compat.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>

#include <string>

namespace alexnet::runtime {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp16: return "fp16";
    case Precision::kInt8: return "int8";
    case Precision::kAuto: return "auto";
  }
  return "?";
}

std::optional<Precision> parse_precision(const std::string& name) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16, Precision::kInt8, Precision::kAuto})
    if (name == precision_name(p)) return p;
  return std::nullopt;
}

torch::ScalarType precision_dtype(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
    case Precision::kInt8: return torch::kFloat32;
    case Precision::kBf16: return torch::kBFloat16;
    case Precision::kFp16: return torch::kFloat16;
    case Precision::kAuto: break;
  }
  TORCH_CHECK(false, "precision 'auto' must be resolved before use");
}

Precision auto_cpu_precision(const CpuIsa& cpu) {
  return cpu.amx_bf16 || cpu.avx512_bf16_fast ? Precision::kBf16 : Precision::kFp32;
}

const char* auto_cpu_reason(const CpuIsa& cpu) {
  return cpu.amx_bf16           ? "CPU with AMX-BF16"
         : cpu.avx512_bf16_fast ? "AMD CPU with AVX512-BF16, where bf16 runs 1.5-2x faster than fp32"
         : cpu.avx512_bf16      ? "CPU with AVX512-BF16 but no AMX, where bf16 is not faster than fp32"
                                : "CPU without bf16 instructions";
}

std::string auto_precision_summary() {
  // Training and inference resolve auto by the same rule on the CPU (resolve_precision).
  const Precision p = auto_cpu_precision(cpu_isa());
  return std::string("auto: training ") + precision_name(p) + ", inference " + precision_name(p) + " (" +
         auto_cpu_reason(cpu_isa()) + "); int8 activations " + (int8_activation_max() == 255 ? "8" : "7") +
         "-bit";
}

Precision resolve_precision(Precision requested, const torch::Device& device, Workload workload) {
  const bool training = workload == Workload::kTraining;
  Precision chosen = requested;
  std::string why = "as requested";
  if (requested == Precision::kInt8) {
    TORCH_CHECK(!training, "--precision int8 is for inference (predict, eval, serve, bench --mode infer); "
                           "training runs fp32, bf16 or fp16");
    TORCH_CHECK(device.is_cpu(), "--precision int8 runs on the CPU (LibTorch's quantized kernels), not ",
                device.str());
    const int64_t qmax = int8_activation_max();
    spdlog::info("precision int8 ({}-bit activations: {}{})", qmax == 255 ? 8 : 7,
                 qmax == 255 ? "the CPU has VNNI" : "no VNNI, whose absence makes 8-bit activations overflow",
                 capped_note());
    return chosen;
  }
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
    const CpuIsa& cpu = cpu_isa();
    TORCH_CHECK(requested != Precision::kFp16,
                "--precision fp16 needs CUDA: LibTorch has no fp16 convolutions on the CPU "
                "(use fp32, or bf16 on a CPU with AVX512-BF16/AMX)");
    if (requested == Precision::kAuto) {
      chosen = auto_cpu_precision(cpu);
      why = std::string("auto: ") + auto_cpu_reason(cpu) + capped_note();
    } else if (requested == Precision::kBf16 && !cpu.any_bf16()) {
      spdlog::warn("precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16{} "
                   "(bf16 would be emulated); using fp32", capped_note());
      chosen = Precision::kFp32;
      why = "bf16 unsupported by this CPU" + capped_note();
    } else if (requested == Precision::kBf16 && !cpu.amx_bf16 && !cpu.avx512_bf16_fast) {
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

const char* channels_last_name(ChannelsLast value) {
  return value == ChannelsLast::kOn ? "on" : value == ChannelsLast::kOff ? "off" : "auto";
}

bool resolve_channels_last(ChannelsLast requested, const torch::Device& device, Precision precision) {
  if (requested != ChannelsLast::kAuto) return requested == ChannelsLast::kOn;
  return device.is_cpu() || precision != Precision::kFp32;
}

int64_t int8_activation_max() {
  return cpu_isa().vnni() ? 255 : 127;
}

AutocastGuard::AutocastGuard(const torch::Device& device, Precision precision) {
  if (precision == Precision::kFp32 || precision == Precision::kInt8) return;
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

}  // namespace alexnet::runtime

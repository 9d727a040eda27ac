// Numeric precision and memory layout: the --precision and --channels-last
// choices, what the CPU or GPU supports (the per-device defaults, "auto"), the
// CUDA math settings that go with a precision, and autocast.
#pragma once

#include <torch/torch.h>

#include "app/runtime/cpu.h"

#include <optional>
#include <string>

namespace alexnet::runtime {

/// The type a model computes in. kInt8 is CPU inference only (model/int8.h: the
/// inputs and logits stay float32). kAuto is resolved per device by
/// resolve_precision() and never reaches the computation.
enum class Precision { kFp32, kBf16, kFp16, kInt8, kAuto };

/// "fp32", "bf16", "fp16", "int8", "auto".
const char* precision_name(Precision precision);
/// Parses precision_name()'s names; nullopt for anything else.
std::optional<Precision> parse_precision(const std::string& name);
/// The dtype of the weights and inputs: float32 (also for int8, whose model takes
/// float32 and quantizes itself), bfloat16 or float16 (kAuto is an error).
torch::ScalarType precision_dtype(Precision precision);

/// What a precision is for: inference may hold its weights in the low precision;
/// training keeps fp32 master weights and autocasts.
enum class Workload { kInference, kTraining };

/// What auto chooses on a CPU with these instruction sets, for training and inference alike: bf16
/// with AMX-BF16 or AMD's AVX512-BF16 (Zen 4: 1.5-2x fp32's speed), else fp32 (Intel's
/// AVX512-BF16 without AMX ran AlexNet's convolutions at 0.6x fp32's speed; BENCHMARKS.md).
/// auto_cpu_reason says why, for the log.
Precision auto_cpu_precision(const CpuIsa& cpu);
const char* auto_cpu_reason(const CpuIsa& cpu);
/// For --version and the logs, from cpu_isa(): "auto: training bf16, inference bf16 (CPU with
/// AMX-BF16); int8 activations 8-bit".
std::string auto_precision_summary();

/// Resolves --precision for a device and logs the choice with its reason.
///   auto, CPU: auto_cpu_precision(cpu_isa()), the cap in the log where it changed the choice;
///   auto, CUDA: bf16 from compute capability 8.0, fp16 from 7.0, else fp32;
///   bf16 on a CPU without bf16 instructions: a warning, then fp32;
///   fp16 on a CPU: an error (LibTorch has no fp16 convolutions for the CPU);
///   int8: CPU inference only (an error for training or on CUDA).
Precision resolve_precision(Precision requested, const torch::Device& device, Workload workload);

/// CUDA math settings for a precision: cuDNN's autotuner (benchmark mode: the
/// shapes repeat), and for fp32 no TF32 (TF32 keeps 10 mantissa bits: fp32 then
/// means fp32, as on the CPU). Does nothing on the CPU.
void configure_cuda_math(const torch::Device& device, Precision precision);

/// --channels-last: "auto" (the default), "on" (or "true", "1", bare flag), "off" ("false", "0").
enum class ChannelsLast { kAuto, kOn, kOff };
std::optional<ChannelsLast> parse_channels_last(const std::string& value);
/// "auto", "on", "off".
const char* channels_last_name(ChannelsLast value);
/// auto: channels-last on the CPU (oneDNN's convolutions and pooling skip the NCHW
/// reorders) and for fp16/bf16 on CUDA (tensor cores want NHWC); NCHW for fp32 on CUDA.
bool resolve_channels_last(ChannelsLast requested, const torch::Device& device, Precision precision);

/// Autocast for the lifetime of the guard on one device type (CPU or CUDA) to
/// bf16 or fp16; does nothing for fp32 and int8. Restores the previous state on exit (also
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

/// The largest int8 activation level for this CPU (model/int8.h): 255 with VNNI (cpu_isa().vnni:
/// AVX512-VNNI, AVX-VNNI, AMX-INT8), else 127 (VPMADDUBSW's 16-bit sums could overflow).
int64_t int8_activation_max();

}  // namespace alexnet::runtime

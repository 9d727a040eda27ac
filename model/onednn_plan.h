// AlexNet's convolutional features as one oneDNN pipeline, for fp32 or bf16
// inference on the CPU (bf16: the bf16 engine's back-end where LibTorch lacks
// fused operators, model/fused.h).
//
// PyTorch 1.13 runs each layer on its own: every convolution takes and returns a
// plain (NCHW or NHWC) tensor, ReLU is a separate pass over memory, and 3x3
// convolutions use direct kernels. The plan calls the same oneDNN library that
// LibTorch links, but keeps oneDNN's blocked layouts from layer to layer, fuses
// each ReLU into its convolution, and runs the 3x3 stride-1 convolutions (conv3-5,
// half of AlexNet's multiply-adds) with Winograd F(4x4, 3x3) where oneDNN has it
// (AVX-512 CPUs), which needs 1.5x fewer cycles for those layers on this project's
// machine. Where oneDNN has no Winograd (AVX2 CPUs), the plan runs its own in float32:
// F(4x4, 3x3) for conv3-5 and F(2x2, 5x5) for conv2 (model/winograd.h). Winograd's
// transforms round differently from a direct convolution: results agree with PyTorch's to
// about 1e-5 of the largest activation, not bit for bit (tests/onednn_plan_test.cpp;
// BENCHMARKS.md). In bf16, which oneDNN's Winograd does not take, the plan runs the 3x3
// layers as its own Winograd F(2x2, 3x3) (model/winograd.h).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// How the 3x3 stride-1 convolutions are computed.
enum class ConvAlgorithm { kDirect, kWinograd };

class OneDnnFeatures {
 public:
  /// Whether this build has the plan (oneDNN headers found at build time).
  static bool compiled();
  /// The version of the oneDNN library the plan calls ("2.6.3"), or "" without the plan. A
  /// LibTorch with its own oneDNN inside (a pip PyTorch's) runs another version beside it.
  static std::string library_version();
  /// Whether a float32 plan asked for ConvAlgorithm::kWinograd runs Winograd on this CPU:
  /// oneDNN's (AVX-512) or, without it, the plan's own (AVX2 and FMA, model/winograd.h).
  /// Without either, kWinograd runs every layer with direct kernels.
  static bool winograd_available();
  /// Whether oneDNN has a float32 Winograd convolution for this CPU (AVX-512), honouring
  /// ONEDNN_MAX_CPU_ISA.
  static bool onednn_winograd_available();
  /// Whether oneDNN runs bf16 convolutions on this CPU with its own kernels (not
  /// the reference ones), honouring ONEDNN_MAX_CPU_ISA.
  static bool bf16_available();
  /// Whether a bf16 plan asked for ConvAlgorithm::kWinograd runs the 3x3 layers as its
  /// own bf16 Winograd (model/winograd.h) on this CPU: where oneDNN's bf16 kernels
  /// are AVX512-BF16's (not AMX's), honouring ONEDNN_MAX_CPU_ISA.
  static bool bf16_winograd_pays();

  /// The plan for `features` (a Sequential of Conv2d, ReLU and MaxPool2d, as in
  /// torchvision's AlexNet) or throws std::invalid_argument naming the layer it
  /// cannot run (LocalResponseNorm, dilation, padding modes, ceil_mode, ...).
  /// Keeps references to the layers' parameters and packs them when it first
  /// sees an input shape; a parameter changed since (in place or replaced) is
  /// noticed at the next forward(), which packs the new values.
  /// dtype: the parameters' and activations' type, float32 or bf16 (where oneDNN has
  /// no bf16 Winograd, kWinograd runs the 3x3 stride-1 layers whose channels are
  /// multiples of 16, reading at least 64, as the plan's own, model/winograd.h, on AVX-512 CPUs; others
  /// direct). channels_last_output: forward() returns channels-last.
  OneDnnFeatures(torch::nn::Sequential features, ConvAlgorithm algorithm, torch::ScalarType dtype = torch::kFloat,
                 bool channels_last_output = false);
  ~OneDnnFeatures();

  /// x: (N, C, H, W) of the plan's dtype on the CPU, NCHW or channels-last -> the
  /// features (N, 256, h, w), contiguous NCHW (or channels-last, as constructed).
  /// Same shapes as features->forward(x).
  torch::Tensor forward(const torch::Tensor& x);

  /// While set, each forward() waits for every step and appends (layer, seconds)
  /// per layer, a reorder counted with the layer it feeds; nullptr: off.
  void set_profile(std::vector<std::pair<std::string, double>>* sink);

  /// One line per layer of the last shape run: the kernel oneDNN chose.
  std::vector<std::string> describe() const;
  /// How many convolutions run as Winograd (for the log).
  int winograd_layers() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet

// int8 inference on the CPU: post-training static quantization of AlexNet.
//
// Each convolution and the first two Linear layers run on 8-bit integers: through
// oneDNN's primitives called directly where the build has oneDNN's headers (Debian's
// LibTorch 1.13, or a pip LibTorch with the system's oneDNN 2.x beside it; model/int8_onednn.h,
// LibTorch's kernels' bytes up to a rare step), else through LibTorch's quantized kernels
// (fbgemm, "x86", in a pip LibTorch), the ones
// PyTorch's own int8 models run:
//   weights     per output channel, symmetric: w_q = round(w / s_c), s_c = max|w_c| / 127;
//   activations per tensor, affine: a_q = clamp(round(a / s) + z, 0, qmax), with s and z
//               from calibration (Int8Calibrator): the input by its observed range, every
//               ReLU output (z = 0) by the clipping point that minimises the squared error
//               of quantizing the observed values (as PyTorch's HistogramObserver does);
//   qmax        255 on CPUs with VNNI; 127 without: their u8 x s8 instruction
//               (VPMADDUBSW) adds pairs of products into 16 bits, which 8-bit activations
//               can overflow (PyTorch's reduce_range);
//   the last Linear layer has int8 weights too and reads classifier.4's quantized output,
//   but its sums come out dequantized, s_x * s_w * acc + b, not quantized again, so the
//   logits keep float32's resolution (its float32 weights made 15% of the int8 pass at
//   batch 1: BENCHMARKS.md).
// features.0 (3 channels, 11x11, stride 4) reads the image in 4x4 tiles, as 48 channels with a
// 3x3 kernel at stride 1 (model/quantize.h, SpaceToDepth): the same int32 sums, which the
// kernels reduce over 48 channels instead of 3 (1.2x faster for that layer at batch 64 on
// AVX-512 VNNI, BENCHMARKS.md).
// Max-pooling runs on the quantized values (it commutes with a monotone quantization).
// Where the last feature map is 1x1 (inputs under 95 px, such as the main job's 64 px),
// the average pooling copies each value into all 36 bins, so classifier.1 runs on the
// 256 values with its weights summed over the 36 positions: 36x less work, the same sum.
//
// Caveat: int8 results differ from float32 (tests/int8_test.py measures the top-1
// agreement); calibration decides how much.
#pragma once

#include "model/alexnet.h"
#include "model/inference_engine.h"

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// The observed range of one activation, before it is turned into a scale for a qmax.
struct ActivationRange {
  double min = 0.0;  // 0 for ReLU outputs
  double max = 0.0;  // the clipping point
};

/// What calibration found: the input's range and each quantized layer's output range
/// (after its ReLU), with where they came from. Saved as JSON beside the weights
/// (int8_scales_json / parse_int8_scales), so calibration runs once.
struct Int8Scales {
  ActivationRange input;
  /// "features.0", "features.3", ..., "classifier.1", "classifier.4" in forward order.
  std::vector<std::pair<std::string, ActivationRange>> layers;
  std::string data;            // the calibration data spec
  int64_t images = 0;          // calibration images
  std::string weights_sha256;  // of the weights file calibrated (empty: not from a file)
  /// Top-1 agreement with float32 that calibration measured on images it did not
  /// calibrate on (engine::calibrate_int8), which --precision auto reads.
  struct Agreement {
    int64_t images = 0;   // 0: not measured
    double int8 = 0.0;    // fraction of the images whose int8 top-1 class is fp32's
    double bf16 = -1.0;   // the same for bf16 (< 0: not measured: no bf16 engine here)
  } agreement;
};

/// Runs the float32 model layer by layer on calibration batches and records every
/// activation the int8 network quantizes.
class Int8Calibrator {
 public:
  /// model: torchvision's architecture (Arch::kTorchvision), weights final.
  explicit Int8Calibrator(AlexNet model);
  ~Int8Calibrator();
  /// x: (N, C, H, W) float32 on the CPU, as the model takes it.
  void observe(const torch::Tensor& x);
  int64_t images() const;
  /// The ranges: the input's min and max; each ReLU output clipped where the squared
  /// error of quantizing it with `activation_max` levels is least.
  Int8Scales finish(int64_t activation_max) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// AlexNet's inference in int8, built from a float32 model and its scales.
class Int8AlexNet final : public InferenceEngine {
 public:
  /// Whether this LibTorch has quantized CPU kernels (fbgemm or oneDNN).
  static bool available();
  /// "x86 (fbgemm)", "onednn", ...: the kernels used; selects them the first time.
  static std::string engine();

  /// Quantizes the weights and packs them for the kernels. activation_max: 255 or
  /// 127 (see above). Throws std::invalid_argument for a network it cannot run (the
  /// 2012 architecture's LocalResponseNorm) or scales that do not name its layers.
  Int8AlexNet(AlexNet& model, const Int8Scales& scales, int64_t activation_max);
  ~Int8AlexNet() override;

  /// x: (N, C, H, W) float32 on the CPU, NCHW or channels-last -> logits (N, classes) float32.
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t activation_max() const;
  /// Stages: "quantize", "features.0", ..., "avgpool", "classifier.6".
  void set_profile(std::vector<std::pair<std::string, double>>* sink) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The rate of the int8 matrix product Int8AlexNet's Linear layers run (oneDNN's where the
/// build has it, else LibTorch's quantized::linear; n x n by n x n), in GOP/s (two per
/// multiply-add): the int8 peak of this machine.
double int8_matmul_gops(int64_t n, int64_t iters);
/// The rate of Int8AlexNet's int8 3x3 convolution + ReLU (256 -> 256 channels at 28x28, batch
/// 32; oneDNN's or LibTorch's quantized::conv2d_relu as above: AMX where oneDNN takes it,
/// else VNNI), in GOP/s.
double int8_conv_gops(int64_t iters);

/// The scales as a JSON document (format "alexnet-int8-scales", version 1).
std::string int8_scales_json(const Int8Scales& scales);
/// Reads int8_scales_json's document; throws std::invalid_argument naming `path` on anything else.
Int8Scales parse_int8_scales(const std::string& text, const std::string& path);

}  // namespace alexnet

// AlexNet's bf16 inference on the CPU as a fixed chain of LibTorch's fused oneDNN
// operators, the ones torch.compile's CPU backend emits for frozen models:
//   convolution + bias + ReLU in one operator (mkldnn::_convolution_pointwise), its
//     weights reordered once into the blocked layout oneDNN picks for each input
//     shape (cached per (batch, height, width), shapes of one layout sharing a pack;
//     a convolution given weights packed for another layout reorders them on every
//     call, 10-70x slower);
//   max-pooling on the channels-last activations the convolutions produce;
//   the three Linear layers (mkldnn::_linear_pointwise, ReLU fused) on weights
//     packed once; classifier.1's columns permuted once to read the channels-last
//     features without a transpose (and summed over the 36 bins where the last
//     feature map is 1x1, as the int8 engine does).
// Computed as LibTorch's own bf16 layers compute (bf16 products, fp32 sums, bf16
// activations); the fused ReLU acts before the rounding to bf16, which gives the
// same value. These operators exist from LibTorch 2.0. Debian's 1.13 lacks them:
// there the features run as the project's oneDNN plan in bf16 (model/onednn_plan.h,
// on the oneDNN 1.13 links) and the classifier as oneDNN inner products on weights
// packed once (model/onednn_linear.h).
#pragma once

#include "model/alexnet.h"
#include "model/inference_engine.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace alexnet {

/// Max-pooling (no padding) of a channels-last bf16 ReLU output, whose values are
/// all >= 0 or -0: what the engine runs between its convolutions (exposed for tests).
torch::Tensor max_pool_relu_bf16(const torch::Tensor& x, int64_t kernel, int64_t stride);

class FusedAlexNet final : public InferenceEngine {
 public:
  /// Whether this LibTorch has the fused operators, or this build the oneDNN plan,
  /// and oneDNN runs bf16 on this CPU.
  static bool available();
  /// Whether bf16 Winograd F(2x2, 3x3) (the plan's, model/winograd.h) can run here:
  /// the plan built, oneDNN's own bf16 kernels, AVX-512.
  static bool winograd_possible();
  /// Whether the 3x3 stride-1 convolutions run as bf16 Winograd for this request: `winograd`
  /// as given, or unset: where it pays (OneDnnFeatures::bf16_winograd_pays(), AVX512-BF16
  /// without AMX).
  static bool winograd(std::optional<bool> winograd);
  /// What computes the layers for this request, for logs: "fused oneDNN operators",
  /// "oneDNN plan with conv3-5 as Winograd F(2x2,3x3), ...".
  static std::string backend(std::optional<bool> winograd);

  /// Converts the weights to bf16 and packs the classifier's. Throws
  /// std::invalid_argument for a network it cannot run (the 2012 architecture's
  /// LocalResponseNorm and grouped convolutions), or for winograd = true where
  /// winograd_possible() is false. winograd: see winograd().
  explicit FusedAlexNet(AlexNet& model, std::optional<bool> winograd = std::nullopt);
  ~FusedAlexNet() override;

  /// x: (N, C, H, W) float32 or bf16 on the CPU, any layout -> logits (N, classes) bf16.
  torch::Tensor forward(const torch::Tensor& x) override;
  void set_profile(std::vector<std::pair<std::string, double>>* sink) override;

 private:
  // avgpool and the classifier, on the features (N, 256, h, w) channels-last.
  torch::Tensor classify(torch::Tensor x, const std::function<void(const std::string&)>& mark);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet

// A Linear layer (and the ReLU after it) as one oneDNN inner product.
//
// OneDnnLinear packs the weights once into the layout oneDNN picks: the bf16
// engine's classifier where LibTorch has no fused Linear operator (Debian's 1.13,
// model/fused.h). LibTorch 1.13's bf16 Linear hands oneDNN its plain weights on
// every call. Batch 1 reads the weights plain (a GEMV, faster there than the packed
// layout's kernels); each layout is made at the first batch that needs it, so a
// caller of one kind of batch holds one copy of the weights.
//
// OneDnnClassifier runs the fp32 plan's classifier (app/runtime/compute.h) at small
// batch sizes on the module's own weights, in place, with no copy. There the layers
// stream their weights once per image (233 MB), and LibTorch 1.13's Linear, on
// OpenBLAS, took 23-31 ms for the three at batch 1 where oneDNN's took 8.5
// (BENCHMARKS.md, "The fp32 plan's classifier at small batches").
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace alexnet {

class OneDnnLinear {
 public:
  /// weight (out, in) and bias (out,), float32 or bf16 on the CPU; relu: a ReLU
  /// fused after. The bias is copied; the weight is kept by reference (so a module's
  /// own weights are not held twice) while batch 1 reads it or until the first larger
  /// batch packs it, and must not change after construction. Throws
  /// std::invalid_argument in a build without oneDNN.
  OneDnnLinear(const torch::Tensor& weight, const torch::Tensor& bias, bool relu);

  /// In place: float32 weights of this shape, handed to each forward() as they are
  /// then (contiguous, on the CPU), in their plain (out, in) layout; nothing copied.
  OneDnnLinear(int64_t out, int64_t in, bool relu);
  ~OneDnnLinear();

  /// x: (N, in) of the weights' dtype -> (N, out), the same dtype.
  torch::Tensor forward(const torch::Tensor& x);
  /// In place: the same with these weights (out, in) and bias (out,), which accepts() must take.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
  /// In place: whether forward() can read these weights as they are (contiguous
  /// float32 on the CPU, of this layer's shape).
  bool accepts(const torch::Tensor& weight, const torch::Tensor& bias) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class OneDnnClassifier {
 public:
  /// Batch sizes up to this run here; larger ones are faster in LibTorch's Linear,
  /// whose weights are not streamed once per image (BENCHMARKS.md).
  static constexpr int64_t kMaxBatch = 4;

  /// For `classifier` (Dropout, Linear and ReLU layers, as in torchvision's
  /// AlexNet; Dropout is skipped: inference only) or throws std::invalid_argument
  /// naming the layer it cannot run, or in a build without oneDNN. Keeps
  /// references to the Linear layers and reads their parameters at each call.
  explicit OneDnnClassifier(torch::nn::Sequential classifier);
  ~OneDnnClassifier();

  /// x: (N, in) float32 on the CPU -> the logits, or an undefined tensor where
  /// LibTorch's layers should run instead: N = 0 or over kMaxBatch, or parameters that
  /// are not contiguous float32 on the CPU any more.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  struct Layer;
  std::vector<Layer> layers_;
};

}  // namespace alexnet

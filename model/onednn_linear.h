// A Linear layer (and the ReLU after it) as one oneDNN inner product on weights
// reordered once into the layout oneDNN picks: the bf16 engine's classifier where
// LibTorch has no fused Linear operator (Debian's 1.13, model/fused.h). LibTorch
// 1.13's bf16 Linear hands oneDNN its plain weights on every call.
#pragma once

#include <torch/torch.h>

#include <memory>

namespace alexnet {

class OneDnnLinear {
 public:
  /// weight (out, in) and bias (out,), float32 or bf16 on the CPU (copied); relu:
  /// a ReLU fused after. Throws std::invalid_argument in a build without oneDNN.
  OneDnnLinear(const torch::Tensor& weight, const torch::Tensor& bias, bool relu);
  ~OneDnnLinear();

  /// x: (N, in) of the weights' dtype -> (N, out), the same dtype.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet

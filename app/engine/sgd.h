// SGD with momentum, weight decay and optional Nesterov, computed exactly as
// PyTorch's torch.optim.SGD (single-tensor path, dampening 0):
//   d = grad + weight_decay * p
//   buf = d (first step) | momentum * buf + d
//   d = nesterov ? d + momentum * buf : buf
//   p -= lr * d
// Written here rather than taken from torch::optim so the momentum buffers can
// be saved and restored by parameter index on every LibTorch version, and so
// that dense float32 CPU parameters are updated in one fused pass.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace alexnet::engine {

struct SgdOptions {
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(bool, nesterov) = false;
};

class Sgd {
 public:
  Sgd(std::vector<torch::Tensor> params, SgdOptions options);

  void zero_grad();
  /// One update with learning rate lr, from the gradients in p.grad() times
  /// grad_scale (a clipping coefficient, applied first as clip_grad_norm_ does).
  void step(double lr, double grad_scale = 1.0);

  const SgdOptions& options() const { return options_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  /// Per parameter; undefined until its first step (as PyTorch's state before it).
  std::vector<torch::Tensor>& momentum_buffers() { return buffers_; }

 private:
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> buffers_;
  SgdOptions options_;
};

/// torch.nn.utils.clip_grad_norm_'s coefficient for these parameters' gradients:
/// min(1, max_norm / (total_norm + 1e-6)), total_norm the L2 norm of all of them
/// together. Pass it to Sgd::step as grad_scale. NaN when a gradient is not finite.
double clip_coefficient(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace alexnet::engine

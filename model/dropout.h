// Dropout for the classifier: what torch::nn::Dropout computes (each element
// zeroed with probability p, the others scaled by 1 / (1 - p)), with a faster
// mask on the CPU.
//
// PyTorch draws a CPU dropout mask with bernoulli_, one Mersenne-Twister number
// per element on one thread: 25 ms of every 400 ms training step of AlexNet at
// 64 px and batch 128, for 1.7 million elements. Here each element's keep/drop
// bit is a hash (SplitMix64's finaliser) of its index and a 64-bit key that is
// drawn from torch's default CPU generator once per call, so masks are as
// reproducible as PyTorch's (manual_seed, saved generator state, exact resume)
// and are computed in parallel (one hash per two elements); the backward pass
// reuses the mask, kept as bytes. The masks are not the ones bernoulli_ would
// draw for the same seed.
// CUDA tensors, other dtypes and eval mode take torch::dropout.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace alexnet {

/// Training-mode dropout of a contiguous float32 CPU tensor with an explicit key:
/// x * keep / (1 - p), keep = (32 bits of hash(key, index / 2)) >= p * 2^32.
/// Exposed for tests.
torch::Tensor hashed_dropout(const torch::Tensor& x, double p, uint64_t key);

class DropoutImpl : public torch::nn::Cloneable<DropoutImpl> {
 public:
  explicit DropoutImpl(double p = 0.5);
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  double p() const { return p_; }

 private:
  double p_;
};
TORCH_MODULE(Dropout);

}  // namespace alexnet

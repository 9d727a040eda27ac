#include "model/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>
#include <utility>

namespace alexnet {

namespace {

// SplitMix64's output function: a bijective mix of all 64 bits.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The keep bits of elements [begin, end) for (key, p): element i is kept when
// its 32 bits of hash(key, i / 2) (high half for even i, low for odd) are >= p * 2^32.
inline bool kept(uint64_t key, uint64_t threshold, int64_t i) {
  const uint64_t h = mix64(key + static_cast<uint64_t>(i >> 1) * 0x9E3779B97F4A7C15ULL);
  const uint64_t bits = (i & 1) ? (h & 0xFFFFFFFFULL) : (h >> 32);
  return bits >= threshold;
}

// Forward: out = x * keep * scale, and the keep mask (bytes) for the backward pass.
std::pair<torch::Tensor, torch::Tensor> forward_masked(const torch::Tensor& x, double p, uint64_t key) {
  const torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in, torch::MemoryFormat::Contiguous);
  torch::Tensor mask = torch::empty(in.sizes(), in.options().dtype(torch::kUInt8));
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  uint8_t* keep = mask.data_ptr<uint8_t>();
  const auto threshold = static_cast<uint64_t>(p * 4294967296.0);
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  at::parallel_for(0, in.numel(), 1 << 14, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const bool k = kept(key, threshold, i);
      keep[i] = k;
      dst[i] = k ? src[i] * scale : 0.0f;
    }
  });
  return {out, mask};
}

// Backward: grad * keep * scale.
torch::Tensor backward_masked(const torch::Tensor& grad, const torch::Tensor& mask, double p) {
  const torch::Tensor g = grad.contiguous();
  torch::Tensor out = torch::empty_like(g, torch::MemoryFormat::Contiguous);
  const float* src = g.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const uint8_t* keep = mask.data_ptr<uint8_t>();
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  at::parallel_for(0, g.numel(), 1 << 15, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dst[i] = keep[i] ? src[i] * scale : 0.0f;
  });
  return out;
}

struct HashedDropout : torch::autograd::Function<HashedDropout> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double p, int64_t key) {
    auto [out, mask] = forward_masked(x, p, static_cast<uint64_t>(key));
    ctx->saved_data["p"] = p;
    ctx->saved_data["mask"] = mask;
    return out;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const double p = ctx->saved_data["p"].toDouble();
    const torch::Tensor mask = ctx->saved_data["mask"].toTensor();
    return {backward_masked(grads[0], mask, p), torch::Tensor(), torch::Tensor()};
  }
};

uint64_t draw_key() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

}  // namespace

torch::Tensor hashed_dropout(const torch::Tensor& x, double p, uint64_t key) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32,
              "hashed_dropout: expected a float32 CPU tensor, got ", x.scalar_type(), " on ",
              x.device());
  TORCH_CHECK(p >= 0 && p < 1, "hashed_dropout: p must be in [0, 1), got ", p);
  return HashedDropout::apply(x, p, static_cast<int64_t>(key));
}

DropoutImpl::DropoutImpl(double p) : p_(p) {
  TORCH_CHECK(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got ", p);
}

torch::Tensor DropoutImpl::forward(const torch::Tensor& x) {
  if (!is_training() || p_ == 0) return x;
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32)
    return hashed_dropout(x, p_, draw_key());
  return torch::dropout(x, p_, /*train=*/true);
}

void DropoutImpl::pretty_print(std::ostream& stream) const {
  stream << "alexnet::Dropout(p=" << p_ << ")";
}

}  // namespace alexnet

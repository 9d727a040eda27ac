#include "app/engine/sgd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace alexnet::engine {

Sgd::Sgd(std::vector<torch::Tensor> params, SgdOptions options)
    : params_(std::move(params)), buffers_(params_.size()), options_(options) {}

void Sgd::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();  // set_to_none, as PyTorch 2.x
}

namespace {

// Dense float32 CPU tensors laid out alike can be updated element by element over
// their storage, in one pass instead of the four of the tensor-op formula.
bool same_dense_layout(const torch::Tensor& a, const torch::Tensor& b) {
  return a.device().is_cpu() && b.device().is_cpu() && a.scalar_type() == torch::kFloat32 &&
         b.scalar_type() == torch::kFloat32 && a.layout() == torch::kStrided &&
         b.layout() == torch::kStrided && a.is_non_overlapping_and_dense() &&
         b.is_non_overlapping_and_dense() && a.sizes() == b.sizes() && a.strides() == b.strides();
}

// The same arithmetic as the tensor ops in Sgd::step, element by element; each
// variant is its own loop so that the compiler vectorises it.
void fused_update(float* p, float* g, float* buf, int64_t n, float lr, float wd, float momentum,
                  bool first, bool nesterov, float grad_scale) {
  constexpr int64_t kGrain = 1 << 15;
  at::parallel_for(0, n, kGrain, [=](int64_t begin, int64_t end) {
    if (grad_scale != 1.0f) {
      // Clipped: the gradient scaled first, in place, as clip_grad_norm_ leaves it.
      for (int64_t i = begin; i < end; ++i) g[i] *= grad_scale;
    }
    if (momentum == 0.0f) {
      for (int64_t i = begin; i < end; ++i) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (first && !nesterov) {
      for (int64_t i = begin; i < end; ++i) {
        const float d = g[i] + wd * p[i];
        buf[i] = d;
        p[i] -= lr * d;
      }
    } else if (first) {
      for (int64_t i = begin; i < end; ++i) {
        const float d = g[i] + wd * p[i];
        buf[i] = d;
        p[i] -= lr * (d + momentum * d);
      }
    } else if (!nesterov) {
      for (int64_t i = begin; i < end; ++i) {
        const float b = momentum * buf[i] + (g[i] + wd * p[i]);
        buf[i] = b;
        p[i] -= lr * b;
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        const float d = g[i] + wd * p[i];
        const float b = momentum * buf[i] + d;
        buf[i] = b;
        p[i] -= lr * (d + momentum * b);
      }
    }
  });
}

}  // namespace

void Sgd::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  const double wd = options_.weight_decay(), momentum = options_.momentum();
  const bool nesterov = options_.nesterov();
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    if (!p.grad().defined()) continue;
    const torch::Tensor& grad = p.grad();
    auto& buf = buffers_[i];
    const bool first = !buf.defined();
    if (same_dense_layout(p, grad) && (first || same_dense_layout(p, buf))) {
      if (first && momentum != 0) buf = torch::empty_like(p);  // same strides as p
      if (momentum == 0 || same_dense_layout(p, buf)) {
        fused_update(p.data_ptr<float>(), grad.data_ptr<float>(),
                     momentum != 0 ? buf.data_ptr<float>() : nullptr, p.numel(),
                     static_cast<float>(lr), static_cast<float>(wd), static_cast<float>(momentum),
                     first, nesterov, static_cast<float>(grad_scale));
        // Written through raw pointers: tell autograd and anything that caches
        // the weights (the oneDNN inference plan) that they changed, as an
        // in-place torch op would.
        p.unsafeGetTensorImpl()->bump_version();
        if (momentum != 0) buf.unsafeGetTensorImpl()->bump_version();
        continue;
      }
    }
    // Anything else (CUDA, other dtypes or layouts): PyTorch's single-tensor formula.
    if (grad_scale != 1.0) grad.mul_(grad_scale);
    torch::Tensor d = grad;
    if (wd != 0) d = d.add(p, wd);
    if (momentum != 0) {
      if (first) {
        buf = d.clone().detach();
      } else {
        buf.mul_(momentum).add_(d);
      }
      d = nesterov ? d.add(buf, momentum) : buf;
    }
    p.add_(d, -lr);
  }
}

double clip_coefficient(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(torch::kFloat64));
  if (norms.empty()) return 1.0;
  const double total = torch::stack(norms).norm(2).item<double>();
  const double coefficient = max_norm / (total + 1e-6);
  return std::isnan(coefficient) ? coefficient : std::min(1.0, coefficient);
}

}  // namespace alexnet::engine

#include "model/sgd.h"

namespace alexnet {

Sgd::Sgd(std::vector<torch::Tensor> params, SgdOptions options)
    : params_(std::move(params)), buffers_(params_.size()), options_(options) {}

void Sgd::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();  // set_to_none, as PyTorch 2.x
}

void Sgd::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    if (!p.grad().defined()) continue;
    torch::Tensor d = p.grad();
    if (options_.weight_decay() != 0) d = d.add(p, options_.weight_decay());
    if (options_.momentum() != 0) {
      auto& buf = buffers_[i];
      if (!buf.defined()) {
        buf = d.clone().detach();
      } else {
        buf.mul_(options_.momentum()).add_(d);
      }
      d = options_.nesterov() ? d.add(buf, options_.momentum()) : buf;
    }
    p.add_(d, -lr);
  }
}

}  // namespace alexnet

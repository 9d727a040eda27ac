#include "app/engine/loss_scaler.h"

namespace alexnet::engine {

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options), scale_(options.enabled() ? options.init_scale() : 1.0) {
  TORCH_CHECK(scale_ > 0 && options.growth_factor() > 1 && options.backoff_factor() > 0 &&
                  options.backoff_factor() < 1 && options.growth_interval() > 0,
              "LossScaler: bad options");
}

torch::Tensor LossScaler::scale(const torch::Tensor& loss) const {
  return options_.enabled() ? loss * scale_ : loss;
}

bool LossScaler::unscale(const std::vector<torch::Tensor>& params) {
  if (!options_.enabled()) return true;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> finite;  // one 0-dim bool per gradient, reduced once (one sync)
  for (const auto& p : params) {
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    // Unscaled in fp32 like GradScaler (fp32 master weights have fp32 gradients).
    g.mul_(1.0 / scale_);
    finite.push_back(torch::isfinite(g).all());
  }
  if (finite.empty()) return true;
  return torch::stack(finite).all().item<bool>();
}

void LossScaler::adjust(bool finite) {
  if (!options_.enabled()) return;
  if (!finite) {
    scale_ *= options_.backoff_factor();
    growth_tracker_ = 0;
    ++skipped_;
    return;
  }
  if (++growth_tracker_ == options_.growth_interval()) {
    scale_ *= options_.growth_factor();
    growth_tracker_ = 0;
  }
}

}  // namespace alexnet::engine

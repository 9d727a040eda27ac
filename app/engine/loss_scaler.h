// Dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace alexnet::engine {

struct LossScalerOptions {
  /// Starting scale (torch.cuda.amp.GradScaler's init_scale).
  TORCH_ARG(double, init_scale) = 65536.0;
  /// Scale multiplier after growth_interval steps without inf/NaN gradients.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// Scale multiplier after a step with inf/NaN gradients (that step is skipped).
  TORCH_ARG(double, backoff_factor) = 0.5;
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// A disabled scaler scales by 1 and always steps (fp32/bf16 training).
  TORCH_ARG(bool, enabled) = true;
};

/// Dynamic loss scaling for fp16 training, as torch.cuda.amp.GradScaler:
///   scaler.scale(loss).backward();
///   const bool stepped = scaler.step(params, [&] { sgd.step(lr); });
/// step() unscales the gradients in place, skips the update when any is inf or
/// NaN, and grows or backs off the scale.
class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  /// loss * scale (loss itself when disabled).
  torch::Tensor scale(const torch::Tensor& loss) const;
  /// Unscales the parameters' gradients; runs `update` unless one is inf/NaN;
  /// adjusts the scale. Returns whether `update` ran.
  template <typename Update>
  bool step(const std::vector<torch::Tensor>& params, Update&& update) {
    const bool finite = unscale(params);
    if (finite) update();
    adjust(finite);
    return finite;
  }
  /// Divides every defined gradient by the scale; true when all are finite.
  bool unscale(const std::vector<torch::Tensor>& params);
  /// Grows the scale after growth_interval finite steps, backs off after an overflow.
  void adjust(bool finite);

  double current_scale() const { return scale_; }
  bool enabled() const { return options_.enabled(); }
  /// Steps skipped for inf/NaN gradients so far.
  int64_t skipped_steps() const { return skipped_; }

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace alexnet::engine

// The learning-rate schedule of torchvision's references/classification train.py.
#pragma once

#include <cstdint>

namespace alexnet::engine {

enum class LrScheduler { kStep, kCosine, kConstant };
enum class WarmupMethod { kLinear, kConstant };

/// Optional linear/constant warmup (LinearLR / ConstantLR), then StepLR,
/// CosineAnnealingLR or a constant rate. torchvision's train.py moves it once per
/// epoch (per_step = false); per_step moves it every step, along the same curve
/// with the epoch counted fractionally (epoch + step / steps_per_epoch), so that
/// a cosine decays smoothly to 0 at the last step and warmup may be a fraction
/// of an epoch.
struct LrSchedule {
  double base_lr = 0.01;
  LrScheduler kind = LrScheduler::kCosine;
  int64_t epochs = 1;
  int64_t step_size = 30;  // epochs between StepLR's decays
  double gamma = 0.1;      // StepLR's decay factor
  double warmup_epochs = 0;  // whole epochs unless per_step
  WarmupMethod warmup_method = WarmupMethod::kLinear;
  double warmup_decay = 0.01;  // the warmup's starting factor
  bool per_step = false;

  /// Learning rate at step `step` (of steps_per_epoch) of 0-based epoch `epoch`.
  double lr_at(int64_t epoch, int64_t step = 0, int64_t steps_per_epoch = 1) const;
};

}  // namespace alexnet::engine

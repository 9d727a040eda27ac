#include "app/engine/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace alexnet::engine {

double LrSchedule::lr_at(int64_t epoch, int64_t step, int64_t steps_per_epoch) const {
  // Position in epochs: whole epochs for train.py's per-epoch stepping.
  const double t = per_step && steps_per_epoch > 0
                       ? static_cast<double>(epoch) + static_cast<double>(step) / steps_per_epoch
                       : static_cast<double>(epoch);
  if (t < warmup_epochs) {
    // Warmup multiplies the lr as LinearLR / ConstantLR do.
    const double factor = warmup_method == WarmupMethod::kConstant
                              ? warmup_decay
                              : warmup_decay + (1.0 - warmup_decay) * t / warmup_epochs;
    return base_lr * factor;
  }
  const double main_t = t - warmup_epochs;
  switch (kind) {
    case LrScheduler::kStep:
      return base_lr *
             std::pow(gamma, std::floor(main_t / static_cast<double>(std::max<int64_t>(1, step_size))));
    case LrScheduler::kCosine: {
      const double t_max = std::max(per_step ? 1e-9 : 1.0, static_cast<double>(epochs) - warmup_epochs);
      return base_lr * (1 + std::cos(M_PI * std::min(main_t, t_max) / t_max)) / 2;
    }
    case LrScheduler::kConstant:
      break;
  }
  return base_lr;
}

}  // namespace alexnet::engine

// What train and eval share: evaluation with metrics, the learning-rate
// schedule, progress lines, and the torchvision train.py checkpoint layout.
#pragma once

#include "data/loader.h"
#include "model/alexnet.h"
#include "model/pth_value.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace alexnet::app {

struct EvalResult {
  double loss = 0;      // mean cross-entropy (no label smoothing)
  double top1 = 0;      // fraction in [0, 1]
  double top5 = 0;      // NaN with fewer than 5 classes
  int64_t images = 0;
  double seconds = 0;
  torch::Tensor confusion;  // (C, C) int64; row = true class, column = predicted
  std::vector<double> per_class_accuracy;  // NaN-free: classes without samples get 0
};

/// Runs the model over every batch of the loader's current epoch in eval mode.
/// progress_every > 0 logs a line every that many batches.
/// reduce_sum, when given, sums a tensor in place over the ranks of a distributed
/// run (each evaluating its own shard), so every rank returns the same totals.
EvalResult evaluate(AlexNet& model, data::Loader& loader, torch::Device device,
                    int64_t progress_every, const std::string& what,
                    const std::function<void(torch::Tensor&)>& reduce_sum = {});

/// torchvision references/classification schedule: optional linear/constant
/// warmup, then step, cosine or constant. torchvision's train.py moves it once per
/// epoch (per_step = false); per_step moves it every step, along the same curve
/// with the epoch counted fractionally (epoch + step / steps_per_epoch), so that
/// a cosine decays smoothly to 0 at the last step and warmup may be a fraction
/// of an epoch.
struct LrSchedule {
  double base_lr = 0.01;
  std::string kind = "cosine";  // step | cosine | constant
  int64_t epochs = 1;
  int64_t step_size = 30;
  double gamma = 0.1;
  double warmup_epochs = 0;  // whole epochs unless per_step
  std::string warmup_method = "linear";  // linear | constant
  double warmup_decay = 0.01;
  bool per_step = false;

  /// Learning rate at step `step` (of steps_per_epoch) of 0-based epoch `epoch`.
  double lr_at(int64_t epoch, int64_t step = 0, int64_t steps_per_epoch = 1) const;
};

/// Periodic progress: "what step i/n: ... img/s ETA".
class Progress {
 public:
  Progress(std::string what, int64_t total_steps);
  /// Records `images` more processed; returns images/s since the start.
  double advance(int64_t images);
  double rate() const;
  std::string eta() const;
  int64_t step() const { return step_; }

 private:
  std::string what_;
  int64_t total_;
  int64_t step_ = 0;
  int64_t images_ = 0;
  std::chrono::steady_clock::time_point start_;
};

/// Formats seconds as 1h02m03s / 4m05s / 6s.
std::string format_duration(double seconds);

/// Appends JSON lines to a file (metrics.jsonl), flushing each.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool append);
  void write(const std::string& json_object);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::shared_ptr<std::FILE> holder_;
};

}  // namespace alexnet::app

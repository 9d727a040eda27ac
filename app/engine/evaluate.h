// Evaluation as torchvision's reference evaluate(): loss, top-1, top-5, and
// per-class accuracy with the confusion matrix, over one pass of a loader.
#pragma once

#include "data/loader.h"
#include "model/alexnet.h"

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace alexnet::engine {

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

}  // namespace alexnet::engine

// Training checkpoints in the layout torchvision's references/classification/
// train.py writes ({"model", "optimizer", "lr_scheduler", "epoch", "args"}), as
// torch.save zip files that Python's torch.load reads; and reading them back,
// including checkpoints written by train.py itself.
#pragma once

#include "model/sgd.h"
#include "app/training.h"
#include "model/pth_value.h"
#include "model/weights.h"

#include <optional>
#include <string>
#include <vector>

namespace alexnet::app {

struct TrainCheckpoint {
  NamedTensors model;                  // the state_dict
  std::vector<torch::Tensor> momentum;  // per parameter index; undefined = no buffer yet
  int64_t epoch = -1;       // last completed epoch, 0-based (train.py's "epoch")
  int64_t epoch_step = 0;   // batches already done in epoch + 1 (interrupted mid-epoch)
  torch::Tensor rng_state;  // default CPU generator state (uint8), when saved by us
  torch::Tensor cuda_rng_state;  // the training device's CUDA generator state, when on CUDA
  pth::Value args;          // the run's flags (a dict; train.py stores a Namespace)
};

/// Writes atomically (temporary file, fsync, rename). lr is the learning rate
/// of the next epoch, recorded in the optimizer's param group as PyTorch does.
void save_train_checkpoint(const std::string& path, const TrainCheckpoint& checkpoint,
                           const SgdOptions& sgd, const LrSchedule& schedule, double lr);

/// Reads a training checkpoint (ours or train.py's). A plain state_dict is
/// refused with a message pointing at --weights.
TrainCheckpoint load_train_checkpoint(const std::string& path);

}  // namespace alexnet::app

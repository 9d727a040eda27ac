// Training checkpoints in the layout torchvision's references/classification/
// train.py writes ({"model", "optimizer", "lr_scheduler", "epoch", "args"}), as
// torch.save zip files that Python's torch.load reads; and reading them back,
// including checkpoints written by train.py itself.
#pragma once

#include "app/engine/lr_schedule.h"
#include "app/engine/sgd.h"
#include "model/pth/pth_value.h"
#include "model/weights.h"

#include <optional>
#include <string>
#include <vector>

namespace alexnet::engine {

struct TrainCheckpoint {
  NamedTensors model;                  // the state_dict (empty when read: WeightsFile loads it)
  std::vector<torch::Tensor> momentum;  // per parameter index; undefined = no buffer yet
  int64_t epoch = -1;       // last completed epoch, 0-based (train.py's "epoch")
  int64_t epoch_step = 0;   // batches already done in epoch + 1 (interrupted mid-epoch)
  torch::Tensor rng_state;  // default CPU generator state (uint8), when saved by us
  torch::Tensor cuda_rng_state;  // the training device's CUDA generator state, when on CUDA
  pth::Value args;          // the run's flags (a dict; train.py stores a Namespace)
  double best_top1 = -1;    // the best validation top-1 so far (model_best.pth); -1 = none
  WeightsInfo info;  // class names and input transform, in the model state_dict's _metadata
};

/// Writes atomically (temporary file, fsync, rename). lr is the learning rate
/// of the next epoch, recorded in the optimizer's param group as PyTorch does.
void save_train_checkpoint(const std::string& path, const TrainCheckpoint& checkpoint,
                           const SgdOptions& sgd, const LrSchedule& schedule, double lr);

/// The training state of a checkpoint (ours or train.py's) beside the weights
/// `file` holds: momentum buffers, position, generator states and args. A plain
/// state_dict or a TorchScript archive is refused with a message pointing at --weights.
TrainCheckpoint read_train_state(const WeightsFile& file);

}  // namespace alexnet::engine

// What the Trainer's files (trainer*.cpp) share and nobody else uses: the
// transforms a run's data gets, and the generators' state, saved and put back.
#pragma once

#include "app/engine/train_config.h"
#include "data/dataset.h"
#include "data/transforms.h"

#include <ATen/core/Generator.h>
#include <torch/torch.h>

#include <string>

namespace alexnet::engine {

/// The dataset's recipe (training or evaluation) at --image-size, --augment and
/// --in-channels.
data::TransformOptions transform_for(const data::Dataset& dataset, const TrainConfig& c, bool train);

/// A generator's state (uint8), read under its lock.
torch::Tensor generator_state(at::Generator gen);
/// Sets a generator's state; an unfit one is an error naming `source` and `key`.
void restore_generator(at::Generator gen, const torch::Tensor& state, const std::string& source,
                       const char* key);

}  // namespace alexnet::engine

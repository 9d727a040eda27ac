// int8 calibration: the float32 model run over a sample of real images, recording
// the activations model/int8.h quantizes (Int8Calibrator), so that their scales
// fit the data the model will see.
#pragma once

#include "data/transforms.h"
#include "model/alexnet.h"
#include "model/int8.h"

#include <cstdint>
#include <string>

namespace alexnet::engine {

struct CalibrationOptions {
  std::string data;             // a data spec (data::open_dataset); its train split when it has one
  int64_t images = 512;         // how many, drawn at random (seed 0) without repeats
  int64_t batch_size = 64;
  int64_t workers = 2;          // loader threads
  data::TransformOptions transform;  // the evaluation transform the model will be fed
};

/// Runs `model` (float32, CPU) on o.images images of o.data and returns the ranges,
/// with o.data and the count recorded. activation_max: runtime::int8_activation_max().
Int8Scales calibrate_int8(AlexNet model, const CalibrationOptions& o, int64_t activation_max);

}  // namespace alexnet::engine

// Where a forward pass or a training step spends its time, layer by layer
// (`alexnet bench --layers`): each layer of the model-only batch timed on its own,
// with the work it does (GFLOP/s for convolutions and Linear layers, GB/s for the
// memory-bound ones) against the machine's measured peak in the same precision
// (app/engine/machine_peaks.h).
#pragma once

#include "app/engine/benchmark.h"

#include <string>
#include <vector>

namespace alexnet::engine {

struct LayerTime {
  std::string name;        // "features.0", "classifier.4", "quantize", ...
  std::string what;        // "conv 11x11/4 + ReLU", "max-pool 3x3/2", ...
  double forward_s = 0;    // median per batch
  double backward_s = 0;   // training only
  double flop = 0;         // per batch, forward (backward counts twice this)
  double bytes = 0;        // memory a memory-bound layer reads and writes, per batch
  double weight_bytes = 0; // inference: the parameters a conv or Linear layer reads, per batch
};

struct LayerProfile {
  std::vector<LayerTime> layers;
  double step_s = 0;       // the whole forward pass (inference) or TrainStep, median per batch
  double peak_gflops = 0;  // a product in the profile's precision (int8: quantized linear; bf16: or a convolution)
  std::string peak_what;
  // Inference: the machine's read bandwidth from a buffer that fits the last-level cache and
  // from one that does not (DRAM), measured in the same run: batch 1's limit.
  double cache_gbps = 0, dram_gbps = 0;
  int64_t cache_buffer = 0, dram_buffer = 0;  // bytes
};

/// Times the layers of inference (cfg as resolved; the oneDNN plan is left out, since it
/// runs the features as one pipeline) or of one training step (forward and backward
/// per layer; the step's remainder is the loss, clipping and SGD).
LayerProfile profile_layers(const BenchOptions& o, BenchSetup& setup, bool train);

/// The profile as a markdown table with a total line.
std::string layer_table(const LayerProfile& profile, bool train, int64_t batch_size);

}  // namespace alexnet::engine

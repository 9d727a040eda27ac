// Throughput measurements behind `alexnet bench` (scripts/bench_vs_pytorch.py
// and scripts/bench_data.py run the same workloads in PyTorch beside it):
//   model only   infer or train on a random batch made once;
//   end to end   decode + transform + batching + the model, over a dataset;
//   data         decode + transform + batching through the Loader;
//   matmul       one square matrix product: the machine's reference FLOP rate.
// Training runs engine::TrainStep, the step `alexnet train` takes, with its recipe.
#pragma once

#include "app/engine/train_config.h"
#include "app/runtime/compute.h"
#include "data/transforms.h"
#include "model/alexnet.h"

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace alexnet::engine {

struct BenchOptions {
  std::string data;                 // a data spec: end to end; empty: model only
  std::string split = "train";
  bool train_transform = true;      // mode data: the training transform (else evaluation's)
  int64_t workers = 2;
  int64_t batch_size = 64;
  int64_t limit = 0;                // the first N images only; 0: all
  int64_t repeat = 3;               // passes over the data (median reported)
  int64_t image_size = 0;           // end to end: 0 = the dataset's own size
  int64_t num_classes = 1000;       // model only
  int64_t warmup = 2;               // untimed iterations (model only, matmul)
  int64_t iters = 10;               // timed iterations (model only, matmul)
  int64_t matrix_size = 2048;
  std::string weights;              // empty: random initial weights (seed 0)
  std::string predictions;          // end-to-end infer: each image's predicted class, one per line
  std::string logits;               // model-only infer: the last batch's logits (float32, raw)
  Recipe recipe;                    // training: the step's recipe (lr constant)
  /// Inference: called with the float32 model before it is prepared (int8: its scales);
  /// `input` is the model-only batch (undefined end to end), `transform` end to end's (else null).
  std::function<void(AlexNet& model, runtime::ComputeConfig& cfg, const torch::Tensor& input,
                     const data::TransformOptions* transform)>
      before_inference;
};

/// What a measurement ran on.
struct BenchSetup {
  torch::Device device = torch::kCPU;
  int threads = 1;
  runtime::ComputeConfig cfg;
  int64_t batch_size = 0;
  int64_t image_size = 0;
  int64_t num_classes = 0;
  std::string data;  // end to end: the data spec
  int64_t workers = 0;
};

struct Measurement {
  std::string what;             // "infer", "train", "matmul"
  double top1 = -1;             // end-to-end infer: accuracy against the labels (last run)
  double loss = -1;             // training: the last timed step's loss
  int64_t images = 0;           // per timed run (matmul: 0)
  std::vector<double> seconds;  // each timed batch (model-only) or run (end to end)
  double flop_per_item = 0;     // per image, or per product for matmul
  bool per_batch = false;       // seconds are per batch of batch_size images
};

/// The model alone, on one random batch drawn after the model (torch.manual_seed(0);
/// torchvision.models.alexnet(); torch.randn draws the same values in Python).
Measurement bench_model(const BenchOptions& o, BenchSetup& setup, bool train);
/// One pass over the dataset per repetition, from a fresh Loader (worker start-up
/// included, as a new epoch), after one untimed warm-up batch through the model.
Measurement bench_end_to_end(const BenchOptions& o, BenchSetup& setup, bool train);
/// C = A B with A, B (N, N) random, in the setup's precision.
Measurement bench_matmul(const BenchOptions& o, const BenchSetup& setup);
/// Images per second of each repetition: one epoch from a fresh Loader (thread start-up included).
std::vector<double> bench_data(const BenchOptions& o);

/// Multiply-accumulates of one forward pass on an H x W image, from the layers'
/// shapes: convolutions and Linear layers (pooling, ReLU and LRN are a few
/// percent of a convolution's work and not counted, as usual).
int64_t forward_macs(AlexNet& model, int64_t height, int64_t width);

double median(std::vector<double> v);
/// Peak resident set of this process so far, in MiB.
double peak_rss_mib();
/// Device memory in use on the current GPU, in MiB, or -1 without CUDA.
double cuda_used_mib(const torch::Device& device);

}  // namespace alexnet::engine

#include "app/engine/calibrate.h"

#include "data/dataset.h"
#include "data/loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace alexnet::engine {

Int8Scales calibrate_int8(AlexNet model, const CalibrationOptions& o, int64_t activation_max) {
  TORCH_CHECK(o.images > 0, "--calibrate-images must be positive, got ", o.images);
  const auto start = std::chrono::steady_clock::now();
  auto dataset = data::open_dataset(o.data, "train");
  TORCH_CHECK(dataset->size() > 0, "--calibrate ", o.data, ": no images");
  const int64_t wanted = std::min(o.images, dataset->size());
  if (wanted < o.images)
    spdlog::warn("int8 calibration: {} has {} images, fewer than --calibrate-images {}", o.data,
                 dataset->size(), o.images);
  model->to(torch::kCPU);
  model->eval();
  Int8Calibrator calibrator(model);
  // A random sample (seed 0, the loader's shuffle) rather than the first images: folders
  // are sorted by class, and the first N would all be of the first classes.
  data::Loader loader(dataset, data::Pipeline(o.transform),
                      data::LoaderOptions().batch_size(std::min(o.batch_size, wanted)).shuffle(true).seed(0)
                          .workers(o.workers));
  loader.start_epoch(0);
  spdlog::info("int8 calibration on {} images of {}", wanted, dataset->description());
  torch::NoGradGuard no_grad;
  while (calibrator.images() < wanted) {
    auto batch = loader.next();
    if (!batch) break;
    auto x = batch->images;  // (B, C, S, S)
    const int64_t take = std::min(x.size(0), wanted - calibrator.images());
    calibrator.observe(x.slice(0, 0, take));
  }
  Int8Scales scales = calibrator.finish(activation_max);
  scales.data = o.data;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("int8 calibration: {} images in {:.1f} s; input range [{:.3f}, {:.3f}]", scales.images, seconds,
               scales.input.min, scales.input.max);
  return scales;
}

}  // namespace alexnet::engine

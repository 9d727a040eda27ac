#include "app/engine/calibrate.h"

#include "data/dataset.h"
#include "data/loader.h"
#include "model/fused.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace alexnet::engine {

namespace {

// Top-1 agreement of int8 (these scales) and bf16 (FusedAlexNet, where LibTorch has it) with
// fp32 on up to `wanted` more images of the loader's shuffled epoch: images the scales were
// not fitted to. None when the data has no more.
Int8Scales::Agreement measure_agreement(AlexNet& model, const Int8Scales& scales, int64_t activation_max,
                                        data::Loader& loader, int64_t wanted) {
  Int8Scales::Agreement a;
  Int8AlexNet int8(model, scales, activation_max);
  std::unique_ptr<FusedAlexNet> bf16;
  if (FusedAlexNet::available()) bf16 = std::make_unique<FusedAlexNet>(model);
  int64_t same_int8 = 0, same_bf16 = 0;
  while (a.images < wanted) {
    auto batch = loader.next();
    if (!batch) break;
    const auto x = batch->images.slice(0, 0, std::min(batch->images.size(0), wanted - a.images));
    const auto fp32 = model->forward(x).argmax(1);
    same_int8 += int8.forward(x).argmax(1).eq(fp32).sum().item<int64_t>();
    if (bf16) same_bf16 += bf16->forward(x).argmax(1).eq(fp32).sum().item<int64_t>();
    a.images += x.size(0);
  }
  if (a.images == 0) {
    spdlog::warn("int8 calibration: the data has no images left to measure agreement with fp32 on");
    return a;
  }
  a.int8 = static_cast<double>(same_int8) / a.images;
  if (bf16) a.bf16 = static_cast<double>(same_bf16) / a.images;
  spdlog::info("top-1 agreement with fp32 on {} images not calibrated on: int8 {:.2f}%{}", a.images,
               100 * a.int8, bf16 ? fmt::format(", bf16 {:.2f}%", 100 * a.bf16) : std::string());
  return a;
}

}  // namespace

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
  scales.agreement = measure_agreement(model, scales, activation_max, loader, wanted);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("int8 calibration: {} images in {:.1f} s; input range [{:.3f}, {:.3f}]", scales.images, seconds,
               scales.input.min, scales.input.max);
  return scales;
}

}  // namespace alexnet::engine

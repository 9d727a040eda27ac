// alexnet predict: torchvision's evaluation transform, AlexNet, top-k classes.
#include "app/cli.h"
#include "app/commands.h"
#include "app/runtime/json.h"
#include "data/image.h"
#include "data/labels.h"
#include "model/weights.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"
#endif

#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

using runtime::JsonObject;

struct PredictParams {
  std::string weights;
  std::string labels = "imagenet";
  int64_t topk = 5;
  int64_t batch_size = 16;
  int64_t resize_size = 256;
  int64_t crop_size = 224;
  bool json = false;
  std::vector<std::string> images;
};

void print_result(const PredictParams& p, const std::string& image,
                  const std::vector<std::string>& labels, const torch::Tensor& logits) {
  // logits: (num_classes,) float32 on CPU
  const int64_t k = p.topk == 0 ? logits.size(0) : std::min<int64_t>(p.topk, logits.size(0));
  const torch::Tensor probs = torch::softmax(logits, 0);
  const auto [top_p, top_i] = probs.topk(k);
  const auto* pv = top_p.data_ptr<float>();
  const auto* iv = top_i.data_ptr<int64_t>();
  const auto* zv = logits.data_ptr<float>();
  if (p.json) {
    std::string top = "[";
    for (int64_t j = 0; j < k; ++j)
      top += (j ? ", " : "") + JsonObject()
                                   .integer("index", iv[j])
                                   .str("label", labels[iv[j]])
                                   .number("probability", pv[j])
                                   .number("logit", zv[iv[j]])
                                   .dump();
    std::printf("%s\n", JsonObject().str("image", image).raw("top", top + "]").dump().c_str());
  } else {
    std::printf("%s\n", image.c_str());
    for (int64_t j = 0; j < k; ++j)
      std::printf("  %2lld. %6.2f%%  %s (%lld)\n", static_cast<long long>(j + 1), 100.0 * pv[j],
                  labels[iv[j]].c_str(), static_cast<long long>(iv[j]));
  }
  std::fflush(stdout);
}

cxxopts::Options predict_options(const PredictParams& p) {
  cxxopts::Options options("alexnet predict",
                           "Classify images with torchvision's evaluation transform "
                           "(resize shorter side, center crop, ImageNet normalisation).");
  options.positional_help("IMAGE...");
  options.add_options()
      ("w,weights", "Weights: .pth, TorchScript .pt or .safetensors", cxxopts::value<std::string>())
      ("labels", "Class names: 'imagenet' (built in) or a file with one name per line "
                 "(default: the names the weights file carries, else imagenet for 1000 classes)",
       cxxopts::value<std::string>()->default_value(p.labels))
      ("k,topk", "How many classes to print per image (0 = all)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.topk)))
      ("json", "Print one JSON object per image")
      ("batch-size", "Images per forward pass",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.batch_size)))
      ("resize-size", "Shorter side after resizing",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.resize_size)))
      ("crop-size", "Side of the center crop fed to the model",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.crop_size)))
      ("images", "Image files", cxxopts::value<std::vector<std::string>>());
  add_compute_options(options, runtime::ComputeRequest(), /*with_plan=*/true);  // fp32, NCHW, no plan
  add_nonfinite_option(options);
  add_max_pixels_option(options);
  add_common_options(options);
  options.parse_positional({"images"});
  return options;
}

}  // namespace

int run_predict(int argc, const char* const* argv) {
  PredictParams p;
  cxxopts::Options options = predict_options(p);
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  p.weights = required_flag(result, "weights", options);
  if (!result.count("images")) throw UsageError("no IMAGE given", options.help());
  p.labels = result["labels"].as<std::string>();
  p.topk = result["topk"].as<int64_t>();
  if (p.topk < 0) throw UsageError("--topk must be 0 (all) or positive", options.help());
  p.json = result.count("json") > 0;
  p.batch_size = positive_flag(result, "batch-size", options);
  p.resize_size = positive_flag(result, "resize-size", options);
  p.crop_size = positive_flag(result, "crop-size", options);
  if (p.crop_size < kMinInputSize)
    throw UsageError("--crop-size must be at least " + std::to_string(kMinInputSize),
                     options.help());
  p.images = result["images"].as<std::vector<std::string>>();
  const runtime::ComputeRequest request = compute_flags(result, options);
  set_max_pixels(result, options);

#ifndef ALEXNET_HAVE_OPENCV
  TORCH_CHECK(false, "predict: this build has no image decoding (built without OpenCV)");
#else
  const torch::Device device = setup_runtime(result);
  runtime::ComputeConfig compute = runtime::resolve_compute(request, device, runtime::Workload::kInference);
  AlexNet model{nullptr};
  std::vector<std::string> labels;  // the file's own class names, if it carries them
  {
    const WeightsFile file(p.weights);
    model = file.load();
    labels = file.class_names();
  }
  check_finite_weights(result, *model, p.weights);
  const int64_t num_classes = model->options().num_classes();
  TORCH_CHECK(model->options().in_channels() == 3, p.weights, ": model takes ",
              model->options().in_channels(), " input channels; predict feeds RGB images");

  if (!labels.empty() && !result.count("labels")) {
    TORCH_CHECK(static_cast<int64_t>(labels.size()) == num_classes, p.weights, ": ", labels.size(),
                " class names for a model with ", num_classes, " classes");
  } else if (result.count("labels") || num_classes == 1000) {
    labels = data::load_labels(p.labels);
    TORCH_CHECK(static_cast<int64_t>(labels.size()) == num_classes, "--labels ", p.labels, ": ",
                labels.size(), " labels for a model with ", num_classes, " classes");
  } else {
    for (int64_t i = 0; i < num_classes; ++i) labels.push_back("class " + std::to_string(i));
  }
  runtime::prepare_for_inference(model, compute);
  spdlog::info("weights {}: {} classes, {}", p.weights, num_classes, compute.describe());

  const auto transform =
      data::EvalTransformOptions().resize_size(p.resize_size).crop_size(p.crop_size);
  c10::InferenceMode inference;
  for (size_t start = 0; start < p.images.size(); start += p.batch_size) {
    const size_t end = std::min(p.images.size(), start + static_cast<size_t>(p.batch_size));
    std::vector<torch::Tensor> batch;
    for (size_t i = start; i < end; ++i)
      batch.push_back(data::eval_transform(data::decode_image_file(p.images[i]), transform));
    torch::Tensor x = torch::stack(batch);  // (B, 3, crop, crop)
    if (device.is_cuda()) x = x.pin_memory();
    x = runtime::prepare_input(x, compute, /*non_blocking=*/true);
    const torch::Tensor logits = model->forward(x).to(torch::kCPU, torch::kFloat32);  // (B, C)
    for (size_t i = start; i < end; ++i)
      print_result(p, p.images[i], labels, logits[static_cast<int64_t>(i - start)].contiguous());
  }
  runtime::log_inference_plan(model);
  return 0;
#endif
}

}  // namespace alexnet::app

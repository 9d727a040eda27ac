// alexnet eval: loss, top-1, top-5, per-class accuracy and the confusion matrix.
#include "app/cli.h"
#include "app/commands.h"
#include "app/precision.h"
#include "app/training.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace alexnet::app {

int run_eval(int argc, const char* const* argv) {
  cxxopts::Options options("alexnet eval", "Evaluate weights on a dataset split.");
  options.add_options()
      ("w,weights", "Weights: .pth (state_dict or training checkpoint) or TorchScript",
       cxxopts::value<std::string>())
      ("data", "Data spec", cxxopts::value<std::string>()->default_value("fashion-mnist"))
      ("split", "Split to evaluate: val (test files for IDX/CIFAR) or train",
       cxxopts::value<std::string>()->default_value("val"))
      ("b,batch-size", "Images per forward pass", cxxopts::value<int64_t>()->default_value("256"))
      ("j,workers", "Data loading threads", cxxopts::value<int64_t>()->default_value("2"))
      ("image-size", "Model input side (0 = the dataset's default)",
       cxxopts::value<int64_t>()->default_value("0"))
      ("precision", "fp32 (the default: results identical to PyTorch's), bf16, fp16 (CUDA) or "
                    "auto (the device's fastest; autocast)",
       cxxopts::value<std::string>()->default_value("fp32"))
      ("channels-last", "Channels-last memory format: off (default), on, or auto (the device's "
                        "faster layout)",
       cxxopts::value<std::string>()->default_value("off")->implicit_value("on"))
      ("onednn-plan", kPlanHelp, cxxopts::value<std::string>()->default_value("off"))
      ("json", "Print the results as one JSON object (with the confusion matrix)")
      ("skip-bad", "Skip unreadable images with a warning instead of failing");
  add_common_options(options);
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\ndata specs:\n%s\n", options.help().c_str(), data::kDataSpecHelp);
    return 0;
  }
  const std::string weights = required_flag(result, "weights", options);
  const std::string spec = result["data"].as<std::string>();
  const std::string split = result["split"].as<std::string>();
  if (split != "val" && split != "train" && split != "test")
    throw UsageError("--split must be val or train, got '" + split + "'", options.help());
  const int64_t batch_size = positive_flag(result, "batch-size", options);
  const int64_t workers = result["workers"].as<int64_t>();
  if (workers < 0) throw UsageError("--workers must not be negative", options.help());
  const int64_t image_size = result["image-size"].as<int64_t>();
  if (image_size != 0 && image_size < kMinInputSize)
    throw UsageError("--image-size must be at least " + std::to_string(kMinInputSize), options.help());
  const bool json = result.count("json") > 0;
  const auto precision_flag = parse_precision(result["precision"].as<std::string>());
  if (!precision_flag)
    throw UsageError("--precision " + result["precision"].as<std::string>() +
                         ": expected fp32, bf16, fp16 or auto", options.help());
  const auto layout_flag = parse_channels_last(result["channels-last"].as<std::string>());
  if (!layout_flag)
    throw UsageError("--channels-last " + result["channels-last"].as<std::string>() +
                         ": expected auto, on or off", options.help());
  const auto plan_flag = parse_plan_choice(result["onednn-plan"].as<std::string>());
  if (!plan_flag)
    throw UsageError("--onednn-plan " + result["onednn-plan"].as<std::string>() +
                         ": expected auto, winograd, direct or off", options.help());

  const torch::Device device = setup_runtime(result);
  reuse_freed_memory();
  const Precision precision = resolve_precision(*precision_flag, device, Workload::kInference);
  configure_cuda_math(device, precision);
  ComputeConfig compute = inference_config(device, precision,
                                           resolve_channels_last(*layout_flag, device, precision));
  compute.low_precision_weights = false;  // evaluate() feeds fp32 batches: autocast
  choose_plan(compute, *plan_flag);
  auto dataset = data::open_dataset(spec, split);
  AlexNet model = load_alexnet(weights);
  TORCH_CHECK(model->options().num_classes() == dataset->num_classes(), weights, ": weights have ",
              model->options().num_classes(), " classes, the data (", dataset->description(),
              ") has ", dataset->num_classes());
  prepare_for_inference(model, compute);  // fp32 weights: evaluate() autocasts

  auto transform = data::default_transform_options(dataset->kind(), /*train=*/false);
  if (image_size > 0)
    transform.resize_size(transform.resize_size() * image_size / transform.image_size()).image_size(image_size);
  transform.in_channels(model->options().in_channels());
  data::Loader loader(dataset, data::Pipeline(transform),
                      data::LoaderOptions().batch_size(batch_size).shuffle(false).workers(workers)
                          .skip_bad(result.count("skip-bad") > 0).pin_memory(device.is_cuda())
                          .channels_last(compute.channels_last));
  loader.start_epoch(0);
  spdlog::info("eval {} on {} ({} images), {}", weights, dataset->description(), dataset->size(),
               compute.describe());
  EvalResult r;
  {
    const AutocastGuard autocast(device, precision);
    r = evaluate(model, loader, device, 20, "eval");
  }
  log_inference_plan(model);
  const double rate = r.seconds > 0 ? r.images / r.seconds : 0.0;
  const auto& names = dataset->class_names();

  if (json) {
    std::string out = "{\"weights\": " + json_string(weights) + ", \"data\": " + json_string(spec) +
                      ", \"split\": " + json_string(split) + ", \"images\": " + std::to_string(r.images);
    char buf[256];
    std::snprintf(buf, sizeof(buf), ", \"loss\": %.6g, \"top1\": %.6g, \"img_per_s\": %.4g", r.loss,
                  r.top1, rate);
    out += buf;
    if (std::isnan(r.top5)) {
      out += ", \"top5\": null";
    } else {
      std::snprintf(buf, sizeof(buf), ", \"top5\": %.6g", r.top5);
      out += buf;
    }
    out += ", \"per_class\": [";
    for (size_t c = 0; c < names.size(); ++c) {
      std::snprintf(buf, sizeof(buf), "%s{\"index\": %zu, \"label\": ", c ? ", " : "", c);
      out += buf + json_string(names[c]);
      std::snprintf(buf, sizeof(buf), ", \"accuracy\": %.6g, \"count\": %lld}", r.per_class_accuracy[c],
                    static_cast<long long>(r.confusion[c].sum().item<int64_t>()));
      out += buf;
    }
    out += "], \"confusion\": [";
    const auto conf = r.confusion.contiguous();
    const int64_t n = conf.size(0);
    const auto* v = conf.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      out += i ? ", [" : "[";
      for (int64_t j = 0; j < n; ++j) out += (j ? ", " : "") + std::to_string(v[i * n + j]);
      out += "]";
    }
    out += "]}";
    std::printf("%s\n", out.c_str());
  } else {
    std::printf("%s on %s (%s): %lld images\n", weights.c_str(), spec.c_str(), split.c_str(),
                static_cast<long long>(r.images));
    char top5[16] = "n/a";
    if (!std::isnan(r.top5)) std::snprintf(top5, sizeof(top5), "%.2f%%", 100 * r.top5);
    std::printf("  loss %.4f  top-1 %.2f%%  top-5 %s  %.0f img/s\n", r.loss, 100 * r.top1, top5, rate);
    std::printf("  per-class accuracy:\n");
    for (size_t c = 0; c < names.size(); ++c)
      std::printf("    %4zu  %6.2f%%  %s\n", c, 100 * r.per_class_accuracy[c], names[c].c_str());
  }
  if (loader.skipped() > 0) spdlog::warn("skipped {} unreadable images", loader.skipped());
  return 0;
}

}  // namespace alexnet::app

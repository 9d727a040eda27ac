// alexnet eval: loss, top-1, top-5, per-class accuracy and the confusion matrix
// (engine::evaluate over a dataset split).
#include "app/cli.h"
#include "app/commands.h"
#include "app/engine/evaluate.h"
#include "app/runtime/json.h"
#include "app/runtime/machine.h"
#include "data/dataset.h"
#include "data/labels.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace alexnet::app {

namespace {

using runtime::JsonObject;

cxxopts::Options eval_options() {
  cxxopts::Options options("alexnet eval", "Evaluate weights on a dataset split.");
  options.add_options()
      ("w,weights", "Weights: .pth (state_dict or training checkpoint), TorchScript .pt, .safetensors or torch.export .pt2",
       cxxopts::value<std::string>())
      ("data", "Data spec", cxxopts::value<std::string>()->default_value("fashion-mnist"))
      ("split", "Split to evaluate: val (test files for IDX/CIFAR) or train",
       cxxopts::value<std::string>()->default_value("val"))
      ("b,batch-size", "Images per forward pass", cxxopts::value<int64_t>()->default_value("256"))
      ("j,workers", "Data loading threads", cxxopts::value<int64_t>()->default_value("2"))
      ("image-size", "Model input side (0 = the dataset's default)",
       cxxopts::value<int64_t>()->default_value("0"))
      ("labels", "Class names for the per-class rows: 'imagenet' or a file with one name per line "
                 "(default: the data's names)", cxxopts::value<std::string>())
      ("json", "Print the results as one JSON object (with the confusion matrix)")
      ("skip-bad", "Skip unreadable images with a warning instead of failing");
  add_compute_options(options, runtime::ComputeRequest(), /*with_plan=*/true);  // fp32, NCHW, no plan
  add_int8_options(options);
  add_nonfinite_option(options);
  add_max_pixels_option(options);
  add_common_options(options);
  return options;
}

void print_json(const cxxopts::ParseResult& result, const engine::EvalResult& r,
                const std::vector<std::string>& names, double rate) {
  std::string per_class = "[";
  for (size_t c = 0; c < names.size(); ++c)
    per_class += (c ? ", " : "") + JsonObject()
                                       .integer("index", static_cast<int64_t>(c))
                                       .str("label", names[c])
                                       .number("accuracy", r.per_class_accuracy[c], "%.6g")
                                       .integer("count", r.confusion[c].sum().item<int64_t>())
                                       .dump();
  std::string confusion = "[";
  const auto conf = r.confusion.contiguous();  // (C, C)
  const int64_t n = conf.size(0);
  const auto* v = conf.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    confusion += i ? ", [" : "[";
    for (int64_t j = 0; j < n; ++j) confusion += (j ? ", " : "") + std::to_string(v[i * n + j]);
    confusion += "]";
  }
  JsonObject out;
  out.str("weights", result["weights"].as<std::string>()).str("data", result["data"].as<std::string>())
      .str("split", result["split"].as<std::string>()).integer("images", r.images)
      .number("loss", r.loss, "%.6g").number("top1", r.top1, "%.6g").number("img_per_s", rate, "%.4g")
      .number("top5", r.top5, "%.6g").raw("per_class", per_class + "]").raw("confusion", confusion + "]");
  std::printf("%s\n", out.dump().c_str());
}

void print_table(const cxxopts::ParseResult& result, const engine::EvalResult& r,
                 const std::vector<std::string>& names, double rate) {
  std::printf("%s on %s (%s): %lld images\n", result["weights"].as<std::string>().c_str(),
              result["data"].as<std::string>().c_str(), result["split"].as<std::string>().c_str(),
              static_cast<long long>(r.images));
  char top5[16] = "n/a";
  if (!std::isnan(r.top5)) std::snprintf(top5, sizeof(top5), "%.2f%%", 100 * r.top5);
  std::printf("  loss %.4f  top-1 %.2f%%  top-5 %s  %.0f img/s\n", r.loss, 100 * r.top1, top5, rate);
  std::printf("  per-class accuracy:\n");
  for (size_t c = 0; c < names.size(); ++c)
    std::printf("    %4zu  %6.2f%%  %s\n", c, 100 * r.per_class_accuracy[c], names[c].c_str());
}

}  // namespace

int run_eval(int argc, const char* const* argv) {
  cxxopts::Options options = eval_options();
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\ndata specs:\n%s\n", options.help().c_str(), data::kDataSpecHelp);
    return 0;
  }
  const std::string weights = required_flag(result, "weights", options);
  const std::string split = result["split"].as<std::string>();
  if (split != "val" && split != "train" && split != "test")
    throw UsageError("--split must be val or train, got '" + split + "'", options.help());
  const int64_t batch_size = positive_flag(result, "batch-size", options);
  const int64_t workers = result["workers"].as<int64_t>();
  if (workers < 0) throw UsageError("--workers must not be negative", options.help());
  const int64_t image_size = result["image-size"].as<int64_t>();
  if (image_size != 0 && image_size < kMinInputSize)
    throw UsageError("--image-size must be at least " + std::to_string(kMinInputSize), options.help());
  const runtime::ComputeRequest request = compute_flags(result, options);
  set_max_pixels(result, options);

  const torch::Device device = setup_runtime(result);
  runtime::reuse_freed_memory();
  runtime::ComputeConfig compute = runtime::resolve_compute(request, device, runtime::Workload::kInference);
  compute.low_precision_weights = false;  // engine::evaluate feeds fp32 batches: autocast
  auto dataset = data::open_dataset(result["data"].as<std::string>(), split);
  AlexNet model{nullptr};
  std::vector<std::string> file_names;  // the classes the weights were trained on, if the file says
  std::string sha256;                   // of the bytes loaded, for int8's scales
  {
    const WeightsFile file(weights, WeightsFile::HubCheck::kWhileLoading);
    model = file.load();
    if (compute.precision == runtime::Precision::kInt8 || compute.precision_auto) sha256 = file.sha256();
    file_names = file.class_names();
  }
  check_finite_weights(result, *model, weights);
  TORCH_CHECK(model->options().num_classes() == dataset->num_classes(), weights, ": weights have ",
              model->options().num_classes(), " classes, the data (", dataset->description(),
              ") has ", dataset->num_classes());
  std::vector<std::string> names = dataset->class_names();
  // Output i means file_names[i]; label i means names[i]. When they differ the scores are still
  // computed, but they may measure the wrong pairing: say where.
  for (size_t c = 0; c < file_names.size() && c < names.size(); ++c) {
    if (file_names[c] == names[c]) continue;
    spdlog::warn("{}: the weights' class {} is '{}' but the data's is '{}' (of {} classes): check the data "
                 "is the one the weights were trained on", weights, c, file_names[c], names[c], names.size());
    break;
  }
  if (result.count("labels")) {
    names = data::load_labels(result["labels"].as<std::string>());
    TORCH_CHECK(static_cast<int64_t>(names.size()) == dataset->num_classes(), "--labels ",
                result["labels"].as<std::string>(), ": ", names.size(), " names for data with ",
                dataset->num_classes(), " classes");
  }
  auto transform = data::default_transform_options(dataset->kind(), /*train=*/false);
  if (image_size > 0)
    transform.resize_size(transform.resize_size() * image_size / transform.image_size()).image_size(image_size);
  transform.in_channels(model->options().in_channels());
  setup_int8(result, options, compute, model, weights, sha256, transform);
  runtime::prepare_for_inference(model, compute);
  data::Loader loader(dataset, data::Pipeline(transform),
                      data::LoaderOptions().batch_size(batch_size).shuffle(false).workers(workers)
                          .skip_bad(result.count("skip-bad") > 0).pin_memory(device.is_cuda())
                          .channels_last(compute.channels_last));
  loader.start_epoch(0);
  spdlog::info("eval {} on {} ({} images), {}", weights, dataset->description(), dataset->size(),
               compute.describe());
  engine::EvalResult r;
  {
    const runtime::AutocastGuard autocast(device, compute.precision);
    r = engine::evaluate(model, loader, device, 20, "eval");
  }
  runtime::log_inference_plan(model);
  const double rate = r.seconds > 0 ? r.images / r.seconds : 0.0;
  if (result.count("json"))
    print_json(result, r, names, rate);
  else
    print_table(result, r, names, rate);
  if (loader.skipped() > 0) spdlog::warn("skipped {} unreadable images", loader.skipped());
  return 0;
}

}  // namespace alexnet::app

#include "app/classifier.h"

#include "app/cli.h"
#include "app/runtime/json.h"
#include "data/labels.h"
#include "model/hub_hash.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

namespace alexnet::app {

torch::Tensor Classifier::logits(const torch::Tensor& images) const {
  torch::Tensor x = images;
  if (compute.device.is_cuda()) x = x.pin_memory();
  x = runtime::prepare_input(x, compute, /*non_blocking=*/true);
  AlexNet m = model;  // forward() is not const; the holder shares the module
  return m->forward(x).to(torch::kCPU, torch::kFloat32);
}

void add_classifier_options(cxxopts::Options& options) {
  add_int8_options(options);
  options.add_options()
      ("labels", "Class names: 'imagenet' (built in) or a file with one name per line "
                 "(default: the names the weights file carries, else imagenet for 1000 classes)",
       cxxopts::value<std::string>()->default_value("imagenet"))
      ("resize-size", "Shorter side after resizing (default: the weights file's transform, else 256)",
       cxxopts::value<int64_t>()->default_value("256"))
      ("crop-size", "Side of the center crop fed to the model (default: the weights file's, else 224)",
       cxxopts::value<int64_t>()->default_value("224"));
}

void check_classifier_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  positive_flag(result, "resize-size", options);
  if (positive_flag(result, "crop-size", options) < kMinInputSize)
    throw UsageError("--crop-size must be at least " + std::to_string(kMinInputSize), options.help());
}

Classifier load_classifier(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                           const std::string& weights, const runtime::ComputeRequest& request,
                           const torch::Device& device, bool with_sha256) {
  Classifier c;
  c.weights = weights;
  c.compute = runtime::resolve_compute(request, device, runtime::Workload::kInference);
  std::optional<InputTransform> file_transform;  // how the weights' training data was prepared
  {
    const WeightsFile file(weights, WeightsFile::HubCheck::kWhileLoading);
    c.model = file.load();
    // Free when the name promised one (load() hashed it); int8's scales are tied to it.
    if (with_sha256 || hub_hash_prefix(weights) || c.compute.precision == runtime::Precision::kInt8 ||
        c.compute.precision_auto)
      c.sha256 = file.sha256();
    c.labels = file.class_names();
    file_transform = file.input_transform();
  }
  check_finite_weights(result, *c.model, weights);
  c.num_classes = c.model->options().num_classes();
  TORCH_CHECK(c.model->options().in_channels() == 3, weights, ": model takes ",
              c.model->options().in_channels(), " input channels; images are fed as RGB");

  const std::string labels_flag = result["labels"].as<std::string>();
  c.names_from = "the weights file";
  if (!c.labels.empty() && !result.count("labels")) {
    // The file's own names, whose count WeightsFile checked when it opened the file.
  } else if (result.count("labels") || c.num_classes == 1000) {
    c.labels = data::load_labels(labels_flag);
    c.names_from = result.count("labels") ? "--labels " + labels_flag : "ImageNet's, built in";
    TORCH_CHECK(static_cast<int64_t>(c.labels.size()) == c.num_classes, "--labels ", labels_flag, ": ",
                c.labels.size(), " labels for a model with ", c.num_classes, " classes");
  } else {
    c.names_from = "none in the weights file: 'class N' (give --labels)";
    c.labels.clear();
    for (int64_t i = 0; i < c.num_classes; ++i) c.labels.push_back("class " + std::to_string(i));
  }
  // The weights' own transform (size and normalisation of the data they were trained on) unless
  // a size is given here; torchvision's ImageNet transform for files that carry none.
  c.transform = data::EvalTransformOptions()
                    .resize_size(result["resize-size"].as<int64_t>())
                    .crop_size(result["crop-size"].as<int64_t>());
  const bool use_file_transform = file_transform && !result.count("resize-size") && !result.count("crop-size");
  if (use_file_transform) {
    data::Rgb mean{}, std{};
    for (size_t i = 0; i < 3; ++i) {
      mean[i] = static_cast<float>(file_transform->mean[i]);
      std[i] = static_cast<float>(file_transform->std[i]);
    }
    c.transform.resize_size(file_transform->resize_size).crop_size(file_transform->crop_size).mean(mean).std(std);
  }
  c.transform_from = use_file_transform ? "as the weights file says"
                     : file_transform   ? "sizes from the flags (normalisation ImageNet's)"
                                        : "torchvision's ImageNet transform";
  const auto& t = c.transform;
  spdlog::info("input: resize {}, center crop {}, normalise mean ({:.4g}, {:.4g}, {:.4g}) std ({:.4g}, {:.4g}, "
               "{:.4g}), {}", t.resize_size(), t.crop_size(), t.mean()[0], t.mean()[1], t.mean()[2], t.std()[0],
               t.std()[1], t.std()[2], c.transform_from);
  // int8 calibrates through the same transform the images will get.
  setup_int8(result, options, c.compute, c.model, weights, c.sha256,
             data::TransformOptions().train(false).resize_size(t.resize_size()).image_size(t.crop_size())
                 .mean(t.mean()).std(t.std()).in_channels(3));
  runtime::prepare_for_inference(c.model, c.compute);
  spdlog::info("weights {}: {} classes, names {}; {}", weights, c.num_classes, c.names_from,
               c.compute.describe());
  return c;
}

RankedClasses rank_classes(const torch::Tensor& logits, int64_t k) {
  const int64_t n = logits.size(0);
  k = k == 0 ? n : std::min<int64_t>(k, n);
  const torch::Tensor probs = torch::softmax(logits, 0);
  const auto [top_p, top_i] = probs.topk(k);
  const auto* pv = top_p.data_ptr<float>();
  const auto* iv = top_i.data_ptr<int64_t>();
  const auto* zv = logits.data_ptr<float>();
  RankedClasses r;
  for (int64_t j = 0; j < k; ++j) {
    r.index.push_back(iv[j]);
    r.probability.push_back(pv[j]);
    r.logit.push_back(zv[iv[j]]);
  }
  return r;
}

std::string top_k_json(const std::string& image, const std::vector<std::string>& labels,
                       const torch::Tensor& logits, int64_t k) {
  const RankedClasses r = rank_classes(logits, k);
  std::string top = "[";
  for (size_t j = 0; j < r.index.size(); ++j)
    top += (j ? ", " : "") + runtime::JsonObject()
                                 .integer("index", r.index[j])
                                 .str("label", labels[r.index[j]])
                                 .number("probability", r.probability[j])
                                 .number("logit", r.logit[j])
                                 .dump();
  return runtime::JsonObject().str("image", image).raw("top", top + "]").dump();
}

}  // namespace alexnet::app

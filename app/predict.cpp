// alexnet predict: torchvision's evaluation transform, AlexNet, top-k classes.
#include "app/cli.h"
#include "app/commands.h"
#include "app/runtime/json.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/labels.h"
#include "model/weights.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"
#endif

#include <spdlog/spdlog.h>

#include <glob.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <filesystem>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

using runtime::JsonObject;

enum class Format { kText, kJson, kCsv };

struct PredictParams {
  std::string weights;
  std::string labels = "imagenet";
  int64_t topk = 5;
  int64_t batch_size = 16;
  int64_t resize_size = 256;
  int64_t crop_size = 224;
  Format format = Format::kText;
  bool skip_bad = false;
  std::vector<std::string> images;  // as given: files, folders, globs, "-"
};

// RFC 4180: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// What the arguments name, in order: a file as it is (a bad one is found when it
// is read), a folder's images (recursively, torchvision's extensions, sorted), a
// glob's matches (sorted), and for "-" the paths on standard input, one per line.
// An argument that names nothing becomes a bad entry with its reason.
struct Input {
  std::string path;
  std::string error;  // set: not an image to read
};
std::vector<Input> expand_inputs(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  std::vector<Input> out;
  for (const std::string& a : args) {
    std::error_code ec;
    if (a == "-") {
      std::string line;
      for (int c; (c = std::getchar()) != EOF;) {
        if (c != '\n') {
          line += static_cast<char>(c);
          continue;
        }
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) out.push_back({line, ""});
        line.clear();
      }
      if (!line.empty()) out.push_back({line, ""});
    } else if (fs::is_directory(a, ec)) {
      std::vector<std::string> found;
      for (fs::recursive_directory_iterator it(a, fs::directory_options::follow_directory_symlink, ec), end;
           !ec && it != end; it.increment(ec))
        if (it->is_regular_file(ec) && data::has_image_extension(it->path().filename().string())) found.push_back(it->path().string());
      if (ec) out.push_back({a, "cannot list the folder (" + ec.message() + ")"});
      std::sort(found.begin(), found.end());
      if (found.empty() && !ec) out.push_back({a, "no image files in the folder"});
      for (auto& f : found) out.push_back({std::move(f), ""});
    } else if (!fs::exists(a, ec) && a.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      const int rc = ::glob(a.c_str(), 0, nullptr, &g);
      if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back({g.gl_pathv[i], ""});  // glob sorts
      } else {
        out.push_back({a, rc == GLOB_NOMATCH ? "the pattern matches no file" : "the pattern cannot be read"});
      }
      ::globfree(&g);
    } else {
      out.push_back({a, ""});
    }
  }
  return out;
}

void print_result(const PredictParams& p, const std::string& image,
                  const std::vector<std::string>& labels, const torch::Tensor& logits) {
  // logits: (num_classes,) float32 on CPU
  const int64_t k = p.topk == 0 ? logits.size(0) : std::min<int64_t>(p.topk, logits.size(0));
  const torch::Tensor probs = torch::softmax(logits, 0);
  const auto [top_p, top_i] = probs.topk(k);
  const auto* pv = top_p.data_ptr<float>();
  const auto* iv = top_i.data_ptr<int64_t>();
  const auto* zv = logits.data_ptr<float>();
  if (p.format == Format::kCsv) {
    for (int64_t j = 0; j < k; ++j)
      std::printf("%s,%lld,%lld,%s,%.9g,%.9g\n", csv_field(image).c_str(), static_cast<long long>(j + 1),
                  static_cast<long long>(iv[j]), csv_field(labels[iv[j]]).c_str(), pv[j], zv[iv[j]]);
  } else if (p.format == Format::kJson) {
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
  options.positional_help("IMAGE|DIR|GLOB|- ...");
  options.add_options()
      ("w,weights", "Weights: .pth, TorchScript .pt or .safetensors", cxxopts::value<std::string>())
      ("labels", "Class names: 'imagenet' (built in) or a file with one name per line "
                 "(default: the names the weights file carries, else imagenet for 1000 classes)",
       cxxopts::value<std::string>()->default_value(p.labels))
      ("k,topk", "How many classes to print per image (0 = all)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.topk)))
      ("format", "text, json (one JSON object per image: JSON Lines) or csv (one row per class: "
                 "image,rank,index,label,probability,logit)", cxxopts::value<std::string>()->default_value("text"))
      ("json", "As --format json")
      ("skip-bad", "Report unreadable images on stderr and go on, exiting 0 (without it: the good "
                   "images' results, then exit 1 naming the bad ones)")
      ("batch-size", "Images per forward pass",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.batch_size)))
      ("resize-size", "Shorter side after resizing (default: the weights file's transform, else 256)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.resize_size)))
      ("crop-size", "Side of the center crop fed to the model (default: the weights file's, else 224)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.crop_size)))
      ("images", "Image files, folders (searched recursively for image files), globs, or - "
                 "(paths on standard input, one per line)", cxxopts::value<std::vector<std::string>>());
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
  const std::string format = result["format"].as<std::string>();
  if (format == "text") p.format = Format::kText;
  else if (format == "json") p.format = Format::kJson;
  else if (format == "csv") p.format = Format::kCsv;
  else throw UsageError("--format must be text, json or csv, got '" + format + "'", options.help());
  if (result.count("json")) {
    if (result.count("format") && p.format != Format::kJson)
      throw UsageError("--json is --format json: it cannot go with --format " + format, options.help());
    p.format = Format::kJson;
  }
  p.skip_bad = result.count("skip-bad") > 0;
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
  std::optional<InputTransform> file_transform;  // how the weights' training data was prepared
  {
    const WeightsFile file(p.weights);
    model = file.load();
    labels = file.class_names();
    file_transform = file.input_transform();
  }
  check_finite_weights(result, *model, p.weights);
  const int64_t num_classes = model->options().num_classes();
  TORCH_CHECK(model->options().in_channels() == 3, p.weights, ": model takes ",
              model->options().in_channels(), " input channels; predict feeds RGB images");

  std::string names_from = "the weights file";
  if (!labels.empty() && !result.count("labels")) {
    TORCH_CHECK(static_cast<int64_t>(labels.size()) == num_classes, p.weights, ": ", labels.size(),
                " class names for a model with ", num_classes, " classes");
  } else if (result.count("labels") || num_classes == 1000) {
    labels = data::load_labels(p.labels);
    names_from = result.count("labels") ? "--labels " + p.labels : "ImageNet's, built in";
    TORCH_CHECK(static_cast<int64_t>(labels.size()) == num_classes, "--labels ", p.labels, ": ",
                labels.size(), " labels for a model with ", num_classes, " classes");
  } else {
    names_from = "none in the weights file: 'class N' (give --labels)";
    for (int64_t i = 0; i < num_classes; ++i) labels.push_back("class " + std::to_string(i));
  }
  runtime::prepare_for_inference(model, compute);
  spdlog::info("weights {}: {} classes, names {}; {}", p.weights, num_classes, names_from, compute.describe());

  // The weights' own transform (size and normalisation of the data they were trained on) unless
  // a size is given here; torchvision's ImageNet transform for files that carry none.
  auto transform = data::EvalTransformOptions().resize_size(p.resize_size).crop_size(p.crop_size);
  const bool use_file_transform = file_transform && !result.count("resize-size") && !result.count("crop-size");
  if (use_file_transform) {
    data::Rgb mean{}, std{};
    for (size_t c = 0; c < 3; ++c) {
      mean[c] = static_cast<float>(file_transform->mean[c]);
      std[c] = static_cast<float>(file_transform->std[c]);
    }
    transform.resize_size(file_transform->resize_size).crop_size(file_transform->crop_size).mean(mean).std(std);
  }
  spdlog::info("input: resize {}, center crop {}, normalise mean ({:.4g}, {:.4g}, {:.4g}) std ({:.4g}, {:.4g}, {:.4g}), "
               "{}", transform.resize_size(), transform.crop_size(), transform.mean()[0], transform.mean()[1],
               transform.mean()[2], transform.std()[0], transform.std()[1], transform.std()[2],
               use_file_transform ? "as the weights file says"
                   : file_transform ? "sizes from the flags (normalisation ImageNet's)" : "torchvision's ImageNet transform");
  c10::InferenceMode inference;
  const std::vector<Input> inputs = expand_inputs(p.images);
  std::vector<Input> bad;
  const auto report_bad = [&](Input in) {
    if (in.error.rfind(in.path, 0) != 0) in.error = in.path + ": " + in.error;  // readers name the file
    if (p.skip_bad) spdlog::warn("skipped {}", in.error);
    bad.push_back(std::move(in));
  };
  if (p.format == Format::kCsv) std::printf("image,rank,index,label,probability,logit\n");
  size_t next = 0, done = 0;
  while (next < inputs.size()) {
    // The next batch of images that decode; the others are reported and passed over.
    std::vector<std::string> names;
    std::vector<torch::Tensor> batch;
    for (; next < inputs.size() && static_cast<int64_t>(batch.size()) < p.batch_size; ++next) {
      if (!inputs[next].error.empty()) {
        report_bad(inputs[next]);
        continue;
      }
      try {
        batch.push_back(data::eval_transform(data::decode_image_file(inputs[next].path), transform));
        names.push_back(inputs[next].path);
      } catch (const std::exception& e) {
        std::string why = e.what();
        why = why.substr(0, why.find("\nException raised from"));
        report_bad({inputs[next].path, why});
      }
    }
    if (batch.empty()) continue;
    torch::Tensor x = torch::stack(batch);  // (B, 3, crop, crop)
    if (device.is_cuda()) x = x.pin_memory();
    x = runtime::prepare_input(x, compute, /*non_blocking=*/true);
    const torch::Tensor logits = model->forward(x).to(torch::kCPU, torch::kFloat32);  // (B, C)
    for (size_t i = 0; i < names.size(); ++i)
      print_result(p, names[i], labels, logits[static_cast<int64_t>(i)].contiguous());
    std::fflush(stdout);  // results stream out batch by batch
    done += names.size();
  }
  runtime::log_inference_plan(model);
  if (bad.empty()) return 0;
  if (p.skip_bad) {
    spdlog::warn("{} image(s) classified, {} skipped", done, bad.size());
    return 0;
  }
  // One error line, naming every bad file with its reason (the first 20).
  std::string list;
  for (size_t i = 0; i < bad.size() && i < 20; ++i)
    list += (i ? "; " : "") + bad[i].error;
  if (bad.size() > 20) list += "; and " + std::to_string(bad.size() - 20) + " more";
  std::fflush(stdout);
  std::fprintf(stderr, "error: %zu of %zu image(s) could not be classified (%s). The others' results are "
               "printed; --skip-bad reports these and exits 0\n", bad.size(), bad.size() + done, list.c_str());
  return 1;
#endif
}

}  // namespace alexnet::app

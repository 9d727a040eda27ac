// alexnet predict: torchvision's evaluation transform, AlexNet, top-k classes.
#include "app/classifier.h"
#include "app/cli.h"
#include "app/commands.h"
#include "app/runtime/errors.h"
#include "data/dataset.h"
#include "data/image.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"
#endif

#include <spdlog/spdlog.h>

#include <glob.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

enum class Format { kText, kJson, kCsv };

struct PredictParams {
  std::string weights;
  int64_t topk = 5;
  int64_t batch_size = 16;
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
  if (p.format == Format::kJson) {
    std::printf("%s\n", top_k_json(image, labels, logits, p.topk).c_str());
    return;
  }
  const RankedClasses r = rank_classes(logits, p.topk);
  if (p.format == Format::kText) std::printf("%s\n", image.c_str());
  for (size_t j = 0; j < r.index.size(); ++j) {
    const auto rank = static_cast<long long>(j + 1);
    const auto index = static_cast<long long>(r.index[j]);
    if (p.format == Format::kCsv)
      std::printf("%s,%lld,%lld,%s,%.9g,%.9g\n", csv_field(image).c_str(), rank, index,
                  csv_field(labels[r.index[j]]).c_str(), r.probability[j], r.logit[j]);
    else
      std::printf("  %2lld. %6.2f%%  %s (%lld)\n", rank, 100.0 * r.probability[j], labels[r.index[j]].c_str(), index);
  }
}

cxxopts::Options predict_options(const PredictParams& p) {
  cxxopts::Options options("alexnet predict",
                           "Classify images with torchvision's evaluation transform "
                           "(resize shorter side, center crop, ImageNet normalisation).");
  options.positional_help("IMAGE|DIR|GLOB|- ...");
  options.add_options()
      ("w,weights", "Weights: .pth, TorchScript .pt, .safetensors or torch.export .pt2", cxxopts::value<std::string>())
      ("k,topk", "How many classes to print per image (0 = all)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.topk)))
      ("format", "text, json (one JSON object per image: JSON Lines) or csv (one row per class: "
                 "image,rank,index,label,probability,logit)", cxxopts::value<std::string>()->default_value("text"))
      ("json", "As --format json")
      ("skip-bad", "Report unreadable images on stderr and go on, exiting 0 (without it: the good "
                   "images' results, then exit 1 naming the bad ones)")
      ("batch-size", "Images per forward pass",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.batch_size)))
      ("images", "Image files, folders (searched recursively for image files), globs, or - "
                 "(paths on standard input, one per line)", cxxopts::value<std::vector<std::string>>());
  add_classifier_options(options);
  add_compute_options(options, runtime::ComputeRequest(), /*with_plan=*/true);  // fp32, NCHW, no plan
  add_nonfinite_option(options);
  add_max_pixels_option(options);
  add_common_options(options);
  options.parse_positional({"images"});
  return options;
}

/// The flags as PredictParams, checked in the order a user reads them; UsageError naming the
/// first wrong one.
PredictParams predict_params(const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  PredictParams p;
  p.weights = required_flag(result, "weights", options);
  if (!result.count("images")) throw UsageError("no IMAGE given", options.help());
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
  check_classifier_flags(result, options);
  p.images = result["images"].as<std::vector<std::string>>();
  return p;
}

}  // namespace

int run_predict(int argc, const char* const* argv) {
  cxxopts::Options options = predict_options(PredictParams());
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const PredictParams p = predict_params(result, options);
  const runtime::ComputeRequest request = compute_flags(result, options);
  set_max_pixels(result, options);

#ifndef ALEXNET_HAVE_OPENCV
  TORCH_CHECK(false, "predict: this build has no image decoding (built without OpenCV)");
#else
  const torch::Device device = setup_runtime(result);
  const Classifier classifier = load_classifier(result, options, p.weights, request, device);
  const std::vector<std::string>& labels = classifier.labels;
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
        batch.push_back(data::eval_transform(data::decode_image_file(inputs[next].path), classifier.transform));
        names.push_back(inputs[next].path);
      } catch (const std::exception& e) {
        report_bad({inputs[next].path, runtime::error_message(e)});
      }
    }
    if (batch.empty()) continue;
    const torch::Tensor logits = classifier.logits(torch::stack(batch));  // (B, C)
    for (size_t i = 0; i < names.size(); ++i)
      print_result(p, names[i], labels, logits[static_cast<int64_t>(i)].contiguous());
    std::fflush(stdout);  // results stream out batch by batch
    done += names.size();
  }
  runtime::log_inference_plan(classifier.model);
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

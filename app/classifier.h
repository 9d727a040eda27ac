// A weights file made ready to classify images, as predict and serve run it:
// the model prepared for inference, the class names it answers with and the
// input transform its images get, each chosen from the file and the flags.
#pragma once

#include "app/runtime/compute.h"
#include "data/image.h"
#include "model/alexnet.h"

#include <cxxopts.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace alexnet::app {

struct Classifier {
  std::string weights;  // the file, as given
  AlexNet model{nullptr};
  runtime::ComputeConfig compute;
  int64_t num_classes = 0;
  std::vector<std::string> labels;  // num_classes names
  std::string names_from;           // "the weights file", "--labels F", ...
  data::EvalTransformOptions transform;
  std::string transform_from;  // "as the weights file says", ...
  std::string sha256;          // of the bytes loaded, when asked for (or the name promised one)

  /// Logits (B, num_classes), float32 on the CPU, for a batch of transformed
  /// images (B, 3, crop, crop) on the CPU. Call under c10::InferenceMode.
  torch::Tensor logits(const torch::Tensor& images) const;
};

/// Adds --labels, --resize-size and --crop-size (as predict documents them), and
/// the int8 flags (add_int8_options).
void add_classifier_options(cxxopts::Options& options);

/// Checks those three flags (UsageError naming the flag).
void check_classifier_flags(const cxxopts::ParseResult& result, const cxxopts::Options& options);

/// Loads `weights` for inference on `device`: names from the file, else
/// --labels, else ImageNet's for 1000 classes, else "class N"; the file's input
/// transform unless --resize-size or --crop-size is given, else torchvision's
/// ImageNet transform. Refuses non-finite weights (unless --allow-nonfinite),
/// a model that does not take RGB, and names that do not match the classes.
/// For --precision int8, the scales as setup_int8 finds or makes them (calibrating
/// through the same input transform). Logs what it chose. Throws c10::Error naming
/// the file or the flag (UsageError for int8 flags without int8).
/// With_sha256: the file's SHA-256 is kept in `sha256` (computed while the file is mapped, once).
Classifier load_classifier(const cxxopts::ParseResult& result, const cxxopts::Options& options,
                           const std::string& weights, const runtime::ComputeRequest& request,
                           const torch::Device& device, bool with_sha256 = false);

/// The `k` most probable classes (0 = all) of one image's logits
/// ((num_classes,) float32 on the CPU), by softmax probability.
struct RankedClasses {
  std::vector<int64_t> index;
  std::vector<float> probability;
  std::vector<float> logit;
};
RankedClasses rank_classes(const torch::Tensor& logits, int64_t k);

/// One image's top classes as predict --json writes them:
/// {"image": NAME, "top": [{"index", "label", "probability", "logit"}, ...]},
/// `k` classes by probability (0 = all). `logits`: (num_classes,) float32 CPU.
std::string top_k_json(const std::string& image, const std::vector<std::string>& labels,
                       const torch::Tensor& logits, int64_t k);

}  // namespace alexnet::app

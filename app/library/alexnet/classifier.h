// The alexnet library's classifier: a weights file made ready to classify images, as
// `alexnet predict` runs it. Installed as <alexnet/classifier.h> with <alexnet/alexnet.h>
// (the torch::nn module); find_package(alexnet) gives the target alexnet::alexnet.
//
//   alexnet::Classifier c = alexnet::Classifier::load("alexnet-owt-7be5be79.pth");
//   for (const alexnet::Prediction& p : c.classify_file("cat.jpg", 5))
//     std::printf("%s %.3f\n", p.label.c_str(), p.probability);
//
// Weights: torchvision's .pth (a state_dict or a training checkpoint), TorchScript .pt,
// safetensors, as `alexnet` reads them (safely: no code from the file runs). Class names and
// the input transform come from the file when it carries them (files this project writes);
// else ImageNet's names for 1000 classes, "class N" otherwise, and torchvision's ImageNet
// transform (resize 256, center crop 224, ImageNet mean and std). Logits equal torchvision's
// for the same pixels: classify_file decodes as PIL does.
//
// Errors are alexnet::Error, whose message names the file. The library prints nothing, sets
// no logging sinks and leaves LibTorch's thread count to the caller (torch::set_num_threads).
#pragma once

#include <alexnet/alexnet.h>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet {

/// Every error the library reports: a file that is missing, not weights, weights that do not
/// fit AlexNet, an image that does not decode or an input of the wrong shape.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// torchvision's evaluation transform: resize the shorter side, center-crop, normalise.
struct Transform {
  int64_t resize_size = 256;
  int64_t crop_size = 224;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // RGB
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

/// One class of an answer, the most probable first.
struct Prediction {
  int64_t index = 0;
  std::string label;
  float probability = 0;  // softmax over every class
  float logit = 0;
};

class Classifier {
 public:
  /// Reads a weights file (see above) into a model ready for inference on the CPU (eval mode,
  /// fp32). Throws Error.
  static Classifier load(const std::string& path);

  /// The module (torchvision's parameter names), in eval mode.
  AlexNet& model() const;
  const std::vector<std::string>& labels() const;
  const Transform& transform() const;

  /// The transformed image, (3, crop, crop) float32: from an 8-bit BGR (or gray, or BGRA)
  /// cv::Mat as cv::imread gives it, from an encoded image in memory (JPEG, PNG, ...), or from
  /// a file. Files and bytes are decoded as PIL decodes them (JPEG with libjpeg's defaults);
  /// a cv::Mat is taken as it is.
  torch::Tensor preprocess(const cv::Mat& image) const;
  torch::Tensor preprocess_bytes(const void* data, std::size_t size) const;
  torch::Tensor preprocess_file(const std::string& path) const;

  /// Logits (B, classes) float32 for a batch (B, 3, crop, crop) of transformed images.
  torch::Tensor logits(const torch::Tensor& batch) const;

  /// The k most probable classes of one image (k = 0: all).
  std::vector<Prediction> classify(const cv::Mat& image, int64_t k = 5) const;
  std::vector<Prediction> classify_bytes(const void* data, std::size_t size, int64_t k = 5) const;
  std::vector<Prediction> classify_file(const std::string& path, int64_t k = 5) const;
  /// The same from one image's logits (classes,).
  std::vector<Prediction> rank(const torch::Tensor& logits, int64_t k = 5) const;

 private:
  struct State;
  explicit Classifier(std::shared_ptr<const State> state);
  std::shared_ptr<const State> state_;
};

}  // namespace alexnet

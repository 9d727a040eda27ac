// alexnet::Classifier (app/library/alexnet/classifier.h): the library's facade over the
// weights reader (model/weights.h) and the decoder and transform (data/decode.h,
// data/image.h) that `alexnet predict` uses.
#include "alexnet/classifier.h"

#include "data/decode.h"
#include "data/image.h"
#include "data/labels.h"
#include "model/weights.h"

#include <opencv2/imgproc.hpp>

#include <utility>

namespace alexnet {

struct Classifier::State {
  AlexNet model{nullptr};
  std::vector<std::string> labels;
  Transform transform;
  data::EvalTransformOptions eval;
};

namespace {

// Runs f, turning LibTorch's and the readers' exceptions into Error (without LibTorch's
// C++ backtrace).
template <typename F>
auto checked(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error(e.what());
  }
}

}  // namespace

Classifier::Classifier(std::shared_ptr<const State> state) : state_(std::move(state)) {}

Classifier Classifier::load(const std::string& path) {
  return checked([&] {
    auto s = std::make_shared<State>();
    const WeightsFile file(path, WeightsFile::HubCheck::kWhileLoading);
    s->model = file.load();
    s->model->eval();
    const int64_t classes = s->model->options().num_classes();
    if (s->model->options().in_channels() != 3)
      throw Error(path + ": the model takes " + std::to_string(s->model->options().in_channels()) +
                  " input channels; images are fed as RGB");
    const std::vector<std::string> bad = nonfinite_parameters(*s->model);
    if (!bad.empty()) throw Error(path + ": " + bad.front() + " holds NaN or infinity");
    s->labels = file.class_names();
    if (s->labels.empty()) {
      if (classes == 1000) {
        s->labels = data::imagenet_labels();
      } else {
        for (int64_t i = 0; i < classes; ++i) s->labels.push_back("class " + std::to_string(i));
      }
    }
    if (const std::optional<InputTransform> t = file.input_transform()) {
      s->transform.resize_size = t->resize_size;
      s->transform.crop_size = t->crop_size;
      for (size_t i = 0; i < 3; ++i) {
        s->transform.mean[i] = static_cast<float>(t->mean[i]);
        s->transform.std[i] = static_cast<float>(t->std[i]);
      }
    }
    s->eval = data::EvalTransformOptions()
                  .resize_size(s->transform.resize_size)
                  .crop_size(s->transform.crop_size)
                  .mean(s->transform.mean)
                  .std(s->transform.std);
    return Classifier(std::move(s));
  });
}

AlexNet& Classifier::model() const { return const_cast<State&>(*state_).model; }
const std::vector<std::string>& Classifier::labels() const { return state_->labels; }
const Transform& Classifier::transform() const { return state_->transform; }

torch::Tensor Classifier::preprocess(const cv::Mat& image) const {
  return checked([&] {
    if (image.empty()) throw Error("preprocess: an empty cv::Mat");
    if (image.depth() != CV_8U)
      throw Error("preprocess: expected an 8-bit image (CV_8U), got depth " + std::to_string(image.depth()));
    cv::Mat rgb;
    switch (image.channels()) {
      case 1: cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB); break;
      case 3: cv::cvtColor(image, rgb, cv::COLOR_BGR2RGB); break;
      case 4: cv::cvtColor(image, rgb, cv::COLOR_BGRA2RGB); break;
      default: throw Error("preprocess: expected 1, 3 or 4 channels, got " + std::to_string(image.channels()));
    }
    const torch::Tensor hwc =
        torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, {static_cast<int64_t>(rgb.step[0]), 3, 1}, torch::kUInt8)
            .contiguous();
    return data::eval_transform(hwc.data_ptr() == rgb.data ? hwc.clone() : hwc, state_->eval);
  });
}

torch::Tensor Classifier::preprocess_bytes(const void* data, std::size_t size) const {
  return checked([&] {
    return data::eval_transform(data::decode_image_bytes(static_cast<const uint8_t*>(data), size, "image bytes"),
                                state_->eval);
  });
}

torch::Tensor Classifier::preprocess_file(const std::string& path) const {
  return checked([&] { return data::eval_transform(data::decode_image_file(path), state_->eval); });
}

torch::Tensor Classifier::logits(const torch::Tensor& batch) const {
  return checked([&] {
    if (batch.dim() != 4 || batch.size(1) != 3)
      throw Error("logits: expected a batch (B, 3, H, W), got " + std::to_string(batch.dim()) + " dimensions");
    c10::InferenceMode guard;
    AlexNet model = state_->model;
    return model->forward(batch.to(torch::kCPU, torch::kFloat)).contiguous();
  });
}

std::vector<Prediction> Classifier::rank(const torch::Tensor& logits, int64_t k) const {
  return checked([&] {
    const torch::Tensor z = logits.to(torch::kCPU, torch::kFloat).reshape({-1}).contiguous();
    const int64_t n = z.size(0);
    if (n != static_cast<int64_t>(state_->labels.size()))
      throw Error("rank: " + std::to_string(n) + " logits for a model of " + std::to_string(state_->labels.size()) +
                  " classes");
    k = k <= 0 ? n : std::min(k, n);
    const torch::Tensor p = torch::softmax(z, 0);
    const auto [top_p, top_i] = p.topk(k);
    std::vector<Prediction> out;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = top_i[j].item<int64_t>();
      out.push_back({i, state_->labels[static_cast<size_t>(i)], top_p[j].item<float>(), z[i].item<float>()});
    }
    return out;
  });
}

std::vector<Prediction> Classifier::classify(const cv::Mat& image, int64_t k) const {
  return rank(logits(preprocess(image).unsqueeze(0))[0], k);
}

std::vector<Prediction> Classifier::classify_bytes(const void* data, std::size_t size, int64_t k) const {
  return rank(logits(preprocess_bytes(data, size).unsqueeze(0))[0], k);
}

std::vector<Prediction> Classifier::classify_file(const std::string& path, int64_t k) const {
  return rank(logits(preprocess_file(path).unsqueeze(0))[0], k);
}

}  // namespace alexnet

#include "model/int8.h"

#include "model/int8_onednn.h"
#include "model/quantize.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

namespace alexnet {

namespace {

using Kind = LayerSpec::Kind;

// Calls one of LibTorch's quantized operators through the dispatcher (boxed: their
// packed-weight classes have no public C++ headers in every LibTorch).
c10::IValue call_op(const char* name, const char* overload, std::vector<c10::IValue> stack) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  op.callBoxed(&stack);
  return std::move(stack.front());
}

// Per output channel, symmetric, to [-127, 127] (zero point 0, as the kernels require).
torch::Tensor quantize_weight(const torch::Tensor& w) {
  const auto flat = w.detach().to(torch::kFloat).reshape({w.size(0), -1});
  // max |w| per row, without an |w| copy of the weights (151 MB for classifier.1).
  const auto largest = torch::maximum(flat.amax(1), flat.amin(1).neg());
  const auto scales = (largest.to(torch::kDouble) / 127.0).clamp_min(1e-12);  // (out,)
  const auto zeros = torch::zeros({w.size(0)}, torch::kLong);
  return at::quantize_per_channel(w.detach().to(torch::kFloat).contiguous(), scales, zeros, 0, torch::kQInt8);
}

struct QuantParams {
  double scale = 1.0;
  int64_t zero_point = 0;
};

QuantParams params_for(const ActivationRange& r, int64_t qmax) {
  const double lo = std::min(r.min, 0.0), hi = std::max(r.max, 0.0);  // zero must be exact
  QuantParams p;
  p.scale = std::max((hi - lo) / static_cast<double>(qmax), 1e-8);
  p.zero_point = std::clamp<int64_t>(std::llround(-lo / p.scale), 0, qmax);
  return p;
}

// A quantized Linear layer and its ReLU: oneDNN's inner product where the build has it
// (the same bytes, up to 5x faster: model/int8_onednn.h), else LibTorch's kernel.
struct QuantizedLinear {
  c10::IValue packed;  // LibTorch's LinearPackedParamsBase
  std::shared_ptr<OneDnnInt8Linear> onednn;
  QuantParams out;

  QuantizedLinear() = default;
  // w: (out, in) float32, or qint8 as quantize_weight gives it; in: the input's
  // quantization; out: the ReLU output's.
  QuantizedLinear(const torch::Tensor& w, const torch::Tensor& bias, QuantParams in, QuantParams out) : out(out) {
    const auto q = w.is_quantized() ? w : quantize_weight(w);
    if (OneDnnInt8Linear::available())
      onednn = std::make_shared<OneDnnInt8Linear>(q, bias, Int8Requantization{in.scale, in.zero_point, out.scale,
                                                                              out.zero_point, /*relu=*/true});
    else
      packed = call_op("quantized::linear_prepack", "", {q, bias});
  }

  torch::Tensor operator()(const torch::Tensor& x) const {  // (N, in) quint8 -> (N, out) quint8
    if (onednn) return onednn->forward(x);
    return call_op("quantized::linear_relu", "", {x, packed, out.scale, out.zero_point}).toTensor();
  }
};

// The last Linear layer: int8 weights per output channel as the others', the previous layer's
// quantized output in, its sums out dequantized in float32 (oneDNN), so the logits keep
// float32's resolution; without oneDNN, LibTorch's float32 Linear on the same weights.
struct DequantizingLinear {
  torch::Tensor bias;  // (out,) float32
  std::shared_ptr<OneDnnInt8Linear> onednn;  // holds the int8 weights
  torch::Tensor dequantized;  // (out, in) float32, without oneDNN

  DequantizingLinear() = default;
  // A copy of w and b, as every other layer's: the engine runs the weights it was built from.
  DequantizingLinear(const torch::Tensor& w, const torch::Tensor& b, QuantParams in) : bias(b.clone()) {
    const auto q = quantize_weight(w);  // (out, in) qint8
    if (OneDnnInt8Linear::available())
      onednn = std::make_shared<OneDnnInt8Linear>(
          q, bias, Int8Requantization{in.scale, in.zero_point, 1.0, 0, /*relu=*/false, /*float_output=*/true});
    else
      dequantized = q.dequantize();
  }

  torch::Tensor operator()(const torch::Tensor& x) const {  // (N, in) quint8 -> (N, out) float32
    return onednn ? onednn->forward(x) : torch::linear(x.dequantize(), dequantized, bias);
  }
};

// The layers torchvision's AlexNet is made of, checked against what int8 can run.
void check_runnable(const AlexNetLayers& layers) {
  for (size_t i = 0; i < layers.features.size(); ++i) {
    const auto& s = layers.features[i];
    if (s.kind == Kind::kLrn)
      throw std::invalid_argument("int8: features." + std::to_string(i) +
                                  " is LocalResponseNorm (the 2012 architecture), which has no int8 kernel");
    if (s.kind == Kind::kConv &&
        (i + 1 >= layers.features.size() || layers.features[i + 1].kind != Kind::kReLU))
      throw std::invalid_argument("int8: features." + std::to_string(i) + " is not followed by a ReLU");
  }
}

}  // namespace

// ------------------------------------------------------------------ calibration

struct Int8Calibrator::Impl {
  AlexNet model{nullptr};
  AlexNetLayers layers;
  int64_t images = 0;
  double input_min = std::numeric_limits<double>::infinity();
  double input_max = -std::numeric_limits<double>::infinity();
  // Per quantized layer: a sample of its ReLU outputs (every k-th value of each batch).
  std::vector<std::string> names;
  std::map<std::string, std::vector<torch::Tensor>> samples;
  std::map<std::string, double> maxima;

  void record(const std::string& name, const torch::Tensor& y) {
    const auto flat = y.detach().reshape({-1});
    // About 32K values per batch and layer, evenly spread (finish() works on a histogram
    // of the sample, so its size only sets how well the tail is seen).
    const int64_t step = std::max<int64_t>(1, flat.numel() / 32768);
    samples[name].push_back(flat.slice(0, 0, flat.numel(), step).clone());
    maxima[name] = std::max(maxima[name], flat.max().item<double>());
  }
};

Int8Calibrator::Int8Calibrator(AlexNet model) : impl_(std::make_unique<Impl>()) {
  impl_->model = std::move(model);
  impl_->layers = alexnet_layers(impl_->model->options());
  check_runnable(impl_->layers);
}

Int8Calibrator::~Int8Calibrator() = default;

int64_t Int8Calibrator::images() const { return impl_->images; }

void Int8Calibrator::observe(const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  auto& m = *impl_;
  m.model->eval();
  auto x = input.to(torch::kFloat);  // (N, C, H, W)
  m.input_min = std::min(m.input_min, x.min().item<double>());
  m.input_max = std::max(m.input_max, x.max().item<double>());
  size_t i = 0;
  for (auto& layer : *m.model->features) {
    x = layer.forward(x);
    // The int8 network quantizes each conv's output after its ReLU: record there.
    if (m.layers.features[i].kind == Kind::kReLU && i > 0 && m.layers.features[i - 1].kind == Kind::kConv)
      m.record(layer_name("features", i - 1), x);
    ++i;
  }
  x = m.model->pool(x);  // (N, 9216)
  i = 0;
  const size_t last_linear = m.layers.classifier.size() - 1;
  for (auto& layer : *m.model->classifier) {
    x = layer.forward(x);
    if (m.layers.classifier[i].kind == Kind::kReLU && i > 0 && i - 1 < last_linear &&
        m.layers.classifier[i - 1].kind == Kind::kLinear)
      m.record(layer_name("classifier", i - 1), x);
    ++i;
  }
  if (m.names.empty())
    for (const auto& [name, unused] : m.samples) m.names.push_back(name);
  m.images += input.size(0);
}

Int8Scales Int8Calibrator::finish(int64_t qmax) const {
  const auto& m = *impl_;
  TORCH_CHECK(m.images > 0, "int8 calibration: no images were observed");
  Int8Scales s;
  s.images = m.images;
  s.input = {m.input_min, m.input_max};
  // Forward order: features.0, 3, 6, 8, 10, then classifier.1, 4 (the map sorts them otherwise).
  std::vector<std::string> order;
  for (size_t i = 0; i < m.layers.features.size(); ++i)
    if (m.layers.features[i].kind == Kind::kConv) order.push_back(layer_name("features", i));
  for (size_t i = 0; i + 1 < m.layers.classifier.size(); ++i)
    if (m.layers.classifier[i].kind == Kind::kLinear) order.push_back(layer_name("classifier", i));
  for (const auto& name : order) {
    const double top = m.maxima.at(name);
    // The squared error of quantize-dequantize for clipping points from 2.5% of the maximum
    // up to it, on a fine histogram of the sample (bin centres stand for their values:
    // 16384 bins are 3x finer than the smallest step tried), the least kept.
    constexpr int64_t kBins = 16384;
    const double width = (top > 0 ? top : 1.0) / kBins;
    const auto hist = torch::histc(torch::cat(m.samples.at(name)), kBins, 0, width * kBins).to(torch::kDouble);
    const double* counts = hist.data_ptr<double>();  // (kBins,)
    double best = top, best_error = std::numeric_limits<double>::infinity();
    // Plain loops: 391 x 16384 terms, where a tensor expression per candidate paid LibTorch's
    // per-operation cost thousands of times (12 s for seven layers).
    for (int k = 10; k <= 400 && top > 0; ++k) {
      const double clip = top * k / 400.0;
      const double scale = clip / static_cast<double>(qmax);
      double error = 0.0;
      for (int64_t b = 0; b < kBins; ++b) {
        if (counts[b] == 0) continue;
        const double centre = (b + 0.5) * width;
        const double q = std::min(std::nearbyint(centre / scale), static_cast<double>(qmax)) * scale;
        error += (q - centre) * (q - centre) * counts[b];
      }
      if (error < best_error) {
        best_error = error;
        best = clip;
      }
    }
    s.layers.emplace_back(name, ActivationRange{0.0, best > 0 ? best : 1.0});
  }
  return s;
}

// ------------------------------------------------------------------ int8 forward

struct Int8AlexNet::Impl {
  int64_t qmax = 255;
  QuantParams input;
  std::vector<std::pair<std::string, double>>* profile = nullptr;
  struct Stage {
    std::string name;  // "features.0"
    Kind kind = Kind::kConv;
    c10::IValue packed;                      // conv: Conv2dPackedParamsBase, where oneDNN does not run it
    std::shared_ptr<OneDnnInt8Conv> onednn;  // conv: model/int8_onednn.h
    QuantParams out;                         // conv: its ReLU output
    int64_t kernel = 0, stride = 1, padding = 0;  // max-pool; conv read in tiles (space_to_depth)
    bool space_to_depth = false;  // conv: reads quantize_space_to_depth's tiles (model/quantize.h)

    // A convolution + ReLU reading `in` and writing `out`: oneDNN's where the build has it.
    // The one reading the image, where its stride is more than 1 and its few channels make at
    // most 64 per tile, reads the image in tiles of stride x stride pixels: features.0's
    // 3 channels, 11x11, stride 4 become 48 channels, 3x3, stride 1, the same int32 sums.
    void pack_conv(const LayerSpec& spec, const torch::Tensor& weight, const torch::Tensor& bias, QuantParams in,
                   bool reads_image) {
      std::vector<int64_t> conv_stride{spec.stride, spec.stride}, conv_padding{spec.padding, spec.padding};
      auto q = quantize_weight(weight);  // (out, in, k, k) qint8
      if (reads_image && spec.groups == 1 && spec.stride > 1 && spec.in * spec.stride * spec.stride <= 64) {
        space_to_depth = true;
        kernel = spec.kernel;
        stride = spec.stride;
        padding = spec.padding;
        q = space_to_depth_weight(q, SpaceToDepth::of(kernel, kernel, kernel, stride, 0));  // (out, in * s^2, k', k')
        conv_stride = {1, 1};
        conv_padding = {0, 0};
      }
      if (OneDnnInt8Linear::available() && spec.groups == 1)
        onednn = std::make_shared<OneDnnInt8Conv>(
            q, bias, conv_stride, conv_padding,
            Int8Requantization{in.scale, in.zero_point, out.scale, out.zero_point, true});
      else
        packed = call_op("quantized::conv2d_prepack", "",
                         {q, bias, conv_stride, conv_padding, std::vector<int64_t>{1, 1}, spec.groups});
    }
  };
  std::vector<Stage> features;
  // classifier.1 and .4 (quantized, with ReLU); classifier.6 below.
  QuantizedLinear fc6;      // inputs in NHWC order (h, w, c): 36 * 256
  QuantizedLinear fc6_1x1;  // the same with its weights summed over the 36 bins: 256 inputs
  QuantizedLinear fc7;
  DequantizingLinear fc8;  // classifier.6: (classes, 4096), float32 logits
  int64_t channels = 256;     // the last convolution's outputs
  int64_t in_channels = 3;    // the image's
};

bool Int8AlexNet::available() {
  const auto& engines = at::globalContext().supportedQEngines();
  return std::any_of(engines.begin(), engines.end(), [](at::QEngine e) {
    return e == at::QEngine::FBGEMM || e == at::QEngine::ONEDNN
#if TORCH_VERSION_MAJOR >= 2
           || e == at::QEngine::X86
#endif
        ;
  });
}

std::string Int8AlexNet::engine() {
  static const std::string chosen = [] {
    const auto& engines = at::globalContext().supportedQEngines();
    const auto has = [&](at::QEngine e) { return std::find(engines.begin(), engines.end(), e) != engines.end(); };
    // fbgemm first (x86 in LibTorch 2.x is fbgemm with oneDNN for some shapes); QNNPACK is
    // written for ARM phones and is many times slower on x86 servers.
#if TORCH_VERSION_MAJOR >= 2
    if (has(at::QEngine::X86)) {
      at::globalContext().setQEngine(at::QEngine::X86);
      return std::string("x86 (fbgemm)");
    }
#endif
    if (has(at::QEngine::FBGEMM)) {
      at::globalContext().setQEngine(at::QEngine::FBGEMM);
      return std::string("fbgemm");
    }
    if (has(at::QEngine::ONEDNN)) {
      at::globalContext().setQEngine(at::QEngine::ONEDNN);
      return std::string("onednn");
    }
    return std::string();
  }();
  return chosen;
}

Int8AlexNet::Int8AlexNet(AlexNet& model, const Int8Scales& scales, int64_t activation_max)
    : impl_(std::make_unique<Impl>()) {
  if (engine().empty())
    throw std::invalid_argument("int8: this LibTorch has no quantized CPU kernels (fbgemm or oneDNN)");
  TORCH_CHECK(activation_max == 127 || activation_max == 255, "int8: activation_max must be 127 or 255");
  auto& m = *impl_;
  m.qmax = activation_max;
  const AlexNetLayers layers = alexnet_layers(model->options());
  check_runnable(layers);
  std::map<std::string, ActivationRange> ranges(scales.layers.begin(), scales.layers.end());
  const auto range_of = [&](const std::string& name) {
    const auto it = ranges.find(name);
    if (it == ranges.end())
      throw std::invalid_argument("int8: the scales have no entry for " + name + " (calibrate again)");
    return params_for(it->second, m.qmax);
  };
  m.input = params_for(scales.input, m.qmax);
  torch::NoGradGuard no_grad;
  const auto params = model->named_parameters();
  const auto param = [&](const std::string& name) { return params[name].detach().to(torch::kCPU, torch::kFloat); };

  QuantParams in = m.input;  // the quantization of the next convolution's input
  m.in_channels = layers.features.front().in;
  for (size_t i = 0; i < layers.features.size(); ++i) {
    const auto& spec = layers.features[i];
    Impl::Stage stage;
    stage.name = layer_name("features", i);
    stage.kind = spec.kind;
    if (spec.kind == Kind::kConv) {
      stage.out = range_of(stage.name);
      stage.pack_conv(spec, param(stage.name + ".weight"), param(stage.name + ".bias"), in, m.features.empty());
      in = stage.out;  // the next convolution's input, through max-pooling
      m.channels = spec.out;
    } else if (spec.kind == Kind::kMaxPool) {
      stage.kernel = spec.kernel;
      stage.stride = spec.stride;
    } else {
      continue;  // ReLU: fused into the convolution
    }
    m.features.push_back(std::move(stage));
  }

  std::vector<size_t> linear;
  for (size_t i = 0; i < layers.classifier.size(); ++i)
    if (layers.classifier[i].kind == Kind::kLinear) linear.push_back(i);
  TORCH_CHECK(linear.size() == 3, "int8: expected 3 Linear layers in the classifier, found ", linear.size());
  const std::string fc6 = layer_name("classifier", linear[0]), fc7 = layer_name("classifier", linear[1]),
                    fc8 = layer_name("classifier", linear[2]);
  // The int8 features come out channels-last, so classifier.1 reads them in (h, w, c)
  // order: its columns are permuted once here instead of the activations every pass.
  // Quantizing a row does not depend on the order of its columns, so the int8 values are
  // permuted, not a float32 copy (151 MB of peak memory at load).
  const int64_t hidden = layers.classifier[linear[0]].out;
  const auto fc6_weight = param(fc6 + ".weight");  // (4096, 256 * 36), (c, h, w) order
  const auto fc6_quantized = quantize_weight(fc6_weight);
  const auto fc6_permuted = at::_make_per_channel_quantized_tensor(
      fc6_quantized.int_repr()
          .reshape({hidden, m.channels, kPooledSize, kPooledSize})
          .permute({0, 2, 3, 1})
          .reshape({hidden, -1})
          .contiguous(),
      fc6_quantized.q_per_channel_scales(), fc6_quantized.q_per_channel_zero_points(), 0);  // (4096, 36 * 256)
  const auto fc6_bias = param(fc6 + ".bias");
  // classifier.1 reads the last convolution's output, through max- and average pooling,
  // which keep its quantization.
  const QuantParams features_out = in;
  const QuantParams fc6_out = range_of(fc6), fc7_out = range_of(fc7);
  m.fc6 = QuantizedLinear(fc6_permuted, fc6_bias, features_out, fc6_out);
  const auto summed = fc6_weight.reshape({hidden, m.channels, kPooledSize * kPooledSize}).sum(2);  // (4096, 256)
  m.fc6_1x1 = QuantizedLinear(summed, fc6_bias, features_out, fc6_out);
  m.fc7 = QuantizedLinear(param(fc7 + ".weight"), param(fc7 + ".bias"), fc6_out, fc7_out);
  m.fc8 = DequantizingLinear(param(fc8 + ".weight"), param(fc8 + ".bias"), fc7_out);
}

Int8AlexNet::~Int8AlexNet() = default;

int64_t Int8AlexNet::activation_max() const { return impl_->qmax; }

void Int8AlexNet::set_profile(std::vector<std::pair<std::string, double>>* sink) { impl_->profile = sink; }

namespace {

// The fastest of `runs` calls after `warmups` untimed ones, in seconds: a peak's time (a shared
// machine only ever slows a run down).
double fastest_seconds(int64_t warmups, int64_t runs, const std::function<void()>& run) {
  double best = 1e30;
  for (int64_t i = 0; i < warmups + runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmups) best = std::min(best, seconds);
  }
  return best;
}

}  // namespace

// The kernels Int8AlexNet runs: oneDNN's (model/int8_onednn.h) where the build has them,
// else LibTorch's quantized operators.
double int8_matmul_gops(int64_t n, int64_t iters) {
  TORCH_CHECK(!Int8AlexNet::engine().empty(), "int8: this LibTorch has no quantized CPU kernels");
  torch::NoGradGuard no_grad;
  const auto x = at::quantize_per_tensor(torch::rand({n, n}), 1.0 / 127, 0, torch::kQUInt8);  // (n, n)
  const QuantizedLinear product(torch::randn({n, n}), torch::zeros({n}), {1.0 / 127, 0}, {1.0, 0});
  return 2.0 * n * n * n / fastest_seconds(1, iters, [&] { product(x); }) / 1e9;
}

double int8_conv_gops(int64_t iters) {
  TORCH_CHECK(!Int8AlexNet::engine().empty(), "int8: this LibTorch has no quantized CPU kernels");
  torch::NoGradGuard no_grad;
  const int64_t n = 32, c = 256, side = 28;
  const auto x = at::quantize_per_tensor(torch::rand({n, c, side, side}).contiguous(torch::MemoryFormat::ChannelsLast),
                                         1.0 / 255, 0, torch::kQUInt8);  // (32, 256, 28, 28)
  const std::vector<int64_t> one{1, 1};
  const auto weight = quantize_weight(torch::randn({c, c, 3, 3}) / 50);
  std::function<void()> run;
  if (OneDnnInt8Linear::available()) {
    auto conv = std::make_shared<OneDnnInt8Conv>(weight, torch::zeros({c}), one, one,
                                                 Int8Requantization{1.0 / 255, 0, 1.0, 0, /*relu=*/true});
    run = [conv, &x] { conv->forward(x); };
  } else {
    const auto packed = call_op("quantized::conv2d_prepack", "", {weight, torch::zeros({c}), one, one, one, int64_t{1}});
    run = [packed, &x] { call_op("quantized::conv2d_relu", "new", {x, packed, 1.0, int64_t{0}}); };
  }
  return 2.0 * n * c * side * side * c * 9 / fastest_seconds(2, iters, run) / 1e9;
}

torch::Tensor Int8AlexNet::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  TORCH_CHECK(input.device().is_cpu() && input.scalar_type() == torch::kFloat,
              "int8: expected a float32 CPU input, got ", input.scalar_type(), " on ", input.device());
  TORCH_CHECK(input.dim() == 4, "int8: expected an input (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(input.size(1) == m.in_channels, "int8: expected an input with ", m.in_channels, " channels, got ",
              input.sizes());
  if (input.size(0) == 0) return torch::empty({0, m.fc8.bias.size(0)});  // (0, classes)
  // (N, C, H, W) quint8, channels-last: the layout the quantized kernels work in.
  auto mark_time = std::chrono::steady_clock::now();
  const auto mark = [&](const std::string& stage) {
    if (!m.profile) return;
    const auto now = std::chrono::steady_clock::now();
    m.profile->emplace_back(stage, std::chrono::duration<double>(now - mark_time).count());
    mark_time = now;
  };
  const auto& first = m.features.front();
  auto q = first.space_to_depth  // (N, C * s^2, H', W') or (N, C, H, W) quint8
               ? quantize_space_to_depth(
                     input, m.input.scale, m.input.zero_point,
                     SpaceToDepth::of(input.size(2), input.size(3), first.kernel, first.stride, first.padding))
               : quantize_channels_last(input, m.input.scale, m.input.zero_point);
  mark("quantize");
  for (const auto& stage : m.features) {
    if (stage.kind == Kind::kConv) {
      q = stage.onednn ? stage.onednn->forward(q)
                       : call_op("quantized::conv2d_relu", "new", {q, stage.packed, stage.out.scale, stage.out.zero_point})
                             .toTensor();
    } else {
      // Every size given for both sides: the quantized kernel reads two of each.
      q = at::max_pool2d(q, {stage.kernel, stage.kernel}, {stage.stride, stage.stride}, {0, 0}, {1, 1});
    }
    mark(stage.name);
  }
  const int64_t n = q.size(0);
  at::Tensor flat;  // (N, 36 * 256) or (N, 256), in (h, w, c) order
  const QuantizedLinear* fc6 = &m.fc6;
  if (q.size(2) == 1 && q.size(3) == 1) {
    // One value per channel copied into all 36 bins: classifier.1's weights summed over them.
    fc6 = &m.fc6_1x1;
    flat = q.reshape({n, m.channels});
  } else {
    if (q.size(2) != kPooledSize || q.size(3) != kPooledSize)
      q = at::adaptive_avg_pool2d(q, {kPooledSize, kPooledSize});
    flat = q.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, -1});
  }
  mark("avgpool");
  auto h = (*fc6)(flat);  // (N, 4096)
  mark("classifier.1");
  h = m.fc7(h);
  mark("classifier.4");
  const auto logits = m.fc8(h);  // (N, classes) float32
  mark("classifier.6");
  return logits;
}

}  // namespace alexnet

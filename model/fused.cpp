#include "model/fused.h"

#include "model/onednn_linear.h"
#include "model/onednn_plan.h"
#include "model/quantize.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <chrono>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>

namespace alexnet {

namespace {

using Kind = LayerSpec::Kind;

// Input shapes whose packs are kept (serve's batches take any size up to --max-batch). Shapes
// whose packs have the same layout share one (2.3M bf16 weights, 4.7 MB): oneDNN picks a few
// layouts, one for small batches and others for larger ones, so memory stays a few packs.
constexpr size_t kMaxShapes = 64;
// Linear weights packed for this batch run as fast at batch 1 as packed for 1 (measured;
// packed for 1 they run 1.6x slower at 64): one pack serves every batch above 1. Batch 1
// reads the plain weights, 1.2x faster (BENCHMARKS.md, "bf16 on AMD's AVX512-BF16 (Zen 4)").
constexpr int64_t kLinearPackBatch = 64;

c10::IValue call(const c10::OperatorHandle& op, std::vector<c10::IValue> stack) {
  op.callBoxed(&stack);
  return std::move(stack.front());
}

c10::optional<c10::OperatorHandle> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchema({name, ""});
}

// Whether this LibTorch (2.x) has the fused operators and oneDNN runs bf16 here.
bool libtorch_has_fused_ops() {
  static const bool ok = [] {
    for (const char* name : {"mkldnn::_convolution_pointwise", "mkldnn::_linear_pointwise",
                             "mkldnn::_reorder_convolution_weight", "mkldnn::_reorder_linear_weight"})
      if (!find_op(name)) return false;
    const auto bf16 = find_op("mkldnn::_is_mkldnn_bf16_supported");
    return bf16 && at::globalContext().userEnabledMkldnn() && call(*bf16, {}).toBool();
  }();
  return ok;
}

}  // namespace

// For a ReLU output's values the bits, read as int16, order as the numbers do (-0 reads
// as the least), so the maximum is an integer maximum over contiguous channels, which
// the compiler vectorizes: 3-4x faster here than at::max_pool2d's bf16 kernel (a
// positive NaN, 0x7fc0, wins as in at::max_pool2d).
torch::Tensor max_pool_relu_bf16(const torch::Tensor& x, int64_t kernel, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kBFloat16 && x.is_contiguous(torch::MemoryFormat::ChannelsLast),
              "max_pool_relu_bf16: expected a channels-last bf16 (N, C, H, W) tensor");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t oh = (h - kernel) / stride + 1, ow = (w - kernel) / stride + 1;
  auto y = torch::empty({n, c, oh, ow}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  const auto* in = reinterpret_cast<const int16_t*>(x.data_ptr());
  auto* out = reinterpret_cast<int16_t*>(y.data_ptr());
  at::parallel_for(0, n * oh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / oh, i = row % oh;
      for (int64_t j = 0; j < ow; ++j) {
        int16_t* o = out + ((b * oh + i) * ow + j) * c;
        const int16_t* first = in + ((b * h + i * stride) * w + j * stride) * c;
        std::copy(first, first + c, o);
        for (int64_t di = 0; di < kernel; ++di)
          for (int64_t dj = 0; dj < kernel; ++dj) {
            const int16_t* p = in + ((b * h + i * stride + di) * w + j * stride + dj) * c;
            for (int64_t k = 0; k < c; ++k) o[k] = std::max(o[k], p[k]);
          }
      }
    }
  });
  return y;
}

struct FusedAlexNet::Impl {
  struct Stage {
    std::string name;
    Kind kind = Kind::kConv;
    torch::Tensor weight, bias;  // conv: bf16 (out, in, k, k) and (out,); unset with the plan back-end
    int64_t kernel = 0, stride = 1, padding = 0;
  };
  struct Linear {
    std::string name;
    // LibTorch's operators: the plain weight, kept while batch 1 reads it, and the packed one,
    // made at the first batch above 1 (so one kind of batch holds one copy). The plan: neither.
    torch::Tensor weight, bias, packed;
    bool relu = false;
    bool plain_in_use = false;  // batch 1 has read `weight`
    std::shared_ptr<OneDnnLinear> onednn;  // the plan's back-end
  };
  // The back-end: LibTorch's fused operators, or (LibTorch 1.x) the project's oneDNN plan
  // for the features and its inner products (OneDnnLinear) for the classifier.
  std::unique_ptr<OneDnnFeatures> plan;
  // Where the plan reads features.0's input in tiles (tile_first_convolution()): that layer's
  // kernel, stride, padding.
  std::optional<std::array<int64_t, 3>> tiled_first;
  c10::optional<c10::OperatorHandle> conv_op, linear_op, reorder_conv_op;  // unset with the plan
  std::vector<Stage> features;
  std::vector<Linear> classifier;  // classifier.1's weight in (h, w, c) column order
  Linear fc6_1x1;  // classifier.1 summed over the 36 bins, for a 1x1 feature map: packed on first use
  int64_t channels = 0;
  std::mutex mutex;
  std::map<std::array<int64_t, 3>, std::vector<torch::Tensor>> packs;  // (N, H, W) -> per conv
  std::deque<std::array<int64_t, 3>> pack_order;
  // Per convolution, each distinct pack made so far with its serialized memory layout.
  std::vector<std::vector<std::pair<torch::Tensor, torch::Tensor>>> layouts;
  std::vector<std::pair<std::string, double>>* profile = nullptr;

  // The features run as the plan with bf16 Winograd (1.94x fewer multiply-adds in conv3-5)
  // where asked or where it pays, or as the plan where LibTorch lacks the fused operators;
  // else as those operators.
  static bool plan_features(std::optional<bool> winograd) {
    return FusedAlexNet::winograd(winograd) || (!libtorch_has_fused_ops() && winograd_possible());
  }

  // Chooses the back-ends, once the layers are known to be runnable.
  void start_backend(AlexNet& model, const LayerSpec& first, std::optional<bool> winograd) {
    if (libtorch_has_fused_ops()) {
      conv_op = find_op("mkldnn::_convolution_pointwise");
      linear_op = find_op("mkldnn::_linear_pointwise");
      reorder_conv_op = find_op("mkldnn::_reorder_convolution_weight");
    }
    if (plan_features(winograd)) {
      // The plan on a bf16 copy of the features (4.7 MB), as the operators' packs are copies.
      torch::nn::Sequential copy(
          std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->features->clone(torch::kCPU)));
      copy->to(torch::kBFloat16);
      copy = tile_first_convolution(copy, first);
      const ConvAlgorithm algorithm =
          FusedAlexNet::winograd(winograd) ? ConvAlgorithm::kWinograd : ConvAlgorithm::kDirect;
      plan = std::make_unique<OneDnnFeatures>(copy, algorithm, torch::kBFloat16, /*channels_last_output=*/true);
    }
  }

  // features.0 (3 channels, 11x11, stride 4) as a stride-1 convolution over 4x4 tiles of the
  // padded image (model/quantize.h, SpaceToDepth): 48 channels and a 3x3 kernel, which oneDNN's
  // bf16 kernels reduce over in full pairs instead of 3 channels at a time. The same products,
  // summed in another order in float32; the tiles come from the conversion to bf16, which reads
  // the image once either way. `first`: features.0's row of the layer table (ungrouped: the
  // constructor refused grouped ones). Where it is not strided, or its tiles would not fill
  // pairs of 16 channels, `features` as given.
  torch::nn::Sequential tile_first_convolution(torch::nn::Sequential features, const LayerSpec& first) {
    auto* conv = features[0]->as<torch::nn::Conv2d>();
    if (!conv || first.stride < 2 || first.in * first.stride * first.stride % 16 != 0) return features;
    const SpaceToDepth g = SpaceToDepth::of(first.kernel, first.kernel, first.kernel, first.stride, 0);
    torch::nn::Conv2d tiled(torch::nn::Conv2dOptions(first.in * first.stride * first.stride, first.out,
                                                     /*kernel_size=*/g.kernel));
    tiled->weight.set_data(space_to_depth_weight(conv->weight.detach(), g));  // (out, C * s^2, k', k')
    tiled->bias.set_data(conv->bias.detach().clone());
    torch::nn::Sequential out;
    out->push_back(tiled);
    for (auto it = std::next(features->begin()); it != features->end(); ++it) out->push_back(*it);
    tiled_first = std::array<int64_t, 3>{first.kernel, first.stride, first.padding};
    return out;
  }

  // x: (N, C, H, W) float32 or bf16, any layout -> what the features' first layer reads:
  // bf16 channels-last, or its tiles (N, C * s^2, H', W').
  torch::Tensor convert_input(const torch::Tensor& input) const {
    const auto x = input.scalar_type() == torch::kFloat ? input : input.to(torch::kFloat);
    if (!tiled_first) return bf16_channels_last(x);
    const auto [k, stride, padding] = *tiled_first;
    return bf16_space_to_depth(x, SpaceToDepth::of(x.size(2), x.size(3), k, stride, padding));
  }

  // The convolutions' weights packed for an input of this shape (made once per shape).
  std::vector<torch::Tensor> conv_packs(const torch::Tensor& x) {
    const std::array<int64_t, 3> key{x.size(0), x.size(2), x.size(3)};
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = packs.find(key);
    if (it != packs.end()) return it->second;
    static const auto layout_of = *find_op("mkldnn::_get_mkldnn_serialized_md");
    std::vector<torch::Tensor> made;
    std::vector<int64_t> shape{x.size(0), x.size(1), x.size(2), x.size(3)};
    for (const auto& s : features) {
      if (s.kind == Kind::kConv) {
        auto pack = call(*reorder_conv_op, {s.weight, std::vector<int64_t>{s.padding, s.padding},
                                           std::vector<int64_t>{s.stride, s.stride}, std::vector<int64_t>{1, 1},
                                           int64_t{1}, shape})
                        .toTensor();
        const auto layout = call(layout_of, {pack}).toTensor();
        if (layouts.size() <= made.size()) layouts.emplace_back();
        auto& seen = layouts[made.size()];
        const auto same = std::find_if(seen.begin(), seen.end(),
                                       [&](const auto& known) { return torch::equal(known.first, layout); });
        if (same == seen.end()) {
          seen.emplace_back(layout, pack);
        } else {
          pack = same->second;  // one copy of each layout
        }
        made.push_back(pack);
        shape[1] = s.weight.size(0);
      }
      for (int d = 2; d < 4; ++d) shape[d] = (shape[d] + 2 * s.padding - s.kernel) / s.stride + 1;
    }
    if (packs.size() >= kMaxShapes) {
      packs.erase(pack_order.front());
      pack_order.pop_front();
    }
    pack_order.push_back(key);
    return packs.emplace(key, std::move(made)).first->second;
  }

  // Hands l's weights to the plan's back-end (OneDnnLinear, which packs them as batches need);
  // LibTorch's operators take them as linear() needs them.
  void pack(Linear& l) const {
    if (linear_op) return;
    l.onednn = std::make_shared<OneDnnLinear>(l.weight, l.bias, l.relu);
    l.weight = torch::Tensor();
  }

  // LibTorch's operators: the weights for a batch of n, the packed ones made on first need.
  torch::Tensor weights_for(Linear& l, int64_t n) {
    std::lock_guard<std::mutex> lock(mutex);
    if (n == 1 && l.weight.defined()) {
      l.plain_in_use = true;
      return l.weight;
    }
    if (!l.packed.defined()) {
      static const auto reorder = *find_op("mkldnn::_reorder_linear_weight");
      l.packed = call(reorder, {l.weight, kLinearPackBatch}).toTensor();
      if (!l.plain_in_use) l.weight = torch::Tensor();  // one copy of the weights
    }
    return l.packed;
  }

  torch::Tensor linear(Linear& l, const torch::Tensor& x) {
    if (l.onednn) return l.onednn->forward(x);
    return call(*linear_op, {x, weights_for(l, x.size(0)), l.bias, std::string(l.relu ? "relu" : "none"),
                            c10::List<c10::optional<c10::Scalar>>(), std::string()})
        .toTensor();
  }
};

bool FusedAlexNet::winograd_possible() { return OneDnnFeatures::compiled() && OneDnnFeatures::bf16_available(); }

// The plan runs bf16 exactly where its Winograd can.
bool FusedAlexNet::available() { return libtorch_has_fused_ops() || winograd_possible(); }

bool FusedAlexNet::winograd(std::optional<bool> winograd) {
  return winograd_possible() && (winograd ? *winograd : OneDnnFeatures::bf16_winograd_pays());
}

std::string FusedAlexNet::backend(std::optional<bool> winograd) {
  if (!Impl::plan_features(winograd)) return "fused oneDNN operators";
  const std::string features =
      FusedAlexNet::winograd(winograd) ? "oneDNN plan with conv3-5 as Winograd F(2x2,3x3)" : "oneDNN plan";
  return features + (libtorch_has_fused_ops() ? ", fused oneDNN linear operators" : ", oneDNN inner products");
}

FusedAlexNet::FusedAlexNet(AlexNet& model, std::optional<bool> winograd) {
  if (!available())
    throw std::invalid_argument("bf16: this LibTorch has no fused oneDNN operators nor this build the oneDNN "
                                "plan, or oneDNN has no bf16 kernels for this CPU");
  if (winograd.value_or(false) && !winograd_possible())
    throw std::invalid_argument("bf16 Winograd: this build has no oneDNN plan, or oneDNN no bf16 kernels for this CPU");
  impl_ = std::make_unique<Impl>();
  auto& m = *impl_;
  // The plan back-end reads the convolutions' weights from its own copy of the features.
  const bool copy_convolutions = !Impl::plan_features(winograd);
  const AlexNetLayers layers = alexnet_layers(model->options());
  torch::NoGradGuard no_grad;
  const auto params = model->named_parameters();
  const auto param = [&](const std::string& name) {
    return params[name].detach().to(torch::kCPU, torch::kBFloat16).contiguous();
  };
  for (size_t i = 0; i < layers.features.size(); ++i) {
    const auto& spec = layers.features[i];
    Impl::Stage stage;
    stage.name = layer_name("features", i);
    stage.kind = spec.kind;
    if (spec.kind == Kind::kConv) {
      if (spec.groups != 1 || i + 1 >= layers.features.size() || layers.features[i + 1].kind != Kind::kReLU)
        throw std::invalid_argument("bf16 engine: " + stage.name + " is grouped or not followed by a ReLU");
      if (copy_convolutions) {
        stage.weight = param(stage.name + ".weight");
        stage.bias = param(stage.name + ".bias");
      }
      stage.kernel = spec.kernel;
      stage.stride = spec.stride;
      stage.padding = spec.padding;
      m.channels = spec.out;
    } else if (spec.kind == Kind::kMaxPool) {
      stage.kernel = spec.kernel;
      stage.stride = spec.stride;
    } else if (spec.kind == Kind::kLrn) {
      throw std::invalid_argument("bf16 engine: " + stage.name + " is LocalResponseNorm (the 2012 architecture)");
    } else {
      continue;  // ReLU: fused into the convolution
    }
    m.features.push_back(std::move(stage));
  }
  m.start_backend(model, layers.features.front(), winograd);  // the 2012 architecture refused above, before either back-end reads it
  for (size_t i = 0; i < layers.classifier.size(); ++i) {
    if (layers.classifier[i].kind != Kind::kLinear) continue;
    Impl::Linear l;
    l.name = layer_name("classifier", i);
    l.weight = param(l.name + ".weight");
    l.bias = param(l.name + ".bias");
    l.relu = i + 1 < layers.classifier.size() && layers.classifier[i + 1].kind == Kind::kReLU;
    if (m.classifier.empty()) {
      // The features come out channels-last: read them in (h, w, c) order.
      const int64_t out = l.weight.size(0);
      const auto chw = l.weight.reshape({out, m.channels, kPooledSize * kPooledSize});
      m.fc6_1x1 = l;
      m.fc6_1x1.weight = chw.to(torch::kFloat).sum(2).to(torch::kBFloat16).contiguous();  // (out, channels)
      l.weight = chw.permute({0, 2, 1}).reshape({out, -1}).contiguous();
    }
    m.pack(l);
    m.classifier.push_back(std::move(l));
  }
  TORCH_CHECK(m.classifier.size() == 3, "bf16 engine: expected 3 Linear layers, found ", m.classifier.size());
}

FusedAlexNet::~FusedAlexNet() = default;

void FusedAlexNet::set_profile(std::vector<std::pair<std::string, double>>* sink) { impl_->profile = sink; }

torch::Tensor FusedAlexNet::forward(const torch::Tensor& input) {
  auto& m = *impl_;
  TORCH_CHECK(input.device().is_cpu(), "bf16 engine: expected a CPU input, got ", input.device());
  auto mark_time = std::chrono::steady_clock::now();
  const auto mark = [&](const std::string& stage) {
    if (!m.profile) return;
    const auto now = std::chrono::steady_clock::now();
    m.profile->emplace_back(stage, std::chrono::duration<double>(now - mark_time).count());
    mark_time = now;
  };
  auto x = m.convert_input(input);  // (N, C, H, W) or its tiles, bf16 channels-last
  if (m.plan) {
    mark("convert");
    if (m.profile) m.plan->set_profile(m.profile);  // the plan's own stages, one per layer
    x = m.plan->forward(x);                         // channels-last
    if (m.profile) {
      m.plan->set_profile(nullptr);
      mark_time = std::chrono::steady_clock::now();
    }
    return classify(x, mark);
  }
  const auto packs = m.conv_packs(x);
  mark("convert");
  size_t conv = 0;
  const c10::List<c10::optional<c10::Scalar>> none;
  for (const auto& s : m.features) {
    if (s.kind == Kind::kConv) {
      x = call(*m.conv_op, {x, packs[conv++], s.bias, std::vector<int64_t>{s.padding, s.padding},
                           std::vector<int64_t>{s.stride, s.stride}, std::vector<int64_t>{1, 1}, int64_t{1},
                           std::string("relu"), none, std::string()})
              .toTensor();
    } else {
      x = max_pool_relu_bf16(x.contiguous(torch::MemoryFormat::ChannelsLast), s.kernel, s.stride);
    }
    mark(s.name);
  }
  return classify(x, mark);
}

torch::Tensor FusedAlexNet::classify(torch::Tensor x, const std::function<void(const std::string&)>& mark) {
  auto& m = *impl_;
  const int64_t n = x.size(0);
  Impl::Linear* fc6 = &m.classifier[0];
  if (x.size(2) == 1 && x.size(3) == 1) {
    // One value per channel copied into all 36 bins: classifier.1's weights summed over them.
    std::lock_guard<std::mutex> lock(m.mutex);
    if (!m.linear_op && m.fc6_1x1.weight.defined()) m.pack(m.fc6_1x1);
    fc6 = &m.fc6_1x1;
    x = x.reshape({n, m.channels});
  } else {
    if (x.size(2) != kPooledSize || x.size(3) != kPooledSize) x = at::adaptive_avg_pool2d(x, {kPooledSize, kPooledSize});
    x = x.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, -1});
  }
  mark("avgpool");
  x = m.linear(*fc6, x);
  mark(fc6->name);
  for (size_t i = 1; i < m.classifier.size(); ++i) {
    x = m.linear(m.classifier[i], x);
    mark(m.classifier[i].name);
  }
  return x;
}

}  // namespace alexnet

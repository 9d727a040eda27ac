#include "model/alexnet.h"
#include "model/dropout.h"
#include "model/int8.h"
#include "model/inference_engine.h"
#include "model/onednn_linear.h"
#include "model/onednn_plan.h"

#include <algorithm>

namespace alexnet {

namespace nn = torch::nn;

namespace {

void check_options(const AlexNetOptions& options) {
  TORCH_CHECK(options.num_classes() > 0, "AlexNet: num_classes must be positive, got ",
              options.num_classes());
  TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
              "AlexNet: dropout must be in [0, 1), got ", options.dropout());
  TORCH_CHECK(options.in_channels() > 0, "AlexNet: in_channels must be positive, got ",
              options.in_channels());
}

using Kind = LayerSpec::Kind;

LayerSpec conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
               int64_t groups = 1) {
  LayerSpec s;
  s.kind = Kind::kConv;
  s.in = in;
  s.out = out;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  s.groups = groups;
  return s;
}

LayerSpec linear(int64_t in, int64_t out) {
  LayerSpec s;
  s.kind = Kind::kLinear;
  s.in = in;
  s.out = out;
  return s;
}

LayerSpec of_kind(Kind kind) {
  LayerSpec s;
  s.kind = kind;
  return s;
}

LayerSpec relu() { return of_kind(Kind::kReLU); }

// Overlapping pooling: 3x3 windows, stride 2 (both networks).
LayerSpec maxpool() {
  LayerSpec s = of_kind(Kind::kMaxPool);
  s.kernel = 3;
  s.stride = 2;
  return s;
}

// The paper's local response normalisation over 5 neighbouring channels.
LayerSpec lrn() {
  LayerSpec s = of_kind(Kind::kLrn);
  s.kernel = 5;
  return s;
}

LayerSpec dropout(double p) {
  LayerSpec s = of_kind(Kind::kDropout);
  s.p = p;
  return s;
}

// The 2012 paper's initialisation for this layer: N(0, 0.01) weights, this bias.
LayerSpec paper(LayerSpec s, double bias) {
  s.paper_bias = bias;
  return s;
}

nn::Conv2dOptions conv_options(const LayerSpec& s) {
  return nn::Conv2dOptions(s.in, s.out, s.kernel).stride(s.stride).padding(s.padding).groups(s.groups);
}

// The shapes of a conv or linear spec's weight and bias.
std::vector<std::pair<std::string, std::vector<int64_t>>> spec_shapes(const LayerSpec& s) {
  if (s.kind == Kind::kConv) return {{"weight", {s.out, s.in / s.groups, s.kernel, s.kernel}}, {"bias", {s.out}}};
  if (s.kind == Kind::kLinear) return {{"weight", {s.out, s.in}}, {"bias", {s.out}}};
  return {};
}

// The layer a spec describes. A stand-in, for a layer whose parameters adopt()
// then takes from given tensors, is the spec's smallest relative (a 1 x 1 Linear,
// a groups x 1 x k x k convolution): LibTorch's layers allocate and initialise
// their parameters when built, and a full-size layer beside the given tensors
// would hold up to 144 MiB (classifier.1) twice.
nn::AnyModule make_layer(const LayerSpec& s, bool stand_in = false) {
  switch (s.kind) {
    case Kind::kConv: {
      LayerSpec built = s;
      if (stand_in) built.in = built.out = s.groups;
      return nn::AnyModule(nn::Conv2d(conv_options(built)));
    }
    case Kind::kReLU:
      return nn::AnyModule(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));
    case Kind::kMaxPool:
      return nn::AnyModule(nn::MaxPool2d(nn::MaxPool2dOptions(s.kernel).stride(s.stride)));
    case Kind::kLrn:
      // Krizhevsky et al. 2012, section 3.3: k=2, n=5, alpha=1e-4, beta=0.75 on
      // sum_j a_j^2. PyTorch's LocalResponseNorm divides alpha by n, so it gets n * alpha.
      return nn::AnyModule(nn::LocalResponseNorm(
          nn::LocalResponseNormOptions(s.kernel).alpha(s.kernel * 1e-4).beta(0.75).k(2.0)));
    case Kind::kDropout:
      return nn::AnyModule(Dropout(s.p));
    case Kind::kLinear:
      return nn::AnyModule(nn::Linear(stand_in ? nn::LinearOptions(1, 1) : nn::LinearOptions(s.in, s.out)));
  }
  TORCH_CHECK(false, "AlexNet: unknown layer kind");
}

using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// Gives a stand-in layer (make_layer) the given tensors named `prefix`.weight,
// `prefix`.bias, checked against the spec's shapes, and the spec's options.
void adopt(nn::Module& layer, const LayerSpec& spec, const std::string& prefix, const Named& given) {
  torch::NoGradGuard no_grad;
  auto params = layer.named_parameters(/*recurse=*/false);
  for (const auto& [key, shape] : spec_shapes(spec)) {
    const std::string name = prefix + "." + key;
    const auto it = std::find_if(given.begin(), given.end(),
                                 [&name](const auto& entry) { return entry.first == name; });
    TORCH_CHECK(it != given.end(), "AlexNet: no tensor for ", name);
    TORCH_CHECK(it->second.sizes() == c10::IntArrayRef(shape), "AlexNet: ", name, " has shape ",
                it->second.sizes(), ", expected ", c10::IntArrayRef(shape));
    TORCH_CHECK(it->second.is_floating_point(), "AlexNet: ", name, " is a ",
                it->second.scalar_type(), " tensor, expected floating point");
    torch::Tensor t = it->second.detach();
    if (t.scalar_type() != torch::kFloat || !t.is_contiguous() || !t.device().is_cpu())
      t = t.to(torch::kCPU, torch::kFloat).contiguous();
    params[key].set_data(t);
  }
  // The stand-in was built from the spec but for its sizes, which the spec gives now.
  if (auto* conv = layer.as<nn::Conv2d>()) conv->options.in_channels(spec.in).out_channels(spec.out);
  if (auto* fc = layer.as<nn::Linear>()) fc->options = nn::LinearOptions(spec.in, spec.out);
}

// Built with push_back, one layer at a time: the arguments of a single
// Sequential(...) call may be evaluated in any order (GCC goes right to left),
// which would draw the initial weights in a different order than torchvision.
nn::Sequential build_sequential(const std::string& name, const std::vector<LayerSpec>& specs,
                                const Named* given) {
  nn::Sequential sequential;
  for (size_t i = 0; i < specs.size(); ++i) {
    nn::AnyModule layer = make_layer(specs[i], /*stand_in=*/given != nullptr);
    if (given) adopt(*layer.ptr(), specs[i], name + "." + std::to_string(i), *given);
    sequential->push_back(std::move(layer));
  }
  return sequential;
}

// The paper's initialisation, in layer order once the whole network is built
// (the order the draws have always been made in).
void paper_init(const std::vector<LayerSpec>& specs, nn::Sequential& sequential) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!specs[i].paper_bias) continue;
    auto params = sequential[i]->named_parameters(/*recurse=*/false);
    params["weight"].normal_(0.0, 0.01);
    params["bias"].fill_(*specs[i].paper_bias);
  }
}

// (out, in) matrix whose row i averages adaptive pooling's bin i:
// [floor(i * in / out), ceil((i + 1) * in / out)).
torch::Tensor pooling_matrix(int64_t out, int64_t in, const torch::TensorOptions& options) {
  auto m = torch::zeros({out, in}, options.dtype(torch::kFloat32).device(torch::kCPU));
  auto a = m.accessor<float, 2>();
  for (int64_t i = 0; i < out; ++i) {
    const int64_t start = (i * in) / out;
    const int64_t end = ((i + 1) * in + out - 1) / out;
    for (int64_t j = start; j < end; ++j) a[i][j] = 1.0f / static_cast<float>(end - start);
  }
  return m.to(options.device(), options.dtype());
}

}  // namespace

AlexNetLayers alexnet_layers(const AlexNetOptions& options) {
  const int64_t c = options.in_channels();
  AlexNetLayers layers;
  if (options.arch() == Arch::kPaper2012) {
    // 96-256-384-384-256 channels; the paper's two GPUs: conv2, conv4 and conv5
    // see only their own half of the channels. Biases 1 in conv2, conv4, conv5
    // and the hidden fully-connected layers (early ReLUs get positive input).
    layers.features = {
        paper(conv(c, 96, /*kernel=*/11, /*stride=*/4, /*padding=*/2), 0.0), relu(), lrn(), maxpool(),  // 0-3
        paper(conv(96, 256, 5, 1, 2, /*groups=*/2), 1.0), relu(), lrn(), maxpool(),                    // 4-7
        paper(conv(256, 384, 3, 1, 1), 0.0), relu(),                                                   // 8-9
        paper(conv(384, 384, 3, 1, 1, /*groups=*/2), 1.0), relu(),                                     // 10-11
        paper(conv(384, 256, 3, 1, 1, /*groups=*/2), 1.0), relu(), maxpool(),                          // 12-14
    };
  } else {
    // torchvision's ("One weird trick"); parameters live at 0, 3, 6, 8, 10.
    layers.features = {
        conv(c, 64, /*kernel=*/11, /*stride=*/4, /*padding=*/2), relu(), maxpool(),  // 0-2
        conv(64, 192, 5, 1, 2), relu(), maxpool(),                                  // 3-5
        conv(192, 384, 3, 1, 1), relu(),                                            // 6-7
        conv(384, 256, 3, 1, 1), relu(),                                            // 8-9
        conv(256, 256, 3, 1, 1), relu(), maxpool(),                                 // 10-12
    };
  }
  const bool init = options.arch() == Arch::kPaper2012;
  const auto fc = [init](int64_t in, int64_t out, double bias) {
    return init ? paper(linear(in, out), bias) : linear(in, out);
  };
  layers.classifier = {
      dropout(options.dropout()), fc(256 * kPooledSize * kPooledSize, 4096, 1.0), relu(),  // 0-2
      dropout(options.dropout()), fc(4096, 4096, 1.0), relu(),                             // 3-5
      fc(4096, options.num_classes(), 0.0),                                                // 6
  };
  return layers;
}

AlexNetImpl::AlexNetImpl(const AlexNetOptions& options) : options_(options) {
  check_options(options);
  build(nullptr);
}

AlexNetImpl::AlexNetImpl(const AlexNetOptions& options, const Named& parameters)
    : options_(options) {
  check_options(options);
  build(&parameters);
}

void AlexNetImpl::build(const Named* given) {
  const AlexNetLayers layers = alexnet_layers(options_);
  features = build_sequential("features", layers.features, given);
  avgpool = nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({kPooledSize, kPooledSize}));
  classifier = build_sequential("classifier", layers.classifier, given);
  register_module("features", features);
  register_module("avgpool", avgpool);
  register_module("classifier", classifier);
  // Given tensors replace any initialisation.
  if (given) return;
  paper_init(layers.features, features);
  paper_init(layers.classifier, classifier);
}

const char* arch_name(Arch arch) { return arch == Arch::kPaper2012 ? "alexnet2012" : "alexnet"; }

Arch parse_arch(const std::string& name) {
  if (name == "alexnet") return Arch::kTorchvision;
  if (name == "alexnet2012") return Arch::kPaper2012;
  TORCH_CHECK(false, "unknown architecture '", name, "' (expected alexnet or alexnet2012)");
}

torch::Tensor deterministic_adaptive_avg_pool(const torch::Tensor& x, int64_t out_h, int64_t out_w) {
  const auto ph = pooling_matrix(out_h, x.size(2), x.options());  // (out_h, h)
  const auto pw = pooling_matrix(out_w, x.size(3), x.options());  // (out_w, w)
  return torch::matmul(torch::matmul(ph, x), pw.t());             // (N, C, out_h, out_w)
}

torch::Tensor AlexNetImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 4, "AlexNet: expected input (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(1) == options_.in_channels(), "AlexNet: expected ", options_.in_channels(),
              " input channels, got ", x.size(1));
  TORCH_CHECK(x.size(2) >= kMinInputSize && x.size(3) >= kMinInputSize,
              "AlexNet: input must be at least ", kMinInputSize, "x", kMinInputSize, ", got ",
              x.size(2), "x", x.size(3));
  const bool cpu_inference = !is_training() && !torch::GradMode::is_enabled() && x.device().is_cpu();
  if (engine_ && cpu_inference) return engine_->forward(x);  // (N, num_classes)
  if (plan_ && cpu_inference && x.scalar_type() == torch::kFloat) {
    x = plan_->forward(x);     // (N, 256, h, w)
  } else {
    x = features->forward(x);  // (N, 256, h, w)
  }
  x = pool(x);                 // (N, 9216)
  if (classifier_plan_ && cpu_inference) {
    auto logits = classifier_plan_->forward(x);  // undefined where it does not take x
    if (logits.defined()) return logits;
  }
  return classifier->forward(x);  // (N, num_classes)
}

torch::Tensor AlexNetImpl::pool(torch::Tensor x) {
  if (x.size(2) == 1 && x.size(3) == 1) {
    // Inputs under 95 px leave a 1x1 map, and pooling it to 6x6 copies each value
    // into all 36 bins (the average of one value is that value, exactly). A
    // broadcast view does the same without adaptive_avg_pool2d's per-bin loops
    // (about 7 ms each way for a batch of 128 at 64 px on this project's 2-core
    // machine; BENCHMARKS.md). Its backward sums the 36 gradients of each value.
    x = x.expand({x.size(0), x.size(1), kPooledSize, kPooledSize});
  } else if (x.is_cuda() && at::globalContext().deterministicAlgorithms()) {
    // CUDA's adaptive_avg_pool2d backward has no deterministic kernel; the same
    // pooling as two averaging matrices is deterministic (matmuls).
    x = deterministic_adaptive_avg_pool(x, kPooledSize, kPooledSize);
  } else {
    x = avgpool->forward(x);   // (N, 256, 6, 6)
  }
  return torch::flatten(x, 1);  // (N, 9216)
}

std::string layer_name(const char* container, size_t index) {
  return std::string(container) + "." + std::to_string(index);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(
    const AlexNetOptions& options) {
  const AlexNetLayers layers = alexnet_layers(options);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& [container, specs] :
       {std::pair{"features", &layers.features}, std::pair{"classifier", &layers.classifier}}) {
    for (size_t i = 0; i < specs->size(); ++i) {
      const std::string name = layer_name(container, i);
      for (const auto& [key, shape] : spec_shapes((*specs)[i])) shapes.push_back({name + "." + key, shape});
    }
  }
  return shapes;
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

void init_vgg_style(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, /*a=*/0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* linear = m->as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, 0.01);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
}

}  // namespace alexnet

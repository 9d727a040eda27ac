#include "model/alexnet.h"
#include "model/dropout.h"
#include "model/onednn_plan.h"

#include <map>
#include <tuple>

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

}  // namespace

AlexNetImpl::AlexNetImpl(const AlexNetOptions& options) : options_(options) {
  check_options(options);
  build();
}

AlexNetImpl::AlexNetImpl(const AlexNetOptions& options,
                         const std::vector<std::pair<std::string, torch::Tensor>>& parameters)
    : options_(options), placeholder_(true) {
  check_options(options);
  build();
  placeholder_ = false;
  adopt(parameters);
}

void AlexNetImpl::build() {
  if (options_.arch() == Arch::kPaper2012) {
    build_paper2012();
  } else {
    build_torchvision();
  }
  register_module("features", features);
  register_module("avgpool", avgpool);
  register_module("classifier", classifier);
}

nn::Conv2dOptions AlexNetImpl::conv(int64_t in, int64_t out, int64_t kernel, int64_t groups) const {
  return placeholder_ ? nn::Conv2dOptions(groups, groups, kernel).groups(groups)
                      : nn::Conv2dOptions(in, out, kernel).groups(groups);
}

nn::LinearOptions AlexNetImpl::linear(int64_t in, int64_t out) const {
  return placeholder_ ? nn::LinearOptions(1, 1) : nn::LinearOptions(in, out);
}

void AlexNetImpl::adopt(const std::vector<std::pair<std::string, torch::Tensor>>& parameters) {
  std::map<std::string, torch::Tensor> given(parameters.begin(), parameters.end());
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, shape] : parameter_shapes(options_)) shapes.emplace(name, shape);
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters(/*recurse=*/true)) {
    auto it = given.find(p.key());
    TORCH_CHECK(it != given.end(), "AlexNet: no tensor for ", p.key());
    const c10::IntArrayRef expected(shapes.at(p.key()));
    TORCH_CHECK(it->second.sizes() == expected, "AlexNet: ", p.key(), " has shape ",
                it->second.sizes(), ", expected ", expected);
    TORCH_CHECK(it->second.is_floating_point(), "AlexNet: ", p.key(), " is a ",
                it->second.scalar_type(), " tensor, expected floating point");
    torch::Tensor t = it->second.detach();
    if (t.scalar_type() != torch::kFloat || !t.is_contiguous() || !t.device().is_cpu())
      t = t.to(torch::kCPU, torch::kFloat).contiguous();
    p.value().set_data(t);
  }
  // The layers' options follow the tensors they now hold.
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* c = module->as<nn::Conv2d>()) {
      c->options.in_channels(c->weight.size(1) * c->options.groups()).out_channels(c->weight.size(0));
    } else if (auto* l = module->as<nn::Linear>()) {
      l->options.in_features(l->weight.size(1)).out_features(l->weight.size(0));
    }
  }
}

// The same in both networks: average pooling to 6x6 and the three Linear layers.
void AlexNetImpl::build_head() {
  avgpool = nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({6, 6}));
  classifier = nn::Sequential();
  classifier->push_back(Dropout(options_.dropout()));                          // 0
  classifier->push_back(nn::Linear(linear(256 * 6 * 6, 4096)));               // 1
  classifier->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));          // 2
  classifier->push_back(Dropout(options_.dropout()));                          // 3
  classifier->push_back(nn::Linear(linear(4096, 4096)));                      // 4
  classifier->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));          // 5
  classifier->push_back(nn::Linear(linear(4096, options_.num_classes())));    // 6
}

void AlexNetImpl::build_torchvision() {
  const auto& options = options_;
  // Built with push_back, one layer at a time: the arguments of a single
  // Sequential(...) call may be evaluated in any order (GCC goes right to
  // left), which would draw the initial weights in a different order than
  // torchvision. Positions match torchvision's; parameters live at 0, 3, 6, 8, 10.
  features = nn::Sequential();
  features->push_back(nn::Conv2d(
      conv(options.in_channels(), 64, /*kernel_size=*/11).stride(4).padding(2)));  // 0
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 1
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 2
  features->push_back(nn::Conv2d(conv(64, 192, /*kernel_size=*/5).padding(2)));    // 3
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 4
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 5
  features->push_back(nn::Conv2d(conv(192, 384, /*kernel_size=*/3).padding(1)));   // 6
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 7
  features->push_back(nn::Conv2d(conv(384, 256, /*kernel_size=*/3).padding(1)));   // 8
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 9
  features->push_back(nn::Conv2d(conv(256, 256, /*kernel_size=*/3).padding(1)));   // 10
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 11
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 12
  build_head();

}

void AlexNetImpl::build_paper2012() {
  const auto& options = options_;
  // Krizhevsky et al. 2012, section 3.5: LRN with k=2, n=5, alpha=1e-4, beta=0.75
  // on sum_j a_j^2. PyTorch's LocalResponseNorm divides alpha by n, so it gets n * alpha.
  const auto lrn = [] {
    return nn::LocalResponseNorm(nn::LocalResponseNormOptions(5).alpha(5 * 1e-4).beta(0.75).k(2.0));
  };
  features = nn::Sequential();
  features->push_back(nn::Conv2d(
      conv(options.in_channels(), 96, /*kernel_size=*/11).stride(4).padding(2)));  // 0
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 1
  features->push_back(lrn());                                                                   // 2
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 3
  // The paper's two GPUs: conv2, conv4 and conv5 see only their own half of the channels.
  features->push_back(nn::Conv2d(conv(96, 256, /*kernel_size=*/5, /*groups=*/2).padding(2)));  // 4
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 5
  features->push_back(lrn());                                                                   // 6
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 7
  features->push_back(nn::Conv2d(conv(256, 384, /*kernel_size=*/3).padding(1)));   // 8
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 9
  features->push_back(nn::Conv2d(conv(384, 384, /*kernel_size=*/3, /*groups=*/2).padding(1)));  // 10
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 11
  features->push_back(nn::Conv2d(conv(384, 256, /*kernel_size=*/3, /*groups=*/2).padding(1)));  // 12
  features->push_back(nn::ReLU(nn::ReLUOptions(/*inplace=*/true)));                             // 13
  features->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));        // 14
  build_head();

  // The paper's initialisation: weights N(0, 0.01); biases 1 in conv2, conv4,
  // conv5 and the hidden fully-connected layers (early ReLUs get positive
  // input), 0 elsewhere. Placeholders are replaced by adopt() instead.
  if (placeholder_) return;
  torch::NoGradGuard no_grad;
  const auto init = [](torch::Tensor& w, torch::Tensor& b, double bias) {
    w.normal_(0.0, 0.01);
    b.fill_(bias);
  };
  for (const auto& [index, bias] : std::vector<std::pair<size_t, double>>{
           {0, 0.0}, {4, 1.0}, {8, 0.0}, {10, 1.0}, {12, 1.0}}) {
    auto conv = features[index]->as<nn::Conv2d>();
    init(conv->weight, conv->bias, bias);
  }
  for (const auto& [index, bias] :
       std::vector<std::pair<size_t, double>>{{1, 1.0}, {4, 1.0}, {6, 0.0}}) {
    auto fc = classifier[index]->as<nn::Linear>();
    init(fc->weight, fc->bias, bias);
  }
}

const char* arch_name(Arch arch) { return arch == Arch::kPaper2012 ? "alexnet2012" : "alexnet"; }

Arch parse_arch(const std::string& name) {
  if (name == "alexnet") return Arch::kTorchvision;
  if (name == "alexnet2012") return Arch::kPaper2012;
  TORCH_CHECK(false, "unknown architecture '", name, "' (expected alexnet or alexnet2012)");
}

namespace {

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
  if (plan_ && !is_training() && !torch::GradMode::is_enabled() && x.device().is_cpu() &&
      x.scalar_type() == torch::kFloat) {
    x = plan_->forward(x);     // (N, 256, h, w)
  } else {
    x = features->forward(x);  // (N, 256, h, w)
  }
  if (x.size(2) == 1 && x.size(3) == 1) {
    // Inputs under 95 px leave a 1x1 map, and pooling it to 6x6 copies each value
    // into all 36 bins (the average of one value is that value, exactly). A
    // broadcast view does the same without adaptive_avg_pool2d's per-bin loops
    // (about 7 ms each way for a batch of 128 at 64 px on this project's 2-core
    // machine; BENCHMARKS.md). Its backward sums the 36 gradients of each value.
    x = x.expand({x.size(0), x.size(1), 6, 6});
  } else if (x.is_cuda() && at::globalContext().deterministicAlgorithms()) {
    // CUDA's adaptive_avg_pool2d backward has no deterministic kernel; the same
    // pooling as two averaging matrices is deterministic (matmuls).
    x = deterministic_adaptive_avg_pool(x, 6, 6);
  } else {
    x = avgpool->forward(x);   // (N, 256, 6, 6)
  }
  x = torch::flatten(x, 1);    // (N, 9216)
  return classifier->forward(x);  // (N, num_classes)
}

std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(
    const AlexNetOptions& options) {
  struct Conv {
    int index;
    int64_t in, out, kernel, groups;
  };
  const bool paper = options.arch() == Arch::kPaper2012;
  const int64_t c = options.in_channels();
  const std::vector<Conv> convs =
      paper ? std::vector<Conv>{{0, c, 96, 11, 1}, {4, 96, 256, 5, 2}, {8, 256, 384, 3, 1},
                                {10, 384, 384, 3, 2}, {12, 384, 256, 3, 2}}
            : std::vector<Conv>{{0, c, 64, 11, 1}, {3, 64, 192, 5, 1}, {6, 192, 384, 3, 1},
                                {8, 384, 256, 3, 1}, {10, 256, 256, 3, 1}};
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& conv : convs) {
    const std::string name = "features." + std::to_string(conv.index);
    shapes.push_back({name + ".weight", {conv.out, conv.in / conv.groups, conv.kernel, conv.kernel}});
    shapes.push_back({name + ".bias", {conv.out}});
  }
  const std::vector<std::tuple<int, int64_t, int64_t>> linears = {
      {1, 256 * 6 * 6, 4096}, {4, 4096, 4096}, {6, 4096, options.num_classes()}};
  for (const auto& [index, in, out] : linears) {
    const std::string name = "classifier." + std::to_string(index);
    shapes.push_back({name + ".weight", {out, in}});
    shapes.push_back({name + ".bias", {out}});
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

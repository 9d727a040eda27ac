// AlexNet as torchvision.models.alexnet defines it, written with torch::nn.
//
// The submodule tree (features / avgpool / classifier, numbered like the
// Python nn.Sequential) is what makes named_parameters() yield torchvision's
// keys: features.0.weight ... classifier.6.bias.
// An include guard, not #pragma once: this header is also installed as <alexnet/alexnet.h>
// (app/library), and a program that sees both copies must define the module once.
#ifndef ALEXNET_MODEL_ALEXNET_H_
#define ALEXNET_MODEL_ALEXNET_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alexnet {

class OneDnnClassifier;
class OneDnnFeatures;
class InferenceEngine;

/// Which network: torchvision's (the default, "One weird trick" variant) or the
/// 2012 paper's (96-256-384-384-256 channels, local response normalisation,
/// the two-GPU split as groups=2, the paper's initialisation).
enum class Arch { kTorchvision, kPaper2012 };

/// "alexnet" / "alexnet2012".
const char* arch_name(Arch arch);
/// Parses arch_name()'s names; throws on anything else.
Arch parse_arch(const std::string& name);

struct AlexNetOptions {
  /// Number of output classes (torchvision's default: ImageNet's 1000).
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Dropout probability before the first two Linear layers.
  TORCH_ARG(double, dropout) = 0.5;
  /// Input channels of the first convolution (1 for single-channel data fed as is).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Layer layout and initialisation.
  TORCH_ARG(Arch, arch) = Arch::kTorchvision;
};

/// One layer of AlexNet's `features` or `classifier` Sequential. alexnet_layers()
/// is the one description of the network: the module is built from it,
/// parameter_shapes() derived from it, and the TorchScript export's forward
/// written from it.
struct LayerSpec {
  enum class Kind { kConv, kReLU, kMaxPool, kLrn, kDropout, kLinear };
  Kind kind = Kind::kReLU;
  int64_t in = 0;       // input channels (conv) or features (linear)
  int64_t out = 0;      // output channels (conv) or features (linear)
  int64_t kernel = 0;   // conv and max-pool window side
  int64_t stride = 1;   // conv and max-pool
  int64_t padding = 0;  // conv
  int64_t groups = 1;   // conv: channel groups (the 2012 paper's two GPUs)
  double p = 0.0;       // dropout probability
  /// The 2012 paper's initialisation, made once the whole network is built:
  /// weights N(0, 0.01), biases this value. Unset: LibTorch's (torchvision's).
  std::optional<double> paper_bias;
};

/// Side of the average-pooled feature map the classifier reads (256 x 6 x 6 inputs).
constexpr int64_t kPooledSize = 6;

/// A layer's name as its parameters carry it: ("features", 3) -> "features.3".
std::string layer_name(const char* container, size_t index);

/// AlexNet's layers in Sequential order (a layer's index is its position, as in
/// torchvision's parameter names features.3.weight ...). Between the two:
/// adaptive average pooling to kPooledSize x kPooledSize and flatten.
struct AlexNetLayers {
  std::vector<LayerSpec> features;
  std::vector<LayerSpec> classifier;
};
AlexNetLayers alexnet_layers(const AlexNetOptions& options);

class AlexNetImpl : public torch::nn::Module {
 public:
  explicit AlexNetImpl(const AlexNetOptions& options = {});
  /// The network around existing tensors, named and shaped as
  /// parameter_shapes(options) lists them (checked): each layer is built as a
  /// small stand-in whose parameters then take over the given tensors' storage
  /// (and whose options are the table's), so a model made from loaded weights
  /// never exists twice in memory. Tensors that are not contiguous float32 are
  /// converted. Draws only the stand-ins' few initial numbers from torch's generator.
  AlexNetImpl(const AlexNetOptions& options,
              const std::vector<std::pair<std::string, torch::Tensor>>& parameters);

  // x: (N, C, H, W) with H, W >= 63 -> logits (N, num_classes)
  torch::Tensor forward(torch::Tensor x);
  /// What forward does between features and classifier: (N, 256, h, w) -> (N, 9216), the
  /// adaptive average pool to 6x6 (a broadcast for a 1x1 map) and the flatten.
  torch::Tensor pool(torch::Tensor x);

  const AlexNetOptions& options() const { return options_; }

  /// Runs `features` through this plan instead of the Sequential whenever the
  /// module is in eval mode, gradients are off and the input is float32 on the
  /// CPU (the plan was built from this module's weights; nullptr: never).
  void set_inference_plan(std::shared_ptr<OneDnnFeatures> plan) { plan_ = std::move(plan); }
  const std::shared_ptr<OneDnnFeatures>& inference_plan() const { return plan_; }
  /// Runs `classifier` through this one under the same conditions, at the batch
  /// sizes it takes (model/onednn_linear.h; nullptr: never).
  void set_inference_classifier(std::shared_ptr<OneDnnClassifier> plan) { classifier_plan_ = std::move(plan); }
  const std::shared_ptr<OneDnnClassifier>& inference_classifier() const { return classifier_plan_; }
  /// Hands the whole forward pass to this engine (int8: model/int8.h, bf16:
  /// model/fused.h) whenever the module is in eval mode, gradients are off and the
  /// input is on the CPU (the engine was built from this module's weights; nullptr: never).
  void set_engine(std::shared_ptr<InferenceEngine> engine) { engine_ = std::move(engine); }
  const std::shared_ptr<InferenceEngine>& engine() const { return engine_; }

  torch::nn::Sequential features{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};
  torch::nn::Sequential classifier{nullptr};

 private:
  // Builds the layers of alexnet_layers(options_); with `given`, each layer's
  // parameters are replaced by the given tensors as soon as it is built.
  void build(const std::vector<std::pair<std::string, torch::Tensor>>* given);

  AlexNetOptions options_;
  std::shared_ptr<OneDnnFeatures> plan_;
  std::shared_ptr<OneDnnClassifier> classifier_plan_;
  std::shared_ptr<InferenceEngine> engine_;
};
TORCH_MODULE(AlexNet);

/// Smallest input side AlexNet accepts (the feature map must not vanish).
constexpr int64_t kMinInputSize = 63;

/// adaptive_avg_pool2d(x, {out_h, out_w}) as two averaging matrices: the same bins
/// (equal up to rounding), with a deterministic backward pass on CUDA, where
/// AlexNet uses it under --deterministic.
torch::Tensor deterministic_adaptive_avg_pool(const torch::Tensor& x, int64_t out_h, int64_t out_w);

/// Parameter names and shapes of an AlexNet with these options, in registration
/// order, computed from alexnet_layers() without building (and initialising) the module.
std::vector<std::pair<std::string, std::vector<int64_t>>> parameter_shapes(const AlexNetOptions& options);

/// Re-initialises every convolution and linear layer the way torchvision
/// initialises VGG: Kaiming-normal weights scaled by fan-out for convolutions,
/// N(0, 0.01) for linear layers, zero biases. Trained from scratch without batch
/// normalisation, torchvision's AlexNet initialisation shrinks the signal through
/// its seven layers and training sits at chance for the first hundred or so
/// steps; from this one it starts learning at once. Draws from torch's generator.
void init_vgg_style(torch::nn::Module& module);

/// Total number of parameters of an AlexNet with these options.
int64_t count_parameters(torch::nn::Module& module);

}  // namespace alexnet

#endif  // ALEXNET_MODEL_ALEXNET_H_

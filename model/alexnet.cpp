#include "model/alexnet.h"

namespace alexnet {

namespace nn = torch::nn;

AlexNetImpl::AlexNetImpl(const AlexNetOptions& options) : options_(options) {
  TORCH_CHECK(options.num_classes() > 0, "AlexNet: num_classes must be positive, got ",
              options.num_classes());
  TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
              "AlexNet: dropout must be in [0, 1), got ", options.dropout());
  TORCH_CHECK(options.in_channels() > 0, "AlexNet: in_channels must be positive, got ",
              options.in_channels());

  // Indices in the comments are the Sequential positions torchvision uses;
  // parameters live at 0, 3, 6, 8, 10.
  features = nn::Sequential(
      nn::Conv2d(nn::Conv2dOptions(options.in_channels(), 64, /*kernel_size=*/11)
                     .stride(4).padding(2)),                                          // 0
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 1
      nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)),               // 2
      nn::Conv2d(nn::Conv2dOptions(64, 192, /*kernel_size=*/5).padding(2)),           // 3
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 4
      nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)),               // 5
      nn::Conv2d(nn::Conv2dOptions(192, 384, /*kernel_size=*/3).padding(1)),          // 6
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 7
      nn::Conv2d(nn::Conv2dOptions(384, 256, /*kernel_size=*/3).padding(1)),          // 8
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 9
      nn::Conv2d(nn::Conv2dOptions(256, 256, /*kernel_size=*/3).padding(1)),          // 10
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 11
      nn::MaxPool2d(nn::MaxPool2dOptions(/*kernel_size=*/3).stride(2)));              // 12
  avgpool = nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({6, 6}));
  classifier = nn::Sequential(
      nn::Dropout(nn::DropoutOptions(options.dropout())),                             // 0
      nn::Linear(256 * 6 * 6, 4096),                                                  // 1
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 2
      nn::Dropout(nn::DropoutOptions(options.dropout())),                             // 3
      nn::Linear(4096, 4096),                                                         // 4
      nn::ReLU(nn::ReLUOptions(/*inplace=*/true)),                                    // 5
      nn::Linear(4096, options.num_classes()));                                       // 6

  // Registration order is construction order in torchvision, so that with the
  // same seed the default (kaiming-uniform) initialisation draws the same numbers.
  register_module("features", features);
  register_module("avgpool", avgpool);
  register_module("classifier", classifier);
}

torch::Tensor AlexNetImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 4, "AlexNet: expected input (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(1) == options_.in_channels(), "AlexNet: expected ", options_.in_channels(),
              " input channels, got ", x.size(1));
  TORCH_CHECK(x.size(2) >= kMinInputSize && x.size(3) >= kMinInputSize,
              "AlexNet: input must be at least ", kMinInputSize, "x", kMinInputSize, ", got ",
              x.size(2), "x", x.size(3));
  x = features->forward(x);    // (N, 256, h, w)
  x = avgpool->forward(x);     // (N, 256, 6, 6)
  x = torch::flatten(x, 1);    // (N, 9216)
  return classifier->forward(x);  // (N, num_classes)
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& p : module.parameters()) total += p.numel();
  return total;
}

}  // namespace alexnet

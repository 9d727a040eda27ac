// The oneDNN plan's view of AlexNet's features (model/onednn_plan.h): each
// Conv2d (with the ReLU after it fused in) and MaxPool2d as one row, read
// from the Sequential and refused, layer by name, where the plan cannot run
// it. Internal to model/; needs no oneDNN.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet::onednn {

// One layer of the features, as the plan runs it.
struct Layer {
  enum Kind { kConv, kPool } kind = kConv;
  std::string name;  // "features.6" (the Sequential's index)
  // Convolution
  torch::Tensor weight;  // (OC, IC / groups, KH, KW)
  torch::Tensor bias;    // (OC) or undefined
  int64_t groups = 1;
  bool relu = false;     // a ReLU follows, fused into the convolution
  // Both
  int64_t kernel[2] = {1, 1}, stride[2] = {1, 1}, padding[2] = {0, 0};
};

/// The rows for `features`, or std::invalid_argument naming the first layer
/// the plan cannot run (LocalResponseNorm, dilation, padding modes, ceil_mode...).
std::vector<Layer> describe_layers(torch::nn::Sequential& features);

/// Whether a primitive's implementation name (impl_info_str(): "ref:any") is oneDNN's reference
/// kernel, which it falls back to where it has no kernel of its own.
inline bool is_reference_kernel(const std::string& impl) { return impl.rfind("ref", 0) == 0; }

}  // namespace alexnet::onednn

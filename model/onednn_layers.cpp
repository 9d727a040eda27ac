#include "model/onednn_layers.h"

#include "model/torch_compat.h"

#include <stdexcept>

namespace alexnet::onednn {

namespace nn = torch::nn;

namespace {

template <typename Options>
void check_no_dilation(const Options& o, const std::string& name) {
  for (int64_t d : *o.dilation())
    if (d != 1) throw std::invalid_argument(name + ": dilation is not supported by the oneDNN plan");
}

}  // namespace

std::vector<Layer> describe_layers(nn::Sequential& features) {
  std::vector<Layer> layers;
  size_t index = 0;
  for (const auto& child : features->children()) {
    const std::string name = "features." + std::to_string(index++);
    if (auto* c = child->as<nn::Conv2d>()) {
      const auto& o = c->options;
      check_no_dilation(o, name);
      if (!compat::holds_alternative<torch::ExpandingArray<2>>(o.padding()))
        throw std::invalid_argument(name + ": 'same'/'valid' padding is not supported by the oneDNN plan");
      if (!compat::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()))
        throw std::invalid_argument(name + ": only zero padding is supported by the oneDNN plan");
      Layer l;
      l.kind = Layer::kConv;
      l.name = name;
      l.weight = c->weight;
      l.bias = c->bias;
      l.groups = o.groups();
      const auto& pad = compat::get<torch::ExpandingArray<2>>(o.padding());
      for (int i = 0; i < 2; ++i) {
        l.kernel[i] = (*o.kernel_size())[i];
        l.stride[i] = (*o.stride())[i];
        l.padding[i] = (*pad)[i];
      }
      layers.push_back(l);
    } else if (child->as<nn::ReLU>()) {
      if (layers.empty() || layers.back().kind != Layer::kConv || layers.back().relu)
        throw std::invalid_argument(name + ": a ReLU not after a convolution is not supported by the oneDNN plan");
      layers.back().relu = true;
    } else if (auto* p = child->as<nn::MaxPool2d>()) {
      const auto& o = p->options;
      check_no_dilation(o, name);
      if (o.ceil_mode())
        throw std::invalid_argument(name + ": ceil_mode is not supported by the oneDNN plan");
      for (int i = 0; i < 2; ++i)
        if (2 * (*o.padding())[i] > (*o.kernel_size())[i])
          throw std::invalid_argument(name + ": padding must be at most half the kernel size");
      Layer l;
      l.kind = Layer::kPool;
      l.name = name;
      for (int i = 0; i < 2; ++i) {
        l.kernel[i] = (*o.kernel_size())[i];
        l.stride[i] = (*o.stride())[i];
        l.padding[i] = (*o.padding())[i];
      }
      layers.push_back(l);
    } else {
      throw std::invalid_argument(name + ": " + child->name() + " is not supported by the oneDNN plan");
    }
  }
  if (layers.empty()) throw std::invalid_argument("features: no layers");
  return layers;
}

}  // namespace alexnet::onednn

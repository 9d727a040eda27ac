// What oneDNN offers on this CPU for the plan (model/onednn_plan.h): Winograd
// convolutions, bf16 kernels of its own. Without oneDNN's headers, the plan's
// stand-ins: nothing available, and a plan that refuses to be built.
#include "model/onednn_layers.h"
#include "model/onednn_plan.h"
#include "model/winograd.h"

#include <stdexcept>
#include <string>

#ifdef ALEXNET_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace alexnet {

#ifdef ALEXNET_HAVE_DNNL

namespace {
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;
}  // namespace

bool OneDnnFeatures::winograd_available() {
  const int64_t kernel[2] = {3, 3}, stride[2] = {1, 1}, padding[2] = {1, 1};
  return onednn_winograd_available() || onednn::Winograd::supports(torch::kFloat, 64, 64, kernel, stride, padding);
}

bool OneDnnFeatures::onednn_winograd_available() {
  static const bool available = [] {
    try {
      const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      const memory::desc src({1, 64, 13, 13}, Dt::f32, Tag::any);
      const memory::desc dst({1, 64, 13, 13}, Dt::f32, Tag::any);
      dnnl::convolution_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_winograd, src,
          memory::desc({64, 64, 3, 3}, Dt::f32, Tag::any), memory::desc({64}, Dt::f32, Tag::x), dst,
          {1, 1}, {1, 1}, {1, 1});
      dnnl::convolution_forward::primitive_desc pd(d, engine);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

bool OneDnnFeatures::bf16_available() {
  static const bool available = [] {
    try {
      const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      dnnl::convolution_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          memory::desc({64, 64, 13, 13}, Dt::bf16, Tag::any), memory::desc({64, 64, 3, 3}, Dt::bf16, Tag::any),
          memory::desc({64}, Dt::bf16, Tag::x), memory::desc({64, 64, 13, 13}, Dt::bf16, Tag::any), {1, 1}, {1, 1},
          {1, 1});
      dnnl::convolution_forward::primitive_desc pd(d, engine);
      return !onednn::is_reference_kernel(pd.impl_info_str());
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

#else  // !ALEXNET_HAVE_DNNL

struct OneDnnFeatures::Impl {};

bool OneDnnFeatures::compiled() { return false; }

std::string OneDnnFeatures::library_version() { return ""; }

OneDnnFeatures::OneDnnFeatures(torch::nn::Sequential features, ConvAlgorithm, torch::ScalarType, bool) {
  onednn::describe_layers(features);
  throw std::invalid_argument("this build has no oneDNN plan (oneDNN's headers were not found)");
}

OneDnnFeatures::~OneDnnFeatures() = default;

torch::Tensor OneDnnFeatures::forward(const torch::Tensor&) {
  throw std::logic_error("this build has no oneDNN plan");
}

std::vector<std::string> OneDnnFeatures::describe() const { return {}; }

void OneDnnFeatures::set_profile(std::vector<std::pair<std::string, double>>*) {}

int OneDnnFeatures::winograd_layers() const { return 0; }

bool OneDnnFeatures::winograd_available() { return false; }

bool OneDnnFeatures::onednn_winograd_available() { return false; }

bool OneDnnFeatures::bf16_available() { return false; }

bool OneDnnFeatures::bf16_winograd_pays() { return false; }

#endif

}  // namespace alexnet

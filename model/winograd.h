// Winograd convolutions (+ ReLU) of the oneDNN plan's own (model/onednn_plan.h), for the layers
// oneDNN has no Winograd kernel for. Internal to model/; needs oneDNN 2.x.
//
// Each computes m x m outputs from an a x a input tile (a = m + r - 1 for an r x r kernel)
// with a*a products per channel pair instead of m*m*r*r, done as a*a oneDNN matrix products
// (float32 sums) between two passes over memory:
//   V = B^T d B,  U = G g G^T    (d: the input tile, g: the filter, per channel)
//   M = sum over input channels of U * V   (one matmul per point of the tile)
//   Y = A^T M A + bias, ReLU
// The transforms come from interpolation points (0, 1, -1, ... and infinity; Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016); scripts/winograd_bf16_error.py
// builds the same matrices from the points and checks them.
//
// Two variants:
// - bf16, F(2x2, 3x3) (a = 4): oneDNN has Winograd for float32 only, so a bf16 plan ran
//   conv3-5 (half of AlexNet's multiply-adds) with direct kernels, already at 103-104% of the
//   bf16 peak measured on the same kernels (Zen 4, AVX512-BF16, batch 64). With AlexNet's 13x13
//   maps padded to 14x14: 1.94x fewer multiply-adds. V and U are rounded to bf16 where a direct
//   bf16 convolution multiplies d and g exactly: on one layer 0.3-0.55% of the output's scale
//   against the direct kernel's 0.2-0.35% (tests/onednn_plan_test.cpp states the bounds).
//   Larger tiles would err 9-28x more than a direct bf16 convolution, against F(2x2, 3x3)'s 1.7x
//   (scripts/winograd_bf16_error.py). Transforms in AVX-512.
// - float32, a = 6: F(4x4, 3x3) for conv3-5 (13x13 maps padded to 16x16: 2.64x fewer
//   multiply-adds) and F(2x2, 5x5) for conv2 (27x27 padded to 28x28: 2.58x fewer), on the
//   points 0, +-1, +-2. oneDNN's float32 Winograd needs AVX-512 and takes 3x3 kernels only;
//   on AVX2 CPUs every convolution ran direct, at 83-116% of the float32 matmul's rate. In
//   float32 the transforms' rounding stays within the plan's 1e-5 of PyTorch's activations
//   (tests/onednn_plan_test.cpp). Transforms in AVX2 + FMA.
#pragma once

#ifdef ALEXNET_HAVE_DNNL

#include <oneapi/dnnl/dnnl.hpp>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace alexnet::onednn {

class Winograd {
 public:
  /// Whether a layer of this dtype (bf16 or float32) can run this way on this CPU. bf16: 3x3,
  /// stride 1, padding 0 to 2, channels in multiples of 16, AVX-512 F and BW. float32: 3x3 or
  /// 5x5, stride 1, padding below the kernel's side, channels in multiples of 8, AVX2 and FMA.
  /// kernel, stride, padding: (height, width).
  static bool supports(torch::ScalarType dtype, int64_t in_channels, int64_t out_channels, const int64_t kernel[2],
                       const int64_t stride[2], const int64_t padding[2]);
  /// bf16: whether this CPU is one where it was measured to pay: oneDNN's best bf16 kernels
  /// here are AVX512-BF16's (honouring ONEDNN_MAX_CPU_ISA). Not on AMX, whose tile products
  /// are so much faster that the transforms' passes over memory may dominate (not measured).
  static bool bf16_pays_on_this_cpu();

  /// The layer for one input shape: its matrix products, made by prepare().
  class Call {
   public:
    /// Bytes of scratch run() needs.
    size_t scratch_bytes() const;
    /// x: (n, h, w, IC) of the layer's dtype -> y: (n, oh, ow, OC) (oh = h + 2 pad_h - r + 1);
    /// scratch: scratch_bytes(), 64-byte aligned.
    void run(const void* x, void* y, void* scratch, dnnl::stream& stream) const;
    /// What runs, for the plan's description: "winograd F(4x4,3x3) f32, matmul gemm:jit".
    std::string description() const;

   private:
    friend class Winograd;
    struct Impl;
    std::shared_ptr<const Impl> impl_;
  };

  /// weight: (OC, IC, r, r), bias: (OC), float32 or bf16 (the variant follows the weight's
  /// dtype); pad: each side.
  Winograd(const torch::Tensor& weight, const torch::Tensor& bias, int64_t pad_h, int64_t pad_w, bool relu,
           const dnnl::engine& engine);
  ~Winograd();

  /// The call for (n, IC, h, w) inputs. Packs the weights for its matrix products
  /// unless an earlier shape's pack has the same layout.
  Call prepare(int64_t n, int64_t h, int64_t w);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet::onednn

#endif  // ALEXNET_HAVE_DNNL

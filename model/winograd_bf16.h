// A 3x3 stride-1 convolution (+ ReLU) in bf16 by Winograd F(2x2, 3x3), for the oneDNN
// plan's bf16 features (model/onednn_plan.h). Internal to model/; needs oneDNN 2.x.
//
// Why: oneDNN has Winograd for float32 only, so a bf16 plan ran conv3-5 (half of AlexNet's
// multiply-adds) with direct kernels, already at 103-104% of the bf16 peak measured on the
// same kernels (Zen 4, AVX512-BF16, batch 64). F(2x2, 3x3) computes each 2x2 block of
// outputs from a 4x4 input tile with 16 products per channel pair instead of 36: with
// AlexNet's 13x13 maps padded to 14x14, 1.94x fewer multiply-adds, done as 16 bf16
// matrix products (oneDNN's matmul, f32 sums) between two passes over memory.
//
// The arithmetic, per channel, in float32 (d: the 4x4 input tile, g: the 3x3 filter):
//   V = B^T d B,  U = G g G^T  (rounded to bf16: the products' operands)
//   M = sum over input channels of U * V   (16 matmuls, float32 sums)
//   Y = A^T M A + bias, ReLU, rounded to bf16
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// Caveat: V and U are rounded to bf16 where a direct bf16 convolution multiplies d and g
// exactly: on one layer 0.3-0.55% of the output's scale against the direct kernel's
// 0.2-0.35% (tests/onednn_plan_test.cpp states the bounds). Larger tiles, F(3x3, 3x3) or
// F(4x4, 3x3), or F(2x2, 5x5) for conv2, would cut more multiply-adds but err 9-28x more than a
// direct bf16 convolution, against F(2x2, 3x3)'s 1.7x (scripts/winograd_bf16_error.py).
// float32 never runs this code (oneDNN's own Winograd does that).
#pragma once

#ifdef ALEXNET_HAVE_DNNL

#include <oneapi/dnnl/dnnl.hpp>
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace alexnet::onednn {

class WinogradBf16 {
 public:
  /// Whether the layer can run this way: 3x3, stride 1, padding 0 to 2, channels in
  /// multiples of 16, on a CPU with AVX-512 F and BW (the transforms' kernels). kernel,
  /// stride, padding: (height, width).
  static bool supports(int64_t in_channels, int64_t out_channels, const int64_t kernel[2], const int64_t stride[2],
                       const int64_t padding[2]);
  /// Whether this CPU is one where it was measured to pay: oneDNN's best bf16 kernels here
  /// are AVX512-BF16's (honouring ONEDNN_MAX_CPU_ISA). Not on AMX, whose tile products are
  /// so much faster that the transforms' passes over memory may dominate (not measured).
  static bool pays_on_this_cpu();

  /// The layer for one input shape: its matrix products, made by prepare().
  class Call {
   public:
    /// Bytes of scratch run() needs.
    size_t scratch_bytes() const;
    /// x: (n, h, w, IC) bf16 -> y: (n, oh, ow, OC) bf16 (oh = h + 2 pad_h - 2);
    /// scratch: scratch_bytes(), 64-byte aligned.
    void run(const void* x, void* y, void* scratch, dnnl::stream& stream) const;
    /// oneDNN's matmul kernel, for the plan's description ("brg:avx512_core_bf16").
    std::string kernel() const;

   private:
    friend class WinogradBf16;
    struct Impl;
    std::shared_ptr<const Impl> impl_;
  };

  /// weight: (OC, IC, 3, 3), bias: (OC), any floating dtype (bf16 in the plan); pad: each side.
  WinogradBf16(const torch::Tensor& weight, const torch::Tensor& bias, int64_t pad_h, int64_t pad_w, bool relu,
               const dnnl::engine& engine);
  ~WinogradBf16();

  /// The call for (n, IC, h, w) inputs. Packs the weights for its matrix products
  /// unless an earlier shape's pack has the same layout.
  Call prepare(int64_t n, int64_t h, int64_t w);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet::onednn

#endif  // ALEXNET_HAVE_DNNL

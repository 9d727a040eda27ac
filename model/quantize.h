// The engines' input: float32 images quantized to quint8 (the int8 engine) or rounded to bf16
// (the bf16 engine), channels-last or cut into tiles for features.0, in one pass over the image.
//
// a_q = clamp(nearbyint(a * (1 / s)) + z, 0, 255), with 1 / s in float: at::quantize_per_tensor's
// formula, to the same bytes for finite values (NaN gives 0, as there; infinities saturate). Debian's LibTorch 1.13 (no fbgemm) runs that one value at a time
// and took 1.0 ms of a 6.5 ms int8 pass at batch 1 and 62-88 ms per batch of 64
// (BENCHMARKS.md, "The int8 engine on oneDNN"). This loop vectorizes, and quantizes each
// block of pixels plane by plane before interleaving the channels, so the float32 image is
// read once, in its own layout. Where LibTorch has fbgemm, whose quantize_per_tensor is
// vectorized already, that one runs.
#pragma once

#include <torch/torch.h>

namespace alexnet {

/// x: (N, C, H, W) float32 on the CPU, NCHW or channels-last -> (N, C, H, W) quint8 with
/// this scale and zero point, channels-last.
torch::Tensor quantize_channels_last(const torch::Tensor& x, double scale, int64_t zero_point);

/// x: (N, C, H, W) float32 on the CPU, NCHW or channels-last -> (N, C, H, W) bf16, channels-last,
/// each value rounded as LibTorch's x.to(torch::kBFloat16) rounds it (to nearest, ties to even),
/// in one pass where LibTorch's conversion to bf16 channels-last takes two.
torch::Tensor bf16_channels_last(const torch::Tensor& x);

/// A strided convolution over few channels (features.0: 3 channels, 11x11, stride 4) rewritten
/// as a stride-1 convolution over many: the padded input is cut into block x block tiles
/// (block = the stride), each tile's pixels becoming channels, and the kernel likewise. The
/// int32 sums are the same products added in another order, so the bytes are the same (bf16:
/// float32 sums in another order), while the kernel's reduction reads 48 channels instead of
/// 3 (AMX's tiles, VNNI's groups of 4 and AVX512-BF16's pairs are then filled).
struct SpaceToDepth {
  int64_t block = 1;    // the convolution's stride
  int64_t padding = 0;  // the convolution's padding, filled with the zero point
  int64_t kernel = 0;   // the rewritten kernel's side: ceil(kernel / block)
  int64_t tiles_h = 0, tiles_w = 0;  // the rewritten input's size: output size + kernel - 1

  /// The geometry for a kernel x kernel convolution with this stride and padding over an
  /// h x w input; throws c10::Error where the input is smaller than the kernel.
  static SpaceToDepth of(int64_t h, int64_t w, int64_t kernel, int64_t stride, int64_t padding);
};

/// x: (N, C, H, W) float32 -> (N, C * block^2, tiles_h, tiles_w) quint8, channels-last,
/// channel (dy * block + dx) * C + c of tile (ty, tx) holding x[c][ty * block + dy - padding]
/// [tx * block + dx - padding] quantized as quantize_channels_last does, or the zero point
/// outside the image.
torch::Tensor quantize_space_to_depth(const torch::Tensor& x, double scale, int64_t zero_point,
                                      const SpaceToDepth& geometry);

/// x: (N, C, H, W) float32 -> the same tiles in bf16 (bf16_channels_last's values), 0 outside
/// the image.
torch::Tensor bf16_space_to_depth(const torch::Tensor& x, const SpaceToDepth& geometry);

/// x: (N, C, H, W) float32, NCHW or channels-last -> the same tiles in float32 at dst,
/// (N, tiles_h, tiles_w, C * block^2), 0 outside the image (the fp32 plan's features.0 input).
void space_to_depth_into(const torch::Tensor& x, const SpaceToDepth& geometry, float* dst);

/// A convolution's weight (out, C, k, k), floating point or qint8 per output channel,
/// rewritten for that input: (out, C * block^2, kernel, kernel), the positions past k holding 0.
torch::Tensor space_to_depth_weight(const torch::Tensor& weight, const SpaceToDepth& geometry);

}  // namespace alexnet

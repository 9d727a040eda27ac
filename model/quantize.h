// The int8 engine's input quantization: float32 images to quint8, channels-last.
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

}  // namespace alexnet

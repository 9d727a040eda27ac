// The int8 engine's layers on oneDNN directly, in builds that have oneDNN's headers
// (Debian's LibTorch 1.13, whose own quantized kernels are oneDNN's through ideep).
//
// LibTorch 1.13's quantized::linear_relu read classifier.1 and .4 at about 10 GB/s at
// batch 1 (3.95 ms and 1.75 ms; the classifier was 81% of the int8 pass), and its
// quantized::conv2d_relu ran AlexNet's convolutions at a quarter of the int8 peak at
// batch 64. oneDNN called directly, on weights packed once, took a fifth to a third of
// that time for the Linear layers at small batches and 0.6-0.8 of it for the
// convolutions (BENCHMARKS.md, "The int8 engine on oneDNN"). The arithmetic is
// LibTorch's, step for step:
//   acc  = sum_k (x_q[k] - z_x) * w_q[oc][k]       (int32; w per output channel, zero point 0)
//   y_q  = clamp(round(s_x * s_w[oc] / s_y * (acc + b[oc] / (s_x * s_w[oc])) + z_y), 0, 255),
// with s_x * s_w[oc], the bias term and the multiplier formed in float as LibTorch forms
// them, and the ReLU applied before z_y is added (oneDNN 2.x's inner product takes no
// destination zero point: z_y is a post-op, y + z_y, added before the rounding, which
// is the same for z_y = 0, the zero point of every ReLU output the engine makes).
// tests/int8_unit_test.cpp compares the bytes with LibTorch's kernels.
// Caveats: a Linear layer's source zero point other than 0 (never, after a ReLU) is
// folded into the bias, -z_x * sum_k w_q[oc][k], in float, so a value can land one step
// from LibTorch's; a convolution hands its source zero point (features.0's, which reads
// the image) to oneDNN, whose padding then reads as the zero point, as LibTorch's does.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace alexnet {

/// How a layer's int32 sums become the next layer's quint8 values.
struct Int8Requantization {
  double in_scale = 1.0;
  int64_t in_zero_point = 0;
  double out_scale = 1.0;
  int64_t out_zero_point = 0;
  bool relu = true;  // a ReLU before the output is quantized
  // The sums dequantized to float32, s_x * s_w[oc] * acc + b[oc], not quantized again
  // (OneDnnInt8Linear only: the last layer, whose logits keep float32's resolution);
  // out_scale and out_zero_point must then be 1 and 0.
  bool float_output = false;
};

class OneDnnInt8Linear {
 public:
  /// Whether this build can run it (oneDNN's headers were found).
  static bool available();

  /// weight: (out, in) qint8, per output channel with zero points 0 (its bytes are
  /// copied once, plain, and packed on first use); bias: (out,) float32. Throws
  /// std::invalid_argument in a build without oneDNN.
  OneDnnInt8Linear(const torch::Tensor& weight, const torch::Tensor& bias, const Int8Requantization& requantization);
  ~OneDnnInt8Linear();

  /// x: (N, in) quint8 with the input's scale and zero point, rows contiguous ->
  /// (N, out) quint8 with the output's, or float32 with float_output.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class OneDnnInt8Conv {
 public:
  /// weight: (out, in, kh, kw) qint8, per output channel with zero points 0; bias:
  /// (out,) float32; groups 1; strides > 0, paddings >= 0. Throws
  /// std::invalid_argument in a build without oneDNN.
  OneDnnInt8Conv(const torch::Tensor& weight, const torch::Tensor& bias, std::vector<int64_t> stride,
                 std::vector<int64_t> padding, const Int8Requantization& requantization);
  ~OneDnnInt8Conv();

  /// x: (N, in, H, W) quint8 with the input's scale and zero point, channels-last ->
  /// (N, out, H', W') quint8 with the output's, channels-last.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet

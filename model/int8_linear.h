// The int8 engine's quantized Linear layers (classifier.1 and .4) as oneDNN u8 x s8
// inner products, in builds that have oneDNN's headers (Debian's LibTorch 1.13).
//
// At batch 1 those two layers stream 54 MiB of int8 weights per image. LibTorch 1.13's
// quantized::linear_relu (fbgemm) read them at about 10 GB/s: 3.95 ms and 1.75 ms, 81% of
// the int8 pass with classifier.6 (BENCHMARKS.md, "The int8 classifier on oneDNN").
// oneDNN's integer GEMM on the same weights, in their plain (out, in) layout, takes a
// fifth of that. The arithmetic is fbgemm's, step for step, so the bytes agree:
//   acc  = sum_k (x_q[k] - z_x) * w_q[oc][k]              (int32; w per channel, zero point 0)
//   y_q  = clamp(round(s_x * s_w[oc] / s_y * (acc + b[oc] / (s_x * s_w[oc]))) + z_y, 0, 255),
// with the ReLU before z_y is added. oneDNN 2.x's inner product has no source or
// destination zero point: -z_x * sum_k w_q[oc][k] is folded into the bias, and z_y is a
// post-op (y + z_y) after the ReLU.
// Caveat: with a source zero point other than 0 (never, after a ReLU) the bias is folded
// in float, so a value can land one step from fbgemm's.
#pragma once

#include <torch/torch.h>

#include <memory>

namespace alexnet {

class OneDnnInt8Linear {
 public:
  /// Whether this build can run it (oneDNN's headers were found).
  static bool available();

  /// weight: (out, in) qint8, per output channel with zero points 0 (its bytes are
  /// copied once, in the plain layout); bias: (out,) float32; the input's and output's
  /// per-tensor scale and zero point (quint8); relu: a ReLU before the output is
  /// quantized. Throws std::invalid_argument in a build without oneDNN.
  OneDnnInt8Linear(const torch::Tensor& weight, const torch::Tensor& bias, double in_scale, int64_t in_zero_point,
                   double out_scale, int64_t out_zero_point, bool relu);
  ~OneDnnInt8Linear();

  /// x: (N, in) quint8 with the input's scale and zero point, rows contiguous ->
  /// (N, out) quint8 with the output's.
  torch::Tensor forward(const torch::Tensor& x);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet

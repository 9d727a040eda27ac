// Image operations with torchvision's (PIL-backed) semantics, on 8-bit RGB
// images held as (H, W, 3) uint8 tensors. No OpenCV here: decoding lives in
// decode.h so the rest builds where OpenCV is missing.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <utility>

namespace alexnet::data {

/// One float per RGB channel.
using Rgb = std::array<float, 3>;

/// ImageNet statistics torchvision's pretrained models expect (RGB order).
constexpr Rgb kImageNetMean = {0.485f, 0.456f, 0.406f};
constexpr Rgb kImageNetStd = {0.229f, 0.224f, 0.225f};

/// Output (height, width) of torchvision's Resize(size) with an int size: the
/// shorter side becomes `size`, the longer one int(size * long / short).
std::pair<int64_t, int64_t> resized_shorter_side(int64_t height, int64_t width, int64_t size);

/// Bilinear resize with PIL's antialiasing filter and fixed-point arithmetic,
/// bit-identical to PIL's Image.resize(..., BILINEAR) on 8-bit images.
/// image: (H, W, C) uint8 contiguous -> (out_height, out_width, C) uint8.
torch::Tensor resize_bilinear_aa(const torch::Tensor& image, int64_t out_height,
                                 int64_t out_width);

/// The same filter restricted to a source box (x0, y0, x1, y1), as PIL's
/// resize(size, box=...) does; crop-then-resize in one pass.
torch::Tensor resize_bilinear_aa_box(const torch::Tensor& image, int64_t out_height,
                                     int64_t out_width, double x0, double y0, double x1,
                                     double y1);

/// torchvision's CenterCrop: offsets round half to even like Python's round(),
/// zero padding when the crop is larger than the image.
torch::Tensor center_crop(const torch::Tensor& image, int64_t crop_height, int64_t crop_width);

/// ToTensor + Normalize: (H, W, 3) uint8 -> (3, H, W) float32, computed in the
/// same order as torchvision (x / 255, then (x - mean) / std) so results match bit for bit.
torch::Tensor to_normalized_chw(const torch::Tensor& image,
                                const Rgb& mean = kImageNetMean,
                                const Rgb& std = kImageNetStd);

struct EvalTransformOptions {
  /// Shorter side after resizing (torchvision's reference: 256).
  TORCH_ARG(int64_t, resize_size) = 256;
  /// Side of the central square crop (torchvision's reference: 224).
  TORCH_ARG(int64_t, crop_size) = 224;
  TORCH_ARG(Rgb, mean) = kImageNetMean;
  TORCH_ARG(Rgb, std) = kImageNetStd;
};

/// torchvision's evaluation transform: Resize, CenterCrop, ToTensor, Normalize.
/// image: (H, W, 3) uint8 -> (3, crop, crop) float32.
torch::Tensor eval_transform(const torch::Tensor& image, const EvalTransformOptions& options = {});

}  // namespace alexnet::data
